"""A call's host seconds are a per-kernel rate plus a per-call constant (issue 13, session s23hrate; the rule:
docs/notes/s23hrate_rule.md, committed before any held-out figure under it).

The step-input twin (calibration.step_host, ADOPT_STEP_HOST_INPUT) prices every op of a prefill / decode step at
the run's fitting ratio x the step's probe: the ratio is the median over the fitting repetitions (one MoE or MLA
layer call, 30-170 kernels) of host seconds / kernels / probe. Those layer calls do not cost the same per kernel:
the fitting repetitions pooled over every committed host_steps run (s21host2 and its repeat, s21host2b, s22host,
s22host2: ~600 repetitions, six layer configurations) read, in units of the run's ratio x probe,
    host seconds / (ratio x probe) ~= RATE_PER_KERNEL x kernels + CALL_KERNELS
with a least-squares fit: 0.80 per kernel plus ~15 kernel-equivalents per call (the MLA BF16 layer's 30 kernels
cost ~36, the FP8 MoE layer's 168 cost ~138). A whole step is one call of 100-1200 kernels, so it pays the
constant once: its host time per kernel is ratio x probe x (RATE_PER_KERNEL + CALL_KERNELS / kernels), below the
ratio's for a long step (llama3-8b's ~1000 ops: x0.82) and near it for a short one (x0.95 at 100 ops). The term
needs only the step's op count, which the twin has (whole_step.prefill_ops / decode_ops); nothing of a held-out
record enters it.

ADOPT_OP_HOST_RATE (default off): the step-input twin's host time per kernel of a record times that factor.
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import pandas as pd

from calibration import entry
from calibration import records as rec
from calibration import step_host, step_protocol
from calibration.layer_gaps import net_kernels, radix_kernels_of_rows, radix_sort_kernels
from calibration.predict import gpu_spec
from calibration.records_io import csv_exists, read_csv
from calibration.validate import load_fitted_profile
from calibration.whole_step import decode_cache_lens, decode_ops, prefill_ops
from twin.core.specs import get_model

# (s23hrate) the step-input host time per kernel of a record is the run's ratio x probe x call_factor(its ops)
ADOPT_OP_HOST_RATE = False
# the committed host_steps runs whose fitting repetitions fit the per-call term (every such run at the rule's
# commit; the s23hrate fresh run is not among them: its figures are predicted with these coefficients)
FIT_RUNS = (("h100", "s21host2"), ("h100", "s21host2_repeat"), ("h200", "s21host2"), ("h200", "s21host2_repeat"),
            ("h100", "s21host2b_2119"), ("h100", "s21host2b_2120"), ("h200", "s21host2b_2121"),
            ("h100", "s22host"), ("h200", "s22host"), ("h100", "s22host2"), ("h200", "s22host2"))


def fitting_reps(host_dispatch: pd.DataFrame, steps: pd.DataFrame, gpu: str, radix: dict | None = None) -> pd.DataFrame:
    """The run's fitting repetitions (host_dispatch `infer` rows of split fit, their probed serve_steps rows) with
    `net` (kernels as step_host.fit_step_ratio counts them) and `host_over_ratio_probe` (rep host_s / (the run's
    ratio x the rep's probe))."""
    radix = radix_sort_kernels(gpu, rec.records_root()) if radix is None else radix   # the records root in use
    hd = host_dispatch.assign(net=net_kernels(host_dispatch)
                              - (radix_kernels_of_rows(host_dispatch, radix) if radix else 0.0))
    hd = hd[(hd["split"] == "fit") & (hd["phase"] == "infer") & (hd["net"] > 0)][step_host.LAYER_KEY + ["net"]]
    reps = steps[(steps["bench"] == "host_dispatch") & (steps["block"] == "probed")][
        step_host.LAYER_KEY + ["host_s", "host_probe_launch_s"]]
    rows = reps.merge(hd, on=step_host.LAYER_KEY, how="inner")
    rows = rows[(rows["host_probe_launch_s"] > 0) & (rows["host_s"] > 0)].copy()
    ratio = step_host.fit_step_ratio(host_dispatch, steps, gpu, radix)
    rows["host_over_ratio_probe"] = rows["host_s"] / (ratio * rows["host_probe_launch_s"])
    return rows


def fit_call_term(reps: pd.DataFrame) -> tuple[float, float]:
    """(rate per kernel, kernel-equivalents per call): least squares of host_over_ratio_probe on net kernels with
    an intercept, over the pooled repetitions."""
    x = reps["net"].to_numpy(float)
    y = reps["host_over_ratio_probe"].to_numpy(float)
    rate, call = np.linalg.lstsq(np.c_[x, np.ones_like(x)], y, rcond=None)[0]
    return float(rate), float(call)


def call_term(root: Path | str | None = None, runs: tuple = FIT_RUNS) -> tuple[float, float]:
    """fit_call_term over the fitting repetitions of `runs` (those committed) under `root` (default the records
    root in use, calibration.records.records_root)."""
    return _call_term(_resolved(root), runs)


def _resolved(root: Path | str | None) -> str:
    """The cached readers' key: the records root named, else the one in use, resolved."""
    return str(Path(rec.records_root() if root is None else root).resolve())


@functools.lru_cache(maxsize=None)
def _call_term(root: str, runs: tuple) -> tuple[float, float]:
    frames = []
    for gpu, sub in runs:
        folder = Path(root) / gpu / sub
        if csv_exists(folder / "host_dispatch.csv") and csv_exists(folder / "serve_steps.csv"):
            frames.append(fitting_reps(read_csv(folder / "host_dispatch.csv"), read_csv(folder / "serve_steps.csv"), gpu))
    return fit_call_term(pd.concat(frames, ignore_index=True))


def call_factor(ops: int, rate_per_kernel: float, call_kernels: float) -> float:
    """A call of `ops` kernels: its host time per kernel over the fitting ratio's (rate + call / ops).
    E.g. rate 0.80, call 15.3: 100 ops -> 0.953, 1000 ops -> 0.815."""
    return rate_per_kernel + call_kernels / ops


def step_ops(row, gpu: str, profile) -> int:
    """The twin's op count of a prefill record's step, or of a decode record's first timed step."""
    spec, B = get_model(row["model"]), int(row["batch"])
    if row["bench"] == "prefill":
        return len(prefill_ops(spec, B, int(row["prompt_len"]), gpu_spec(gpu), profile).ops)
    first = decode_cache_lens(int(row["prompt_len"]), int(row["gen_len"]))[0]
    return len(decode_ops(spec, B, first, gpu_spec(gpu), profile).ops)


def record_factor(row, gpu: str, profile, term: tuple[float, float] | None = None) -> float:
    """call_factor of a record's step (1.0 with the switch off and no `term` given)."""
    if term is None:
        if not ADOPT_OP_HOST_RATE:
            return 1.0
        term = call_term()
    return call_factor(step_ops(row, gpu, profile), *term)


# (s23hrate, candidate 2; docs/notes/s23hrate_rule.md "Candidate 2") the step-input host time per kernel of a record
# is the GPU type's pooled ratio (pooled_ratio: every FIT_RUNS fitting repetition of that GPU) x the step's probe,
# instead of its own run's ratio (six layer configurations whose per-kernel costs differ by +-20%: the median of one
# run's repetitions moves with which configuration sits in the middle, 2.04-2.43 over the 11 runs)
ADOPT_POOLED_RATIO = False


def pooled_ratio(gpu: str, root: Path | str | None = None, runs: tuple = FIT_RUNS) -> float:
    """The median over every fitting repetition of `gpu`'s runs among `runs` of host_s / net kernels / probe (under
    `root`, default the records root in use)."""
    return _pooled_ratio(gpu, _resolved(root), runs)


@functools.lru_cache(maxsize=None)
def _pooled_ratio(gpu: str, root: str, runs: tuple) -> float:
    frames = []
    for g, sub in runs:
        folder = Path(root) / g / sub
        if g == gpu and csv_exists(folder / "host_dispatch.csv") and csv_exists(folder / "serve_steps.csv"):
            frames.append(fitting_reps(read_csv(folder / "host_dispatch.csv"), read_csv(folder / "serve_steps.csv"), g))
    reps = pd.concat(frames, ignore_index=True)
    return float((reps["host_s"] / reps["net"] / reps["host_probe_launch_s"]).median())


def run_ratio(gpu: str, run_ratio_s: float) -> float:
    """The ratio a run's step-input host time uses: the pooled one under ADOPT_POOLED_RATIO, else the run's own."""
    return pooled_ratio(gpu) if ADOPT_POOLED_RATIO else run_ratio_s


def step_rate_per_twin_op(runs: tuple = FIT_RUNS, root: Path | None = None) -> pd.DataFrame:
    """Diagnostic (docs/notes/s23hrate_rule.md, reported, not judged): per decode record of the host_steps runs, the
    probed steps' median host seconds over (twin ops x the run's ratio x the steps' median probe) (`per_twin_op`: what
    the step-input twin's host sum misses, 1 = exact) beside the same per profiled kernel (`per_kernel`, step_protocol.
    host_rate_over_probe's quantity). Columns: run, model, batch, prompt_len, kernels, twin_ops, per_kernel,
    per_twin_op."""
    root = rec.records_root() if root is None else root
    out, profiles = [], {}
    for gpu, sub, r, kernels, s, ratio in step_protocol.decode_records(runs, root):
        if gpu not in profiles:
            profiles[gpu] = load_fitted_profile(gpu, rec.load_records(gpu, root))[0]
        host = float(s["host_s"].astype(float).median()) / (ratio * float(s["host_probe_launch_s"].astype(float).median()))
        ops = step_ops(r, gpu, profiles[gpu])
        out.append({"run": f"{gpu} {sub}", "model": r["model"], "batch": int(r["batch"]),
                    "prompt_len": int(r["prompt_len"]), "kernels": kernels, "twin_ops": ops,
                    "per_kernel": host / kernels, "per_twin_op": host / ops})
    return pd.DataFrame(out)


@entry.script
def main(argv: list[str] | None = None) -> None:
    entry.parser("calibration.op_host_rate", __doc__).parse_args(argv)
    rows = step_rate_per_twin_op(root=rec.records_root())
    print(rows.groupby("model")[["kernels", "twin_ops", "per_kernel", "per_twin_op"]].median().to_string(
        float_format=lambda x: f"{x:.3g}"))
    print(rows.pivot_table(index="run", columns="model", values="per_twin_op", aggfunc="median").to_string(
        float_format=lambda x: f"{x:.2f}"))


if __name__ == "__main__":
    main()
