"""The headline figures, held: a move or refactor must not change them; a change of physics updates
tests/golden/headline.json on purpose (`python tests/test_golden.py --update`) and shows in the diff.

Tolerance: relative 1e-6 on every figure. The simulation is deterministic (seeded Monte Carlo,
no wall clock in any figure), so the only slack needed is for floating-point summation order.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest

if __name__ == "__main__":   # run as a script, sys.path[0] is tests/: its twin/ folder would shadow the package
    sys.path = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).parent.resolve()]

import twin  # noqa: E402
from calibration import trace
from calibration.validate import validate
from twin.costs.profile import load_profile

GOLDEN = Path(__file__).with_name("golden") / "headline.json"
ROOT = Path(__file__).resolve().parents[1]
REL_TOL = 1e-6
SERVING = ("r1_serve_h200", "r1_serve_h800_decode", "r1_serve_h800_prefill")


def headline_figures(validation: dict | None = None) -> dict:
    """The README's figures, computed through the Python API and `twin validate`'s functions
    (`validation`: validate()'s result on the committed records where the caller has it already)."""
    validation = validation if validation is not None else validate()
    sc = twin.load_scenario()
    step = twin.simulate_step(sc)
    run = twin.replay(sc)
    out = {
        "step": {k: getattr(step, k) for k in ("step_time_s", "bubble_frac", "mfu_frac", "exposed_comm_frac",
                                               "tokens_per_s_per_gpu", "memory_per_gpu_bytes")},
        "replay": {"total_gpu_hours": run.total_gpu_hours, "total_gpu_hours_goodput": run.total_gpu_hours_goodput,
                   "total_cost_usd": run.total_cost_usd, "total_wall_days": run.total_wall_days,
                   "stages_gpu_hours": {s.name: s.gpu_hours for s in run.stages},
                   "total_gpu_hours_p10": run.band["total_gpu_hours"].p10,
                   "total_gpu_hours_p90": run.band["total_gpu_hours"].p90},
        "validate": {gpu: {k: s[k] for k in ("median_abs_rel_error", "p90_abs_rel_error", "num_cases")}
                     for gpu, s in validation["gpus"].items()},
    }
    tr = trace.compare(load_profile("h100"))   # the H800 derivation: DeepSeek's stack on H100 silicon
    out["h800_trace"] = {"chunk_pair_predicted_us": tr["chunk_pair"]["predicted_us"],
                         "phases_predicted_us": {p["phase"]: p["predicted_us"] for p in tr["phases"]}}
    out["serve"] = {}
    for name in SERVING:
        r = twin.serve(twin.load_scenario(ROOT / "scenarios" / f"{name}.toml"))
        # a prefill-only run has no TPOT (NaN): only finite figures are held
        out["serve"][name] = {k: getattr(r, k) for k in ("batch", "output_tokens_per_s", "output_tokens_per_s_per_node",
                                                         "input_tokens_per_s_per_node", "tpot_s", "ttft_s",
                                                         "memory_per_gpu_bytes", "ttft_p50_s", "ttft_p99_s",
                                                         "tpot_p50_s", "goodput_requests_per_s",
                                                         "usd_per_million_output_tokens")
                              if math.isfinite(getattr(r, k))}
    return out


def _flatten(d: dict, prefix: str = "") -> dict:
    flat = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        flat.update(_flatten(v, key + ".") if isinstance(v, dict) else {key: v})
    return flat


@pytest.fixture(scope="module")
def figures():
    from tests.committed import validation   # the test session's one validate() of the committed records
    return _flatten(headline_figures(validation()))


def test_headline_figures_are_unchanged(figures):
    golden = _flatten(json.loads(GOLDEN.read_text()))
    assert figures.keys() == golden.keys()
    moved = {k: (golden[k], figures[k]) for k in golden
             if not math.isclose(figures[k], golden[k], rel_tol=REL_TOL, abs_tol=0.0)}
    assert not moved, f"headline figures moved (golden, now): {moved}"


if __name__ == "__main__" and "--update" in sys.argv:
    GOLDEN.write_text(json.dumps(headline_figures(), indent=2) + "\n")
    print(f"wrote {GOLDEN}")
