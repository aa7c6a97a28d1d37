"""TEST FIXTURES, NOT MEASUREMENTS: synthetic pipeline_step.csv / pipeline_ops.csv records in
the schema real/'s pipeline campaign writes (issue 13), made from the twin's own simulation of a
configuration (optionally stretched), so the prediction side can be exercised before the records
of a real run land. Never copy these into calibration/measurements/."""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd

from calibration import pipeline as pipe
from calibration.predict import gpu_spec
from calibration.records import records_root_scope
from twin.costs.profile import fitted_profile

STEP_COLS = ["bench", "model", "schedule", "pp", "ep", "dp", "num_gpus", "num_microbatches", "micro_batch_seqs",
             "seq_len", "precision", "num_layers", "time_s", "time_p10_s", "time_p90_s", "reps", "tokens_per_s",
             "loss", "split", "gpu_name", "timestamp_utc", "nccl_version"]
_LABEL = re.compile(r"([A-Z]+)(\d+)\.(\d+)")


def config(schedule: str, *, model: str = "v2-lite-slice", pp: int = 2, n: int = 4, b: int = 1, s: int = 512,
           num_layers: int = 4, precision: str = "bf16", ep: int = 1, dp: int = 1) -> dict:
    """A configuration on pp x dp GPUs (EP ranks are DP ranks: ep divides dp)."""
    return {"bench": "pipeline_step", "model": model, "schedule": schedule, "pp": pp, "ep": ep, "dp": dp,
            "num_gpus": pp * dp,
            "num_microbatches": n, "micro_batch_seqs": b, "seq_len": s, "precision": precision, "num_layers": num_layers}


def write(folder: Path, configs: list[dict], gpu: str = "h100", stretch: dict | None = None, reps: int = 2) -> Path:
    """Write the fixture records of `configs` into `folder` (e.g. tmp/h100x2): each configuration's
    ops are the twin's simulated op spans, every op stretched by stretch[schedule] (default 1); each
    data-parallel replica d of the pipeline (global rank d x pp + pp rank) runs them alike."""
    folder.mkdir(parents=True, exist_ok=True)
    prof, spec = fitted_profile(gpu), gpu_spec(gpu)
    steps, ops = [], []
    for cfg in configs:
        k = (stretch or {}).get(cfg["schedule"], 1.0)
        # predicted under the records root validate(folder.parent) reads (records_root_scope), so the
        # fixture's unstretched ops are exactly what validate predicts for them
        with records_root_scope(folder.parent):
            result, pred, _ = pipe.simulate_row(pd.Series(cfg), spec, prof)
        for rep in range(reps):
            for d in range(int(cfg["dp"])):
                for i, (rank, label, start, end) in enumerate(result.op_spans):
                    m = _LABEL.match(label)
                    ops.append({**{c: cfg[c] for c in pipe.CONFIG_KEYS}, "rep": rep, "rank": d * cfg["pp"] + rank,
                                "op_index": i, "kind": "FB" if "&" in label else m[1], "microbatch": int(m[2]),
                                "chunk": int(m[3]), "start_s": start * k, "end_s": end * k, "gpu_name": "fixture",
                                "timestamp_utc": "fixture"})
        steps.append({**cfg, "time_s": pred * k, "time_p10_s": pred * k, "time_p90_s": pred * k, "reps": reps,
                      "tokens_per_s": 0.0, "loss": 0.0, "split": "holdout", "gpu_name": "fixture (test)",
                      "timestamp_utc": "fixture", "nccl_version": "fixture"})
    pd.DataFrame(steps, columns=STEP_COLS).to_csv(folder / "pipeline_step.csv", index=False)
    pd.DataFrame(ops).to_csv(folder / "pipeline_ops.csv", index=False)
    return folder


def jitter_steps(folder: Path, reps: int) -> None:
    """Scale each timed step's ops by a small deterministic jitter (+-0.2%), so the steps of one
    configuration differ as a run's do."""
    ops = pd.read_csv(folder / "pipeline_ops.csv")
    jitter = 1 + 0.004 * ((ops["rep"] * 7 % reps) / (reps - 1) - 0.5)
    ops["start_s"] *= jitter
    ops["end_s"] *= jitter
    ops.to_csv(folder / "pipeline_ops.csv", index=False)
