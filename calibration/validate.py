"""Validation rung 2: the twin predicts every measured case; errors are judged on held-out cases.

For each GPU with records: the profile is twin/data/profiles/<gpu>.json (fitted by `twin fit`),
or, if none is committed, a profile fitted in memory from the fitting split. Every record row the
twin can predict becomes a case {name, gpu, bench, measured_s, predicted_s, rel_error, held_out};
rel_error = predicted / measured - 1. Targets (DESIGN.md rung 2): held-out median |rel_error|
<= 5% and P90 <= 10% per GPU. Transfer: the H100 profile predicts the H200 records with the H200's
own peaks and bandwidths (DESIGN: same Hopper SMs, faster HBM).

Every case carries its `kind` (KIND_OF_BENCH: gemm, grouped_gemm, attention, memory, mla_layer,
moe_layer, train_step, prefill, decode, all_to_all, ep_comm, pipeline_step, ep_step) and
`num_gpus`; summaries are given per GPU and per kind. Whole steps are predicted by
calibration.whole_step, pipelines by calibration.pipeline (the twin's SimPy pipeline). Records of
several GPUs of one host live in calibration/measurements/<gpu>x<N>/ (e.g. h200x2: ep.csv,
pipeline_step.csv, pipeline_ops.csv, parallel_blocks.csv); they are predicted with <gpu>'s profile
and reported under `multi_gpu`, every case held out (nothing there is fitted) except the
parallel_blocks rows of the campaign's `fit` split (kinds tp_block and cp_block,
calibration.parallel_blocks; num_gpus tp x cp, 1 for the one-GPU reference rows) and, where a
folder's pipeline host rates come from its bench's own timed steps (pipeline_ops.csv with the
host's issue marks: calibration.pipeline.bench_host_marks), the pipeline rows of the fitting
split (the configurations those rates were measured on); a folder's NCCL
sweep (nccl.csv) is reported under `nccl`: each op's alpha-beta fit on the fitting sizes and its
error on the held-out ones (calibration.nccl.sweep_summary). The per-GPU targets (`failures`) judge
the single-GPU folders as before; the issue-13 targets per kind are asserted in
tests/calibration/test_whole_runs.py.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import numpy as np
import pandas as pd

from calibration import host_probe
from calibration import interleaved
from calibration import memo
from calibration import mla_rounds
from calibration import nccl
from calibration import parallel_blocks as blocks
from calibration import pipeline as pipe
from calibration import pipeline_judgement as judgement
from calibration import records as rec
from calibration import whole_step
from calibration.decode_gemm import held_out_errors as decode_gemm_errors
from calibration.fit import PROFILES_DIR, fit_profile
from calibration.predict import gpu_spec, predict_s
from calibration.serve_engine_fit import prompts_run_before
from calibration.serve_load_validation import format_serve_load, validate_serve_load
from calibration.split import split
from calibration.whole_step import predict_ep_row, predict_model_row, step_components, with_measured_collectives
from calibration.records_io import csv_exists, read_csv
from twin.core.paths import shown_path
from twin.costs.profile import Profile, profile_from_json

MEDIAN_TARGET = 0.05
P90_TARGET = 0.10
BLOCK_TARGET = 0.10   # issue 14: each held-out TP2 / CP2 block within 10% of its measured time
BLOCK_KINDS = ("tp_block", "cp_block")


def load_fitted_profile(gpu: str, df: pd.DataFrame, profiles_dir: Path | str = PROFILES_DIR) -> tuple[Profile, str]:
    path = Path(profiles_dir) / f"{gpu}.json"
    if path.is_file():
        return profile_from_json(json.loads(path.read_text())), shown_path(path)
    prof, _ = fit_profile(df, gpu)
    return prof, "fitted in memory (no committed profile)"


KIND_OF_BENCH = {"gemm": "gemm", "grouped_gemm": "grouped_gemm", "grouped_gemm_wgrad": "grouped_gemm",
                 "attn_fwd": "attention", "attn_bwd": "attention", "memory": "memory",
                 "mla_layer_fwd": "mla_layer", "mla_layer_bwd": "mla_layer",
                 "moe_layer_fwd": "moe_layer", "moe_layer_bwd": "moe_layer",
                 "moe_layer_ep_fwd": "moe_layer", "moe_layer_ep_bwd": "moe_layer",
                 "train_step": "train_step", "prefill": "prefill", "decode": "decode",
                 "all_to_all": "all_to_all", "ep_dispatch": "ep_comm", "ep_combine": "ep_comm",
                 "pipeline_step": "pipeline_step", "ep_step": "ep_step",
                 "tp_block": "tp_block", "cp_block": "cp_block"}
WHOLE_STEP_KINDS = ("train_step", "prefill", "decode", "pipeline_step", "ep_step")
LAYER_KINDS = ("mla_layer", "moe_layer")


def kind_of(bench: str) -> str:
    return KIND_OF_BENCH.get(bench, bench)


def _case(name: str, gpu: str, bench: str, meas: float, pred: float, held: bool, num_gpus: int = 1) -> dict:
    return {"name": name, "gpu": gpu, "bench": bench, "kind": kind_of(bench), "num_gpus": int(num_gpus),
            "measured_s": meas, "predicted_s": float(pred), "rel_error": float(pred / meas - 1.0), "held_out": bool(held)}


def predict_cases(df: pd.DataFrame, gpu: str, profile: Profile) -> tuple[list[dict], list[str]]:
    spec = gpu_spec(gpu)
    held = split(df)
    cases, skipped = [], []
    for (_, r), h in zip(df.iterrows(), held):
        pred = predict_s(r, spec, profile)
        if pred is None and r["bench"] in ("train_step", "prefill", "decode"):
            pred = predict_model_row(r, spec, profile)
        if pred is None:
            skipped.append(r["name"])
            continue
        cases.append(_case(r["name"], gpu, r["bench"], float(r["time_s"]), pred, h))
    return cases, skipped


def multi_gpu_dirs(root: Path | str | None = None) -> dict[str, tuple[str, int]]:
    """{folder: (gpu, num_gpus)} of the records folders of several GPUs of one host (<gpu>x<N>)."""
    root = rec.records_root() if root is None else root
    root = Path(root)
    out = {}
    if not root.is_dir():
        return out
    for p in sorted(root.iterdir()):
        m = re.fullmatch(r"([a-z0-9]+?)x(\d+)", p.name)
        if p.is_dir() and m and int(m[2]) > 1:
            out[p.name] = (m[1], int(m[2]))
    return out


def _ep_name(r) -> str:
    if r["bench"] == "all_to_all":
        return f"all_to_all {float(r['bytes_per_rank']) / 2**20:.0f}MiB w{int(r['world_size'])}"
    return (f"{r['bench']} {r['precision']} t{int(r['tokens_per_rank'])} e{int(r['num_experts'])} "
            f"skew{float(r['skew']):g} w{int(r['world_size'])}")


def _pipeline_name(r) -> str:
    return (f"{r.get('bench', 'pipeline_step')} {r['model']} {r['schedule']} pp{int(r['pp'])} ep{int(r['ep'])} "
            f"n{int(r['num_microbatches'])} b{int(r['micro_batch_seqs'])} s{int(r['seq_len'])} {r['precision']}")


def predict_multi_gpu(folder: Path, gpu: str, num_gpus: int, profile: Profile) -> tuple[list[dict], list[dict]]:
    """Cases of a multi-GPU folder (ep.csv, pipeline_step.csv; all held out) and the pipeline
    comparisons (per-rank idle, simulated op spans, measured ops) for the report."""
    spec = gpu_spec(gpu)
    profile = with_measured_collectives(profile, folder)   # the host's NCCL sweep, where measured
    cases, pipelines = [], []
    ep_path = Path(folder) / "ep.csv"
    if csv_exists(ep_path):
        # the EP host terms the folder's steps take, for the same calls in its ep.csv rows (s13epl)
        ep_terms = pipe.folder_ep_terms(Path(folder), gpu, profile) if whole_step.ADOPT_EP_LAYER_HOST_TERMS else None
        for _, r in read_csv(ep_path).iterrows():
            pred = predict_ep_row(r, spec, profile, ep_terms)
            if pred is not None and r["time_s"] > 0:
                cases.append(_case(_ep_name(r), gpu, r["bench"], float(r["time_s"]), pred, True, num_gpus))
    # TP / CP blocks (parallel_blocks*.csv): held out as the campaign split them (nothing is fitted
    # to any of them); a one-GPU reference row counts 1 GPU
    for c in blocks.predict_folder(Path(folder), gpu, profile):
        r = c["row"]
        ranks = int(r.get("tp", 1) or 1) * int(r.get("cp", 1) or 1)
        cases.append(_case(c["name"], gpu, str(r["bench"]), c["measured_s"], c["predicted_s"], c["held_out"], ranks))
    # a pipeline folder whose host rates come from its bench's own timed steps (s9ep on): the
    # fitting split's configurations gave the prediction an input, so only the held-out split is
    # held out; a folder whose rates come from the probe (another run) keeps every row held out
    same_run = pipe.bench_host_marks(Path(folder))
    for c in pipe.predict_folder(Path(folder), gpu, profile):
        r = c["row"]
        name = _pipeline_name(r)
        held = str(r.get("split", "holdout")) != "fit" if same_run else True
        cases.append(_case(name, gpu, str(r.get("bench", "pipeline_step")), c["measured_s"], c["predicted_s"], held,
                           int(r.get("num_gpus", num_gpus))))
        ops = c["measured_ops"]
        first_rep = ops[ops["rep"] == ops["rep"].min()] if len(ops) else ops
        pipelines.append({
            "name": name, "gpu": gpu, "schedule": str(r["schedule"]), "pp": int(r["pp"]),
            "num_gpus": int(r.get("num_gpus", num_gpus)), "split": str(r.get("split", "")),
            "config": {k: (r[k].item() if hasattr(r[k], "item") else r[k]) for k in pipe.CONFIG_KEYS},
            "measured_s": c["measured_s"], "predicted_s": c["predicted_s"],
            "idle_simulated_s": c["idle_simulated_s"],
            "idle_measured_s": {str(k): v for k, v in c["idle_measured_s"].items()},
            "idle_measured_by_rep_s": {str(k): v for k, v in c["idle_measured_by_rep_s"].items()},
            # global rank = dp_rank * pp + pp_rank (real/pipeline/engine.py): the twin's pipeline rank
            # k % pp stands for every data-parallel (and expert-parallel) replica of its stages
            "idle_rel_error": {str(k): (c["idle_simulated_s"][k % len(c["idle_simulated_s"])] / v - 1.0 if v > 0 else None)
                               for k, v in c["idle_measured_s"].items() if c["idle_simulated_s"]},
            "simulated_op_spans": c["op_spans"],
            "measured_ops": [[int(o["rank"]), str(o["kind"]), int(o["microbatch"]) if not pd.isna(o["microbatch"]) else -1,
                              int(o["chunk"]) if not pd.isna(o["chunk"]) else 0, float(o["start_s"]), float(o["end_s"])]
                             for _, o in first_rep.iterrows()],
            "op_seconds": pipe.op_seconds(c), "components": pipe.op_components(c), "detail": c["detail"]})
    return cases, pipelines


def by_kind(cases: list[dict]) -> dict:
    out = {}
    for k in sorted({c["kind"] for c in cases}):
        sub = [c for c in cases if c["kind"] == k]
        out[k] = {"all": summarize(sub, held_only=False), "held_out": summarize(sub),
                  "num_gpus": sorted({c["num_gpus"] for c in sub}),
                  "signed_median_rel_error": float(np.median([c["rel_error"] for c in sub]))}
    return out


def by_gpu_kind_gpus(cases: list[dict]) -> list[dict]:
    """The per-kind summaries (by_kind) of each GPU and GPU count: a pipeline of 4 GPUs (PP2 x EP2)
    is judged apart from those of 2 (PP2, EP2), as the one-GPU layers apart from EP's."""
    keys = sorted({(c["gpu"], c["kind"], c["num_gpus"]) for c in cases})
    return [{**by_kind([c for c in cases if (c["gpu"], c["kind"], c["num_gpus"]) == key])[key[1]],
             "gpu": key[0], "kind": key[1], "num_gpus": key[2]} for key in keys]


def summarize(cases: list[dict], held_only: bool = True) -> dict:
    errs = np.array([abs(c["rel_error"]) for c in cases if c["held_out"] or not held_only])
    if errs.size == 0:
        return {"num_cases": 0, "median_abs_rel_error": None, "p90_abs_rel_error": None}
    return {"num_cases": int(errs.size), "median_abs_rel_error": float(np.median(errs)),
            "p90_abs_rel_error": float(np.percentile(errs, 90))}


def by_bench(cases: list[dict]) -> dict:
    out = {}
    for b in sorted({c["bench"] for c in cases}):
        sub = [c for c in cases if c["bench"] == b]
        out[b] = {"all": summarize(sub, held_only=False), "held_out": summarize(sub)}
    return out


def validate_parts(root: Path | str | None = None, gpus: list[str] | None = None) -> list[str]:
    """The parts validate() reports done to its `on_part` callback, in order: each GPU's records, each
    multi-GPU folder (most of the run's time), then the decode GEMMs, the serving load runs and the
    H100-to-H200 transfer."""
    root = rec.records_root() if root is None else root
    return [*(gpus or rec.gpu_dirs(root)), *multi_gpu_dirs(root), "decode_gemm", "serve_load", "h100_to_h200"]


def _ticking(items: Iterable, names: Callable[[object], str], on_part: Callable[[str], None]) -> Iterator:
    """`items`, calling on_part(names(item)) once the loop body of each is done (a `continue` too)."""
    for item in items:
        yield item
        on_part(names(item))


def validate(root: Path | str | None = None, profiles_dir: Path | str = PROFILES_DIR,
             gpus: list[str] | None = None, on_part: Callable[[str], None] | None = None) -> dict:
    """Every held-out prediction and judgement of the records under `root`; `on_part` (a progress bar)
    is called with each part's name as it is done (validate_parts lists them)."""
    # one folder's host rates and predictions computed once, however many judgements ask (calibration.memo);
    # the readers keyed by a GPU alone read under `root` too (records_root_scope)
    root = rec.records_root() if root is None else root
    with memo.sharing(), rec.records_root_scope(root), rec.profiles_scope(profiles_dir):
        return _validate(root, profiles_dir, gpus, on_part or (lambda name: None))


def _add_gpu(out: dict, root: Path | str, gpu: str, profiles_dir: Path | str) -> tuple[pd.DataFrame, Profile]:
    """One GPU's records predicted under its fitted profile into `out` (its cases, the kernels-and-layers
    summary, what was not predicted, its whole steps' components); its records and profile."""
    df = rec.load_records(gpu, root)
    prof, source = load_fitted_profile(gpu, df, profiles_dir)
    cases, skipped = predict_cases(df, gpu, prof)
    paired = host_probe.committed_paired(root, gpu, prof)
    if paired is not None:
        out.setdefault("host_probe", {})[gpu] = {"tracking": paired["tracking"], "adopted": paired["adopted"]}
        if paired["adopted"]:   # each MLA layer record beside its own host probes (calibration.host_probe)
            cases = [c for c in cases if c["kind"] != "mla_layer"] + paired["cases"]
    rounds = mla_rounds.committed_rounds(root, gpu, prof)
    if rounds is not None:   # the held-out MLA records in rounds beside their fitting host rows (s14mla)
        out.setdefault("mla_rounds", {})[gpu] = {k: rounds[k] for k in ("rounds", "valid", "rates")}
        cases = mla_rounds.with_rounds(cases, rounds)
    # the per-GPU total is the kernels and layers, as before whole steps were predicted; the
    # whole steps are summarised per kind (by_kind) and judged by their own targets
    s = summarize([c for c in cases if c["kind"] not in WHOLE_STEP_KINDS])
    s.update(profile=source, num_predicted=len(cases), by_bench=by_bench(cases), by_kind=by_kind(cases),
             meets_targets=bool(s["median_abs_rel_error"] is not None and s["median_abs_rel_error"] <= MEDIAN_TARGET
                                and s["p90_abs_rel_error"] <= P90_TARGET))
    out["gpus"][gpu] = s
    out["cases"] += cases
    out["not_predicted"][gpu] = sorted(set(skipped))
    out.setdefault("step_components", []).extend(step_components(df, gpu, prof))
    return df, prof


def _add_multi_gpu_folder(out: dict, root: Path | str, folder: str, gpu: str, n: int, prof: Profile | None,
                          profiles_dir: Path | str) -> None:
    """One multi-GPU folder into `out`: its NCCL sweep, its whole steps and pipelines predicted under the
    GPU's profile (the one fitted this run, else the committed one; none: nothing more), and the ranking
    and idle judgements of the host's folders that hold them."""
    sweep = nccl.sweep_summary(Path(root) / folder)   # the host's collectives, each GPU's own
    if sweep:
        out["nccl"][folder] = {"gpu": gpu, "num_gpus": n, "ops": sweep}
    committed = Path(profiles_dir) / f"{gpu}.json"
    if prof is None and committed.is_file():
        prof = profile_from_json(json.loads(committed.read_text()))
    if prof is None:
        return
    cases, pipelines = predict_multi_gpu(Path(root) / folder, gpu, n, prof)
    if not cases:
        return
    s = summarize(cases)
    s.update(gpu=gpu, num_gpus=n, num_predicted=len(cases), by_kind=by_kind(cases))
    out["multi_gpu"][folder] = s
    out["cases"] += cases
    out["pipelines"] += pipelines
    # the ranking target at the configurations of the host's ranking folder, pair by pair on its
    # two rounds (docs/notes/s15rank_rule.md); its other configurations by median order as before
    ranking = judgement.RANKING_FOLDERS.get(folder)
    if ranking and judgement.ranking_rounds(Path(root) / folder / ranking):
        out.setdefault("ranking", {})[folder] = {
            "gpu": gpu, "num_gpus": n, "folder": ranking,
            "configs": judgement.ranking_judgement(Path(root) / folder / ranking, gpu, prof)}
    # the ranking target at the configurations of the host's interleaved folder, pair by pair on
    # steps paired by cycle (docs/notes/s17alt_rule.md); it judges them in place of the above
    side_by_side = interleaved.INTERLEAVED_FOLDERS.get(folder)
    if side_by_side and (Path(root) / folder / side_by_side).is_dir():
        out.setdefault("ranking_interleaved", {})[folder] = {
            "gpu": gpu, "num_gpus": n, "folder": side_by_side,
            "configs": interleaved.interleaved_judgement(Path(root) / folder / side_by_side, gpu, prof)}
    # the same rule on the host's further interleaved runs (s18probe), reported beside: no headline
    repeats = [sub for sub in interleaved.INTERLEAVED_REPEAT_FOLDERS.get(folder, ())
               if (Path(root) / folder / sub).is_dir()]
    if repeats:
        out.setdefault("ranking_interleaved_repeats", {})[folder] = [
            {"gpu": gpu, "num_gpus": n, "folder": sub,
             "configs": interleaved.interleaved_judgement(Path(root) / folder / sub, gpu, prof)} for sub in repeats]
    # each rank's idle at the configurations of the host's idle folder, on its two rounds pooled
    # (docs/notes/s16idle_rule.md); its other configurations on the host folder as before
    idle = judgement.host_idle_judgement(Path(root) / folder, gpu, prof)
    if idle:
        out.setdefault("idle", {})[folder] = {"gpu": gpu, "num_gpus": n, **idle}


def _validate(root: Path | str, profiles_dir: Path | str, gpus: list[str] | None,
              on_part: Callable[[str], None]) -> dict:
    gpus = gpus or rec.gpu_dirs(root)
    out = {"targets": {"median_abs_rel_error": MEDIAN_TARGET, "p90_abs_rel_error": P90_TARGET},
           "gpus": {}, "cases": [], "not_predicted": {}}
    frames, profiles = {}, {}
    for gpu in _ticking(gpus, str, on_part):
        frames[gpu], profiles[gpu] = _add_gpu(out, root, gpu, profiles_dir)
    out["multi_gpu"], out["pipelines"], out["nccl"] = {}, [], {}
    for folder, (gpu, n) in _ticking(multi_gpu_dirs(root).items(), lambda item: item[0], on_part):
        _add_multi_gpu_folder(out, root, folder, gpu, n, profiles.get(gpu), profiles_dir)
    out["by_gpu_kind"] = {g: by_kind([c for c in out["cases"] if c["gpu"] == g])
                          for g in sorted({c["gpu"] for c in out["cases"]})}
    out["by_gpu_kind_gpus"] = by_gpu_kind_gpus(out["cases"])
    # real/'s decode GEMMs (decode_gemm.csv): the batched-GEMM curves on their own held-out rows
    # (kernel records of their own, apart from the per-GPU kernel figures above)
    out["decode_gemm"] = {}
    for gpu, prof in profiles.items():
        errs = decode_gemm_errors(gpu, prof, root)
        if errs:
            out["decode_gemm"][gpu] = {"held_out": errs["held_out"], "fit": errs["fit"]}
    on_part("decode_gemm")
    # the request simulation against real/serve's load runs (issue 15's serving targets)
    out["serve_load"] = validate_serve_load(root, prompts_run_before)
    on_part("serve_load")
    if "h100" in frames and "h200" in frames:
        cases, _ = predict_cases(frames["h200"], "h200", profiles["h100"])
        out["h100_to_h200"] = {"all": summarize(cases, held_only=False), "held_out": summarize(cases),
                               "by_bench": by_bench(cases),
                               "note": "H100-fitted profile, H200 peaks/bandwidth, all H200 records"}
    on_part("h100_to_h200")
    return out


def failures(result: dict) -> list[str]:
    """Human-readable list of GPUs missing a target (empty when all pass)."""
    msgs = []
    for gpu, s in result["gpus"].items():
        if s["median_abs_rel_error"] is None:
            msgs.append(f"{gpu}: no held-out cases")
            continue
        if s["median_abs_rel_error"] > MEDIAN_TARGET:
            msgs.append(f"{gpu}: held-out median |error| {s['median_abs_rel_error']:.1%} > {MEDIAN_TARGET:.0%}")
        if s["p90_abs_rel_error"] > P90_TARGET:
            msgs.append(f"{gpu}: held-out P90 |error| {s['p90_abs_rel_error']:.1%} > {P90_TARGET:.0%}")
    return msgs


def format_blocks(cases: list[dict]) -> list[str]:
    """Per two-GPU host, issue 14's check: how many held-out TP2 / CP2 blocks (tp x cp > 1) the
    twin predicts within BLOCK_TARGET, and the worst."""
    lines = []
    blocks = [c for c in cases if c.get("kind") in BLOCK_KINDS and c.get("num_gpus", 1) > 1]
    for gpu, n in sorted({(c["gpu"], c["num_gpus"]) for c in blocks}):
        held = [c for c in blocks if c["gpu"] == gpu and c["num_gpus"] == n and c["held_out"]]
        if not held:
            continue
        worst = max(held, key=lambda c: abs(c["rel_error"]))
        met = sum(abs(c["rel_error"]) <= BLOCK_TARGET for c in held)
        lines.append(f"TP/CP blocks {gpu}x{n}: {met} of {len(held)} held-out within {BLOCK_TARGET:.0%}; "
                     f"worst {worst['name']} {worst['rel_error']:+.1%}")
    return lines


def format_table(result: dict) -> str:
    lines = [f"{'gpu':6} {'bench':16} {'n_held':>6} {'median':>8} {'p90':>8}   (all: n, median)"]
    kinds = result.get("by_gpu_kind", {})
    for gpu, s in result["gpus"].items():
        for b, v in s["by_bench"].items():
            h, a = v["held_out"], v["all"]
            med = f"{h['median_abs_rel_error']:.1%}" if h["num_cases"] else "-"
            p90 = f"{h['p90_abs_rel_error']:.1%}" if h["num_cases"] else "-"
            lines.append(f"{gpu:6} {b:16} {h['num_cases']:>6} {med:>8} {p90:>8}   ({a['num_cases']}, {a['median_abs_rel_error']:.1%})")
        lines.append(f"{gpu:6} {'HELD-OUT TOTAL':16} {s['num_cases']:>6} {s['median_abs_rel_error'] or 0:>8.1%} "
                     f"{s['p90_abs_rel_error'] or 0:>8.1%}   targets 5% / 10%: {'met' if s['meets_targets'] else 'NOT met'}"
                     "   (kernels and layers)")
    rows = result.get("by_gpu_kind_gpus") or [{**v, "gpu": gpu, "kind": k} for gpu, per in kinds.items()
                                              for k, v in per.items()]
    for v in rows:
        h = v["held_out"]
        if not h["num_cases"]:
            continue
        lines.append(f"{v['gpu']:6} kind {v['kind']:11} {h['num_cases']:>6} {h['median_abs_rel_error']:>8.1%} "
                     f"{h['p90_abs_rel_error']:>8.1%}   signed median {v['signed_median_rel_error']:+.1%}, "
                     f"GPUs {','.join(map(str, np.atleast_1d(v['num_gpus'])))}")
    for c in result.get("step_components", []):
        lines.append(f"{c['gpu']:6} {c['name']}: step {c['predicted_s'] / c['measured_s'] - 1:+.1%}; its MLA/MoE layers "
                     f"as timed alone {c['layers_predicted_s'] / c['layers_measured_s'] - 1:+.1%} "
                     f"({c['layers_measured_s'] * 1e3:.1f} ms), the rest {c['rest_predicted_s'] / c['rest_measured_s'] - 1:+.1%} "
                     f"({c['rest_measured_s'] * 1e3:.1f} ms measured)")
    for p in result.get("pipelines", []):
        idle = ", ".join(f"r{r} {p['idle_simulated_s'][int(r) % len(p['idle_simulated_s'])] * 1e3:.1f}/{m * 1e3:.1f} ms"
                         for r, m in p["idle_measured_s"].items() if p["idle_simulated_s"])
        lines.append(f"pipeline {p['name']}: step {p['predicted_s'] * 1e3:.1f} / {p['measured_s'] * 1e3:.1f} ms "
                     f"(twin / measured); idle twin/measured {idle}")
    for folder, v in result.get("ranking", {}).items():
        lines += judgement.format_ranking_judgement(f"{folder}/{v['folder']}", v["configs"])
    for folder, v in result.get("ranking_interleaved", {}).items():
        lines += interleaved.format_interleaved_judgement(f"{folder}/{v['folder']}", v["configs"])
    for folder, runs in result.get("ranking_interleaved_repeats", {}).items():
        for v in runs:
            lines += interleaved.format_interleaved_judgement(f"{folder}/{v['folder']} (repeat)", v["configs"])
    for folder, v in result.get("idle", {}).items():
        lines += judgement.format_idle_judgement(folder, v["configs"])
    lines += [nccl.format_summary(folder, v["ops"]) for folder, v in result.get("nccl", {}).items()]
    lines += format_blocks(result.get("cases", []))
    lines += format_serve_load(result.get("serve_load", {}))
    for gpu, v in result.get("decode_gemm", {}).items():   # shown nowhere but --json until s25walk
        h = v["held_out"]
        lines.append(f"decode GEMMs {gpu}: {h['num_cases']} held out, median {h['median_abs_rel_error']:.1%}, "
                     f"P90 {h['p90_abs_rel_error']:.1%} (fit median {v['fit']['median_abs_rel_error']:.1%})")
    t = result.get("h100_to_h200")
    if t:
        lines.append(f"H100 profile -> H200 records: all median {t['all']['median_abs_rel_error']:.1%}, "
                     f"P90 {t['all']['p90_abs_rel_error']:.1%} (n={t['all']['num_cases']}); held-out median "
                     f"{t['held_out']['median_abs_rel_error'] or 0:.1%}")
    return "\n".join(lines)
