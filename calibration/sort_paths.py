"""Which sort path each sort of a MoE layer takes, per call on its own element count (s24sort, issue 13).

Two different sorts run in real/'s MoE layer, with two different size cliffs:

- **torch.argsort** (real/model.py MoE.routed, real/ep.py dispatch and combine; forward only) goes
  through ATen's sort_stub. PyTorch aten/src/ATen/native/cuda/Sort.h `should_use_small_sort`:
  `self.size(dim) <= 4096` (inclusive; the sorted dimension of *that call's* tensor, stable or not
  in current torch) runs Sort.cpp's in-place path (fillSliceWithIndex, a copy, one
  sortKeyValueInplace kernel: MediumRadixSort above 128 elements); above it cub's radix sort
  (histogram, exclusive sum, 8 onesweep passes of int64 keys, memsets). The decision is per call:
  in an EP forward each rank's dispatch argsort and combine argsort(order) sort the rank's own
  tokens x top-k (the same count on every rank), while the local-expert argsort and argsort(perm)
  sort the rows that rank received (the most loaded rank's the most).
- **index_put_ with accumulate** (autograd's backward of every row gather x[idx]; the backward
  only) sorts its indices with cub's radix_sort_pairs directly (PyTorch
  aten/src/ATen/native/cuda/Indexing.cu index_put_with_sort_kernel): torch's 4,096 threshold does
  not apply. cub's own dispatch (cub/device/dispatch/dispatch_radix_sort.cuh) runs one single-tile
  kernel when the items fit one tile: SingleTilePolicy 256 threads x 19 items nominal for 4-byte
  keys, scaled to 9 items for 8-byte (int64) keys and values: 2,304 items; above that the onesweep
  passes. predict.CUB_SINGLE_TILE_ITEMS is that figure as read from the source, not measured here.

The twin's pricing of both: calibration.predict.sort_path_kernels (ADOPT_PER_SORT_FWD / _BWD).

Nothing here is fitted. `sorts_near_cliff` lists the committed records whose sort counts lie near
torch's threshold (docs/notes/s24sort_rule.md)."""
from __future__ import annotations

import contextlib
import sys
from pathlib import Path

import numpy as np
import pandas as pd

import calibration.predict as predict
import calibration.records as rec
from calibration import entry
from calibration.pipeline import ep_layer_rows
from calibration.predict import CUB_SINGLE_TILE_ITEMS, SMALL_SORT_ELEMS
from calibration.records_io import csv_exists, read_csv
from calibration.split import split
from calibration.validate import load_fitted_profile
from twin.core.specs import get_model

NEAR_FRACTION = 0.10   # the brief's band: counts within +-10% of SMALL_SORT_ELEMS


def argsort_takes_small_path(elems: float) -> bool:
    """torch.argsort of `elems` keys runs the in-place small sort (Sort.h should_use_small_sort)."""
    return elems <= SMALL_SORT_ELEMS


def index_put_takes_single_tile(elems: float) -> bool:
    """index_put_'s cub radix_sort_pairs of `elems` int64 indices fits cub's single tile."""
    return elems <= CUB_SINGLE_TILE_ITEMS


def ep_forward_sorts(tokens: int, top_k: int, rows_in: float) -> list[tuple[str, float]]:
    """(sort, element count) of one rank's EP MoE forward (real/ep.py): dispatch's argsort of its
    own tokens' expert ids (tokens x top_k), the received rows' local-expert argsort (rows_in),
    combine's argsort(perm) (rows_in) and argsort(order) (tokens x top_k)."""
    n = float(tokens * top_k)
    return [("dispatch argsort(expert ids)", n), ("dispatch argsort(local ids)", float(rows_in)),
            ("combine argsort(perm)", float(rows_in)), ("combine argsort(order)", n)]


def near(elems: float, fraction: float = NEAR_FRACTION) -> bool:
    return abs(elems / SMALL_SORT_ELEMS - 1.0) <= fraction


def _ep_step_rows(folder: Path, gpu: str, root: Path) -> list[dict]:
    steps = read_csv(folder / "pipeline_step.csv")
    if "ep" not in steps.columns:
        return []
    steps = steps[(steps["ep"].fillna(1).astype(int) > 1) & (steps["time_s"] > 0)]
    if steps.empty:
        return []
    routing_path = folder / "pipeline_routing.csv"
    routing = read_csv(routing_path) if csv_exists(routing_path) else None
    out = []
    for _, r in steps.iterrows():
        k = get_model(str(r["model"])).top_k
        n = float(int(r["micro_batch_seqs"]) * int(r["seq_len"]) * k)
        rows = ep_layer_rows(routing, r, k) if routing is not None else {}
        busiest = [float(v.sum()) for v in rows.values()]
        out.append({"folder": str(folder.relative_to(root)), "gpu": gpu, "bench": r["bench"],
                    "model": r["model"], "config": f"{r['schedule']} pp{int(r['pp'])} ep{int(r['ep'])} "
                    f"n{int(r['num_microbatches'])} {int(r['micro_batch_seqs'])}x{int(r['seq_len'])}",
                    "split": r.get("split", ""), "token_sort_elems": n,
                    "busiest_rows_min": min(busiest) if busiest else np.nan,
                    "busiest_rows_max": max(busiest) if busiest else np.nan})
    return out


def _ep_layer_rows(path: Path, gpu: str, root: Path) -> list[dict]:
    df = read_csv(path)
    df = df[df["bench"].isin(["ep_dispatch", "ep_combine", "moe_layer_ep_fwd", "moe_layer_ep_bwd"])]
    return [{"folder": str(path.parent.relative_to(root)), "gpu": gpu, "bench": r["bench"],
             "model": "v3-slice-1l", "config": f"T{int(r['tokens_per_rank'])} E{int(r['num_experts'])} "
             f"K{int(r['top_k'])} skew{r['skew']}", "split": r.get("split", ""),
             "token_sort_elems": float(int(r["tokens_per_rank"]) * int(r["top_k"])),
             "busiest_rows_min": float(r["max_rank_rows"]), "busiest_rows_max": float(r["max_rank_rows"])}
            for _, r in df.iterrows()]


def _one_gpu_rows(gpu: str, root: Path) -> list[dict]:
    out = []
    for family in ("moe_layer", "model"):
        path = Path(root) / gpu / f"{family}.csv"
        if not csv_exists(path):
            continue
        df = read_csv(path)
        for _, r in df.iterrows():
            b = str(r["bench"])
            if b.startswith("moe_layer"):
                n = float(int(r["tokens"]) * get_model(str(r["model"])).top_k)
            elif b in ("train_step", "prefill"):
                spec = get_model(str(r["model"]))
                if not spec.num_routed_experts:
                    continue
                length = int(r["seq_len"]) if b == "train_step" else int(r["prompt_len"])
                n = float(int(r["batch"]) * length * spec.top_k)
            else:
                continue
            out.append({"folder": gpu, "gpu": gpu, "bench": b, "model": r["model"], "config": str(r.get("name", "")),
                        "split": r.get("split", ""), "token_sort_elems": n, "busiest_rows_min": n, "busiest_rows_max": n})
    return out


def sort_counts(root: Path | None = None) -> pd.DataFrame:
    """Every committed MoE / EP record with its sort counts: `token_sort_elems` (tokens x top-k of
    one rank: dispatch's and combine's token-side argsorts; a one-GPU layer's two argsorts) and
    the most loaded EP rank's received rows (the local-expert argsort and argsort(perm)), the
    smallest and largest over the step's MoE layers."""
    root = rec.records_root() if root is None else root
    rows: list[dict] = []
    for gpu_dir in sorted(p for p in Path(root).iterdir() if p.is_dir() and p.name != "prereg"):
        if "x" in gpu_dir.name:
            for path in sorted(gpu_dir.rglob("pipeline_step.csv*")):
                rows += _ep_step_rows(path.parent, gpu_dir.name, Path(root))
            for path in sorted(gpu_dir.rglob("ep.csv*")):
                rows += _ep_layer_rows(path, gpu_dir.name, Path(root))
        else:
            rows += _one_gpu_rows(gpu_dir.name, root)
    return pd.DataFrame(rows)


def sorts_near_cliff(df: pd.DataFrame, fraction: float = NEAR_FRACTION) -> pd.DataFrame:
    """The rows of `sort_counts` with a sort count within `fraction` of SMALL_SORT_ELEMS, and
    whether their sorts straddle it (some at or below, some above: `crosses`)."""
    if df.empty:
        return df
    counts = df[["token_sort_elems", "busiest_rows_min", "busiest_rows_max"]]
    close = counts.apply(lambda c: c.map(lambda v: bool(np.isfinite(v)) and near(v, fraction))).any(axis=1)
    small = counts.le(SMALL_SORT_ELEMS)
    crosses = small.any(axis=1) & ~small.all(axis=1)
    return df[close].assign(crosses=crosses[close])


@contextlib.contextmanager
def per_sort_paths(fwd: bool, bwd: bool):
    """predict.ADOPT_PER_SORT_FWD / _BWD set for the block, restored after."""
    old = (predict.ADOPT_PER_SORT_FWD, predict.ADOPT_PER_SORT_BWD)
    predict.ADOPT_PER_SORT_FWD, predict.ADOPT_PER_SORT_BWD = fwd, bwd
    try:
        yield
    finally:
        predict.ADOPT_PER_SORT_FWD, predict.ADOPT_PER_SORT_BWD = old


def layer_rows_at_cliff(gpu: str) -> pd.DataFrame:
    """The one-GPU moe_layer records whose routed rows are exactly SMALL_SORT_ELEMS (criterion S1's rows:
    v3-slice-1l at 512 tokens x top-8), each predicted with (B) off and on."""
    df = rec.load_records(gpu)
    held = split(df)
    df = df.assign(held_out=held)
    df = df[df["bench"].isin(["moe_layer_fwd", "moe_layer_bwd"])]
    top_k = df["model"].map(lambda m: get_model(str(m)).top_k)
    df = df[df["tokens"].astype(int) * top_k == SMALL_SORT_ELEMS]
    profile = load_fitted_profile(gpu, rec.load_records(gpu))[0]
    out = []
    for _, r in df.iterrows():
        preds = {}
        for label, on in (("off", False), ("on", True)):
            with per_sort_paths(fwd=False, bwd=on):
                preds[label] = float(predict.predict_s(r, predict.gpu_spec(gpu), profile))
        out.append({"gpu": gpu, "name": r["name"], "bench": r["bench"], "held_out": bool(r["held_out"]),
                    "measured_s": float(r["time_s"]), "predicted_s_off": preds["off"], "predicted_s_on": preds["on"],
                    "rel_error_off": preds["off"] / float(r["time_s"]) - 1.0,
                    "rel_error_on": preds["on"] / float(r["time_s"]) - 1.0})
    return pd.DataFrame(out)


def abs_summary(errors: pd.Series) -> tuple[float, float]:
    """(median, P90) of |error|, in percent."""
    a = errors.abs() * 100.0
    return float(a.median()), float(a.quantile(0.9))


@entry.script
def main(argv: list[str] | None = None) -> int:
    ap = entry.parser("calibration.sort_paths", __doc__)
    ap.add_argument("part", nargs="?", choices=["s1"], help="s1: the layer rows at the cliff, each GPU (default: the sorts near it)")
    argv = [p for p in [ap.parse_args(argv).part] if p]
    with pd.option_context("display.width", 250, "display.max_rows", 500, "display.max_colwidth", 60):
        if argv and argv[0] == "s1":
            for gpu in ("h100", "h200"):
                t = layer_rows_at_cliff(gpu)
                print(t.to_string(index=False))
                for bench, g in t.groupby("bench"):
                    print(gpu, bench, len(g), "off median/P90 %.2f / %.2f%%" % abs_summary(g["rel_error_off"]),
                          "on %.2f / %.2f%%" % abs_summary(g["rel_error_on"]))
            return 0
        print(sorts_near_cliff(sort_counts(rec.records_root())).to_string(index=False))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
