"""Measurement records: the CSVs written by `python -m real.bench` on a GPU, as one table.

Layout: calibration/measurements/<gpu>/<family>.csv (gemm, attention, memory, moe_layer, model,
expert_load; see `real/bench.py` SHAPE_COLS / STAT_COLS / ENV_COLS). Every row has `bench`
(gemm, grouped_gemm, attn_fwd, attn_bwd, mla_layer_fwd, mla_layer_bwd, memory, moe_layer_fwd,
moe_layer_bwd, train_step, prefill, decode), its shape columns, `time_s` (median of the timed
repetitions, seconds), `time_p10_s`, `time_p90_s` and the environment (gpu_name, clocks, torch and
CUDA versions) and `timing` (how time_s was taken: `cuda_graph`, GPU time per call of a kernel
captured n times in a CUDA graph; `batched_events`, n eager calls between one event pair;
`per_rep_events`, CUDA events around each eager repetition, host dispatch included; missing = the
last). Records are data: nothing here edits or filters them beyond dropping rows without
a positive time.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Iterator

import pandas as pd

from calibration.records_io import csv_exists, csv_name, csv_sha256, csv_stem, glob_csv, read_csv
from twin.core.atomic import write_text

MEASUREMENTS_DIR = Path(__file__).resolve().parent / "measurements"
_ROOT: Path = MEASUREMENTS_DIR   # records_root(): the root of the fit or validation in progress
_PROFILES: Path | None = None    # profiles_dir(): the profiles of the validation in progress (None: the committed ones)


def records_root() -> Path:
    """The records root of the fit or validation in progress (records_root_scope): calibration/measurements,
    or the folder `twin fit --records` / `twin validate --records` names. Readers keyed by a GPU alone,
    deep inside a prediction (calibration.b_kernels, bwd_grouped, index_put, grouped_clock, ...), read
    under it, so that a fit of another records root never mixes in the committed tree's records."""
    return _ROOT


def set_records_root(root: Path | str) -> None:
    """The records root of the rest of the process: a `python -m calibration.<script> --records DIR` run
    (calibration.entry.JudgeParser)."""
    global _ROOT
    _ROOT = Path(root)


@contextlib.contextmanager
def records_root_scope(root: Path | str) -> Iterator[Path]:
    """Within: records_root() is `root` (nested scopes restore the outer root on exit)."""
    global _ROOT
    outer, _ROOT = _ROOT, Path(root)
    try:
        yield _ROOT
    finally:
        _ROOT = outer



def profiles_dir() -> Path | None:
    """The profiles folder of the validation in progress (profiles_scope: `twin validate --profiles DIR`), None for
    the committed twin/data/profiles. The records' own ratios to the twin keyed by a GPU alone
    (calibration.bwd_grouped.layout_factors) take their twin seconds from the profile the validation predicts with
    (until s27walk the committed one, whatever --profiles said)."""
    return _PROFILES


@contextlib.contextmanager
def profiles_scope(folder: Path | str | None) -> Iterator[Path | None]:
    """Within: profiles_dir() is `folder` (nested scopes restore the outer one on exit)."""
    global _PROFILES
    outer, _PROFILES = _PROFILES, (Path(folder) if folder is not None else None)
    try:
        yield _PROFILES
    finally:
        _PROFILES = outer


# Families whose rows the twin predicts (expert_load has no time: it feeds routing statistics).
TIMED_FAMILIES = ("gemm", "attention", "memory", "moe_layer", "model")
PRIMITIVE_BENCHES = ("gemm", "grouped_gemm", "grouped_gemm_wgrad", "attn_fwd", "attn_bwd", "memory")

_INT_COLS = ("m", "n", "k", "groups", "tokens_per_group", "batch", "seq_len", "num_heads", "qk_head_dim",
             "v_head_dim", "tokens", "width", "num_experts", "top_k", "num_shared_experts",
             "hidden_size", "moe_intermediate_size", "prompt_len", "gen_len")
_FLOAT_COLS = ("time_s", "time_p10_s", "time_p90_s", "flops", "bytes", "bytes_moved", "skew",
               "max_expert_tokens", "mean_expert_tokens", "sm_clock_mhz")


def gpu_dirs(root: Path | str | None = None) -> list[str]:
    """GPU names that have timed single-GPU records: sub-folders of `root` holding a CSV of a timed
    family (gemm, attention, ...). Other folders (e.g. h200x2/ with multi-GPU all-to-all runs) are
    measurements of another kind and are not fitted here. `root` None: the records root in use (records_root)."""
    root = Path(records_root() if root is None else root)
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir()
                  if p.is_dir() and any(csv_exists(p / f"{family}.csv") for family in TIMED_FAMILIES))


def record_files(gpu: str, root: Path | str | None = None) -> list[Path]:
    """A GPU's record files under `root` (None: the records root in use, records_root)."""
    return glob_csv(Path(records_root() if root is None else root) / gpu, "*.csv")


def records_sha256(gpu: str, root: Path | str | None = None) -> dict:
    """{file name: sha256} of a GPU's record files (profile provenance)."""
    return {csv_name(p): csv_sha256(p) for p in record_files(gpu, root)}


def _case_name(r) -> str:
    b = r["bench"]
    if b in ("gemm", "grouped_gemm", "grouped_gemm_wgrad"):
        g = f" g{int(r['groups'])}x{int(r['tokens_per_group'])}" if b != "gemm" else ""
        return f"{b} {r['precision']} m{int(r['m'])} n{int(r['n'])} k{int(r['k'])}{g}"
    if b in ("attn_fwd", "attn_bwd", "mla_layer_fwd", "mla_layer_bwd"):
        return f"{b} {r.get('model') or ''} {r.get('precision', '')} b{int(r['batch'])} s{int(r['seq_len'])} h{int(r['num_heads'])}".replace("  ", " ")
    if b == "memory":
        return f"memory {r['op']} {int(r['bytes_moved'])}B"
    if b in ("moe_layer_fwd", "moe_layer_bwd"):
        return f"{b} {r['model']} {r['precision']} t{int(r['tokens'])} e{int(r['num_experts'])} skew{r['skew']:g}"
    if b in ("train_step", "prefill", "decode"):
        return f"{b} {r['model']} {r.get('precision', '')} b{int(r['batch'])}"
    return b


def load_records(gpu: str, root: Path | str | None = None) -> pd.DataFrame:
    """All timed rows of one GPU, with a `gpu` column (the folder name) and a readable `name`; `root` None: the
    records root in use (records_root: calibration/measurements, or a fit's, a validation's or a script's --records)."""
    root = records_root() if root is None else root
    frames = []
    for path in record_files(gpu, root):
        if csv_stem(path) not in TIMED_FAMILIES:
            continue
        df = read_csv(path, keep_default_na=True)
        if df.empty or "time_s" not in df.columns:
            continue
        df["family"] = csv_stem(path)
        frames.append(df)
    if not frames:
        raise FileNotFoundError(f"no timed records under {Path(root) / gpu}: run `twin calibrate --out DIR` "
                                f"on a GPU and copy its CSVs to calibration/measurements/{gpu}/")
    df = pd.concat(frames, ignore_index=True, sort=False)
    for c in _INT_COLS + _FLOAT_COLS:
        if c in df.columns:
            df[c] = pd.to_numeric(df[c], errors="coerce")
    if "causal" in df.columns:
        df["causal"] = df["causal"].map(lambda v: str(v).strip().lower() in ("true", "1", "1.0"))
    for c in ("model", "precision", "op"):
        if c in df.columns:
            df[c] = df[c].fillna("").astype(str)
    # timing method (real/bench.py): rows from before the column existed were timed per repetition
    df["timing"] = df["timing"].fillna("per_rep_events").astype(str) if "timing" in df.columns else "per_rep_events"
    df = df[df["time_s"].notna() & (df["time_s"] > 0)].reset_index(drop=True)
    df["gpu"] = gpu
    df["name"] = [_case_name(r) for _, r in df.iterrows()]
    return df


def environment(df: pd.DataFrame) -> dict:
    """The environment the records were taken in (distinct values joined, for provenance)."""
    out = {}
    for c in ("gpu_name", "torch_version", "cuda_version"):
        if c in df.columns:
            vals = sorted({str(v) for v in df[c].dropna().unique()})
            out[c] = ", ".join(vals)
    if "sm_clock_mhz" in df.columns and df["sm_clock_mhz"].notna().any():
        out["sm_clock_mhz_median"] = float(df["sm_clock_mhz"].median())
    return out


def write_profile_terms(path: Path | str, data: dict, terms: dict, provenance_terms: dict | None = None) -> None:
    """Write `terms` (top-level keys of a committed profile JSON, e.g. "collectives") into `data`, the
    profile as read from `path`, and write it back atomically; every other key is left as the last
    `twin fit` wrote it. The provenance stays last, as the profiles keep it, and gains
    `provenance_terms` where given (e.g. the records a term was measured from). Written terms make the
    profile other than the fit its fit-input manifest describes (s26refit): the provenance's
    `fit_inputs_sha256` is dropped (`twin validate` then compares the provenance's own record list) and
    `terms_after_fit` lists the keys written since the fit (a key written with the value it already
    holds changes nothing)."""
    prov = data.pop("provenance", None)
    # a key rewritten with the value it holds leaves the profile the manifest's fit (a rule that
    # rewrites the committed terms unchanged must give the committed file back, provenance included)
    changed = {k for k, v in terms.items() if k not in data or data[k] != v}
    data.update(terms)
    if prov is not None:
        prov.update(provenance_terms or {})
        if changed and ("fit_inputs_sha256" in prov or "terms_after_fit" in prov):
            prov.pop("fit_inputs_sha256", None)
            prov["terms_after_fit"] = sorted(set(prov.get("terms_after_fit", [])) | changed)
        data["provenance"] = prov
    write_text(Path(path), json.dumps(data, indent=1, sort_keys=False) + "\n")
