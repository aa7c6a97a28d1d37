"""Pre-registered predictions of real/ training steps for models no record holds (session s20new).

The twin predicts whole AdamW training steps of three MoE slices whose MoE shapes differ from every
DeepSeek slice the records hold (twin/data/models.toml: qwen3moe-mla-slice, qwen2moe-mla-slice,
mixtral-mla-slice), through the same path `twin validate` prices a model.csv train_step row with
(calibration.whole_step.predict_model_row under the GPU's committed profile). The predictions are
written, with the commit of the code that made them and a UTC timestamp, to
calibration/measurements/prereg/s20new_predictions.csv and committed BEFORE the GPU run
(real/campaigns/s20new.sh); they are never rewritten afterwards. The measured rows land in
calibration/measurements/<gpu>/s20new/model.csv, a subfolder no fit and no validation folder reads
(calibration.records.load_records globs the GPU folder's top level only), and are compared here:
per-row error, and per GPU the median and P90 of |error| against issue 13's train_step target
(calibration.validate MEDIAN_TARGET / P90_TARGET).

    python -m calibration.prereg write     # the predictions file (refuses a dirty twin/ or calibration/)
    python -m calibration.prereg compare   # predictions beside the records, per GPU

A second registration (session s20gqa, `--registration s20gqa`): the released models' grouped-query
attention with their MoE shapes (mixtral-slice, qwen3moe-slice: real/model.py GQA, the twin's
calibration.predict _gqa_ops), predictions in prereg/s20gqa_predictions.csv, records in
<gpu>/s20gqa/model.csv, campaign real/campaigns/s20gqa.sh.

Session s20epnew extends it to EP2 training steps of the same slices (real/pipeline's ep_step rows: 2
GPUs, expert parallel, pp 1, dp 2; real/campaigns/s20epnew.sh), predicted through the path `twin
validate` prices the committed ep_step rows with (calibration.pipeline.predict_folder's per-row
simulate_row), under the host inputs of the committed two-GPU folder of the GPU (`<gpu>x2`: its
measured collectives, AccumulateGrad rates, host rates and EP host terms from its fitting split):

    python -m calibration.prereg write-ep    # prereg/s20epnew_predictions.csv
    python -m calibration.prereg compare-ep  # beside calibration/measurements/<gpu>x2/s20epnew/

A third (session s20new2, `--registration s20new2`): prefill and decode (real/bench/whole_model.py
bench_serve, BF16) of s20new's three MLA slices, predicted through the path `twin validate` prices
model.csv prefill and decode rows with (the same predict_model_row), predictions in
prereg/s20new2_predictions.csv, records in <gpu>/s20new2/model.csv, campaign real/campaigns/s20new2.sh;
judged per GPU and per bench (prefill, decode) separately.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from calibration import entry
from calibration import judged_under
from calibration import host_input
from calibration import op_host_rate
from calibration import pipeline as pipe
from calibration import step_bracket
from calibration import step_host
from calibration import whole_step
from calibration import records as rec
from calibration.fit import git_commit
from calibration.records_io import csv_exists, glob_csv, read_csv, write_json_text
from calibration.validate import MEDIAN_TARGET, P90_TARGET, load_fitted_profile
from calibration.predict import timed_window_s
from calibration.whole_step import gpu_spec, predict_model_row, train_step_ops
from twin.core import atomic
from twin.core.specs import get_model

PREREG_DIR = rec.MEASUREMENTS_DIR / "prereg"
PREDICTIONS_FILE = PREREG_DIR / "s20new_predictions.csv"
RECORDS_SUBDIR = "s20new"   # calibration/measurements/<gpu>/s20new/model.csv
GPUS = ("h100", "h200")
# (model, seq_len, batches): real/campaigns/s20new.sh's CASES, in its order (a test holds them equal)
CASES = (("qwen3moe-mla-slice", 4096, (1, 2)), ("mixtral-mla-slice", 4096, (1, 2, 4)),
         ("qwen2moe-mla-slice", 4096, (1, 2)), ("qwen3moe-mla-slice", 2048, (4,)),
         ("qwen2moe-mla-slice", 2048, (4,)))
# real/bench/device.py precisions_to_bench: BF16 and FP8, block-wise where the device has the kernel
# (both GPUs' earlier train_step records ran fp8-blockwise), else row-wise: both FP8 labels are
# predicted so the comparison finds the one the run took.
PRECISIONS = ("bf16", "fp8-blockwise", "fp8-rowwise")
KEY = ["gpu", "model", "batch", "seq_len", "precision"]
# issue 13's whole-EP2-step target: each step's |predicted / measured - 1| <= 5%
EP_STEP_TARGET = 0.05
# a serve row is identified by its bench and prompt/generation lengths (seq_len is empty in its record)
SERVE_KEY = ["gpu", "bench", "model", "batch", "prompt_len", "gen_len", "precision"]


@dataclasses.dataclass(frozen=True)
class Registration:
    """One pre-registration: its name, the predictions file, the records' subfolder of each GPU
    folder and the cases of its campaign: (model, seq_len, batches) of bench_train for section
    "train"; (model, prompt_len, gen_len, prefill batches, decode batches) of bench_serve for "serve"."""

    name: str
    predictions_file: Path
    records_subdir: str
    cases: tuple
    section: str = "train"

    @property
    def key(self) -> list[str]:
        return SERVE_KEY if self.section == "serve" else KEY

    @property
    def benches(self) -> tuple[str, ...]:
        return ("prefill", "decode") if self.section == "serve" else ("train_step",)


S20NEW = Registration("s20new", PREDICTIONS_FILE, RECORDS_SUBDIR, CASES)
# real/campaigns/s20gqa.sh's CASES, in its order (a test holds them equal): the s20new shapes of the
# same two families, now with their own GQA attention
S20GQA = Registration("s20gqa", PREREG_DIR / "s20gqa_predictions.csv", "s20gqa",
                      (("qwen3moe-slice", 4096, (1, 2)), ("mixtral-slice", 4096, (1, 2, 4)),
                       ("qwen3moe-slice", 2048, (4,))))
# real/campaigns/s20new2.sh's CASES, in its order (a test holds them equal): s20new's MLA slices served
# as bench_serve serves the DeepSeek slices (prompt 1024, 32 generated, v3-slice-2l's prefill batches,
# decode batches up to 128), BF16 (bench_serve's only precision)
S20NEW2 = Registration("s20new2", PREREG_DIR / "s20new2_predictions.csv", "s20new2",
                       tuple((m, 1024, 32, (1, 4, 16), (1, 8, 32, 128))
                             for m in ("qwen3moe-mla-slice", "qwen2moe-mla-slice", "mixtral-mla-slice")),
                       section="serve")
# the same predictions beside a repeat of the H100 run on the same machine a minute later (warm; the
# judgement is on the first run, <gpu>/s20new2/; docs/notes/s20new2.md reports the repeat beside it)
S20NEW2_REPEAT = dataclasses.replace(S20NEW2, name="s20new2_repeat", records_subdir="s20new2_repeat")
REGISTRATIONS = {r.name: r for r in (S20NEW, S20GQA, S20NEW2, S20NEW2_REPEAT)}


def case_rows(reg: Registration = S20NEW) -> list[dict]:
    """One row per (gpu, model, batch, seq_len, precision) the campaign times; for a serve
    registration one per (gpu, model, bench, batch) with bench_serve's prompt and generation lengths
    (a prefill record's gen_len is 0)."""
    if reg.section == "serve":
        return [{"gpu": gpu, "bench": bench, "model": model, "batch": B, "prompt_len": P,
                 "gen_len": G if bench == "decode" else 0, "precision": "bf16"}
                for gpu in GPUS for model, P, G, prefill_batches, decode_batches in reg.cases
                for bench, batches in (("prefill", prefill_batches), ("decode", decode_batches)) for B in batches]
    return [{"gpu": gpu, "bench": "train_step", "model": model, "batch": B, "seq_len": S, "precision": p}
            for gpu in GPUS for model, S, batches in reg.cases for B in batches for p in PRECISIONS]


def predict(rows: list[dict], root: Path | str | None = None) -> pd.DataFrame:
    """The twin's seconds for each row under its GPU's committed profile (as `twin validate`)."""
    root = rec.records_root() if root is None else root
    profiles = {}
    out = []
    for r in rows:
        gpu = r["gpu"]
        if gpu not in profiles:
            profiles[gpu] = load_fitted_profile(gpu, rec.load_records(gpu, root))[0]
        out.append({**r, "predicted_s": float(predict_model_row(r, gpu_spec(gpu), profiles[gpu]))})
    return pd.DataFrame(out)


# s20epnew: EP2 steps. (model, num_layers): real/campaigns/s20epnew.sh's MODELS, in its order (a test
# holds them equal); each slice at twice its catalog layers (mixtral 2, the Qwen slices 4) so its MoE
# layers, where EP acts, are most of the step
EP_PREDICTIONS_FILE = PREREG_DIR / "s20epnew_predictions.csv"
EP_RECORDS_SUBDIR = "s20epnew"   # calibration/measurements/<gpu>x2/s20epnew/<model>/pipeline_step.csv
EP_CASES = (("qwen3moe-mla-slice", 4), ("qwen2moe-mla-slice", 4), ("mixtral-mla-slice", 2))
EP_MICROBATCHES = (1, 2, 4)      # the campaign's --ep-microbatches (one sequence of 4096 each, BF16)
EP_KEY = ["gpu", "model", "num_layers", "num_microbatches"]


def ep_case_rows() -> list[dict]:
    """One ep_step row (real/pipeline/bench.py's fields) per (gpu, model, micro-batches) the campaign times."""
    return [{"gpu": gpu, "bench": "ep_step", "model": model, "schedule": "1f1b", "pp": 1, "ep": 2, "dp": 2,
             "num_gpus": 2, "num_microbatches": n, "micro_batch_seqs": 1, "seq_len": 4096, "precision": "bf16",
             "num_layers": layers}
            for gpu in GPUS for model, layers in EP_CASES for n in EP_MICROBATCHES]


def two_gpu_inputs(gpu: str, root: Path | str | None = None, num_gpus: int = 2) -> tuple:
    """(profile, accumulate, host, hold_s) that calibration.pipeline.predict_folder gives the rows of the
    committed two-GPU folder `<gpu>x2` (the GPU's fitted profile with the folder's collectives, its
    AccumulateGrad rates, its fitting split's host rates and EP host terms, its send hold); with
    `num_gpus` 4, of the four-GPU folder `<gpu>x4` (s21pp4). Under pipeline.ADOPT_EP_FORWARD_HOST (s27epfwd) the
    host dict also carries the EP forward's rate pooled over the committed leases of `<gpu>x<num_gpus>`
    (pipeline.EP_FWD_POOLED_KEY), which simulate_row gives every EP forward."""
    root = rec.records_root() if root is None else root
    folder = Path(root) / f"{gpu}x{num_gpus}"
    base = load_fitted_profile(gpu, rec.load_records(gpu, root))[0]
    profile, accumulate, gap_s = pipe.host_inputs(folder, gpu, base)
    host = pipe.measured_host_s(folder, gpu, profile, accumulate, gap_s)
    steps, ops = pipe.load(folder)
    hold_s = pipe.measured_hold_before_last_w_s(steps, ops) if pipe.ADOPT_SEND_HOLD_BEFORE_LAST_W else 0.0
    pooled_s = pipe.EP_FWD_POOLED_HOST_S.get(f"{gpu}x{num_gpus}")
    pooled_on = pipe.ADOPT_EP_FORWARD_HOST or (pipe.ADOPT_EP_FORWARD_HOST_X4 and num_gpus == 4)   # s28pp4: F4
    if pooled_on and host and pooled_s is not None:   # s27epfwd: the leases' EP forward rate
        host = {**host, pipe.EP_FWD_POOLED_KEY: pooled_s}
    return profile, accumulate, host, hold_s


def predict_ep(rows: list[dict], root: Path | str | None = None, num_gpus: int = 2,
               routing: pd.DataFrame | None = None, inputs: dict | None = None) -> pd.DataFrame:
    """The twin's seconds for each two-GPU step row (ep_step, or a pipeline_step row whose pp and
    schedule simulate_row reads: s20ppnew), as predict_folder prices a row of `<gpu>x2` (no routing
    records: the run's own routing is not known before it runs, and ADOPT_EP_ROUTED_ROWS is off),
    with each simulated rank's idle seconds (predicted_idle_r<rank>_s, as predict_folder's
    idle_simulated_s); `num_gpus` 4: four-GPU rows priced as a row of `<gpu>x4` (s21pp4). `routing`: the
    runs' pipeline_routing rows, each MoE layer then at its most loaded EP rank's rows (ep_layer_rows: the
    lockstep limit of the EP peers' rendezvous, s22pp4j); None: balanced, as the pre-registrations.
    `inputs`: {gpu: two_gpu_inputs(gpu, root, num_gpus)} already computed (filled in where missing)."""
    root = rec.records_root() if root is None else root
    inputs = {} if inputs is None else inputs
    out = []
    for r in rows:
        gpu = r["gpu"]
        if gpu not in inputs:
            inputs[gpu] = two_gpu_inputs(gpu, root, num_gpus)
        profile, accumulate, host, hold_s = inputs[gpu]
        row = pd.Series(r)
        result, step_s, _ = pipe.simulate_row(row, gpu_spec(gpu), profile, accumulate, host, None,
                                              pipe.ep_layer_rows(pd.DataFrame() if routing is None else routing, row,
                                                                 get_model(r["model"]).top_k),
                                              hold_s)
        idle = {f"predicted_idle_r{k}_s": float(v) for k, v in enumerate(result.idle_s)}
        out.append({**r, "predicted_s": float(step_s), **idle})
    return pd.DataFrame(out)


def predicted_components(row: dict, profile) -> dict[str, float]:
    """Where a row's predicted step goes: the step's seconds and the GPU seconds of each component
    of its ops (Eager.component_s: gemm, grouped_gemm, attention, memory, launch); the step minus
    their sum is host time the GPU waits for."""
    ops = train_step_ops(get_model(row["model"]), int(row["batch"]), int(row["seq_len"]), row["precision"],
                         gpu_spec(row["gpu"]), profile)
    return {"step_s": timed_window_s([], ops.ops, reps=1),
            **{f"{k}_s": float(v) for k, v in sorted(ops.component_s.items())}}


def dirty_paths(repo: Path) -> list[str]:
    """Uncommitted changes under the code that makes a prediction (twin/, calibration/ but the
    prereg folder): a prediction names the commit of its code, so that code must be the commit."""
    status = subprocess.run(["git", "status", "--porcelain", "--", "twin", "calibration"], capture_output=True,
                            text=True, check=True, cwd=repo).stdout.splitlines()
    return [s for s in status if "calibration/measurements/prereg/" not in s]


def refuses_uncommitted_record() -> bool:
    """A judge's `record` command: True (having said why on stderr) where twin/ or calibration/ holds uncommitted
    changes, since the record names the commit of the code that computed it."""
    dirty = dirty_paths(Path(__file__).resolve().parents[1])
    if dirty:
        print(f"record: uncommitted changes under twin/ or calibration/ ({dirty[:3]}): the file names the "
              "commit of the code that computed it", file=sys.stderr)
    return bool(dirty)


def write_code_record(path: Path, command: str, out: dict) -> None:
    """A judgement record: the command that wrote it, the code's commit, then the judgement, then the commit and the
    ADOPT_* switches it was computed under (calibration.judged_under, s30stale)."""
    commit = subprocess.run(["git", "rev-parse", "--short=8", "HEAD"], capture_output=True, text=True,
                            cwd=Path(__file__).resolve().parents[1], check=False).stdout.strip()
    write_json_text(path, json.dumps({"command": command, "code_commit": commit, **out, "commit": commit,
                                      "computed_under": judged_under.live_switches()}, indent=1, default=float) + "\n")


def jsonable(obj):
    """`obj` with numpy scalars made Python's and NaN made None (JSON's null), in dicts, lists and tuples at any depth."""
    if isinstance(obj, dict):
        return {k: jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [jsonable(v) for v in obj]
    if isinstance(obj, np.generic):
        return jsonable(obj.item())
    if isinstance(obj, float) and np.isnan(obj):
        return None
    return obj


def record_judgement(path: Path | None, name: str, sec: dict) -> int:
    """A pre-registration's `python -m calibration.<name> --json FILE` tail (s29dec's and s33blind's, s33dedup): where
    `path` is given, the judgement `sec` as a code record (write_code_record, its command naming
    calibration/<name>_judgement.json), refused (exit status 2) from uncommitted code; returns the exit status."""
    if path is None:
        return 0
    if refuses_uncommitted_record():
        return 2
    write_code_record(path, f"python -m calibration.{name} --json calibration/{name}_judgement.json", jsonable(sec))
    return 0


def write_registered(path: Path, predict: Callable[[], pd.DataFrame], allow_dirty: bool = False) -> pd.DataFrame:
    """Write a pre-registration's predictions file, stamped with the predicting code's commit and the time:
    refuses to overwrite one (a pre-registration is never redone) and to predict from uncommitted code."""
    if Path(path).exists():
        raise SystemExit(f"{path} exists: pre-registered predictions are never rewritten")
    dirty = dirty_paths(Path(__file__).resolve().parents[1])
    if dirty and not allow_dirty:
        raise SystemExit("uncommitted changes in the predicting code; commit first:\n" + "\n".join(dirty))
    df = predict()
    df["code_commit"] = git_commit()
    df["predicted_at_utc"] = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    # atomic (s25walk): a write killed half-way left a partial file that the next write refused to replace
    atomic.write_text(path, df.to_csv(index=False))
    return df


def write(path: Path | None = None, allow_dirty: bool = False, reg: Registration = S20NEW,
          ep: bool = False) -> pd.DataFrame:
    """Write the predictions file (`reg`'s train steps, or with `ep` the EP2 steps'); refuses to
    overwrite one (a pre-registration is never redone)."""
    path = reg.predictions_file if path is None else path
    return write_registered(path, lambda: predict_ep(ep_case_rows()) if ep else predict(case_rows(reg)), allow_dirty)


def measured(root: Path | str | None = None, reg: Registration = S20NEW) -> pd.DataFrame:
    """The campaign's rows of its benches (train_step, or prefill and decode) of every GPU folder that has them."""
    root = rec.records_root() if root is None else root
    cols = reg.key + ["time_s", "gpu_name"]
    frames = []
    for gpu in GPUS:
        path = Path(root) / gpu / reg.records_subdir / "model.csv"
        if csv_exists(path):
            df = read_csv(path)
            df = df[df["bench"].isin(reg.benches)].assign(gpu=gpu)
            frames.append(df[cols])
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=cols)


def measured_ep(root: Path | str | None = None, subdir: str = EP_RECORDS_SUBDIR) -> pd.DataFrame:
    """The EP campaign's ep_step rows of every two-GPU folder that has them (<gpu>x2/<subdir>/<model>/;
    `subdir` s20epnew's unless given: s28blind's are under s28blind/ep)."""
    root = rec.records_root() if root is None else root
    cols = EP_KEY + ["time_s", "gpu_name"]
    frames = []
    for gpu in GPUS:
        # one folder a model (the campaign runs real/pipeline once per model)
        for path in glob_csv(Path(root) / f"{gpu}x2" / subdir, "*/pipeline_step.csv"):
            df = read_csv(path)
            frames.append(df[df["bench"] == "ep_step"].assign(gpu=gpu)[cols])
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=cols)


def compare(predictions: pd.DataFrame, records: pd.DataFrame, reg: Registration = S20NEW,
            key: list[str] | None = None) -> tuple[pd.DataFrame, dict]:
    """Per-row error (predicted / measured - 1) of every measured row with a prediction, and per GPU
    (per GPU and bench, "h100 prefill", for a serve registration: issue 13 targets prefill and decode
    separately) the count, median and P90 of |error| and whether issue 13's target holds (`key`: the
    registration's key unless given, EP_KEY for the EP2 steps)."""
    key = reg.key if key is None else key
    rows = records.merge(predictions[key + ["predicted_s", "code_commit"]], on=key, how="inner")
    rows = rows.assign(rel_error=rows["predicted_s"] / rows["time_s"] - 1.0)
    groups = ["gpu", "bench"] if reg.section == "serve" else ["gpu"]
    summary = {}
    for names, sub in rows.groupby(groups):
        label = " ".join(names) if isinstance(names, tuple) else names
        errs = sub["rel_error"].abs().to_numpy()
        median, p90 = float(np.median(errs)), float(np.percentile(errs, 90))
        summary[label] = {"num_cases": int(errs.size), "median_abs_rel_error": median, "p90_abs_rel_error": p90,
                        "meets_target": bool(median <= MEDIAN_TARGET and p90 <= P90_TARGET)}
    return rows, summary


# s20gqa's GQA slices and s20new's MLA slices of the same MoE shapes (the secondary comparison)
GQA_MLA_PAIRS = {"mixtral-slice": "mixtral-mla-slice", "qwen3moe-slice": "qwen3moe-mla-slice"}


def paired_attention(gqa_rows: pd.DataFrame, mla_rows: pd.DataFrame, pairs: dict = GQA_MLA_PAIRS) -> pd.DataFrame:
    """Each measured GQA row beside the MLA row of the same MoE shapes, GPU, batch, length and precision
    (compare()'s rows of two registrations): the measured and predicted step ratios GQA / MLA and the
    ratio's error (predicted / measured - 1), which leaves out what the two steps share (the MoE, the
    head, the optimizer) and keeps what the attention pricing adds."""
    join = ["gpu", "batch", "seq_len", "precision"]
    mla = mla_rows.assign(model=mla_rows["model"].map({v: k for k, v in pairs.items()})).dropna(subset=["model"])
    both = gqa_rows.merge(mla[join + ["model", "time_s", "predicted_s"]], on=join + ["model"], suffixes=("", "_mla"))
    measured_ratio = both["time_s"] / both["time_s_mla"]
    predicted_ratio = both["predicted_s"] / both["predicted_s_mla"]
    return both.assign(measured_ratio=measured_ratio, predicted_ratio=predicted_ratio,
                       ratio_error=predicted_ratio / measured_ratio - 1.0)


def load_predictions(path: Path | None = None, reg: Registration = S20NEW) -> pd.DataFrame:
    return read_csv(reg.predictions_file if path is None else path)


def validate_section(root: Path | str | None = None, path: Path | None = None,
                     reg: Registration = S20NEW) -> dict:
    """`twin validate`'s part: the committed predictions beside the records under `root` (per row
    and per GPU); empty where no records (or no predictions file) exist."""
    root = rec.records_root() if root is None else root
    path = reg.predictions_file if path is None else path
    if not csv_exists(path):
        return {"registration": reg.name, "predictions_commit": None, "by_gpu": {}, "rows": []}
    preds = load_predictions(path)
    rows, summary = compare(preds, measured(root, reg), reg)
    cols = reg.key + ["time_s", "predicted_s", "rel_error"]
    return {"registration": reg.name, "predictions_commit": str(preds["code_commit"].iloc[0]), "by_gpu": summary,
            "rows": rows[cols].rename(columns={"time_s": "measured_s"}).to_dict("records")}


def ep_section(root: Path | str | None = None, path: Path = EP_PREDICTIONS_FILE) -> dict:
    """validate_section for the EP2 steps (s20epnew)."""
    root = rec.records_root() if root is None else root
    if not csv_exists(path):
        return {"predictions_commit": None, "by_gpu": {}, "rows": []}
    preds = load_predictions(path)
    rows, summary = compare(preds, measured_ep(root), key=EP_KEY)
    cols = EP_KEY + ["time_s", "predicted_s", "rel_error"]
    return {"predictions_commit": str(preds["code_commit"].iloc[0]), "by_gpu": summary,
            "rows": rows[cols].rename(columns={"time_s": "measured_s"}).to_dict("records")}


def format_ep_table(section: dict) -> str:
    """One line per GPU (issue 13's ep_step target: every row's |error| <= 5%, and the layers' median
    / P90 as a summary), then one per measured row."""
    head = f"Pre-registered EP2 steps (s20epnew; predictions of {(section['predictions_commit'] or 'none')[:7]})"
    if not section["by_gpu"]:
        return head + ": no records yet"
    lines = [head + ":"]
    worst = {}
    for r in section["rows"]:
        worst[r["gpu"]] = max(worst.get(r["gpu"], 0.0), abs(r["rel_error"]))
    for gpu, s in section["by_gpu"].items():
        lines.append(f"  prereg-ep {gpu}x2: {s['num_cases']} rows, max |err| {worst[gpu]:.1%} (target "
                     f"{EP_STEP_TARGET:.0%}: {'met' if worst[gpu] <= EP_STEP_TARGET else 'MISSED'}), median "
                     f"{s['median_abs_rel_error']:.1%}, P90 {s['p90_abs_rel_error']:.1%}")
    for r in section["rows"]:
        lines.append(f"    {r['gpu']}x2 {r['model']} l{r['num_layers']} n{r['num_microbatches']}: measured "
                     f"{r['measured_s'] * 1e3:.1f} ms, predicted {r['predicted_s'] * 1e3:.1f} ms ({r['rel_error']:+.1%})")
    return "\n".join(lines)


def _group_line(label: str, s: dict) -> str:
    """One group's verdict line: rows, median and P90 |error| against issue 13's targets."""
    return (f"  prereg {label}: {s['num_cases']} rows, median |err| {s['median_abs_rel_error']:.1%}, P90 "
            f"{s['p90_abs_rel_error']:.1%} (target {MEDIAN_TARGET:.0%} / {P90_TARGET:.0%}: "
            f"{'met' if s['meets_target'] else 'MISSED'})")


def _ratio_line(gpu: str, r: dict, probe: str) -> str:
    """A GPU's fitted probe ratio and the host time per kernel it gives at the run's median probe."""
    return (f"  {gpu}: probe ratio {r['probe_ratio']:.2f}, median {probe} probe {r['probe_launch_median_s'] * 1e6:.2f} us "
            f"-> {r['probe_ratio'] * r['probe_launch_median_s'] * 1e6:.1f} us a kernel")


def format_table(section: dict) -> str:
    """One line per GPU (the verdict), then one per measured row."""
    reg = REGISTRATIONS[section.get("registration", "s20new")]
    what = "serve steps (prefill, decode)" if reg.section == "serve" else "train steps"
    head = (f"Pre-registered {what}, models never recorded ({reg.name}; predictions of "
            f"{(section['predictions_commit'] or 'none')[:7]})")
    if not section["by_gpu"]:
        return head + ": no records yet"
    lines = [head + ":"]
    for gpu, s in section["by_gpu"].items():
        lines.append(_group_line(gpu, s))
    for r in section["rows"]:
        shape = f"{r['bench']} p{r['prompt_len']}" if reg.section == "serve" else f"s{r['seq_len']}"
        lines.append(f"    {r['gpu']} {r['model']} b{r['batch']} {shape} {r['precision']}: measured "
                     f"{r['measured_s'] * 1e3:.1f} ms, predicted {r['predicted_s'] * 1e3:.1f} ms ({r['rel_error']:+.1%})")
    return "\n".join(lines)


# Session s20gqa2: prefill and decode of s20gqa's GQA slices (real/model.py GQACache; the twin's
# whole_step prefill_ops / decode_ops pick GQA by spec.attention), s20new2's serve cases;
# real/campaigns/s20gqa2.sh's CASES, in its order (a test holds them equal). Judged as s20new2's.
S20GQA2 = Registration("s20gqa2", PREREG_DIR / "s20gqa2_predictions.csv", "s20gqa2",
                       tuple((m, 1024, 32, (1, 4, 16), (1, 8, 32, 128)) for m in ("mixtral-slice", "qwen3moe-slice")),
                       section="serve")
REGISTRATIONS[S20GQA2.name] = S20GQA2
# the lead's diagnostic rerun of s20gqa2's cases on one H100 (17:58 UTC, same code, cuDNN's SDPA switched off by
# torch.backends.cuda.enable_cudnn_sdp(False) around `python -m real.bench --only serve`): against the same
# predictions, reported, never judged (it is not the registered run); real/model.py's cached decode now keeps
# cuDNN out itself
S20GQA2_NOCUDNN = dataclasses.replace(S20GQA2, name="s20gqa2_nocudnn", records_subdir="s20gqa2_nocudnn")
REGISTRATIONS[S20GQA2_NOCUDNN.name] = S20GQA2_NOCUDNN


# Session s21host (docs/notes/s21host_rule.md): prefill and decode of two MLA and two GQA slices at a prompt
# length and batches no record holds (real/campaigns/s21host.sh's CASES, in its order; a test holds them
# equal), each record beside the launch probe taken right before it. Two predictions per row, both committed
# before the run: the plain twin's (predictions file, as s20new2's) and the host-input twin's as a function of
# the host time per kernel (the grid file: calibration/host_input.py host_grid_predictions), read at the
# run's own host time (its fitting rows' probe ratio x the row's probe). Judged on the first (cold) process
# of each GPU (<gpu>/s21host/); the second process (<gpu>/s21host_repeat/) is reported beside it.
S21HOST = Registration("s21host", PREREG_DIR / "s21host_predictions.csv", "s21host",
                       tuple((m, 512, 32, (2, 8), (2, 16, 64))
                             for m in ("qwen2moe-mla-slice", "mixtral-mla-slice", "qwen3moe-slice", "mixtral-slice")),
                       section="serve")
S21HOST_REPEAT = dataclasses.replace(S21HOST, name="s21host_repeat", records_subdir="s21host_repeat")
REGISTRATIONS[S21HOST.name] = S21HOST
REGISTRATIONS[S21HOST_REPEAT.name] = S21HOST_REPEAT
S21HOST_GRID_FILE = PREREG_DIR / "s21host_host_grid.csv.gz"


def predict_host_grid(rows: list[dict], root: Path | str | None = None,
                      hosts_s=host_input.HOST_GRID_S, synced: bool = False) -> pd.DataFrame:
    """Each serve row's prediction at every host time per kernel of `hosts_s`, under its GPU's committed
    profile (the op lists of predict(); only the host time per kernel differs); `synced`: each step from an
    idle device (whole_step.serve_window_s, s22host)."""
    root = rec.records_root() if root is None else root
    profiles = {}
    out = []
    for r in rows:
        gpu = r["gpu"]
        if gpu not in profiles:
            profiles[gpu] = load_fitted_profile(gpu, rec.load_records(gpu, root))[0]
        out += host_input.host_grid_predictions(r, gpu_spec(gpu), profiles[gpu], hosts_s, synced)
    return pd.DataFrame(out)


def write_host_grid(path: Path | None = None, allow_dirty: bool = False, reg: Registration = S21HOST) -> pd.DataFrame:
    """Write the host-input twin's grid file of `reg`'s rows (GRID_FILES[reg.name] by default, at its grid's
    host times); refuses to overwrite one."""
    path, hosts_s = GRID_FILES[reg.name] if path is None else (path, GRID_FILES[reg.name][1])
    return write_registered(path, lambda: predict_host_grid(case_rows(reg), hosts_s=hosts_s), allow_dirty)


def host_input_rows(root: Path | str | None = None, reg: Registration = S21HOST,
                    grid_path: Path = S21HOST_GRID_FILE) -> tuple[pd.DataFrame, dict]:
    """The run's rows (`reg`'s records) with the host-input twin's prediction: per GPU the probe ratio fitted on
    the run's own fitting host_dispatch rows (host_input.fit_probe_ratio), each row's host time per kernel
    (ratio x its probe) and the grid read there (`host_predicted_s`, `host_rel_error`); and per GPU the
    ratio and the fitting rows' host time per kernel. Empty without the grid or the records."""
    root = rec.records_root() if root is None else root
    if not csv_exists(grid_path):
        return pd.DataFrame(), {}
    grid = read_csv(grid_path)
    frames, ratios = [], {}
    for gpu in GPUS:
        folder = Path(root) / gpu / reg.records_subdir
        if not all(csv_exists(folder / f) for f in ("model.csv", "host_dispatch.csv", "host_probe.csv")):
            continue
        model, hd, probes = (read_csv(folder / f) for f in ("model.csv", "host_dispatch.csv", "host_probe.csv"))
        ratio = host_input.fit_probe_ratio(hd, probes, gpu)
        rows = model[model["bench"].isin(reg.benches)].assign(gpu=gpu).reset_index(drop=True)
        rows["infer_host_s_per_kernel"] = host_input.host_s_of_rows(rows, probes, ratio).to_numpy()
        g = grid[grid["gpu"] == gpu]
        preds = []
        for _, r in rows.iterrows():
            mine = g[(g["bench"] == r["bench"]) & (g["model"] == r["model"]) & (g["batch"] == int(r["batch"]))
                     & (g["prompt_len"] == int(r["prompt_len"])) & (g["gen_len"] == int(r["gen_len"]))]
            preds.append(host_input.grid_prediction(mine, r["infer_host_s_per_kernel"]) if len(mine) else np.nan)
        rows["host_predicted_s"] = preds
        rows["host_rel_error"] = rows["host_predicted_s"] / rows["time_s"] - 1.0
        frames.append(rows)
        ratios[gpu] = {"probe_ratio": ratio, "probe_launch_median_s": float(host_input.row_probes(probes)
                                                                            ["host_probe_launch_s"].median())}
    return (pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()), ratios


def host_input_summary(rows: pd.DataFrame) -> dict:
    """Per GPU and bench ("h100 decode"): count, median and P90 of |host_rel_error| and issue 13's verdict."""
    out = {}
    if rows.empty:
        return out
    for (gpu, bench), sub in rows.dropna(subset=["host_rel_error"]).groupby(["gpu", "bench"]):
        errs = sub["host_rel_error"].abs().to_numpy()
        median, p90 = float(np.median(errs)), float(np.percentile(errs, 90))
        out[f"{gpu} {bench}"] = {"num_cases": int(errs.size), "median_abs_rel_error": median, "p90_abs_rel_error": p90,
                                 "meets_target": bool(median <= MEDIAN_TARGET and p90 <= P90_TARGET)}
    return out


def host_section(root: Path | str | None = None, reg: Registration = S21HOST,
                 grid_path: Path = S21HOST_GRID_FILE) -> dict:
    """`twin validate`'s part prereg_s21host: the plain twin's comparison (validate_section) and the host-input
    twin's (host_input_rows: per GPU and bench the verdict, per GPU the fitted probe ratio, per row both
    predictions); `adopted`: calibration.whole_step.ADOPT_HOST_INPUT."""
    root = rec.records_root() if root is None else root
    plain = validate_section(root, reg=reg)
    rows, ratios = host_input_rows(root, reg, grid_path)
    cols = reg.key + ["time_s", "infer_host_s_per_kernel", "host_predicted_s", "host_rel_error"]
    return {"registration": reg.name, "plain": plain, "adopted": bool(whole_step.ADOPT_HOST_INPUT),
            "host_input": {"by_gpu": host_input_summary(rows), "ratios": ratios,
                           "rows": [] if rows.empty else rows[cols].rename(columns={"time_s": "measured_s"}).to_dict("records")}}


# docs/notes/s21host_rule.md's adoption criteria A1-A3 (A4, nothing else moves, is a test)
HOST_MEDIAN_SLACK = 0.01   # A2: a group's host-input median may exceed the plain one by at most 1.0 pt
HOST_P90_SLACK = 0.02      # and its P90 by at most 2.0 pt


def host_criteria(section: dict) -> dict:
    """A1 (H100 decode: host-input median and P90 <= plain's), A2 (no group worse than plain + slack), A3
    (groups meeting issue 13's targets: host-input >= plain) on host_section's figures, and `adopt` (all
    three, the H100 decode group present)."""
    plain, host = section["plain"]["by_gpu"], section["host_input"]["by_gpu"]
    groups = sorted(set(plain) & set(host))
    a1 = "h100 decode" in groups and all(host["h100 decode"][k] <= plain["h100 decode"][k]
                                         for k in ("median_abs_rel_error", "p90_abs_rel_error"))
    a2 = bool(groups) and all(host[g]["median_abs_rel_error"] <= plain[g]["median_abs_rel_error"] + HOST_MEDIAN_SLACK
                              and host[g]["p90_abs_rel_error"] <= plain[g]["p90_abs_rel_error"] + HOST_P90_SLACK
                              for g in groups)
    met_host = sum(host[g]["meets_target"] for g in groups)
    met_plain = sum(plain[g]["meets_target"] for g in groups)
    a3 = bool(groups) and met_host >= met_plain
    return {"groups": groups, "A1": bool(a1), "A2": bool(a2), "A3": bool(a3), "met_host_input": int(met_host),
            "met_plain": int(met_plain), "adopt": bool(a1 and a2 and a3)}


def format_host_table(section: dict) -> str:
    """The plain twin's table, then the host-input twin's verdicts, ratios and rows."""
    lines = [format_table(section["plain"])]
    host = section["host_input"]
    head = (f"Pre-registered serve steps, host-input twin ({section['registration']}; probe ratio fitted on the run's "
            f"fitting host_dispatch rows; ADOPT_HOST_INPUT {'on' if section['adopted'] else 'off'})")
    if not host["by_gpu"]:
        return "\n".join(lines + [head + ": no records yet"])
    lines.append(head + ":")
    for gpu, r in host["ratios"].items():
        lines.append(_ratio_line(gpu, r, "serve"))
    for label, s in host["by_gpu"].items():
        lines.append(_group_line(f"{label} (host-input)", s))
    c = host_criteria(section)
    lines.append(f"  rule s21host: A1 {c['A1']}, A2 {c['A2']}, A3 {c['A3']} (groups met: host-input {c['met_host_input']}, "
                 f"plain {c['met_plain']}) -> {'adopt' if c['adopt'] else 'not adopted'}")
    for r in host["rows"]:
        lines.append(f"    {r['gpu']} {r['model']} b{r['batch']} {r['bench']} p{r['prompt_len']}: measured "
                     f"{r['measured_s'] * 1e3:.2f} ms, host {r['infer_host_s_per_kernel'] * 1e6:.1f} us/kernel, predicted "
                     f"{r['host_predicted_s'] * 1e3:.2f} ms ({r['host_rel_error']:+.1%})")
    return "\n".join(lines)


# Session s21host2 (docs/notes/s21host2_rule.md): prefill and decode of the two MLA and two GQA slices at prompt
# lengths and batches no record holds (real/campaigns/s21host2.sh's CASES, in its order; a test holds them
# equal), every timed step beside its own probe (real/bench/host_steps.py). Two predictions per row, both
# committed before the run: the plain twin's (predictions file) and, per step, the step-input twin's as a
# function of the host time per kernel (the grid file, at step_host.STEP_HOST_GRID_S), read at each probed
# step's host time (the run's fitting repetitions' ratio x the step's probe); a record's figure is the median
# over its probed steps. Judged on the cold process of each GPU (<gpu>/s21host2/); <gpu>/s21host2_repeat/ beside.
S21HOST2 = Registration("s21host2", PREREG_DIR / "s21host2_predictions.csv", "s21host2",
                        tuple((m, P, 64, (1, 4), (4, 32, 128))
                              for m in ("qwen2moe-mla-slice", "mixtral-mla-slice", "qwen3moe-slice", "mixtral-slice")
                              for P in (256, 2048)),
                        section="serve")
S21HOST2_REPEAT = dataclasses.replace(S21HOST2, name="s21host2_repeat", records_subdir="s21host2_repeat")
REGISTRATIONS[S21HOST2.name] = S21HOST2
REGISTRATIONS[S21HOST2_REPEAT.name] = S21HOST2_REPEAT
S21HOST2_GRID_FILE = PREREG_DIR / "s21host2_step_grid.csv.gz"
# registration -> (its grid file, the host times per kernel it is written at)
GRID_FILES = {S21HOST.name: (S21HOST_GRID_FILE, host_input.HOST_GRID_S),
              S21HOST2.name: (S21HOST2_GRID_FILE, step_host.STEP_HOST_GRID_S)}
# Session s22host (docs/notes/s22host_rule.md): models no prefill/decode record holds (v3-slice-1l, bench-small),
# served as s21host2 serves (real/campaigns/s22host.sh's CASES, in its order; a test holds them equal), the cold
# process only. Three files before the run: the plain twin's predictions, the step-input twin's grid (back-to-back
# window, as s21host2's) and the synchronised step-input twin's grid (ADOPT_SYNCED_STEPS's window).
S22HOST = Registration("s22host", PREREG_DIR / "s22host_predictions.csv", "s22host",
                       tuple((m, P, 64, (1, 4), (4, 32)) for m in ("v3-slice-1l", "bench-small") for P in (512, 1024)),
                       section="serve")
REGISTRATIONS[S22HOST.name] = S22HOST
GRID_FILES[S22HOST.name] = (PREREG_DIR / "s22host_step_grid.csv.gz", step_host.STEP_HOST_GRID_S)
# registration -> the synchronised twin's grid of its cases (step grid's host times; whole_step.serve_window_s synced)
SYNC_GRID_FILES = {S21HOST2.name: PREREG_DIR / "s22host_s21host2_sync_grid.csv.gz",
                   S22HOST.name: PREREG_DIR / "s22host_sync_grid.csv.gz"}


# s22hostocc (docs/notes/s22hostocc_rule.md): the candidate's grids (synchronised window with whole_step's
# ADOPT_DECODE_OCCUPANCY on), at the step grid's host times
OCC_GRID_FILES = {S21HOST2.name: PREREG_DIR / "s22hostocc_s21host2_grid.csv.gz",
                  S22HOST.name: PREREG_DIR / "s22hostocc_s22host_grid.csv.gz"}


# the repeat part of s21host2 is read on its registration's grids
SYNC_GRID_FILES[S21HOST2_REPEAT.name] = SYNC_GRID_FILES[S21HOST2.name]
OCC_GRID_FILES[S21HOST2_REPEAT.name] = OCC_GRID_FILES[S21HOST2.name]


def predict_occupancy_grid(rows: list[dict]) -> pd.DataFrame:
    """predict_host_grid (synchronised) with the decode occupancy term on for the duration."""
    saved = whole_step.ADOPT_DECODE_OCCUPANCY
    whole_step.ADOPT_DECODE_OCCUPANCY = True
    try:
        return predict_host_grid(rows, hosts_s=step_host.STEP_HOST_GRID_S, synced=True)
    finally:
        whole_step.ADOPT_DECODE_OCCUPANCY = saved


def write_occupancy_grid(path: Path | None = None, allow_dirty: bool = False, reg: Registration = S22HOST) -> pd.DataFrame:
    """Write s22hostocc's candidate grid of `reg`'s rows (OCC_GRID_FILES[reg.name] by default); refuses to overwrite."""
    path = OCC_GRID_FILES[reg.name] if path is None else path
    return write_registered(path, lambda: predict_occupancy_grid(case_rows(reg)), allow_dirty)


def write_sync_grid(path: Path | None = None, allow_dirty: bool = False, reg: Registration = S21HOST2) -> pd.DataFrame:
    """Write the synchronised step-input twin's grid of `reg`'s rows (SYNC_GRID_FILES[reg.name] by default, at the
    step grid's host times); refuses to overwrite one."""
    path = SYNC_GRID_FILES[reg.name] if path is None else path
    return write_registered(path, lambda: predict_host_grid(case_rows(reg), hosts_s=step_host.STEP_HOST_GRID_S,
                                                            synced=True), allow_dirty)


def step_rows(root: Path | str | None = None, reg: Registration = S21HOST2,
              grid_path: Path = S21HOST2_GRID_FILE, extra_grids: dict | None = None) -> tuple[pd.DataFrame, dict]:
    """The run's rows (`reg`'s records) with the step-input twin's prediction (`step_predicted_s`: the median
    over the record's probed steps of the grid read at each step's host time, step_host.record_prediction;
    `step_rel_error` against time_s, the probed steps' median), the probe's effect (probed / control median
    - 1) and the probe-step rank correlation; per GPU the fitted ratio. `extra_grids` {name: grid path} (s22host):
    other twins' figures read the same way from their grids (`<name>_predicted_s`, `<name>_rel_error`), where the
    grid exists. Empty without grid or records."""
    root = rec.records_root() if root is None else root
    if not csv_exists(grid_path):
        return pd.DataFrame(), {}
    grid = read_csv(grid_path)
    extra = {name: read_csv(path) for name, path in (extra_grids or {}).items() if path is not None and csv_exists(path)}
    frames, ratios = [], {}
    for gpu in GPUS:
        folder = Path(root) / gpu / reg.records_subdir
        if not all(csv_exists(folder / f) for f in ("model.csv", "host_dispatch.csv", "serve_steps.csv")):
            continue
        model, hd, steps = (read_csv(folder / f) for f in ("model.csv", "host_dispatch.csv", "serve_steps.csv"))
        # s25host2: under ADOPT_BRACKET_PROBE each probe is the geometric mean of the probes before and after its step
        # (folders with step_after rows only)
        steps = step_bracket.folder_steps(folder, steps)
        # s23hrate candidate 2: under ADOPT_POOLED_RATIO the GPU type's pooled fitting ratio, else the run's own
        ratio = op_host_rate.run_ratio(gpu, step_host.fit_step_ratio(hd, steps, gpu))
        rows = model[model["bench"].isin(reg.benches)].assign(gpu=gpu).reset_index(drop=True)
        # s23hrate: under ADOPT_OP_HOST_RATE each record's ratio times its step's per-call factor (1 when off)
        op_profile = load_fitted_profile(gpu, rec.load_records(gpu, root))[0] if op_host_rate.ADOPT_OP_HOST_RATE else None
        rows["op_host_factor"] = [op_host_rate.record_factor(r, gpu, op_profile) for _, r in rows.iterrows()]
        preds, hosts, effects, corrs = [], [], [], []
        for _, r in rows.iterrows():
            preds.append(_grid_record_prediction(grid, gpu, steps, r, ratio * r["op_host_factor"]))
            hosts.append(step_host.step_host_s_of_record(steps, r, ratio * r["op_host_factor"]))
            effects.append(step_host.probe_effect(steps, r))
            corrs.append(step_host.probe_step_correlation(steps, r))
        rows["step_infer_host_s_per_kernel"] = hosts
        rows["step_predicted_s"] = preds
        rows["step_rel_error"] = rows["step_predicted_s"] / rows["time_s"] - 1.0
        for name, other in extra.items():
            rows[f"{name}_predicted_s"] = [_grid_record_prediction(other, gpu, steps, r, ratio * r["op_host_factor"])
                                           for _, r in rows.iterrows()]
            rows[f"{name}_rel_error"] = rows[f"{name}_predicted_s"] / rows["time_s"] - 1.0
        rows["probe_effect"] = effects
        rows["probe_step_rank_corr"] = corrs
        frames.append(rows)
        probed = steps[(steps["block"] == "probed") & steps["bench"].isin(reg.benches)]["host_probe_launch_s"]
        ratios[gpu] = {"probe_ratio": ratio, "probe_launch_median_s": float(probed.astype(float).median())}
        if csv_exists(folder / "serve_kernels.csv"):
            profile = load_fitted_profile(gpu, rec.load_records(gpu, root))[0]
            counts = step_host.kernel_counts(read_csv(folder / "serve_kernels.csv"), gpu_spec(gpu), profile)
            ratios[gpu]["decode_kernels"] = counts[["model", "batch", "prompt_len", "cache_len", "kernels", "aten_ops",
                                                    "twin_ops"]].to_dict("records")
    return (pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()), ratios


def _grid_record_prediction(grid: pd.DataFrame, gpu: str, steps: pd.DataFrame, r, ratio: float) -> float:
    """A record's figure read on a grid file (its rows of that GPU and case; NaN where the grid lacks the case)."""
    mine = grid[(grid["gpu"] == gpu) & (grid["bench"] == r["bench"]) & (grid["model"] == r["model"])
                & (grid["batch"] == int(r["batch"])) & (grid["prompt_len"] == int(r["prompt_len"]))
                & (grid["gen_len"] == int(r["gen_len"]))]
    return step_host.record_prediction(mine, steps, r, ratio) if len(mine) else np.nan


def step_summary(rows: pd.DataFrame) -> dict:
    """Per GPU and bench: count, median and P90 of |step_rel_error|, issue 13's verdict, and the median probe
    effect (probed / control median - 1) over the group's records."""
    out = {}
    if rows.empty:
        return out
    for (gpu, bench), sub in rows.dropna(subset=["step_rel_error"]).groupby(["gpu", "bench"]):
        errs = sub["step_rel_error"].abs().to_numpy()
        median, p90 = float(np.median(errs)), float(np.percentile(errs, 90))
        out[f"{gpu} {bench}"] = {"num_cases": int(errs.size), "median_abs_rel_error": median, "p90_abs_rel_error": p90,
                                 "meets_target": bool(median <= MEDIAN_TARGET and p90 <= P90_TARGET),
                                 "probe_effect_median": float(sub["probe_effect"].median())}
    return out


def step_section(root: Path | str | None = None, reg: Registration = S21HOST2,
                 grid_path: Path = S21HOST2_GRID_FILE, sync_grid_path: Path | None = SYNC_GRID_FILES[S21HOST2.name],
                 occupancy_grid_path: Path | None = OCC_GRID_FILES[S21HOST2.name]) -> dict:
    """`twin validate`'s part prereg_s21host2: the plain twin's comparison (validate_section), the step-input
    twin's (step_rows), the probe's effect; `adopted`: calibration.whole_step.ADOPT_STEP_HOST_INPUT. Where their
    grids exist, session s22host's candidates on the same rows: `synced` (docs/notes/s22host_rule.md, the synchronised
    step-input twin; `synced_adopted`: whole_step.ADOPT_SYNCED_STEPS) and `occupancy` (docs/notes/s22hostocc_rule.md,
    synchronised with the decode occupancy term; `occupancy_adopted`: whole_step.ADOPT_DECODE_OCCUPANCY)."""
    root = rec.records_root() if root is None else root
    plain = validate_section(root, reg=reg)
    rows, ratios = step_rows(root, reg, grid_path, {"synced": sync_grid_path, "occupancy": occupancy_grid_path})
    cols = reg.key + ["time_s", "step_infer_host_s_per_kernel", "step_predicted_s", "step_rel_error", "probe_effect",
                      "probe_step_rank_corr"]
    out = {"registration": reg.name, "plain": plain, "adopted": bool(whole_step.ADOPT_STEP_HOST_INPUT),
           "step_input": {"by_gpu": step_summary(rows), "ratios": ratios,
                          "rows": [] if rows.empty else rows[cols].rename(columns={"time_s": "measured_s"}).to_dict("records")}}
    for name, switch in (("synced", "ADOPT_SYNCED_STEPS"), ("occupancy", "ADOPT_DECODE_OCCUPANCY")):
        if f"{name}_predicted_s" in rows.columns:
            # the candidate's figures in the step-input columns, so step_summary and the criteria read them alike
            crows = rows.drop(columns=["step_predicted_s", "step_rel_error"]).rename(
                columns={f"{name}_predicted_s": "step_predicted_s", f"{name}_rel_error": "step_rel_error"})
            out[name] = {"by_gpu": step_summary(crows),
                         "rows": crows[cols].rename(columns={"time_s": "measured_s"}).to_dict("records")}
            out[f"{name}_adopted"] = bool(getattr(whole_step, switch))
    return out


def s22host_section(root: Path | str | None = None) -> dict:
    """`twin validate`'s part prereg_s22host: step_section on registration s22host's records and its own grids (the
    back-to-back step-input twin's, the synchronised one's, s22hostocc's candidate's)."""
    root = rec.records_root() if root is None else root
    return step_section(root, S22HOST, GRID_FILES[S22HOST.name][0], SYNC_GRID_FILES[S22HOST.name],
                        OCC_GRID_FILES[S22HOST.name])



# Session s22host2 (docs/notes/s22host2_rule.md): the s22host candidates judged ONLY on a fresh run of models no
# prefill/decode record holds: llama3-8b (GQA, dense: Meta-Llama-3-8B's shapes) and tiny (MLA, every V3 feature at a
# CPU size: a host-bound step with no GPU tail), s22host's cases (real/campaigns/s22host2.sh's CASES, in its order; a
# test holds them equal), the cold process only. Four files before the run: plain predictions, the back-to-back
# step-input grid, the synchronised grid and the synchronised + occupancy grid.
S22HOST2 = Registration("s22host2", PREREG_DIR / "s22host2_predictions.csv", "s22host2",
                        tuple((m, P, 64, (1, 4), (4, 32)) for m in ("llama3-8b", "tiny") for P in (512, 1024)),
                        section="serve")
REGISTRATIONS[S22HOST2.name] = S22HOST2
GRID_FILES[S22HOST2.name] = (PREREG_DIR / "s22host2_step_grid.csv.gz", step_host.STEP_HOST_GRID_S)
SYNC_GRID_FILES[S22HOST2.name] = PREREG_DIR / "s22host2_sync_grid.csv.gz"
OCC_GRID_FILES[S22HOST2.name] = PREREG_DIR / "s22host2_occ_grid.csv.gz"


# Session s23hrate (docs/notes/s23hrate_rule.md): the per-call host term (calibration.op_host_rate, ADOPT_OP_HOST_RATE)
# judged on a fresh run of two models no prefill / decode record holds: tiny-gqa (GQA + MoE at a CPU size, ~130 ops a
# step: the factor near 0.92) and megatron-gpt-1.7b (dense, 24 layers, learned positions, ~750 ops: near 0.82), at
# prompts and batches no registration used (real/campaigns/s23hrate.sh's CASES, in its order; a test holds them
# equal). Files before the run: the plain twin's predictions, the back-to-back step-input twin's grid (the candidate
# reads the same grid at ratio x probe x its factor) and the candidate's factor per case.
S23HRATE = Registration("s23hrate", PREREG_DIR / "s23hrate_predictions.csv", "s23hrate",
                        tuple((m, P, 64, (1, 4), (8, 32)) for m in ("tiny-gqa", "megatron-gpt-1.7b") for P in (384, 768)),
                        section="serve")
REGISTRATIONS[S23HRATE.name] = S23HRATE
GRID_FILES[S23HRATE.name] = (PREREG_DIR / "s23hrate_step_grid.csv.gz", step_host.STEP_HOST_GRID_S)
SYNC_GRID_FILES[S23HRATE.name] = None
OCC_GRID_FILES[S23HRATE.name] = None
OP_FACTOR_FILES = {S23HRATE.name: PREREG_DIR / "s23hrate_op_factors.csv"}
# the lead's second ask ran the campaign again on the same (warm) H100 ~2.5 min later: a same-host repeat, read on
# the same files, reported beside the fresh run, not judged (docs/notes/s23hrate_rule.md)
S23HRATE_REPEAT = dataclasses.replace(S23HRATE, name="s23hrate_repeat", records_subdir="s23hrate_repeat")
REGISTRATIONS[S23HRATE_REPEAT.name] = S23HRATE_REPEAT
GRID_FILES[S23HRATE_REPEAT.name] = GRID_FILES[S23HRATE.name]
# two more fresh H100 hosts (the lead's nvidia-h200 / nvidia-h200-x2 asks, served by H100s), cold, 00:26 and 00:29 UTC:
# fresh runs of the same files, after both candidates' rules (s23hrate itself ran before candidate 2's)
for _sub in ("s23hrate_b", "s23hrate_c"):
    REGISTRATIONS[_sub] = dataclasses.replace(S23HRATE, name=_sub, records_subdir=_sub)
    GRID_FILES[_sub] = GRID_FILES[S23HRATE.name]
# Session s25host2 (docs/notes/s25host2_rule.md): every timed step and fitting repetition bracketed by two 3 ms launch
# probes (right before and right after it; real/bench/host_steps.py under REAL_BENCH_STEP_AFTER_PROBE), on two models
# no prefill / decode record holds: v2-lite-slice (MLA + MoE) and megatron-gpt-7.1b (dense, 32 layers), at prompts,
# batches and generation lengths no registration used (real/campaigns/s25host2.sh's CASES, in its order; a test holds
# them equal). One file before the run: the back-to-back step-input twin's grid (both the committed probe and the
# bracketed one read it, each at its own host time per kernel).
S25HOST2 = Registration("s25host2", PREREG_DIR / "s25host2_predictions.csv", "s25host2",
                        (("v2-lite-slice", 320, 48, (1, 4), (8, 32)), ("v2-lite-slice", 640, 48, (1, 4), (8, 32)),
                         ("megatron-gpt-7.1b", 160, 48, (1,), (8, 32)), ("megatron-gpt-7.1b", 320, 48, (1,), (8, 32))),
                        section="serve")
REGISTRATIONS[S25HOST2.name] = S25HOST2
GRID_FILES[S25HOST2.name] = (PREREG_DIR / "s25host2_step_grid.csv.gz", step_host.STEP_HOST_GRID_S)
# a later fresh host of the same archive (reported beside the judged run, not judged)
REGISTRATIONS["s25host2_b"] = dataclasses.replace(S25HOST2, name="s25host2_b", records_subdir="s25host2_b")
GRID_FILES["s25host2_b"] = GRID_FILES[S25HOST2.name]
# the earlier fresh runs the rule also reads (seen before it, in aggregate: disclosed in the note)
# s21host2b's three runs (real/campaigns/s21host2b.sh: s21host2's p256 decode cases, read on s21host2's grid)
for _sub in ("s21host2b_2119", "s21host2b_2120", "s21host2b_2121"):
    REGISTRATIONS[_sub] = dataclasses.replace(S21HOST2, name=_sub, records_subdir=_sub)
    GRID_FILES[_sub] = GRID_FILES[S21HOST2.name]
OP_RATE_SEEN_REGS = ("s21host2b_2119", "s21host2b_2120", "s21host2b_2121", "s22host", "s22host2")


def op_factor_rows(rows: list[dict], root: Path | str | None = None) -> pd.DataFrame:
    """Each case's twin op count and per-call factor (op_host_rate.call_term over FIT_RUNS' fitting repetitions)."""
    root = rec.records_root() if root is None else root
    rate, call = op_host_rate.call_term(str(root))
    profiles, out = {}, []
    for r in rows:
        gpu = r["gpu"]
        if gpu not in profiles:
            profiles[gpu] = load_fitted_profile(gpu, rec.load_records(gpu, root))[0]
        ops = op_host_rate.step_ops(r, gpu, profiles[gpu])
        out.append({**r, "twin_ops": ops, "rate_per_kernel": rate, "call_kernels": call,
                    "op_host_factor": op_host_rate.call_factor(ops, rate, call)})
    return pd.DataFrame(out)


def write_op_factors(path: Path | None = None, allow_dirty: bool = False, reg: Registration = S23HRATE) -> pd.DataFrame:
    """Write the candidate's factor per case of `reg` (OP_FACTOR_FILES[reg.name]); refuses to overwrite."""
    path = OP_FACTOR_FILES[reg.name] if path is None else path
    return write_registered(path, lambda: op_factor_rows(case_rows(reg)), allow_dirty)


OP_RATE_CANDIDATES = {"op_rate": "ADOPT_OP_HOST_RATE", "pooled": "ADOPT_POOLED_RATIO"}


def op_rate_sections(reg: Registration, root: Path | str | None = None, candidate: str = "op_rate") -> dict:
    """`reg`'s step-input twin read on its back-to-back grid with the candidate's switch of op_host_rate
    (OP_RATE_CANDIDATES) off (`step_input`) and on (`op_rate`), each {by_gpu, rows} as step_section's; the other
    candidate's switch off in both."""
    root = rec.records_root() if root is None else root
    out = {}
    saved = {sw: getattr(op_host_rate, sw) for sw in OP_RATE_CANDIDATES.values()}
    try:
        for sw in OP_RATE_CANDIDATES.values():
            setattr(op_host_rate, sw, False)
        for name, setting in (("step_input", False), ("op_rate", True)):
            setattr(op_host_rate, OP_RATE_CANDIDATES[candidate], setting)
            rows, _ = step_rows(root, reg, GRID_FILES[reg.name][0])
            cols = reg.key + ["time_s", "op_host_factor", "step_infer_host_s_per_kernel", "step_predicted_s",
                              "step_rel_error"]
            out[name] = {"by_gpu": step_summary(rows),
                         "rows": [] if rows.empty else rows[cols].rename(columns={"time_s": "measured_s"}).to_dict("records")}
    finally:
        for sw, v in saved.items():
            setattr(op_host_rate, sw, v)
    return out


def op_rate_criteria(fresh: dict, seen: list[dict]) -> dict:
    """docs/notes/s23hrate_rule.md. Candidate C (op_rate) against B (step_input). On the fresh run (`fresh`): R1
    every (gpu, bench) group median <= B's + 1.0 pt and P90 <= B's + 2.0 pt; R2 all rows pooled median and P90 <=
    B's; R3 groups meeting issue 13's targets C >= B. On the earlier fresh runs (`seen`, each op_rate_sections):
    R4 all their rows pooled median and P90 <= B's; R5 their groups meeting the targets C >= B. `adopt`: R1-R5."""
    ref, cand = fresh["step_input"], fresh["op_rate"]
    groups = sorted(set(ref["by_gpu"]) & set(cand["by_gpu"]))
    r1 = bool(groups) and all(
        cand["by_gpu"][g]["median_abs_rel_error"] <= ref["by_gpu"][g]["median_abs_rel_error"] + HOST_MEDIAN_SLACK
        and cand["by_gpu"][g]["p90_abs_rel_error"] <= ref["by_gpu"][g]["p90_abs_rel_error"] + HOST_P90_SLACK
        for g in groups)
    met = lambda d, name: sum(v["meets_target"] for v in d[name]["by_gpu"].values())
    seen_rows = {name: [r for s in seen for r in s[name]["rows"]] for name in ("step_input", "op_rate")}
    out = {"groups": groups, "R1": bool(r1), "R2": _no_worse(_abs_errs(cand["rows"]), _abs_errs(ref["rows"])),
           "R3": bool(groups) and met(fresh, "op_rate") >= met(fresh, "step_input"),
           "met": int(met(fresh, "op_rate")), "met_step_input": int(met(fresh, "step_input")),
           "R4": _no_worse(_abs_errs(seen_rows["op_rate"]), _abs_errs(seen_rows["step_input"])),
           "R5": sum(met(s, "op_rate") for s in seen) >= sum(met(s, "step_input") for s in seen),
           "seen_met": int(sum(met(s, "op_rate") for s in seen)),
           "seen_met_step_input": int(sum(met(s, "step_input") for s in seen))}
    out["adopt"] = bool(all(out[k] for k in ("R1", "R2", "R3", "R4", "R5")))
    return out


def format_op_rate(fresh: dict, seen: dict[str, dict]) -> str:
    """The rule's tables: per registration, group and twin, median / P90 |err| and the verdicts."""
    lines = []
    for label, sec in [("s23hrate (fresh)", fresh)] + [(k, v) for k, v in seen.items()]:
        for name in ("step_input", "op_rate"):
            for g, s in sec[name]["by_gpu"].items():
                lines.append(_group_line(f"{label} {name} {g}", s))
    c = op_rate_criteria(fresh, list(seen.values()))
    lines.append(f"  rule s23hrate: R1 {c['R1']}, R2 {c['R2']}, R3 {c['R3']} (groups met {c['met']} vs "
                 f"{c['met_step_input']}), R4 {c['R4']}, R5 {c['R5']} (seen groups met {c['seen_met']} vs "
                 f"{c['seen_met_step_input']}) -> {'adopt' if c['adopt'] else 'not adopted'}")
    return "\n".join(lines)


def registered_step_section(reg: Registration, root: Path | str | None = None) -> dict:
    """step_section on `reg`'s records and its own grids (back-to-back step-input, synchronised, occupancy)."""
    root = rec.records_root() if root is None else root
    return step_section(root, reg, GRID_FILES[reg.name][0], SYNC_GRID_FILES[reg.name], OCC_GRID_FILES[reg.name])


def _abs_errs(rows: list[dict], bench: str | None = None) -> list[float]:
    return [abs(r["step_rel_error"]) for r in rows
            if (bench is None or r["bench"] == bench) and np.isfinite(r["step_rel_error"])]


def _no_worse(errs: list[float], ref: list[float]) -> bool:
    """Median and P90 of |err| both <= the reference's (both non-empty)."""
    return bool(errs) and bool(ref) and all(np.percentile(errs, q) <= np.percentile(ref, q) for q in (50, 90))


def fresh_criteria(section: dict) -> dict:
    """docs/notes/s22host2_rule.md on one step_section of the fresh run. Synchronised twin (S) against the adopted
    back-to-back step-input twin (B): E1 every (gpu, bench) group median <= B's + 1.0 pt and P90 <= B's + 2.0 pt;
    E2 all rows pooled (both GPUs, prefill and decode) median and P90 <= B's; E3 groups meeting issue 13's targets
    S >= B. `adopt_synced`: E1-E3. Occupancy candidate (O, synchronised + occupancy): F1 = E1-E3 for O against B, F2
    O's decode rows pooled median and P90 <= S's; `adopt_occupancy`: adopt_synced and F1 and F2."""
    out = {}
    ref = section["step_input"]
    for name in ("synced", "occupancy"):
        if name not in section or not section[name]["by_gpu"]:
            continue
        cand = section[name]
        groups = sorted(set(ref["by_gpu"]) & set(cand["by_gpu"]))
        e1 = bool(groups) and all(
            cand["by_gpu"][g]["median_abs_rel_error"] <= ref["by_gpu"][g]["median_abs_rel_error"] + HOST_MEDIAN_SLACK
            and cand["by_gpu"][g]["p90_abs_rel_error"] <= ref["by_gpu"][g]["p90_abs_rel_error"] + HOST_P90_SLACK
            for g in groups)
        e2 = _no_worse(_abs_errs(cand["rows"]), _abs_errs(ref["rows"]))
        met_cand, met_ref = (sum(d["by_gpu"][g]["meets_target"] for g in groups) for d in (cand, ref))
        out[name] = {"groups": groups, "E1": bool(e1), "E2": bool(e2), "E3": bool(groups) and met_cand >= met_ref,
                     "met": int(met_cand), "met_back_to_back": int(met_ref)}
        out[name]["pass"] = bool(out[name]["E1"] and out[name]["E2"] and out[name]["E3"])
    synced, occ = out.get("synced", {}), out.get("occupancy", {})
    out["adopt_synced"] = bool(synced.get("pass"))
    out["F2"] = bool(occ) and bool(synced) and _no_worse(_abs_errs(section["occupancy"]["rows"], "decode"),
                                                         _abs_errs(section["synced"]["rows"], "decode"))
    out["adopt_occupancy"] = bool(out["adopt_synced"] and occ.get("pass") and out["F2"])
    return out


def format_fresh_lines(section: dict) -> list[str]:
    """s22host2's verdicts (fresh_criteria) under the candidates' tables."""
    c = fresh_criteria(section)
    lines = []
    for name in ("synced", "occupancy"):
        if name in c:
            v = c[name]
            lines.append(f"  rule s22host2, {name} against back-to-back: E1 {v['E1']}, E2 {v['E2']}, E3 {v['E3']} "
                         f"(groups met: {name} {v['met']}, back-to-back {v['met_back_to_back']})")
    lines.append(f"  rule s22host2: F2 (occupancy decode pooled <= synced) {c['F2']}; adopt ADOPT_SYNCED_STEPS "
                 f"{c['adopt_synced']}, ADOPT_DECODE_OCCUPANCY {c['adopt_occupancy']}")
    return lines

def signed_means(rows: list[dict]) -> dict:
    """Per GPU and bench, the mean signed step_rel_error (reported beside the verdicts)."""
    df = pd.DataFrame(rows)
    if df.empty:
        return {}
    return {f"{g} {b}": float(s["step_rel_error"].mean()) for (g, b), s in df.groupby(["gpu", "bench"])}


def sync_criteria(section: dict, candidate: str = "synced") -> dict:
    """docs/notes/s22host_rule.md's C1 (decode rows of both GPUs pooled: synchronised median and P90 |err| <= the
    back-to-back step-input twin's), C2 (no (gpu, bench) group worse than back-to-back + s21host's slack), C3 (groups
    meeting issue 13's targets: synchronised >= back-to-back) on one step_section; `pass` all three."""
    b2b, sync = section["step_input"]["by_gpu"], section[candidate]["by_gpu"]
    groups = sorted(set(b2b) & set(sync))

    def decode_errs(rows):
        return [abs(r["step_rel_error"]) for r in rows if r["bench"] == "decode" and np.isfinite(r["step_rel_error"])]

    e_b2b, e_sync = decode_errs(section["step_input"]["rows"]), decode_errs(section[candidate]["rows"])
    c1 = bool(e_sync) and all(np.percentile(e_sync, q) <= np.percentile(e_b2b, q) for q in (50, 90))
    c2 = bool(groups) and all(sync[g]["median_abs_rel_error"] <= b2b[g]["median_abs_rel_error"] + HOST_MEDIAN_SLACK
                              and sync[g]["p90_abs_rel_error"] <= b2b[g]["p90_abs_rel_error"] + HOST_P90_SLACK
                              for g in groups)
    met_sync, met_b2b = (sum(d[g]["meets_target"] for g in groups) for d in (sync, b2b))
    c3 = bool(groups) and met_sync >= met_b2b
    pooled = {name: {"median_abs_rel_error": float(np.median(e)), "p90_abs_rel_error": float(np.percentile(e, 90))}
              for name, e in (("back_to_back", e_b2b), ("synced", e_sync)) if e}
    return {"groups": groups, "C1": bool(c1), "C2": bool(c2), "C3": bool(c3), "met_synced": int(met_sync),
            "met_back_to_back": int(met_b2b), "decode_pooled": pooled, "pass": bool(c1 and c2 and c3)}


# session s22host's candidates: (section key, title, its rule's name, its criteria's names)
CANDIDATES = {"synced": ("synchronised step-input twin (s22host: each step from an idle device)", "s22host",
                         ("C1", "C2", "C3")),
              "occupancy": ("synchronised step-input twin with the decode occupancy term (s22hostocc)", "s22hostocc",
                            ("D1 pooled", "D1/D2 groups", "groups met"))}


def format_sync_lines(section: dict) -> list[str]:
    """Each s22host candidate's verdicts, criteria and rows (none without its grid)."""
    lines = []
    for name, (title, rule, labels) in CANDIDATES.items():
        if name not in section or not section[name]["by_gpu"]:
            continue
        lines.append(f"Pre-registered serve steps, {title} ({section['registration']}; adopted "
                     f"{'yes' if section[f'{name}_adopted'] else 'no'}):")
        means = signed_means(section[name]["rows"])
        for label, s in section[name]["by_gpu"].items():
            lines.append(_group_line(f"{label} ({name})", s) + f"; signed mean {means.get(label, float('nan')):+.1%}")
        c = sync_criteria(section, name)
        lines.append(f"  rule {rule} against the back-to-back step-input twin: {labels[0]} {c['C1']}, {labels[1]} {c['C2']}, "
                     f"{labels[2]} {c['C3']} (groups met: {name} {c['met_synced']}, back-to-back {c['met_back_to_back']})")
        for r in section[name]["rows"]:
            lines.append(f"    {r['gpu']} {r['model']} b{r['batch']} {r['bench']} p{r['prompt_len']}: measured "
                         f"{r['measured_s'] * 1e3:.2f} ms, host {r['step_infer_host_s_per_kernel'] * 1e6:.1f} us/kernel, "
                         f"{name} {r['step_predicted_s'] * 1e3:.2f} ms ({r['step_rel_error']:+.1%})")
    return lines


# docs/notes/s21host2_rule.md's criteria B1-B4 (B5, nothing else moves, is a test)
PROBE_EFFECT_LIMIT = 0.03   # B4: per GPU, |median over records of (probed / control median - 1)| <= 3%


def step_criteria(section: dict) -> dict:
    """B1 (decode rows of both GPUs pooled: step-input median and P90 |err| <= plain's), B2 (no (gpu, bench) group
    worse than plain + s21host's slack), B3 (groups meeting issue 13's targets: step-input >= plain), B4 (the probe
    leaves the steps alone on each GPU), `adopt` (all four, an H100 group present)."""
    plain, step = section["plain"]["by_gpu"], section["step_input"]["by_gpu"]
    groups = sorted(set(plain) & set(step))
    rows = [r for r in section["step_input"]["rows"] if r["bench"] == "decode"]
    plain_rows = {(r["gpu"], r["model"], r["batch"], r["prompt_len"]): r for r in section["plain"]["rows"]
                  if r["bench"] == "decode"}
    pairs = [(abs(plain_rows[k]["rel_error"]), abs(r["step_rel_error"])) for r in rows
             if (k := (r["gpu"], r["model"], r["batch"], r["prompt_len"])) in plain_rows and np.isfinite(r["step_rel_error"])]
    b1 = bool(pairs) and all(np.percentile([p[1] for p in pairs], q) <= np.percentile([p[0] for p in pairs], q)
                             for q in (50, 90))
    b2 = bool(groups) and all(step[g]["median_abs_rel_error"] <= plain[g]["median_abs_rel_error"] + HOST_MEDIAN_SLACK
                              and step[g]["p90_abs_rel_error"] <= plain[g]["p90_abs_rel_error"] + HOST_P90_SLACK
                              for g in groups)
    met_step = sum(step[g]["meets_target"] for g in groups)
    met_plain = sum(plain[g]["meets_target"] for g in groups)
    b3 = bool(groups) and met_step >= met_plain
    effects = {}
    for r in section["step_input"]["rows"]:
        effects.setdefault(r["gpu"], []).append(r["probe_effect"])
    effect_by_gpu = {gpu: float(np.nanmedian(v)) for gpu, v in effects.items()}
    b4 = bool(effect_by_gpu) and all(abs(v) <= PROBE_EFFECT_LIMIT for v in effect_by_gpu.values())
    has_h100 = any(g.startswith("h100") for g in groups)
    return {"groups": groups, "B1": b1, "B2": bool(b2), "B3": bool(b3), "B4": bool(b4), "probe_effect": effect_by_gpu,
            "met_step_input": int(met_step), "met_plain": int(met_plain), "adopt": bool(has_h100 and b1 and b2 and b3 and b4)}


def format_step_table(section: dict) -> str:
    """The plain twin's table, then the step-input twin's verdicts, ratios, the criteria and rows."""
    lines = [format_table(section["plain"])]
    step = section["step_input"]
    head = (f"Pre-registered serve steps, step-input twin ({section['registration']}; each probed step at the run's "
            f"fitting ratio x its own probe; ADOPT_STEP_HOST_INPUT {'on' if section['adopted'] else 'off'})")
    if not step["by_gpu"]:
        return "\n".join(lines + [head + ": no records yet"])
    lines.append(head + ":")
    for gpu, r in step["ratios"].items():
        lines.append(_ratio_line(gpu, r, "step"))
    for gpu, r in step["ratios"].items():
        for k in r.get("decode_kernels", []):
            lines.append(f"    {gpu} decode kernels {k['model']} b{k['batch']} p{k['prompt_len']}: profiler {k['kernels']:.0f}, "
                         f"twin ops {k['twin_ops']}, aten ops {k['aten_ops']}")
    for label, s in step["by_gpu"].items():
        lines.append(_group_line(f"{label} (step-input)", s) + f"; probe effect median {s['probe_effect_median']:+.1%}")
    c = step_criteria(section)
    lines.append(f"  rule s21host2: B1 {c['B1']}, B2 {c['B2']}, B3 {c['B3']}, B4 {c['B4']} (groups met: step-input "
                 f"{c['met_step_input']}, plain {c['met_plain']}) -> {'adopt' if c['adopt'] else 'not adopted'}")
    for r in step["rows"]:
        lines.append(f"    {r['gpu']} {r['model']} b{r['batch']} {r['bench']} p{r['prompt_len']}: measured "
                     f"{r['measured_s'] * 1e3:.2f} ms (probe effect {r['probe_effect']:+.1%}, rank corr "
                     f"{r['probe_step_rank_corr']:+.2f}), host {r['step_infer_host_s_per_kernel'] * 1e6:.1f} us/kernel, "
                     f"predicted {r['step_predicted_s'] * 1e3:.2f} ms ({r['step_rel_error']:+.1%})")
    return "\n".join(lines + format_sync_lines(section))


@entry.script
def main(argv: list[str] | None = None) -> int:
    ap = entry.JudgeParser(prog="python -m calibration.prereg", description=__doc__.split("\n\n")[0])
    ap.add_argument("action", choices=["write", "compare", "write-ep", "compare-ep", "write-host-grid", "write-sync-grid",
                                       "write-occ-grid", "compare-occ", "write-op-factors", "compare-op-rate"])
    ap.add_argument("--registration", choices=sorted(REGISTRATIONS), default="s20new",
                    help="the train-step registration write/compare act on (write-ep/compare-ep: s20epnew's EP2 steps)")
    ap.add_argument("--allow-dirty", action="store_true", help="write with uncommitted predicting code (tests only)")
    args = ap.parse_args(argv)
    reg = REGISTRATIONS[args.registration]
    if args.action == "write-op-factors":
        df = write_op_factors(allow_dirty=args.allow_dirty, reg=reg)
        print(df.to_string(index=False))
        return 0
    if args.action == "compare-op-rate":   # docs/notes/s23hrate_rule.md
        for cand in OP_RATE_CANDIDATES:
            seen = {name: op_rate_sections(REGISTRATIONS[name], candidate=cand) for name in OP_RATE_SEEN_REGS}
            print(f"candidate {cand} ({OP_RATE_CANDIDATES[cand]}) against the adopted step-input twin:")
            print(format_op_rate(op_rate_sections(reg, candidate=cand), seen))
        return 0
    if args.action == "write-occ-grid":
        df = write_occupancy_grid(allow_dirty=args.allow_dirty, reg=reg)
        print(f"{len(df)} grid rows written to {OCC_GRID_FILES[reg.name]}")
        return 0
    if args.action == "compare-occ":   # only the s22host candidates' lines
        grid = GRID_FILES.get(reg.name, GRID_FILES[S21HOST2.name])[0]
        print("\n".join(format_sync_lines(step_section(reg=reg, grid_path=grid, sync_grid_path=SYNC_GRID_FILES[reg.name],
                                                        occupancy_grid_path=OCC_GRID_FILES[reg.name]))))
        return 0
    if args.action == "write-sync-grid":
        df = write_sync_grid(allow_dirty=args.allow_dirty, reg=reg)
        print(f"{len(df)} grid rows written to {SYNC_GRID_FILES[reg.name]}")
        return 0
    if args.action == "write-host-grid":
        df = write_host_grid(allow_dirty=args.allow_dirty, reg=reg)
        print(f"{len(df)} grid rows written to {GRID_FILES[reg.name][0]}")
        return 0
    if args.action in ("write", "write-ep"):
        ep = args.action == "write-ep"
        df = write(EP_PREDICTIONS_FILE if ep else None, allow_dirty=args.allow_dirty, reg=reg, ep=ep)
        print(df.to_string(index=False))
        return 0
    if args.action == "compare-ep":
        print(format_ep_table(ep_section()))
        return 0
    if reg.name in (S21HOST.name, S21HOST_REPEAT.name):
        print(format_host_table(host_section(reg=reg)))
        return 0
    if reg.name in (S21HOST2.name, S21HOST2_REPEAT.name):
        print(format_step_table(step_section(reg=reg)))
        return 0
    if reg.name == S22HOST.name:
        print(format_step_table(s22host_section()))
        return 0
    if reg.name == S22HOST2.name:
        section = registered_step_section(reg)
        print(format_step_table(section))
        if section["step_input"]["by_gpu"]:
            print("\n".join(format_fresh_lines(section)))
        return 0
    print(format_table(validate_section(reg=reg)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
