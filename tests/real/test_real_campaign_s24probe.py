"""real/campaigns/s24probe.sh (session s24probe, docs/notes/s24probe_rule.md): section step_probe as a CPU dry run (the
tiny models, every probe candidate in a set before the first case and after each), and the candidates themselves."""

import csv
import math
import os
import re
import subprocess
from pathlib import Path

import torch

from real.bench.whole_model import parse_serve_cases
from real.serve import hostspeed, stepprobe
from tests.campaigns import FORKED_PY   # the campaign's Python processes forked from the fork server (torch imported once)

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "real/campaigns/s24probe.sh"


def _campaign(tmp_path, gpus: int):
    env = {**os.environ, "PYTHON": FORKED_PY, "S24PROBE_QUICK": "1", "S24PROBE_QUICK_GPUS": str(gpus),
           "PYTHONPATH": str(REPO)}
    subprocess.run(["bash", str(SCRIPT), str(tmp_path)], cwd=REPO, env=env, check=True, capture_output=True,
                   timeout=90)
    return tmp_path / "s24probe"


def _rows(path):
    with path.open() as f:
        return list(csv.DictReader(f))


def test_s24probe_campaign_cpu_dry_run(tmp_path):
    """Four cases (prefill, decode of tiny and tiny-gqa), five probe sets of every candidate bracketing them; every
    step row names the set before it; every row carries the environment."""
    out = _campaign(tmp_path, 1)
    probes = _rows(out / "cold" / "host_probes.csv")
    assert [(r["set"], r["candidate"]) for r in probes] == [
        (str(k), c) for k in range(5) for c in stepprobe.CANDIDATES]
    assert all(float(r["host_s_per_unit"]) > 0 and r["torch_version"] and r["gpu_name"] for r in probes)
    steps = _rows(out / "cold" / "serve_steps.csv")
    cases = [(s["config"], s["bench"], s["model"], s["batch"]) for s in steps]
    assert list(dict.fromkeys(cases)) == [("set0", "prefill", "tiny", "1"), ("set1", "decode", "tiny", "2"),
                                          ("set2", "prefill", "tiny-gqa", "1"), ("set3", "decode", "tiny-gqa", "2")]
    assert all(float(s["host_s"]) > 0 and s["torch_version"] for s in steps)
    assert {s["block"] for s in steps} == {"control", "probed"}
    assert "s24probe done" in (out / "log.txt").read_text()


def test_s24probe_campaign_needs_a_gpu(tmp_path):
    out = _campaign(tmp_path, 0)
    assert not (out / "cold").exists() and "no GPU: nothing to run" in (out / "log.txt").read_text()


def test_s24probe_cases_are_the_rules():
    """The rule's 16 cases: four models at prompt 384, prefill batches 1 and 4, decode batches 8 and 32."""
    text = re.search(r'^CASES="([^"]+)"', SCRIPT.read_text(), re.M)[1]
    got = [(m, P, G, tuple(pb), tuple(db)) for m, P, G, pb, db in parse_serve_cases(text)]
    assert got == [(m, 384, 40, (1, 4), (8, 32)) for m in ("tiny-gqa", "megatron-gpt-1.7b", "bench-small", "tiny")]


def test_probe_set_has_every_candidate_positive():
    got = stepprobe.probe_set(torch.device("cpu"), 0.005)
    assert tuple(got) == stepprobe.CANDIDATES
    assert all(m > 0 and p50 > 0 and math.isfinite(m) for m, p50 in got.values())


def test_mix_counts_its_torch_calls():
    """MIX_OPS is the number of torch calls one repetition makes (counted by a function-mode hook)."""
    calls = []

    class Count(torch.overrides.TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            if getattr(func, "__name__", "") not in ("__get__", "shape", "device"):
                calls.append(func)
            return func(*args, **(kwargs or {}))

    t = stepprobe._MixInputs(torch.device("cpu"), 16)
    with torch.no_grad(), Count():
        assert stepprobe._mix_once(t) == stepprobe.MIX_OPS
    assert len(calls) == stepprobe.MIX_OPS


def test_refmodel_is_fixed_and_leaves_the_old_probe_alone():
    """The reference model is seeded (same logits' argmax on every call and build); the old launch probe is unchanged."""
    torch.manual_seed(0)
    a = stepprobe.RefModel()
    torch.manual_seed(0)
    b = stepprobe.RefModel()
    assert all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values()))
    assert hostspeed.PROBE_CHAIN == 64 and stepprobe.launch_probe is hostspeed.launch_probe


def test_s24probe2_campaign_cpu_dry_run(tmp_path):
    """Candidate 2: every step right after a probe of the rotating kind; every row carries the environment."""
    env = {**os.environ, "PYTHON": FORKED_PY, "S24PROBE_QUICK": "1", "PYTHONPATH": str(REPO)}
    subprocess.run(["bash", str(REPO / "real/campaigns/s24probe2.sh"), str(tmp_path)], cwd=REPO, env=env, check=True,
                   capture_output=True, timeout=90)
    rows = _rows(tmp_path / "s24probe2" / "each" / "probe_steps.csv")
    assert [(r["bench"], r["kind"]) for r in rows] == [
        (b, stepprobe.EACH_KINDS[i % 5]) for b in ("decode", "prefill") for i in range(10)]
    assert all(float(r["probe_s_per_unit"]) > 0 and float(r["host_s"]) > 0 and r["torch_version"] for r in rows)


def test_each_probers_read_the_same_units_as_the_set():
    got = stepprobe.each_probers(torch.device("cpu"))
    assert tuple(got) == stepprobe.EACH_KINDS
    assert all(m > 0 and math.isfinite(m) for m, _ in (f(0.002) for f in got.values()))
