"""s21mem (docs/notes/s21mem_rule.md): every figure the GPUs' usable memory may move, under one
setting of twin.core.specs.ADOPT_USABLE_HBM, as JSON (run it once per setting and compare).

    PYTHONPATH=. .venv/bin/python benchmarks/s21mem_figures.py off|on|both OUT.json [--no-validate]

on: ADOPT_USABLE_HBM (the measured H200); both: and ADOPT_USABLE_HBM_INFERRED (the H800).

Figures: each GPU's capacity; the serving scenarios (batch, throughput, KV capacity, claims' errors);
DeepSeek's published day rows; every training scenario's step (feasible or the refusal, memory per
GPU) and the default V3 replay's stages; and twin validate's JSON (held-out figures, published runs).
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import twin
from calibration.validate import validate
from twin.core import specs
from twin.core.errors import InfeasiblePlan
from twin.serving.published import crossings, deepseek_day_rows, h200_curve

ROOT = Path(__file__).resolve().parents[1]
GIB = 2**30
SERVE_FIELDS = ("batch", "output_tokens_per_s", "output_tokens_per_s_per_node", "input_tokens_per_s_per_node",
                "tpot_s", "ttft_s", "memory_per_gpu_bytes", "kv_capacity_tokens_per_instance",
                "usd_per_million_output_tokens")


def _finite(x):
    return x if not isinstance(x, float) or math.isfinite(x) else None


def serving_figures(path: Path) -> dict:
    r = twin.serve(twin.load_scenario(path))
    out = {k: _finite(getattr(r, k, None)) for k in SERVE_FIELDS}
    out["claims"] = [{k: _finite(v) for k, v in vars(c).items() if isinstance(v, (int, float, str))} for c in r.claims]
    return out


def training_figures(path: Path | None) -> dict:
    sc = twin.load_scenario(path) if path else twin.load_scenario()
    try:
        step = twin.simulate_step(sc)
    except InfeasiblePlan as exc:
        return {"feasible": False, "reason": str(exc)[:300]}
    return {"feasible": True, "step_time_s": step.step_time_s, "memory_per_gpu_gib": step.memory_per_gpu_bytes / GIB,
            "capacity_gib": sc.gpu.hbm_bytes / GIB}


def replay_figures() -> dict:
    run = twin.replay(twin.load_scenario())
    return {"total_gpu_hours": run.total_gpu_hours,
            "stages": {s.name: {"gpu_hours": s.gpu_hours, **{k: _finite(v) for k, v in vars(s).items()
                                                             if k.startswith("memory") and isinstance(v, float)}}
                       for s in run.stages}}


def figures(with_validate: bool) -> dict:
    out = {"switch": [specs.ADOPT_USABLE_HBM, specs.ADOPT_USABLE_HBM_INFERRED],
           "capacity_gib": {g: specs.get_gpu(g).hbm_bytes / GIB for g in specs.gpu_names()}}
    scen = sorted((ROOT / "scenarios").glob("*.toml"))
    out["serve"] = {p.stem: serving_figures(p) for p in scen if p.stem.startswith("r1_serve")}
    try:
        out["deepseek_day_rows"] = [{k: _finite(v) for k, v in r.items() if isinstance(v, (int, float, str))}
                                    for r in deepseek_day_rows()]
    except ValueError as exc:   # the decode speed curve's check (twin.serving.published.SpeedCurve)
        out["deepseek_day_rows"] = f"error: {exc}"
    out["h200_curve"] = [{k: _finite(v) for k, v in vars(p).items() if isinstance(v, (int, float, str))}
                         if hasattr(p, "__dict__") else str(p) for p in h200_curve()]
    out["h200_crossings"] = str(crossings(h200_curve()))
    out["training"] = {"default": training_figures(None)}
    for p in scen:
        if twin.load_scenario(p).kind == "training":
            out["training"][p.stem] = training_figures(p)
    out["replay_default"] = replay_figures()
    if with_validate:
        out["validate"] = validate()
    return out


def main(argv: list[str]) -> int:
    setting, dest = argv[0], Path(argv[1])
    specs.ADOPT_USABLE_HBM = setting in ("on", "both")
    specs.ADOPT_USABLE_HBM_INFERRED = setting == "both"
    dest.write_text(json.dumps(figures("--no-validate" not in argv), indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
