"""Section mla_paired (issue 13, s9mla): each MLA layer record beside the host probe block taken right
before it; the code path real/campaigns/s9mla.sh runs, on the CPU with tiny shapes."""

import csv
import os
import subprocess
import sys
from pathlib import Path

from real.bench import mla_paired as mp
from real.bench.mla_host import PROBE_OPS, PROBE_PHASES
from tests.campaigns import FORKED_PY

ROOT = Path(__file__).resolve().parents[2]


def test_probes_are_probe_classes_and_records_the_attention_shapes():
    from calibration.split import is_held_out
    assert all(op in PROBE_OPS and phase in PROBE_PHASES for op, phase in mp.PAIRED_PROBES)
    for name, b, s in mp.PAIRED_FIT_CASES:
        assert not is_held_out({"bench": "mla_layer_fwd", "model": name, "batch": b, "seq_len": s})
    # the records are the committed MLA layer records' shapes: V2-Lite held out, V3-slice fit
    for m in mp.RECORD_MODELS:
        for s, b in mp.RECORD_SHAPES:
            assert is_held_out({"bench": "mla_layer_fwd", "model": m, "batch": b, "seq_len": s}) == (m == "v2-lite-slice")


def test_campaign_script_runs_on_the_cpu(tmp_path):
    script = (ROOT / "real/campaigns/s9mla.sh").read_text().replace("python3 -m", f"{FORKED_PY} -m")
    (tmp_path / "s9mla.sh").write_text(script)
    out = tmp_path / "out"
    r = subprocess.run(["bash", str(tmp_path / "s9mla.sh"), str(out)], cwd=ROOT, capture_output=True, text=True,
                       env={"PATH": "/usr/bin:/bin", "TWIN_TESTS_PYTHON": sys.executable,   # FORKED_PY runs it
                            "TWIN_FORK_SERVER": os.environ.get("TWIN_FORK_SERVER", ""),   # its fork server, if any
                            "S9MLA_QUICK": "1", "PYTHONPATH": str(ROOT),
                            "OMP_NUM_THREADS": "1"}, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    log = (out / "s9mla" / "log.txt").read_text()
    assert "mla_paired exit 0" in log and "all sections ran" in log
    rows = list(csv.DictReader((out / "s9mla" / "mla_paired.csv").open()))
    probes = [r for r in rows if r["bench"] == "host_class"]
    records = [r for r in rows if r["bench"].startswith("mla_layer")]
    hosts = [r for r in rows if r["bench"] == "host_dispatch"]
    assert records and probes and hosts
    assert {r["phase"] for r in hosts} == {"fwd", "infer", "bwd"}
    assert all(float(r["host_s"]) > 0 for r in probes + hosts) and all(float(r["time_s"]) > 0 for r in records)
    # every record's pair has its probe block, taken before it in the same round
    blocks = {}
    for r in probes:
        blocks.setdefault(r["pair"], set()).add((r["op"], r["phase"], r["round"]))
    for r in records:
        assert {(op, ph) for op, ph, _ in blocks[r["pair"]]} == set(mp.PAIRED_PROBES)
        assert {rnd for *_, rnd in blocks[r["pair"]]} == {r["round"]}
        assert rows.index(r) > max(i for i, p in enumerate(rows) if p in probes and p["pair"] == r["pair"])
    # fwd and bwd of each record, in each of the rounds run
    assert len({r["round"] for r in records}) == mp.QUICK_ROUNDS
    assert all(r["gpu_name"] and r["torch_version"] and r["timestamp_utc"] for r in rows)
