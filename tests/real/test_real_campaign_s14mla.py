"""real/campaigns/s14mla.sh (issue 13, s14mla): the held-out V2-Lite MLA layer records in many
rounds beside the fitting MLA host rows of the same process, their order rotated each round; the
code path the campaign runs, on the CPU with tiny shapes."""

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest

from real.bench import mla_paired as mp
from tests.campaigns import FORKED_PY

ROOT = Path(__file__).resolve().parents[2]


def test_rotation_puts_every_item_at_every_position():
    items = list("abcd")
    orders = [mp.rotated(items, r) for r in range(len(items))]
    assert all(sorted(o) == items for o in orders)
    for pos in range(len(items)):
        assert {o[pos] for o in orders} == set(items)


def test_settings_default_to_s9mla_and_reject_unknown(monkeypatch):
    for k in ("REAL_MLA_PAIRED_LAYOUT", "REAL_MLA_PAIRED_MODELS", "REAL_MLA_PAIRED_ROUNDS"):
        monkeypatch.delenv(k, raising=False)
    assert mp.run_settings(False) == {"layout": "per_record", "models": mp.RECORD_MODELS, "rounds": mp.MAX_ROUNDS}
    monkeypatch.setenv("REAL_MLA_PAIRED_ROUNDS", "40")
    assert mp.run_settings(False)["rounds"] == 40 and mp.run_settings(True)["rounds"] == mp.QUICK_ROUNDS
    monkeypatch.setenv("REAL_MLA_PAIRED_LAYOUT", "shuffled")
    with pytest.raises(ValueError):
        mp.run_settings(False)
    monkeypatch.setenv("REAL_MLA_PAIRED_LAYOUT", "rotated")
    monkeypatch.setenv("REAL_MLA_PAIRED_MODELS", "llama")
    with pytest.raises(ValueError):
        mp.run_settings(False)


def test_campaign_script_runs_on_the_cpu(tmp_path):
    script = (ROOT / "real/campaigns/s14mla.sh").read_text().replace("python3 -m", f"{FORKED_PY} -m")
    (tmp_path / "s14mla.sh").write_text(script)
    out = tmp_path / "out"
    r = subprocess.run(["bash", str(tmp_path / "s14mla.sh"), str(out)], cwd=ROOT, capture_output=True, text=True,
                       env={"PATH": "/usr/bin:/bin", "TWIN_TESTS_PYTHON": sys.executable,   # FORKED_PY runs it
                            "TWIN_FORK_SERVER": os.environ.get("TWIN_FORK_SERVER", ""),   # its fork server, if any
                            "S14MLA_QUICK": "1", "PYTHONPATH": str(ROOT),
                            "OMP_NUM_THREADS": "1"}, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    log = (out / "s14mla" / "log.txt").read_text()
    assert "mla_paired exit 0" in log and "layout rotated" in log and "load average" in log
    rows = list(csv.DictReader((out / "s14mla" / "mla_paired.csv").open()))
    probes = [r for r in rows if r["bench"] == "host_class"]
    hosts = [r for r in rows if r["bench"] == "host_dispatch"]
    records = [r for r in rows if r["bench"].startswith("mla_layer")]
    assert probes and hosts and records
    assert {r["phase"] for r in hosts} == {"fwd", "infer", "bwd"}
    assert all(float(r["host_s"]) > 0 for r in probes + hosts) and all(float(r["time_s"]) > 0 for r in records)
    rounds = sorted({int(r["round"]) for r in records})
    assert rounds == list(range(mp.QUICK_ROUNDS))
    # each round: a probe block opens and one closes it, and the records carry the opening block
    for rnd in rounds:
        idx = [i for i, r in enumerate(rows) if int(r["round"]) == rnd]
        assert rows[idx[0]]["bench"] == "host_class" and rows[idx[-1]]["bench"] == "host_class"
        pairs = {r["pair"] for r in records if int(r["round"]) == rnd}
        assert len(pairs) == 1 and pairs == {rows[idx[0]]["pair"]}
    # rotated: the fitting host rows come first in round 0 and after the records in round 1
    first = {rnd: next(r["bench"] for r in rows if int(r["round"]) == rnd and r["bench"] != "host_class")
             for rnd in rounds}
    assert first[0] == "host_dispatch" and first[1] != "host_dispatch"
    assert all(r["gpu_name"] and r["torch_version"] and r["timestamp_utc"] for r in rows)
