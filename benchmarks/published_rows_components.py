"""Figures (not a test): every published row of issue 14 taken apart by component, side by side, to
look for a cost the rows the twin reads too fast share and the rows within 10% lack (session s22tt,
docs/notes/s22tt.md).

Per row (one simulated step, the busiest pipeline rank; nothing here is fitted or fed back):
- the published step (tokens a GPU trains per step over the published per-GPU rate) and the twin's;
- the busiest rank's compute split by kernel class in the proportions of one middle block and
  micro-batch as the twin costs it (forward, the full-AC recomputed forward where the plan has it,
  both backward passes): GEMMs, the attention core, memory-bound kernels (norms, RoPE, SwiGLU, casts,
  merges), and what a TP overlap runs on the compute stream (chunk GEMMs, copies, partial sums);
- the pipeline's overhead beyond that compute (bubble, p2p, exposed TP/CP waits, uneven chunks:
  makespan - busiest compute) and the tail after the pipeline (DP/FSDP reduce-scatter, optimizer);
- the power-cap clock's cost on a capped card (torchtitan's 500 W H100s): the step with the card's
  clock_frac and attention clock factors set to 1 (the 700 W burst-derived curves alone) against the
  twin's, as a share of the twin's step;
- flags of what each row runs: power limit, GEMM precision and FP8 recipe, recomputation, TP overlap
  kind, CP degree, sequence length.

Then, over the evaluated rows, the rank correlation (Spearman) of the signed error with each share and
flag, and the medians of each share over the rows beyond +10% against the rows within 10%.

Usage: PYTHONPATH=. python benchmarks/published_rows_components.py [--csv FILE]   (about 30 s)
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import statistics

from calibration.published_runs import load_runs, predicted_metric, scenario_of
from twin.core import specs
from twin.core.errors import InfeasiblePlan
from twin.costs import compute
from twin.costs.flops import GEMM_KINDS, OpKind
from twin.training import step as step_module
from twin.training.results import Perturb
from twin.training.step import _prepare, simulate_step


def block_kind_s(sc) -> dict:
    """{kernel class: seconds} of one middle block and micro-batch on the compute stream."""
    _, costs, profile, *_ = _prepare(sc, None, Perturb(), False)
    ops = costs.blocks[len(costs.blocks) // 2].ops
    prec, gpu = sc.plan.gemm_precision, sc.gpu
    passes = ["fwd", "bwd_input", "bwd_weight"] + (["fwd"] if sc.plan.recompute == "full" else [])
    out = {"gemm": 0.0, "attention": 0.0, "memory": 0.0}
    for phase in passes:
        for op in ops:
            t = compute.op_time_s(op, phase, prec, gpu, profile, costs.sm_frac)
            if op.kind in GEMM_KINDS:
                out["gemm"] += t
            elif op.kind == OpKind.ATTENTION:
                out["attention"] += t
            else:
                out["memory"] += t
    tasks = [*costs._forward_tasks(ops), *costs._backward_tasks(ops, True)]
    out["tp_overlap_compute"] = sum(t.duration_s for t in tasks if t.stream == "compute" and t.name.startswith("tp_"))
    return out


@contextlib.contextmanager
def unclocked(gpu_name: str):
    """The loaded catalog's card without its power-limit clock (clock_frac 1, no attention factors),
    for this process only, restored after (as benchmarks/published_runs_power_law.py swaps it)."""
    row = specs._catalog("hardware.toml")["gpus"][gpu_name]
    saved = dict(row)
    row["clock_frac"] = 1.0
    row.pop("attention_clock_frac", None)
    row.pop("attention_clock_fracs", None)
    try:
        yield
    finally:
        row.clear()
        row.update(saved)


def row_components(run) -> dict | None:
    sc = scenario_of(run)
    try:
        step = simulate_step(sc, record_events=False)
    except InfeasiblePlan:
        return None
    pipe = step.pipeline
    busiest_s = max(pipe.busy_s)
    kinds = block_kind_s(sc)
    total = sum(kinds.values())
    tokens_per_gpu = step.tokens_per_step / step.num_gpus
    predicted = predicted_metric(run, sc, step)
    published_step_s = step.step_time_s * predicted / run.published
    row = {"id": run.id, "error": predicted / run.published - 1, "step_s": step.step_time_s,
           "published_step_s": published_step_s, "tokens_per_gpu": tokens_per_gpu}
    for k, s in kinds.items():
        row[f"{k}_frac"] = busiest_s * s / total / step.step_time_s
    row["pipeline_overhead_frac"] = (pipe.makespan_s - busiest_s) / step.step_time_s
    row["tail_frac"] = (step.step_time_s - pipe.makespan_s) / step.step_time_s
    row["exposed_comm_frac"] = step.exposed_comm_frac * pipe.makespan_s / step.step_time_s
    if sc.gpu.clock_frac < 1.0 or sc.gpu.attention_clock_fracs or sc.gpu.attention_clock_frac:
        with unclocked(sc.cluster.gpu):
            step_module._PREPARED.clear()   # the step cache is keyed by the scenario, not the catalog
            free = simulate_step(scenario_of(run), record_events=False, check_memory=False)
        step_module._PREPARED.clear()
        row["power_cap_frac"] = 1.0 - free.step_time_s / step.step_time_s
    else:
        row["power_cap_frac"] = 0.0
    p = sc.plan
    row.update({"limit_500w": float(getattr(sc.gpu, "power_limit_w", 0) or 0) == 500.0,
                "fp8": p.gemm_precision == "fp8", "full_ac": p.recompute == "full",
                "tp_overlap": bool(p.tp_comm_overlap) and p.tp > 1, "tp": p.tp, "pp": p.pp, "cp": p.cp,
                "seq_len": run.seq_len})
    return row


def spearman(xs, ys) -> float:
    def ranks(v):
        order = sorted(range(len(v)), key=lambda i: v[i])
        r = [0.0] * len(v)
        i = 0
        while i < len(v):
            j = i
            while j + 1 < len(v) and v[order[j + 1]] == v[order[i]]:
                j += 1
            for k in range(i, j + 1):
                r[order[k]] = (i + j) / 2
            i = j + 1
        return r
    rx, ry = ranks(xs), ranks(ys)
    mx, my = statistics.fmean(rx), statistics.fmean(ry)
    num = sum((a - mx) * (b - my) for a, b in zip(rx, ry))
    den = (sum((a - mx) ** 2 for a in rx) * sum((b - my) ** 2 for b in ry)) ** 0.5
    return num / den if den else 0.0


SHARES = ("gemm_frac", "attention_frac", "memory_frac", "tp_overlap_compute_frac", "pipeline_overhead_frac",
          "tail_frac", "exposed_comm_frac", "power_cap_frac")
FLAGS = ("limit_500w", "fp8", "full_ac", "tp_overlap")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--csv", help="write the per-row table here")
    args = ap.parse_args(argv)
    rows = [r for r in (row_components(run) for run in load_runs()[0]) if r is not None]
    head = ("row", "err", "step", "pub", "gemm", "attn", "mem", "tpov", "pipe", "tail", "xcomm", "cap", "flags")
    print("shares of the twin's step (busiest rank); step and published step in s")
    print(f"{head[0]:26s}" + "".join(f"{h:>7s}" for h in head[1:-1]) + "  flags")
    for r in sorted(rows, key=lambda r: -r["error"]):
        flags = " ".join(f for f in FLAGS if r[f]) + f" tp{r['tp']} pp{r['pp']} cp{r['cp']} s{r['seq_len'] // 1024}k"
        print(f"{r['id']:26s}{r['error']:+7.1%}{r['step_s']:7.2f}{r['published_step_s']:7.2f}"
              + "".join(f"{r[k]:7.1%}" for k in SHARES) + "  " + flags)
    errors = [r["error"] for r in rows]
    print("\nSpearman rank correlation of the signed error with each share or flag:")
    for k in (*SHARES, *FLAGS):
        print(f"  {k:26s} {spearman([float(r[k]) for r in rows], errors):+.2f}")
    fast = [r for r in rows if r["error"] > 0.10]
    within = [r for r in rows if abs(r["error"]) <= 0.10]
    print(f"\nmedian share: {len(fast)} rows beyond +10% against {len(within)} rows within 10%")
    for k in SHARES:
        print(f"  {k:26s} {statistics.median(r[k] for r in fast):7.1%} {statistics.median(r[k] for r in within):7.1%}")
    for k in FLAGS:
        print(f"  {k:26s} {sum(r[k] for r in fast):3d} of {len(fast):2d}   {sum(r[k] for r in within):3d} of {len(within):2d}")
    if args.csv:
        with open(args.csv, "w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)


if __name__ == "__main__":
    main()
