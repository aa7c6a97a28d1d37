"""Forward host rates per configuration: where the twin's DualPipe / DualPipeV gap comes from.

s16dpv (docs/notes/s16dpv.md): on PP2 x EP2 the forwards are host-paced (each MoE layer's dispatch
brings its split sizes to the host, which then waits for the GPU), so a forward's GPU time follows
the host's seconds per launch. The twin takes one rate per stage role ("fwd@first|middle|last"),
the median over every clean forward of the fitting split (calibration.pipeline.host_rates), all
schedules pooled. This module gives the same solved rates grouped by configuration and stage role,
so a reader can see how far one configuration's forwards ran from the pooled rate its prediction
takes (on 4xH200's s15rank round_a at 4 micro-batches: DualPipe's first stage 18.0 us a launch,
DualPipeV's 26.3, the pooled 24.1). Diagnostic only: validation does not use it.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from calibration import pipeline as pipe
from calibration.predict import gpu_spec
from twin.core.schedules import build_schedule


def clean_forwards(folder: Path) -> pd.DataFrame:
    """The fitting split's pipeline forwards (pp > 1) that the host began issuing level with the GPU
    (lead <= HOST_CLEAN_LEAD_S): the ops host_rates solves its forward rates from."""
    h = pipe.host_marks(Path(folder))
    if h is None:
        return pd.DataFrame()
    h = h[(h["split"] == "fit") & (h["pp"] > 1) & (h["kind"] == "F")]
    return h[(h["start_s"] - h["host_start_s"]) <= pipe.HOST_CLEAN_LEAD_S]


def forward_rates(folder: Path, gpu: str, profile) -> pd.DataFrame:
    """One row per clean forward of a records folder's fitting split: its configuration (schedule,
    num_microbatches), timed step (rep), GPU rank, model stage, stage role, the stage's layer count and kernel
    launches, and the host seconds per launch solved for it (host_rate_s: solved_host_rate_s with
    the folder's device gap and carried EP host terms, as host_rates solves it; NaN where none)."""
    folder = Path(folder)
    profile = pipe.with_measured_collectives(profile, folder)
    accumulate = pipe.measured_accumulate(folder, gpu)
    gap = pipe.measured_device_gap_s(folder) or 0.0
    carried = (pipe.carried_ep_terms(folder, gpu, profile)
               if pipe.ADOPT_CARRIED_EP_HOST_TERMS and pipe.ADOPT_EP_HOST_TERMS else {})
    rows = []
    for key, g in clean_forwards(folder).groupby(list(pipe.CONFIG_KEYS)):
        cfg = dict(zip(pipe.CONFIG_KEYS, key))
        spec = pipe._spec_of({"model": cfg["model"], "num_layers": pipe._num_layers(folder, cfg)})
        pp, n = int(cfg["pp"]), int(cfg["num_microbatches"])
        schedule = build_schedule(pipe.SCHEDULE_NAMES[str(cfg["schedule"])], pp, n)
        stages = pipe.stage_layers(spec.num_layers, schedule.num_model_stages)
        forwards = {s: pipe.stage_ops(spec, layers, s == 0, s == len(stages) - 1, int(cfg["micro_batch_seqs"]),
                                      int(cfg["seq_len"]), str(cfg["precision"]), gpu_spec(gpu), profile,
                                      int(cfg["ep"]), (n - 1) / n, accumulate).of("F")
                    for s, layers in enumerate(stages)}
        for r in g.itertuples():
            stage = schedule.stage_of(int(r.rank) % pp, int(r.chunk))
            rate = pipe.solved_host_rate_s(forwards[stage], r.start_s - r.host_start_s,
                                           r.host_end_s - r.host_start_s, gap, carried)
            rows.append({"schedule": str(cfg["schedule"]), "num_microbatches": n, "rep": int(r.rep), "rank": int(r.rank),
                         "stage": stage, "role": pipe.stage_role(stage, len(stages)),
                         "num_layers": len(stages[stage]),
                         "launches": sum(1 for h, _ in forwards[stage] if h is not None),
                         "host_rate_s": np.nan if rate is None else rate})
    return pd.DataFrame(rows)


def rates_by_config(rates: pd.DataFrame) -> pd.DataFrame:
    """forward_rates' rows summarised per (role, schedule, num_microbatches): ops, layers, launches
    and the median rate, beside the role's pooled median over all configurations (the rate the twin
    takes, host_rates' "fwd@<role>") and the configuration's ratio to it."""
    rates = rates.dropna(subset=["host_rate_s"])
    out = (rates.groupby(["role", "schedule", "num_microbatches"])
           .agg(ops=("host_rate_s", "size"), num_layers=("num_layers", "first"),
                launches=("launches", "first"), host_rate_s=("host_rate_s", "median")).reset_index())
    pooled = rates.groupby("role")["host_rate_s"].median()
    out["pooled_rate_s"] = out["role"].map(pooled)
    out["ratio_to_pooled"] = out["host_rate_s"] / out["pooled_rate_s"]
    return out


def rates_by_step(rates: pd.DataFrame) -> pd.DataFrame:
    """forward_rates' rows as each GPU's median rate per timed step: one row per (schedule,
    num_microbatches, rep), one column per GPU rank (NaN where that GPU ran no clean forward in the
    step). On the 4xH200 ranking round the host's rate changes between ~15-19 and ~25-35 us a
    launch from one step to the next within a configuration, with each stage's two EP ranks
    together (they pace each other through the all-to-alls): docs/notes/s16dpv.md."""
    rates = rates.dropna(subset=["host_rate_s"])
    return (rates.groupby(["schedule", "num_microbatches", "rep", "rank"])["host_rate_s"].median()
            .unstack("rank"))
