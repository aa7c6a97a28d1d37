"""Session s26start (issue 15): an eager prompt step's start and closing sync in the pipeline, every model alike
(twin.serving.timing.ADOPT_EAGER_START_SYNC; docs/notes/s26start_rule.md, committed before its fresh set existed).

Candidate S = round 1's P (docs/notes/s25v3pre_rule.md: the engine's prompt terms, whose attention core is priced per
head-layer, the pipeline, the refitted one-GPU tables with s24pipe's `eager_op_s`) for every model on the one-GPU
real.serve tables, plus
  1. the start: each layer's attention-core kernels issued from the layer's chunk operators (the engine issues its
     q/kv path, cache writes and decode attention first), so the GPU waits while the host reaches them;
  2. the closing sync: `sync_s`, the engine's host time outside the CUDA-event window (its scheduling before the first
     launch and the `.tolist()` return after the last kernel): the median over h100/s24eager/fit's fitting rows of
     duration_s - gpu_s at the table's reference host (host-scaled as every host term), the same seconds for the H200
     table's reference host (`sync_cost`).
Nothing else is fitted: the engine terms' constants, the refit and `eager_op_s` are round 1's and s24pipe's.

    python -m calibration.serve_start_sync fit      # the fitting steps (h100/s24eager/fit): committed, P, S
    python -m calibration.serve_start_sync idle     # the profiled prompt steps' GPU idle: measured against P and S
    python -m calibration.serve_start_sync loadhost # diagnosis: the load runs' eager host against S's host model
    python -m calibration.serve_start_sync [--no-committed] [--json PATH]   # the judgement (set H and the guards)
"""

from __future__ import annotations

import copy
import csv
import sys
from collections import defaultdict
from contextlib import ExitStack, contextmanager
from pathlib import Path
from unittest import mock

import numpy as np

from calibration import entry
from calibration import serve_judge_cli as cli
from calibration import records as rec
from calibration import serve_eager_host as seh
from calibration import serve_pipeline as spl
from calibration import serve_prefill_kernels as spk
from calibration import serve_prefill_kernels2 as spk2
from calibration import serve_switch_compare as ssc
from calibration.records_io import csv_exists, open_csv
from calibration.serve_load_validation import FIGURES, record_host_launch_s
from calibration.serve_pipeline import costs_for
from twin.core.specs import get_model, serve_engines
from twin.serving.timing import engine_costs
from twin.serving import timing
from twin.serving.pipeline import eager_ops, pipeline_end_s, stage_ops

NAME = "s26start"
CANDIDATES = ("P", "S")


def sync_cost(root: Path | str | None = None) -> dict[str, float]:
    """{one-GPU table: seconds of host outside the CUDA-event window of an eager step at its reference host}: the median
    over s24eager's fitting rows of (duration_s - gpu_s) / the row's host scale."""
    root = rec.records_root() if root is None else root
    rows = [r for r in seh.fit_rows(seh.read_fit(root)) if r.get("gpu_s") not in (None, "", "nan")]
    if not rows:
        raise ValueError("no s24eager fitting rows with gpu_s")
    return {t: float(np.median([(float(r["duration_s"]) - float(r["gpu_s"])) / timing.host_scale(engine_costs(t), seh.probe_s(r))
                                for r in rows])) for t in spl.ONE_GPU_TABLES}


HOST_FIT_TERMS = ("eager_op_s", "start_s_per_token", "start_s", "start_prompt_only_s")


def host_fit(root: Path | str | None = None) -> dict[str, dict[str, float]]:
    """{one-GPU table: {eager_op_s, start_s_per_token, start_s, start_prompt_only_s}}: the eager step's host (host_s,
    its start to its last launch, at the table's reference host) over s24eager's fitting rows as
    ops x eager_op_s + prompt tokens x start_s_per_token + start_s + start_prompt_only_s [no decode row], by
    non-negative least squares on relative residuals (every row alike), with its in-sample median |error|."""
    root = rec.records_root() if root is None else root
    rows = [r for r in seh.fit_rows(seh.read_fit(root)) if r.get("ops")]
    if not rows:
        raise ValueError("no s24eager fitting rows with operator counts")
    X = np.array([[float(r["ops"]), float(r["prompts"]) * float(r["tokens"]), 1.0, float(int(r["decode_rows"]) == 0)]
                  for r in rows])
    out = {}
    for t in spl.ONE_GPU_TABLES:
        y = np.array([seh.host_at_reference(r, engine_costs(t)) for r in rows])
        c = spk._relative_nnls(X, y)
        out[t] = {**dict(zip(HOST_FIT_TERMS, map(float, c))),
                  "fit_median_abs_rel_error": float(np.median(np.abs(X @ c / y - 1)))}
    return out


@contextmanager
def candidate_tables(candidate: str, refit: dict[str, dict], op_costs: dict[str, float], sync: dict[str, float],
                     host: dict[str, dict[str, float]]):
    """The one-GPU tables replaced (for the block) by round 1's refit with s24pipe's `eager_op_s` (P); S: with `sync_s`
    and the host fit's terms (its `eager_op_s` in place of s24pipe's)."""
    tables = serve_engines()
    saved = {t: tables[t] for t in refit}
    try:
        for t, terms in refit.items():
            v = copy.deepcopy(tables[t])
            v.pop(timing.ADOPTED_TERMS_KEY, None)   # the adopted terms (round 2's T) never under P or S
            v.update({k: x for k, x in terms.items() if k not in ("fit_median_abs_rel_error", "fit_iterations")})
            v["eager_op_s"] = op_costs[t]
            if candidate == "S":
                v["sync_s"] = sync[t]
                v.update({k: x for k, x in host[t].items() if k in HOST_FIT_TERMS})
            tables[t] = v
        yield tables
    finally:
        tables.update(saved)


def setting(candidate: str | None, refit: dict[str, dict] | None = None, op_costs: dict[str, float] | None = None,
            sync: dict[str, float] | None = None, host: dict[str, dict[str, float]] | None = None):
    """The committed twin (None: every switch off), round 1's P, or S (P with ADOPT_EAGER_START_SYNC and `sync_s`)."""
    if candidate not in (None, *CANDIDATES):
        raise ValueError(f"candidate must be one of {CANDIDATES} or None, got {candidate!r}")
    stack = ExitStack()
    on = candidate is not None
    stack.enter_context(mock.patch.object(timing, "ADOPT_ENGINE_PREFILL_KERNELS", on))
    stack.enter_context(mock.patch.object(timing, "ADOPT_EAGER_PIPELINE", on))
    stack.enter_context(mock.patch.object(timing, "ADOPT_EAGER_START_SYNC", candidate == "S"))
    stack.enter_context(mock.patch.object(timing, "ADOPT_ENGINE_PREFILL_BY_HEADS", False))
    stack.enter_context(mock.patch.object(timing, "ADOPT_HEAD_SCALED_SCORES", False))
    if on:
        stack.enter_context(candidate_tables(candidate, refit or spk.read_refit(), op_costs or spl.op_cost(),
                                             sync or sync_cost(), host or host_fit()))
    return stack


def step_s(costs, row: dict) -> tuple[float, float, float]:
    """(the iteration less its loop gap, the last launch, the kernels) of one fitting step as the candidate in force
    prices it (a fresh engine: decode rows at context 33, each prompt one chunk from its start)."""
    p, n, d = int(row["prompts"]), int(row["tokens"]), int(row["decode_rows"])
    ctx, pairs, chunks = (33.0 if d else 0.0), float(p * n * n), int(row["chunks"])
    total, _ = costs.iteration_s(d, ctx, float(p * n), float(n), ctx, chunks, pairs, 0.0)
    e = costs.engine
    kern, pre, _, b, _ = costs._kernels(d, ctx, float(p * n), float(n), ctx, 0.0, pairs)
    last = 0.0
    if e.get("eager_op_s", 0.0) > 0 and timing.ADOPT_EAGER_PIPELINE:
        ax, mx = costs.engine_terms_s(float(p * n), float(n), pairs, 0.0)
        core = costs.engine_core_part_s(float(p * n), float(n), pairs, 0.0) if timing.ADOPT_EAGER_START_SYNC else 0.0
        st = costs._pipeline_stages(b, ctx, float(p * n), float(n), chunks, kern - pre, pre - ax - mx, ax, mx, core)
        last = pipeline_end_s(st, e["eager_op_s"], costs.start_s(d, float(p * n)))[1]
    return total - e["loop_s"], last, kern


def fit_check(root: Path | str | None = None, table: str = "real-serve-h100-ep1") -> list[dict]:
    """Per fit model and composition of h100/s24eager/fit (rounds 1-3, medians): the measured step (duration_s) against
    the committed twin, P and S. Reported beside, never a criterion."""
    root = rec.records_root() if root is None else root
    root = Path(root)
    rows = [r for r in seh.fit_rows(seh.read_fit(root)) if r.get("ops")]
    refit, op_costs, sync, host = spk.read_refit(), spl.op_cost(root), sync_cost(root), host_fit(root)
    out = {}
    for cand in (None,) + CANDIDATES:
        with setting(cand, refit, op_costs, sync, host):
            for model in sorted({r["model"] for r in rows}):
                mine = [r for r in rows if r["model"] == model]
                costs = costs_for(model, mine[0], seh.probe_s(mine[0]), table, root)
                for comp in sorted({r["composition"] for r in mine}):
                    rs = [r for r in mine if r["composition"] == comp]
                    d = out.setdefault((model, comp), {"model": model, "composition": comp, **{
                        f"measured_{k}": float(np.median([float(r[k]) for r in rs]))
                        for k in ("duration_s", "gpu_s", "host_s")}})
                    d[f"{cand or 'off'}_s"] = step_s(costs, rs[0])[0]
    return list(out.values())


PROFILED_STEPS = (Path("h100") / "s24v3pre" / "prefill_steps.csv", Path("h100") / "s25v3pre" / "prefill" / "prefill_steps.csv")
PROFILED_KERNELS = (Path("h100") / "s24v3pre" / "prefill_kernels.csv", Path("h100") / "s25v3pre" / "prefill" / "prefill_kernels.csv")


def idle_check(root: Path | str | None = None, table: str = "real-serve-h100-ep1") -> list[dict]:
    """The profiled prompt-only steps (h100/s24v3pre, h100/s25v3pre part 1): the GPU idle inside the CUDA-event window
    (unprofiled gpu_s, median, less the profiled kernel sum) against the pipeline's (its step less its kernels and
    sync) under P and S, and the step (duration_s). Reported beside, never a criterion."""
    root = rec.records_root() if root is None else root
    root = Path(root)
    kern, reps, steps = defaultdict(float), defaultdict(set), defaultdict(list)
    for path in PROFILED_KERNELS:
        with open_csv(root / path) as f:
            for r in csv.DictReader(f):
                key = (r["model"], int(r["prompts"]), int(r["tokens"]))
                kern[key] += float(r["time_s"])
                reps[key].add(r["rep"])
    for path in PROFILED_STEPS:
        with open_csv(root / path) as f:
            steps_rows = [r for r in csv.DictReader(f) if r["profiled"] == "0"]
        for r in steps_rows:
            steps[(r["model"], int(r["prompts"]), int(r["tokens"]))].append(r)
    refit, op_costs, sync, host = spk.read_refit(), spl.op_cost(root), sync_cost(root), host_fit(root)
    base = seh.fit_rows(seh.read_fit(root))
    out = {}
    for cand in CANDIDATES:
        with setting(cand, refit, op_costs, sync, host):
            for key in sorted(steps):
                model, p, n = key
                probe_row = next(r for r in base if r["model"] == model)
                costs = costs_for(model, probe_row, 0.0, table, root)
                row = {"prompts": p, "tokens": n, "decode_rows": 0, "chunks": p}
                total, last, k = step_s(costs, row)
                d = out.setdefault(key, {"model": model, "prompts": p, "tokens": n,
                                         "kernels_s": kern[key] / len(reps[key]),
                                         "gpu_s": float(np.median([float(r["gpu_s"]) for r in steps[key]])),
                                         "duration_s": float(np.median([float(r["duration_s"]) for r in steps[key]]))})
                d[f"{cand}_s"] = total
                d[f"{cand}_kernels_s"] = k
    return list(out.values())


LOAD_HOST_SETS = ("s24eager", "s24pipe", "s25v3pre", "s25v3pre2", NAME)   # load sets whose iterations carry host_s


def load_host_check(root: Path | str | None = None) -> list[dict]:
    """Diagnosis (after the judgement; never a criterion, never a constant): inside the load runs of sets D-H, each
    eager iteration's measured host (host_s, the record's host probe undone to the table's reference host) over S's
    host model at the same operators, prompt tokens and decode rows (host_fit's terms, fitted on eagerhost's isolated
    steps), medians by folder and model for lone prompts (one chunk, no decode row) and for mixed steps; and the lone
    prompts' host outside the CUDA-event window (duration_s - gpu_s) against sync_s."""
    root = rec.records_root() if root is None else root
    import pandas as pd   # lazy: only this diagnosis reads the iteration records as frames
    root = Path(root)
    out = []
    for gpu in seh.GPUS:
        table = f"real-serve-{gpu}-ep1"
        h, sync = host_fit(root)[table], sync_cost(root)[table]
        for name in LOAD_HOST_SETS:
            for d in sorted((root / gpu / name).glob("*/")):
                model, ops = d.name, eager_ops(d.name)
                if ops is None or not csv_exists(d / "serve_load.csv"):
                    continue
                with open_csv(d / "serve_load.csv") as f:
                    scale = {r["run_id"]: timing.host_scale(engine_costs(table), record_host_launch_s(r))
                             for r in csv.DictReader(f)}
                with open_csv(d / "serve_iterations.csv") as f:
                    it = pd.read_csv(f)
                if "host_s" not in it:
                    continue
                it = it[(it.graph_batch == 0) & (it.idle == 0) & (it.prefill_seqs > 0) & it.run_id.isin(scale.keys())]
                m = get_model(model)

                def model_s(r):
                    pre, attn, ffn, head = stage_ops(ops, m, int(r.prefill_seqs), int(r.decode_seqs))
                    return ((pre + sum(attn) + sum(ffn) + head) * h["eager_op_s"] + h["start_s"]
                            + (h["start_prompt_only_s"] if r.decode_seqs == 0 else 0.0)
                            + h["start_s_per_token"] * r.prefill_tokens)
                ratio = [r.host_s / scale[r.run_id] / model_s(r) for r in it.itertuples()]
                lone = (it.prefill_seqs == 1) & (it.decode_seqs == 0)
                rl = [x for x, lo in zip(ratio, lone) if lo]
                rm = [x for x, lo in zip(ratio, lone) if not lo]
                outside = ((it.duration_s - it.gpu_s)[lone] / [scale[x] for x in it.run_id[lone]])
                out.append({"gpu": gpu, "set": name, "model": model, "lone_n": len(rl), "mixed_n": len(rm),
                            "lone_host_ratio": float(np.median(rl)) if rl else float("nan"),
                            "mixed_host_ratio": float(np.median(rm)) if rm else float("nan"),
                            "lone_outside_s": float(np.median(outside)) if len(outside) else float("nan"),
                            "sync_s": sync})
    return out


def _print_load_host(root: Path) -> None:
    print("load runs' eager host (at the reference host) over S's host model (eagerhost's isolated steps):")
    for r in load_host_check(root):
        print(f"  {r['gpu']} {r['set']:10s} {r['model']:20s} lone prompts {r['lone_host_ratio']:.2f} (n {r['lone_n']:3d}) "
              f"mixed {r['mixed_host_ratio']:.2f} (n {r['mixed_n']:3d})  lone duration - gpu_s "
              f"{r['lone_outside_s'] * 1e6:5.0f} us (sync_s {r['sync_s'] * 1e6:.0f})")


def _print_fit(root: Path) -> None:
    rows = fit_check(root)
    print(f"{'model':20s} {'composition':12s} {'meas ms':>8s} {'off':>7s} {'P':>7s} {'S':>7s}")
    for r in rows:
        print(f"{r['model']:20s} {r['composition']:12s} {r['measured_duration_s'] * 1e3:8.2f} "
              + " ".join(f"{r[f'{k}_s'] / r['measured_duration_s'] - 1:+7.1%}" for k in ("off", "P", "S")))
    for model in sorted({r["model"] for r in rows}):
        mine = [r for r in rows if r["model"] == model]
        print(f"  {model}: median error " + ", ".join(
            f"{k} {np.median([r[f'{k}_s'] / r['measured_duration_s'] - 1 for r in mine]):+.1%}" for k in ("off", "P", "S")))


def _print_idle(root: Path) -> None:
    for t, v in host_fit(root).items():
        print(f"host fit {t}: " + ", ".join(f"{k} {x * 1e6:.3f} us" if k != "fit_median_abs_rel_error" else f"{k} {x:.1%}"
                                            for k, x in v.items()))
    print("sync_s (duration - gpu_s at the reference host): "
          + ", ".join(f"{t} {v * 1e6:.1f} us" for t, v in sync_cost(root).items()))
    print(f"{'model':20s} {'comp':>8s} {'kern ms':>8s} {'gpu idle':>8s} {'P idle':>8s} {'S idle':>8s} {'dur ms':>8s} {'P':>7s} {'S':>7s}")
    for r in idle_check(root):
        print(f"{r['model']:20s} {r['prompts']}x{r['tokens']:<6d} {r['kernels_s'] * 1e3:8.2f} "
              f"{(r['gpu_s'] - r['kernels_s']) * 1e3:8.2f} {(r['P_s'] - r['P_kernels_s']) * 1e3:8.2f} "
              f"{(r['S_s'] - r['S_kernels_s']) * 1e3:8.2f} {r['duration_s'] * 1e3:8.2f} "
              f"{r['P_s'] / r['duration_s'] - 1:+7.1%} {r['S_s'] / r['duration_s'] - 1:+7.1%}")


# ---- the judgement (docs/notes/s26start_rule.md) ---------------------------------------------------------------

FRESH_MODELS = ("qwen2moe-mla-slice", "v2-lite-slice", "v3-slice-1l")   # set H (real/serve/plans.py S26H_PLANS)
FRESH_RUNS = 6
JUDGED = "S"
SET_MARGIN_CHECKS = 2       # K2: a seen set may lose at most this many checks
COMMITTED_MARGIN_CHECKS = 2  # K3: the committed held-out sets may lose at most this many checks
MEDIAN_MARGIN = 0.010        # K3: and their median |error| may rise by at most 1.0 percentage point
SEEN_FRESH = {"F": (spk.NAME, spk.FRESH_MODELS), "G": (spk2.NAME, spk2.FRESH_MODELS)}
GUARD_LABELS = {**spk.GUARD_LABELS, "F": (spk.NAME,), "G": (spk2.NAME,)}


def seen_rows(root: Path | str | None = None) -> list[dict]:
    """Sets A-G replayed under the setting in force (A-E as s25v3pre's guards; F, G on every card they ran on)."""
    root = rec.records_root() if root is None else root
    out = spk.guard_rows(root)
    for name, models in SEEN_FRESH.values():
        out.extend(seh.set_rows(name, models, root))
    return out


def fresh_criteria(off: list[dict], on: list[dict], runs: int = FRESH_RUNS, incomplete: tuple[str, ...] = (),
                   models=FRESH_MODELS) -> dict:
    """H1: more checks met and a lower median |error| over set H; H2: each model's runs no fewer checks met. Nothing
    is met with fewer than `runs` runs or any run incomplete."""
    a, b = seh.checks(off), seh.checks(on)
    per = {m: (seh.checks([r for r in off if r["model"] == m]), seh.checks([r for r in on if r["model"] == m]))
           for m in models}
    full = len(off) >= runs and len(on) == len(off) and not incomplete
    crit = {"H1_more_checks_lower_median": full and b[0] > a[0] and b[1] < a[1]}
    for m, ((co, _), (cn, _)) in per.items():
        crit[f"H2_{m}_no_fewer"] = full and cn >= co
    return {"all": (a, b), "models": per, "criteria": crit, "met": all(crit.values())}


def guard_criteria(off: list[dict], on: list[dict]) -> dict:
    """K1: over sets A-G pooled no fewer checks met and a median |error| no higher; K2: on each of sets A-G at most
    SET_MARGIN_CHECKS checks fewer."""
    per = {}
    for label, names in GUARD_LABELS.items():
        so = [r for r in off if r["registration"] in names]
        sn = [r for r in on if r["registration"] in names]
        if so:
            per[label] = (seh.checks(so), seh.checks(sn))
    pooled = (seh.checks(off), seh.checks(on))
    crit = {"K1_pooled_no_fewer": pooled[1][0] >= pooled[0][0], "K1_pooled_median_no_higher": pooled[1][1] <= pooled[0][1]}
    crit.update({f"K2_set_{k}_within_{SET_MARGIN_CHECKS}": v[1][0] >= v[0][0] - SET_MARGIN_CHECKS for k, v in per.items()})
    return {"sets": per, "pooled": pooled, "criteria": crit, "met": bool(per) and all(crit.values())}


def committed_criteria(off: dict, on: dict) -> dict[str, bool]:
    """K3 on serve_switch_compare.summary's (met, checks, median): the committed held-out set and the held-out set with
    the input each at most COMMITTED_MARGIN_CHECKS checks fewer and a median |error| at most MEDIAN_MARGIN higher."""
    out = {}
    for name in ("committed_holdout", "with_input_holdout"):
        out[f"K3_{name}_checks"] = on[name][0] >= off[name][0] - COMMITTED_MARGIN_CHECKS
        out[f"K3_{name}_median"] = on[name][2] <= off[name][2] + MEDIAN_MARGIN
    return out


def judge(root: Path | str | None = None, committed_sets: bool = True, fresh=(NAME, FRESH_MODELS),
          guards: bool = True) -> dict:
    """The committed twin and S on set H (`fresh`: (records name, models); a stand-in in tests), sets A-G (`guards`)
    and the committed sets (`committed_sets`); S's criteria and the verdict. K4 holds by construction (tests).
    Set H is judged on every card it ran on, each card with its own one-GPU table (the rule: the card it came on)."""
    root = rec.records_root() if root is None else root
    root = Path(root)
    refit, op_costs, sync, host = spk.read_refit(), spl.op_cost(root), sync_cost(root), host_fit(root)
    rows = {}
    for cand in (None, JUDGED):
        with setting(cand, refit, op_costs, sync, host):
            rows[cand] = {"H": seh.set_rows(fresh[0], fresh[1], root),
                          "seen": seen_rows(root) if guards else [],
                          "committed": ssc.all_rows(root) if committed_sets else None}
    incomplete = spk.incomplete_runs(root, *fresh)
    h = fresh_criteria(rows[None]["H"], rows[JUDGED]["H"], incomplete=tuple(incomplete), models=fresh[1])
    k = guard_criteria(rows[None]["seen"], rows[JUDGED]["seen"]) if guards else {"met": False, "criteria": {}}
    res = {"H": h, "guard": k}
    if committed_sets:
        s_off, s_on = ssc.summary(rows[None]["committed"]), ssc.summary(rows[JUDGED]["committed"])
        res.update(summary_off=s_off, summary_on=s_on, committed=committed_criteria(s_off, s_on))
    else:
        res["committed"] = {"K3_not_computed": False}
    crit = {**h["criteria"], **k["criteria"], **res["committed"]}
    res["criteria"] = crit
    res["passes"] = bool(guards and committed_sets and all(crit.values()))
    return {"rows": rows, "result": res, "incomplete": incomplete, "adopt": JUDGED if res["passes"] else None}


def _line(label: str, pair) -> str:
    (a, b) = pair
    return f"{label}: checks {a[0]} -> {b[0]}, median |err| {a[1]:.2%} -> {b[1]:.2%}"


def print_guards(res: dict, seen: str, on_label: str) -> None:
    """The guards' lines of a serving judgement (this one and s26start round 2's): each seen set, the seen sets
    pooled (`seen`, e.g. "A-G"), and the committed sets' summaries off and under the candidate (`on_label`)."""
    for label, pair in res["guard"].get("sets", {}).items():
        print(_line(f"set {label}", pair))
    if "pooled" in res["guard"]:
        print(_line(f"{seen} pooled", res["guard"]["pooled"]))
    for name in res.get("summary_off", {}):
        (ma, na, ea), (mb, nb, eb) = res["summary_off"][name], res["summary_on"][name]
        print(f"{name:40} off {ma:3}/{na:3} median {ea:.2%}   {on_label} {mb:3}/{nb:3} median {eb:.2%}")


def slim_rows(rows: list) -> list:
    """A load set's rows as a judgement file keeps them: the run's keys and each figure's error and check."""
    return [{**{k: r[k] for k in RECORD_KEYS},
             **{f"{f}_{x}": r[f"{f}_{x}"] for f in FIGURES for x in ("rel_error", "within_target")}} for r in rows]


def print_judgement(out: dict) -> None:
    res, rows = out["result"], out["rows"]
    print(_line(f"set H (of {5 * len(rows[None]['H'])})", res["H"]["all"]))
    for m, pair in res["H"]["models"].items():
        print("  " + _line(m, pair))
    if rows[None]["H"]:
        print("  set H by figure: " + spk._by_figure(rows[None]["H"], rows[JUDGED]["H"]))
    print_guards(res, "A-G", "on")
    print("criteria: " + ", ".join(f"{k} {'met' if v else 'NOT met'}" for k, v in res["criteria"].items()))
    for cand in (None, JUDGED):
        for r in rows[cand]["H"]:
            print(seh._rows_line(f"H {cand or 'off'}", r))
    if out["incomplete"]:
        print(f"set H incomplete (requests not all completed): {', '.join(out['incomplete'])}")
    print(f"verdict: {'ADOPT candidate S' if out['adopt'] else 'not adopted'}")


RECORD_KEYS = ("run_id", "model", "gpu")


def judgement_record(out: dict) -> dict:
    """Set H's rows (each figure's error and check) per setting, the guards' counts, S's criteria and the verdict, for
    tests to read back (calibration/s26start_judgement.json)."""
    slim = slim_rows
    res = out["result"]
    return {"H": {str(c): slim(v["H"]) for c, v in out["rows"].items()},
            "seen_sets": {k: [list(v[0]), list(v[1])] for k, v in res["guard"].get("sets", {}).items()},
            "summary": {k: {"committed": list(res["summary_off"][k]), JUDGED: list(res["summary_on"][k])}
                        for k in res.get("summary_off", {})},
            "constants": {"sync_s": sync_cost(), "host_fit": host_fit()},
            "criteria": res["criteria"], "passes": res["passes"], "incomplete": out["incomplete"],
            "adopt": out["adopt"]}


@entry.script
def main(argv: list[str] | None = None) -> int:
    args = cli.parse(argv, "calibration.serve_start_sync", __doc__, ("judge", "fit", "idle", "loadhost", "guards"),
                     "judge: set H and the guards; fit / idle: the fitting checks; loadhost: a diagnosis; guards: sets "
                     "A-G and the committed sets only (before set H exists)")
    root = rec.records_root()   # --records DIR (calibration.entry) or calibration/measurements
    if args.what == "fit":
        _print_fit(root)
        return 0
    if args.what == "idle":
        _print_idle(root)
        return 0
    if args.what == "loadhost":
        _print_load_host(root)
        return 0
    if args.what == "judge" and not seh.set_rows(NAME, FRESH_MODELS, root):
        return cli.refuse("set H", root, f"{NAME}/<model>/")
    return cli.judgement(args, judge(root, committed_sets=not args.no_committed,
                                     fresh=(NAME, FRESH_MODELS) if args.what == "judge" else (NAME, ())),
                         print_judgement, judgement_record)


if __name__ == "__main__":
    sys.exit(main())
