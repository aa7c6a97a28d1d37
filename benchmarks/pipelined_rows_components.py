"""Figures (not a test): issue 14's pipelined rows, missing and meeting, taken apart side by side
(session s20tt, docs/notes/s20tt.md), to see what the rows the twin reads too fast share.

Per row (and the two torchtitan 70B TP 8 rows without PP, the one published A/B of a TP overlap):
- the step as `benchmarks/published_runs_breakdown.py` splits it: the busiest pipeline rank's
  compute, the idealised bubble (PP - 1) / (V M) of it, the exposed p2p hops, the memset and
  parameter all-gather wait, the rest of the pipeline (exposed TP/CP, uneven stages), the tail
  (DP/FSDP reduce-scatter after the last backward, optimizer);
- one middle block, one micro-batch: milliseconds and its share in GEMMs, the attention core,
  memory-bound kernels, full recomputation and exposed TP/CP communication;
- the TP overlap's credit: the step with plan.tp_comm_overlap flipped off, as a share of the step,
  and the error the row would read so (a diagnostic, never an input: the sources publish the
  overlap on every row that has it);
- `need`: the factor the twin's pipeline (everything before the tail) would have to grow by for
  the row to read its published figure, beside `credit`, the factor by which it grows when the
  overlap is off. Both only describe the rows; neither is fitted to anything.

Then (`--ops`) the same question at the level of one fused op, from our own async-TP records
(calibration/measurements/h100x2 and h100x4/async_tp.csv, s9tt and s10atp; torch 2.11, BF16, 700 W):
for each GEMM measured alone, with its collective in sequence and fused by torch's symmetric-memory
op, the share of the collective the fused op hides ((sequential - fused) / collective) and what it
costs beyond its own GEMM ((fused - mm - reduce) / collective), measured and as the twin costs it
(calibration.async_tp.predict_op). The TP2 all-gather rows' `mm` and `sequential` were timed on an
unfilled (zero) gathered buffer (s10atp), so their hidden share reads low and their excess high.

Usage: PYTHONPATH=. python benchmarks/pipelined_rows_components.py [--ops] [ROW_ID ...]   (about 10 s)
"""

from __future__ import annotations

import dataclasses
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

from published_runs_breakdown import block_rates, breakdown   # noqa: E402  (a sibling script)

from calibration import async_tp   # noqa: E402
from calibration.predict import gpu_spec   # noqa: E402
from calibration.published_runs import load_runs, predicted_metric, scenario_of   # noqa: E402
from twin.costs.profile import fitted_profile   # noqa: E402
from twin.training.step import simulate_step   # noqa: E402

# the pipelined rows of issue 14 (CP rows of the 8B model have no PP and are left out, as the brief
# says), and torchtitan's two 70B TP 8 rows: the same stack with and without async TP
ROWS = ("tt-70b-fsdp32-tp8", "tt-70b-fsdp32-tp8-async",
        "tt-405b-3d-1f1b", "tt-405b-3d-interleaved", "tt-405b-4d-cp1-32k", "tt-405b-4d-cp2-64k",
        "tt-405b-4d-cp4-128k", "tt-405b-4d-cp8-256k",
        "mlm-gpt-70b", "mlm-gpt-119b", "mlm-gpt-177b", "mlm-gpt-314b", "mlm-gpt-462b",
        "mlm-gpt-177b-strong-96", "mlm-gpt-177b-strong-4608",
        "l3-405b-8k-gpus16384", "l3-405b-128k-cp16")


def with_overlap_flipped(run) -> tuple[float, float]:
    """(step seconds, relative error) of the row with plan.tp_comm_overlap flipped."""
    sc = scenario_of(run)
    alt = dataclasses.replace(sc, plan=dataclasses.replace(sc.plan, tp_comm_overlap=not sc.plan.tp_comm_overlap))
    step = simulate_step(alt, record_events=False, check_memory=False)
    return step.step_time_s, predicted_metric(run, alt, step) / run.published - 1


def row_figures(run) -> dict:
    b = breakdown(run)
    blk = block_rates(run)
    sc = scenario_of(run)
    step_s, tail_s = b["step_s"], b["tail_s"]
    err = b["predicted"] / b["published"] - 1
    # every metric is per token of the step (tokens/s or TFLOP/s of a fixed count): step ~ 1 / metric
    published_step_s = step_s * (1 + err)
    flipped_s, flipped_err = with_overlap_flipped(run)
    overhead_s = step_s - b["busiest_compute_s"]
    return {
        "id": run.id, "tp": sc.plan.tp, "pp": b["pp"], "v": b["v"], "m": b["m"],
        "overlap": sc.plan.tp_overlap_kind if sc.plan.tp_comm_overlap else "none",
        "err": err, "step_s": step_s,
        "compute": b["busiest_compute_s"] / step_s, "bubble": b["ideal_bubble_s"] / step_s,
        "p2p": b["p2p_s"] / step_s, "gather": b["gather_s"] / step_s, "rest": b["rest_s"] / step_s,
        "tail": tail_s / step_s, "overhead": overhead_s / step_s,
        "block_ms": blk["block_s"] * 1e3,
        "gemm": blk["gemm_s"] / blk["block_s"], "attn": blk["attn_s"] / blk["block_s"],
        "mem": blk["memory_s"] / blk["block_s"], "recompute": blk["recompute_s"] / blk["block_s"],
        "tp_exposed": blk["tp_exposed_s"] / blk["block_s"], "cp_exposed": blk["cp_exposed_s"] / blk["block_s"],
        "flip_step_s": flipped_s, "flip_err": flipped_err,
        "credit": (flipped_s - tail_s) / (step_s - tail_s) if sc.plan.tp_comm_overlap else None,
        "need": (published_step_s - tail_s) / (step_s - tail_s),
    }


def fused_op_shares(gpu: str = "h100") -> list[dict]:
    """Per measured fused op (TP2 and TP4 records): the collective's share hidden and the fused op's
    cost beyond its GEMM (and the reduce-scatter's partial-sum reduction), measured and in the twin."""
    spec, profile = gpu_spec(gpu), fitted_profile(gpu)
    out = []
    for gpus in (2, 4):
        recs = async_tp.load(gpu, gpus=gpus)
        recs = recs[recs["status"] == "ok"]
        for (tag, kind), g in recs.groupby(["shape_tag", "kind"], sort=False):
            t = {r.op: float(r.time_s) for r in g.itertuples(index=False)}
            if not {"mm", "collective", "sequential", "fused"} <= set(t):
                continue
            r0 = g.iloc[0]
            m, n, k, w = int(r0["m"]), int(r0["n"]), int(r0["k"]), int(r0["world_size"])
            twin = {op: async_tp.predict_op(kind, op, m, n, k, w, spec, profile)
                    for op in ("mm", "collective", "sequential", "fused", "reduce")}
            reduce_meas = t.get("reduce", twin["reduce"]) if kind == "reduce_scatter" else 0.0
            reduce_twin = twin["reduce"] if kind == "reduce_scatter" else 0.0
            out.append({"tag": tag, "kind": kind, "tp": w, "split": r0["split"],
                        "hidden_meas": (t["sequential"] - t["fused"]) / t["collective"],
                        "hidden_twin": (twin["sequential"] - twin["fused"]) / twin["collective"],
                        "excess_meas": (t["fused"] - t["mm"] - reduce_meas) / t["collective"],
                        "excess_twin": (twin["fused"] - twin["mm"] - reduce_twin) / twin["collective"],
                        "fused_err": twin["fused"] / t["fused"] - 1, "mm_err": twin["mm"] / t["mm"] - 1})
    return out


def show_fused_ops() -> None:
    print("| op (shape, kind) | TP | split | collective hidden: measured / twin | fused beyond its GEMM, of the "
          "collective: measured / twin | twin error: fused / GEMM alone |")
    print("|---|---:|---|---|---|---|")
    for f in fused_op_shares():
        print(f"| {f['tag']} {f['kind']} | {f['tp']} | {f['split']} | {f['hidden_meas']:.2f} / {f['hidden_twin']:.2f} | "
              f"{f['excess_meas']:.2f} / {f['excess_twin']:.2f} | {f['fused_err']:+.1%} / {f['mm_err']:+.1%} |")


def pct(x: float | None) -> str:
    return "-" if x is None else f"{x:+.1%}"


def main(argv: list[str]) -> int:
    if "--ops" in argv:
        show_fused_ops()
        return 0
    runs = {r.id: r for r in load_runs()[0]}
    wanted = argv or list(ROWS)
    print("| row | TP/PP/V/M | TP overlap | error | step s | busiest compute | bubble (PP-1)/(VM) | p2p | "
          "gather wait | rest | tail | block ms (GEMM / attn / mem / recompute / TP exp. / CP exp.) | "
          "error, overlap flipped | need | credit |")
    print("|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|")
    for rid in wanted:
        f = row_figures(runs[rid])
        credit = "-" if f["credit"] is None else f"{f['credit']:.3f}"
        print(f"| {f['id']} | {f['tp']}/{f['pp']}/{f['v']}/{f['m']} | {f['overlap']} | {pct(f['err'])} | "
              f"{f['step_s']:.3f} | {f['compute']:.1%} | {f['bubble']:.1%} | {f['p2p']:.1%} | {f['gather']:.1%} | "
              f"{f['rest']:.1%} | {f['tail']:.1%} | {f['block_ms']:.2f} ({f['gemm']:.0%} / {f['attn']:.0%} / "
              f"{f['mem']:.0%} / {f['recompute']:.0%} / {f['tp_exposed']:.1%} / {f['cp_exposed']:.0%}) | "
              f"{pct(f['flip_err'])} | {f['need']:.3f} | {credit} |")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
