"""The twin's training cost path against one measured torchtitan Llama-3.1-8B block at 32K positions
a rank (issue 14, session s18tt).

Campaign s17cp (real/bench/cp_block.py; records calibration/measurements/h200x4/cp_block/, split fit
at CP1 and CP2, held out at CP4) timed one compiled, fully checkpointed Llama-3.1-8B
TransformerBlock as torchtitan 9dec370 runs its Table 2 rows (full AC inside torch.compile, flash
SDPA, PyTorch's all-gather CP), BF16 linears, 32K positions a rank at CP1 / CP2 / CP4, with every
rank's kernels per phase (forward; backward with the recomputed forward in it). Campaign s18tt
(records calibration/measurements/h100/cp_block/, fit) timed the same block at CP1 on one H100,
compiled and eager, with BF16 linears and eager with real.fp8's tensorwise Float8 linears
(torchao's recipe; its compiled Float8 record, which ran no FA2 backward, kept apart in
s18tt_fp8_compiled_incomplete/ and flagged incomplete).

Here each record is predicted by the same functions that cost a block of the published torchtitan
rows (twin.training.step.StepCosts: its forward tasks, then its backward tasks with the full-AC
recomputation, the CP merges and the exposed CP collectives), for the scenario the record ran:
tt-8b-cp1-32k's plan (calibration/data/published_runs.toml, torchtitan's plan_defaults) with the
record's linears (BF16, or tensorwise FP8), compiled or eager as the record ran, cp ranks of one
node, one sequence of cp x 32K positions, no FSDP. The profile is the GPU's fitted one (burst clocks: a record is ~1 s of load,
as calibration.predict predicts every record), or with `sustained` the one a training step runs
(load_profile: sustained-load curves).

Per record: the block's step (twin: the sum of the block's forward and backward tasks, its chain
being serial; measured: the slowest rank's CUDA-event time) and, per phase, the seconds by kernel
class: gemm, attention_fwd (flash forward calls; in the backward phase the recomputed forward's),
attention_bwd, elementwise (everything else on the compute stream: norms, RoPE, SwiGLU, repeat_kv,
casts, the CP merges) and comm (NCCL kernels; twin: the exposed CP communication). Measured classes
from the slowest rank's kernel table (the rank of the longest forward + backward span).

    python -m calibration.cp_block [--folder DIR] [--gpu h200|h100] [--sustained] [--json] [--fa2-in-block]
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pandas as pd

from calibration import entry
from calibration.dense_block import kernel_class, load as dense_load, op_class
from calibration.published_runs import load_runs
from calibration import records as rec
from calibration.records import MEASUREMENTS_DIR, records_root
from calibration.records_io import glob_csv, read_csv
from calibration.torch_cp import load_scaling
from twin.core.scenario import Scenario, from_dict
from twin.costs import compute
from twin.costs.flops import GEMM_KINDS
from twin.costs.profile import Profile, fitted_profile
from twin.training import step as step_mod
from twin.training.results import Perturb

BLOCK_DIR = MEASUREMENTS_DIR / "h200x4" / "cp_block"
ROW_ID = "tt-8b-cp1-32k"          # the published row whose plan the records ran (BF16, no FSDP)
LOCAL_LEN = 32768                 # positions a rank at every torchtitan 8B CP row
CLASSES = ("gemm", "attention_fwd", "attention_bwd", "elementwise", "comm")
PRECISIONS = ("bf16", "fp8-tensorwise")   # the records' linears (real/bench/cp_block.py `precision`)
PHASES = ("fwd", "bwd")
_FLASH_BWD = re.compile(r"flash_bwd|attention_backward", re.I)


def block_scenario(cp: int, gpu: str = "h200", local_len: int = LOCAL_LEN, precision: str = "bf16",
                   compiled: bool = True) -> Scenario:
    """The scenario a cp_block record ran: tt-8b-cp1-32k's plan with the record's linears (BF16,
    or 'fp8-tensorwise': torchao's recipe, the published row's), no FSDP (zero_stage 0), cp ranks
    (PyTorch's all-gather CP where cp > 1), one sequence of cp x local_len positions; the block
    compiled (plan.kernels 'fused_blocks', the row's) or eager (bench cp_block: 'eager')."""
    if precision not in PRECISIONS:
        raise ValueError(f"cp_block precision {precision!r}: one of {PRECISIONS}")
    run = next(r for r in load_runs()[0] if r.id == ROW_ID)
    plan = {k: v for k, v in run.plan.items() if k not in ("fp8_recipe", "cp", "cp_kind")}
    plan.update(gemm_precision="bf16", zero_stage=0, cp=cp)
    if precision == "fp8-tensorwise":
        plan.update(gemm_precision="fp8", fp8_recipe="tensorwise")
    if cp > 1:
        plan["cp_kind"] = "torch_allgather"
    if not compiled:
        plan["kernels"] = "eager"
    raw = {"name": f"cp-block-cp{cp}-{precision}{'' if compiled else '-eager'}", "model": {"name": run.model}, "cluster": {"gpu": gpu, "num_gpus": cp},
           "plan": plan, "workload": {"seq_len": cp * local_len, "global_batch_seqs": 1}}
    return from_dict(raw, f"calibration.cp_block:cp{cp}")


def _op_class(op, phase: str) -> str:
    """calibration.dense_block's class of a twin op, attention by direction (the recomputed forward's: fwd)."""
    cls = op_class(op)
    if cls == "attention":
        return "attention_fwd" if phase == "fwd" else "attention_bwd"
    return cls


def fp8_casts_s(costs, op, phase: str) -> float:
    """Seconds of the cast kernels twin.costs.compute.op_time_s folds into an FP8 GEMM op's time
    (fp8_cast_time_s; zero for a BF16 GEMM or any other op)."""
    if op.kind not in GEMM_KINDS or (op.precision or costs.sc.plan.gemm_precision) != "fp8":
        return 0.0
    return compute.fp8_cast_time_s(op, phase, costs.gpu, costs.profile)


def recomputed_ops(costs, ops) -> tuple:
    """The ops plan.recompute 'full' re-runs of a block (StepCosts._full_recompute_tasks): all of
    them, or inside compiled blocks under ADOPT_COMPILED_FULL_AC_TAIL those before the last GEMM
    of the block's last segment."""
    if not step_mod.ADOPT_COMPILED_FULL_AC_TAIL or costs.sc.plan.kernels != "fused_blocks":
        return tuple(ops)
    last_gemm = max(i for i, op in enumerate(ops) if op.kind in GEMM_KINDS)
    return tuple(ops[:last_gemm])


def twin_block_parts(sc: Scenario, profile: Profile | None = None) -> dict:
    """One block of `sc` as the training step costs it (StepCosts of twin.training.step._prepare):
    {"step_s", "fwd_s", "bwd_s", "fwd": {class: s}, "bwd": {class: s}, "fwd_merges_s", "bwd_merges_s"}.
    Classes from the block's
    ops (forward; recomputed forward + input and weight gradients), an FP8 GEMM's cast kernels as
    elementwise; the compute the tasks hold beyond the ops (the CP merges) counted as elementwise,
    the comm-stream tasks as comm."""
    _, costs, *_ = step_mod._prepare(sc, profile, Perturb(), False)
    ops = costs.blocks[0].ops
    fwd_tasks = costs._forward_tasks(ops)
    bwd_tasks = costs._backward_tasks(ops, True)
    passes = {"fwd": [(op, "fwd") for op in ops],
              "bwd": [(op, "fwd") for op in recomputed_ops(costs, ops)]
              + [(op, ph) for op in ops for ph in ("bwd_input", "bwd_weight")]}
    out = {"fwd_s": sum(t.duration_s for t in fwd_tasks), "bwd_s": sum(t.duration_s for t in bwd_tasks)}
    out["step_s"] = out["fwd_s"] + out["bwd_s"]
    for phase, tasks in (("fwd", fwd_tasks), ("bwd", bwd_tasks)):
        parts = dict.fromkeys(CLASSES, 0.0)
        for op, ph in passes[phase]:
            t = costs._compute_s([op], ph)
            casts = fp8_casts_s(costs, op, ph)   # an FP8 GEMM's cast kernels: elementwise ones
            parts[_op_class(op, ph)] += t - casts
            parts["elementwise"] += casts
        compute_s = sum(t.duration_s for t in tasks if t.stream == "compute")
        out[f"{phase}_merges_s"] = compute_s - sum(parts.values())   # the CP merges (none at CP1)
        parts["elementwise"] += out[f"{phase}_merges_s"]
        parts["comm"] = sum(t.duration_s for t in tasks if t.stream != "compute")
        out[phase] = parts
    return out


def measured_kernel_class(name: str) -> str:
    """A cp_block kernel's class: NCCL -> comm; inductor's fused kernels (triton_*, whatever aten
    ops their names list) -> elementwise; flash kernels by direction; else calibration.dense_block's
    class (GEMMs: nvjet / cuBLAS / CUTLASS)."""
    if name.startswith("nccl"):
        return "comm"
    if name.startswith("triton_"):
        return "elementwise"
    cls = kernel_class(name)
    if cls == "attention":
        return "attention_bwd" if _FLASH_BWD.search(name) else "attention_fwd"
    return cls


def load_records(folder: Path | str = BLOCK_DIR) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """(rows, kernels, timelines) of every CP degree's files in `folder`: the rows and kernels as
    calibration.torch_cp reads s10cp's files of the same families (load_scaling), the timelines beside."""
    rows, kernels = load_scaling(folder)
    timelines = pd.concat([read_csv(p) for p in glob_csv(folder, "torch_cp_timeline_cp*.csv")], ignore_index=True)
    return rows, kernels, timelines


def _of(df: pd.DataFrame, cp: int, precision: str, bench: str = "cp_block_compiled") -> pd.DataFrame:
    return df[(df["cp"] == cp) & (df["precision"] == precision) & (df["bench"] == bench)]


def slowest_rank(timeline: pd.DataFrame, cp: int, precision: str = "bf16", bench: str = "cp_block_compiled") -> int:
    """The rank of the longest forward + backward span at CP degree `cp`."""
    return int(_of(timeline, cp, precision, bench).groupby("rank")["span_s"].sum().idxmax())


def measured_parts(kernels: pd.DataFrame, cp: int, rank: int, precision: str = "bf16",
                   bench: str = "cp_block_compiled") -> dict:
    """{phase: {class: seconds}} of one rank's kernel table at CP degree `cp` (kernel sums a repetition)."""
    k = _of(kernels, cp, precision, bench)
    k = k[k["rank"] == rank]
    out = {phase: dict.fromkeys(CLASSES, 0.0) for phase in PHASES}
    for _, r in k.iterrows():
        out[r["phase"]][measured_kernel_class(str(r["kernel"]))] += float(r["time_s"])
    return out


def burst_profile(gpu: str) -> Profile:
    """The GPU's fitted profile (burst curves, as every record is predicted) under the stack a
    training step runs (load_profile's: fused FP8 casts, fp8_stack), without the sustained-load ratios."""
    return fitted_profile(gpu).as_stack(fp8_quant_fused=True)


def compare(folder: Path | str = BLOCK_DIR, gpu: str = "h200", sustained: bool = False) -> list[dict]:
    """Every record: measured and twin step, and per phase and class measured vs twin seconds."""
    rows, kernels, timeline = load_records(folder)
    profile = None if sustained else burst_profile(gpu)
    out = []
    for _, r in rows.sort_values(["bench", "precision", "cp"]).iterrows():
        cp, precision, bench = int(r["cp"]), str(r["precision"]), str(r["bench"])
        sc = block_scenario(cp, gpu, int(r["local_len"]), precision, compiled=bench == "cp_block_compiled")
        twin = twin_block_parts(sc, profile)
        rank = slowest_rank(timeline, cp, precision, bench)
        meas = measured_parts(kernels, cp, rank, precision, bench)
        t = _of(timeline, cp, precision, bench)
        spans = t[t["rank"] == rank].set_index("phase")["span_s"]
        out.append({"cp": cp, "precision": precision, "bench": bench, "split": r["split"], "rank": rank,
                    # a record is the block only if its backward ran FA2's backward (s18tt's first
                    # compiled Float8 record did not: inductor dropped the attention branch's gradient)
                    "complete": meas["bwd"]["attention_bwd"] > 0, "measured_s": float(r["time_s"]),
                    "twin_s": twin["step_s"], "rel_error": twin["step_s"] / float(r["time_s"]) - 1.0,
                    "measured_span_s": {p: float(spans[p]) for p in PHASES},
                    "twin_phase_s": {p: twin[f"{p}_s"] for p in PHASES},
                    "measured": meas, "twin": {p: twin[p] for p in PHASES}})
    return out


def fa2_in_block_over_alone(gpu: str, root: Path | str | None = None) -> pd.DataFrame:
    """FA2's kernel time inside the measured Llama blocks over the same calls timed alone, per
    direction (calibration/measurements/<gpu>/dense_block: block_fwd_bwd of the 8B block, flash,
    eager or compiled, against attn_fwd_bwd of the same batch and length, repeat_kv): the in-block
    speed the twin's FA2 curve (from kernels timed alone) does not see."""
    root = records_root() if root is None else root
    blocks, kernels = dense_load(gpu, root)
    k = kernels.assign(time_s=pd.to_numeric(kernels["time_s"]), cls=kernels["kernel"].map(measured_kernel_class))
    k = k[k["cls"].str.startswith("attention") & (k["sdpa_backend"] == "flash") & (k["model"] == "llama3.1-8b")]
    keys = ["batch", "seq_len", "cls"]
    alone = k[(k["bench"] == "attn_fwd_bwd") & (k["gqa"] == "repeat_kv")].groupby(keys)["time_s"].sum()
    inside = k[(k["bench"] == "block_fwd_bwd") & (k["block"] == "llama")].groupby(["compiled", *keys])["time_s"].sum()
    rows = [{"compiled": c, "batch": b, "seq_len": s_, "direction": cls.removeprefix("attention_"),
             "in_block_s": t, "alone_s": alone[(b, s_, cls)], "ratio": t / alone[(b, s_, cls)]}
            for (c, b, s_, cls), t in inside.items() if (b, s_, cls) in alone.index]
    return pd.DataFrame(rows)


def format_table(table: list[dict]) -> str:
    lines = []
    for t in table:
        lines.append(f"CP{t['cp']} {t['precision']} {t['bench']} ({t['split']}, rank {t['rank']})"
                     f"{'' if t['complete'] else ' INCOMPLETE (no FA2 backward)'}: measured {t['measured_s'] * 1e3:.1f} ms, "
                     f"twin {t['twin_s'] * 1e3:.1f} ms ({t['rel_error']:+.1%})")
        for p in PHASES:
            lines.append(f"  {p}: span {t['measured_span_s'][p] * 1e3:7.2f} ms, twin {t['twin_phase_s'][p] * 1e3:7.2f} ms")
            for c in CLASSES:
                m, w = t["measured"][p][c], t["twin"][p][c]
                err = f"{w / m - 1:+.1%}" if m > 0 else "-"
                lines.append(f"    {c:14} measured {m * 1e3:7.2f}  twin {w * 1e3:7.2f}  {err}")
    return "\n".join(lines)


@entry.script
def main(argv=None) -> int:
    ap = entry.JudgeParser(prog="python -m calibration.cp_block", description=__doc__.splitlines()[0])
    ap.add_argument("--folder", help="the cp_block records (default: <records root>/h200x4/cp_block)")
    ap.add_argument("--gpu", default="h200", help="the records' GPU (catalog and profile name: h100, h200)")
    ap.add_argument("--sustained", action="store_true", help="the training step's sustained-load profile")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--fa2-in-block", action="store_true", help="FA2 inside the dense_block records' blocks over alone")
    args = ap.parse_args(argv)
    if args.fa2_in_block:
        print(fa2_in_block_over_alone(args.gpu, rec.records_root()).to_string(index=False, float_format=lambda v: f"{v:.4g}"))
        return 0
    table = compare(args.folder or rec.records_root() / BLOCK_DIR.relative_to(MEASUREMENTS_DIR), args.gpu, args.sustained)
    print(json.dumps(table, indent=1) if args.json else format_table(table))
    return 0


if __name__ == "__main__":
    sys.exit(main())
