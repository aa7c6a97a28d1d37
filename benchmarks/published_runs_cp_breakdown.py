"""Figures (not a test): where the twin's step goes on torchtitan's Llama 3.1 8B CP rows (Table 2 of
benchmarks/llama3_h100_202412_torchtitan.md: 8 H100 at 500 W, local batch 1, full AC, compile +
Float8; FSDP 8/4/2/1 x CP 1/2/4/8 at 32K/64K/128K/256K), and what the published rows say per unit of
context-parallel work.

Per row, seconds of one step on a rank, by what runs (one block's ops costed by the twin's
StepCosts, times the layers; forward, its full-AC recomputation, backward):
  attention core (flash SDPA; per rank cp causal calls of S/cp positions: 1/cp of the causal work,
  the diagonal call and cp-1 non-causal calls of half the queries or half the keys, priced at the
  curve's efficiency at S/cp = 32K, as held-out records at that shape check: calibration.torch_cp),
  GEMMs (FP8 tensorwise, BF16 head), other compute (norms, RoPE, SwiGLU, casts, repeat_kv), the CP
  merges (FP32, fused by the compile), the CP collectives (K/V all-gather per forward pass, FP32
  dK/dV hand-overs in the backward; compiled: all exposed, and the backward's all-gather the
  recomputed forward's: s17cp part C), then the rest of the step (FSDP copies and
  exposed collectives, loss and head, optimizer) as the step's time less the blocks'.

Then the unit analysis: a rank holds 32K tokens at every CP degree and its attention work grows as
cp (cp calls of one causal 32K call's pairs), so a step is T(cp) = T(1) + (cp - 1) u plus the CP
overheads; u from row to row, twin against published, and the line through the published CP1 and
CP4 rows extended to CP2 and CP8.

With `--sustained FILE` (a sustained.csv with the flash rows of real/bench/cp_sustained.py,
campaign s11cp8b): a diagnostic, not the twin: each row with its attention calls at FlashAttention-2's
own measured factor under a 500 W limit (its burst/steady ratio at our limit times its clock under
500 W by calibration.power_cap's law; the mean over the three call shapes) in place of the twin's
(the profile's sustained attention ratio times the GEMM-derived clock_frac).

Usage: PYTHONPATH=. python benchmarks/published_runs_cp_breakdown.py [--sustained FILE]  (a few seconds)
"""

from __future__ import annotations

import argparse
from pathlib import Path

from calibration import power_cap
from calibration.published_runs import load_runs, predicted_metric, scenario_of
from twin.costs.flops import GEMM_KINDS, OpKind
from twin.training.results import Perturb
from twin.training.step import _prepare, simulate_step

ROWS = ("tt-8b-cp1-32k", "tt-8b-cp2-64k", "tt-8b-cp4-128k", "tt-8b-cp8-256k")


def block_parts_s(costs, recompute_full: bool) -> dict:
    """{part: seconds} of one block's ops on one rank (forward, recomputed forward, backward)."""
    ops = costs.blocks[0].ops
    passes = (("fwd", "fwd"), ("recompute", "fwd"), ("bwd", "bwd_input"), ("bwd", "bwd_weight"))
    parts = {"attn_core_fwd": 0.0, "attn_core_recompute": 0.0, "attn_core_bwd": 0.0, "gemm": 0.0, "other": 0.0}
    for label, phase in passes:
        if label == "recompute" and not recompute_full:
            continue
        for op in ops:
            t = costs._compute_s([op], phase)
            if op.kind == OpKind.ATTENTION:
                parts[f"attn_core_{label}"] += t
            elif op.kind in GEMM_KINDS:
                parts["gemm"] += t
            else:
                parts["other"] += t
    p = costs.sc.plan
    if p.cp > 1 and p.cp_kind == "torch_allgather":
        core = [op for op in ops if op.kind == OpKind.ATTENTION]
        fwd_core, bwd_core = costs._compute_s(core, "fwd"), costs._compute_s(core, "bwd_input")
        n_fwd = 2 if recompute_full else 1
        parts["cp_merges"] = n_fwd * costs._torch_cp_merge_s(False) + costs._torch_cp_merge_s(True)
        parts["cp_collectives"] = (n_fwd * costs._torch_cp_exposed_s(fwd_core, False)
                                   + costs._torch_cp_exposed_s(bwd_core, True))
    return parts


def breakdown(run) -> dict:
    sc = scenario_of(run)
    step = simulate_step(sc, record_events=False)
    _, costs, *_ = _prepare(sc, None, Perturb(), False)
    layers = sc.model.num_layers
    parts = {k: v * layers for k, v in block_parts_s(costs, sc.plan.recompute == "full").items()}
    parts["rest"] = step.step_time_s - sum(parts.values())
    tokens_per_gpu = step.tokens_per_step / step.num_gpus
    return {"id": run.id, "cp": sc.plan.cp, "published": run.published, "predicted": predicted_metric(run, sc, step),
            "step_s": step.step_time_s, "published_step_s": tokens_per_gpu / run.published, "parts_s": parts}


def unit_table(rows: list[dict]) -> list[dict]:
    """Per CP step from row to row: the step's growth per extra unit of attention work (a causal
    32K call's pairs per layer), twin and published."""
    out = []
    for a, b in zip(rows, rows[1:]):
        units = b["cp"] - a["cp"]
        out.append({"from": a["cp"], "to": b["cp"], "twin_s": (b["step_s"] - a["step_s"]) / units,
                    "published_s": (b["published_step_s"] - a["published_step_s"]) / units})
    return out


def published_line(rows: list[dict], through=(1, 4)) -> dict:
    """The published step at each CP degree on the line through two rows (default CP1 and CP4):
    {cp: (line step s, published step s)}."""
    by_cp = {r["cp"]: r["published_step_s"] for r in rows}
    (c0, c1) = through
    slope = (by_cp[c1] - by_cp[c0]) / (c1 - c0)
    return {cp: (by_cp[c0] + (cp - c0) * slope, t) for cp, t in sorted(by_cp.items())}


def fa2_factor(path: Path, limit_w: float = 500.0) -> float:
    """FlashAttention-2's time factor against its burst speed under `limit_w`, the mean over the
    flash attention rows of a sustained.csv (calibration.power_cap.kernel_power_table)."""
    rows = [r for r in power_cap.kernel_power_table(path, limit_w, power_cap.idle_power_w("h100"))
            if r["config"].startswith("attention flash")]
    if not rows:
        raise SystemExit(f"{path}: no 'attention flash' rows")
    return sum(r["factor"] for r in rows) / len(rows)


def with_attention_factor(row: dict, twin_factor: float, factor: float) -> float:
    """The row's step with its attention calls at `factor` instead of the twin's (analytic: the
    calls are on the compute stream's critical path; their time scales inversely with the factor)."""
    core = sum(v for k, v in row["parts_s"].items() if k.startswith("attn_core"))
    return row["step_s"] - core * (1.0 - twin_factor / factor)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--sustained", type=Path, help="a sustained.csv with FlashAttention-2 rows (campaign s11cp8b)")
    args = ap.parse_args(argv)
    runs = {r.id: r for r in load_runs()[0]}
    rows = [breakdown(runs[i]) for i in ROWS]
    names = list(rows[0]["parts_s"]) + [k for k in rows[-1]["parts_s"] if k not in rows[0]["parts_s"]]
    print("seconds of one step on a rank (twin), by what runs:")
    print(f"{'part':22s}" + "".join(f"{r['id']:>17s}" for r in rows))
    for k in names:
        print(f"{k:22s}" + "".join(f"{r['parts_s'].get(k, 0.0):17.2f}" for r in rows))
    print(f"{'step (twin)':22s}" + "".join(f"{r['step_s']:17.2f}" for r in rows))
    print(f"{'step (published)':22s}" + "".join(f"{r['published_step_s']:17.2f}" for r in rows))
    print(f"{'error (tokens/s)':22s}" + "".join(f"{r['predicted'] / r['published'] - 1:+17.1%}" for r in rows))
    attn = [sum(v for k, v in r["parts_s"].items() if k.startswith(("attn_core", "cp_"))) / r["step_s"] for r in rows]
    print(f"{'attention + CP share':22s}" + "".join(f"{a:17.0%}" for a in attn))
    print("\nstep growth per extra unit of attention work (one causal 32K call's pairs a layer, 32 layers):")
    for u in unit_table(rows):
        print(f"  CP{u['from']} -> CP{u['to']}: twin {u['twin_s']:.2f} s, published {u['published_s']:.2f} s "
              f"({u['published_s'] / u['twin_s']:.2f}x)")
    print("\npublished step on the line through the CP1 and CP4 rows:")
    for cp, (line, pub) in published_line(rows).items():
        print(f"  CP{cp}: line {line:6.2f} s, published {pub:6.2f} s ({pub / line - 1:+.1%})")
    if args.sustained:
        twin_f, fa2_f = power_cap.twin_attention_factor(), fa2_factor(args.sustained)
        print(f"\ndiagnostic: attention at FA2's measured 500 W factor {fa2_f:.3f} (the twin's {twin_f:.3f}):")
        for r in rows:
            step = with_attention_factor(r, twin_f, fa2_f)
            tokens = r["predicted"] * r["step_s"]   # tokens a GPU trains in a step
            print(f"  {r['id']}: step {step:.2f} s, error {tokens / step / r['published'] - 1:+.1%} "
                  f"(twin {r['predicted'] / r['published'] - 1:+.1%})")


if __name__ == "__main__":
    main()
