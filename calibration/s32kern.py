"""Session s32kern (issue 15; docs/notes/s32kern_rule.md, committed before its judging records existed): candidate C,
`twin.serving.engine.ADOPT_COLD_KERNELS`. s32cold's probe found a warmed process's first prompt steps above its warm pass
pay host time inside cuBLASLt for each GEMM kernel the process launches for the first time, plus look-ups of an exact
new row count. C counts kernels, not sizes: on an eager iteration of flat size M, the kernels the model's kernel map
(real/serve/kernelmap.py, H200, calibration/measurements/h200/s32kern/kmap/<model>/) gives for M that the process has
not launched yet pay kernel_s each, and M pays lookup_s where it is an exact size above the pass the process had not run.

The constants come from the s32cold probe's records alone (`fit`, calibration/s32kern_fit.json): per probe process pair
(unprofiled timed/bench-small with its profiled twin trace/bench-small; eager/bench-small with trace-eager/bench-small:
the same plan, stream and order), every eager prompt step of the cold and fresh runs gives
  y = its unprofiled duration - the again run's met-step fit (least squares on 1, prompt tokens, decode rows; as
      calibration.s32cold.process_points),
  x1 = the GEMM kernels (cuBLASLt: nvjet / gemm / cublas in the name) the profiled twin's step of the same run and
      prompt tokens launched first (serve_kernels.csv new_kernel_names; a step without such a twin is left out),
  x2 = 1 where its flat size is new to the process (not a warm-up size, not 1..W, not run before in the process);
and kernel_s, lookup_s = least squares of y on (x1, x2), no intercept, pooled. lookup_s is kept only if the probe pins
it (lookup_s > 2 standard errors); else 0. warmup_sizes: the flat sizes the profiled processes' warm-up loads ran
(both, pooled): every plan runs the same GPU1 warm-up loads and seeds.

    python -m calibration.s32kern fit [--json calibration/s32kern_fit.json]
"""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import numpy as np

from calibration import entry
from calibration import records as rec
from calibration.records_io import csv_exists, open_csv

NAME = "s32kern"
PROBE = "s32cold/probe"
CARD = "h200"
# (unprofiled process, its profiled twin): the same plan, stream, warm-up and order
PAIRS = (("timed/bench-small", "trace/bench-small"), ("eager/bench-small", "trace-eager/bench-small"))
FIT_FILE = Path(__file__).resolve().parent / "s32kern_fit.json"
PINNED_SE = 2.0   # lookup_s kept only above this many standard errors


def _read(path: Path) -> list[dict]:
    with open_csv(path) as f:
        return list(csv.DictReader(f))


def _i(x) -> int:
    return int(float(x or 0))


def is_gemm_kernel(name: str) -> bool:
    n = name.lower()
    return "nvjet" in n or "gemm" in n or "cublas" in n


def traced(d: Path) -> tuple[set[int], dict[tuple[str, int], int]]:
    """A profiled probe process (serve_kernels.csv): the flat sizes its warm-up loads ran, and per (run, flat size) of
    its eager run-phase prompt steps by (run, prompt tokens) the GEMM kernels first launched (the first such step in the
    run; the prompt tokens, not the flat size, key it: the stream is the same, the decode rows beside a prompt may differ
    by timing)."""
    rows = _read(d / "serve_kernels.csv")
    warm = {_i(r["prefill_tokens"]) + _i(r["decode_seqs"]) for r in rows if r["phase"] == "warmup"}
    new: dict[tuple[str, int], int] = {}
    for r in rows:
        if r["phase"] != "run" or _i(r["prefill_tokens"]) <= 0 or _i(r["graph_batch"]) != 0:
            continue
        key = (r["run_id"], _i(r["prefill_tokens"]))
        new.setdefault(key, sum(is_gemm_kernel(n) for n in (r["new_kernel_names"] or "").split(";") if n))
    return warm, new


def pair_points(plain: Path, trace: Path) -> list[dict]:
    """The fit's points of one (unprofiled, profiled) process pair (the module doc)."""
    runs = _read(plain / "serve_load.csv")
    its = _read(plain / "serve_iterations.csv")
    warm_pass = max(_i(r.get("warm_shapes")) for r in runs)
    warm_sizes, new = traced(trace)
    again = [it for it in its if it["run_id"].endswith("again") and _i(it["prefill_tokens"]) > 0
             and _i(it["graph_batch"]) == 0]
    a = np.array([[1.0, float(it["prefill_tokens"]), float(it["decode_seqs"])] for it in again])
    coef, *_ = np.linalg.lstsq(a, np.array([float(it["duration_s"]) for it in again]), rcond=None)
    met = set(range(1, warm_pass + 1)) | warm_sizes
    out = []
    for run in [r["run_id"] for r in runs]:
        for it in (x for x in its if x["run_id"] == run):
            if _i(it["graph_batch"]) != 0:
                continue
            p, dec = _i(it["prefill_tokens"]), _i(it["decode_seqs"])
            size = p + dec
            if p > 0 and not run.endswith("again") and (run, p) in new:
                out.append({"run": run, "size": size, "kernels": new.pop((run, p)), "new_size": int(size not in met),
                            "excess_s": float(it["duration_s"]) - (coef[0] + coef[1] * p + coef[2] * dec)})
            met.add(size)
    return out


def fit(root: Path | str | None = None) -> dict:
    """kernel_s and lookup_s (the module doc) from the probe's records on the H200."""
    root = Path(rec.records_root() if root is None else root)
    pts, per, warmup = [], {}, set()
    for plain, trace in PAIRS:
        a, t = root / CARD / PROBE / plain, root / CARD / PROBE / trace
        if not (csv_exists(a / "serve_iterations.csv") and csv_exists(t / "serve_kernels.csv")):
            continue
        warmup |= traced(t)[0]
        got = pair_points(a, t)
        pts += got
        per[plain] = {"steps": len(got), "new_kernels": sum(g["kernels"] for g in got),
                      "new_sizes": sum(g["new_size"] for g in got),
                      "excess_median_s": float(np.median([g["excess_s"] for g in got]))}
    if len(pts) < 3:
        return {}
    x = np.array([[g["kernels"], g["new_size"]] for g in pts], dtype=float)
    y = np.array([g["excess_s"] for g in pts])
    b, *_ = np.linalg.lstsq(x, y, rcond=None)
    r = y - x @ b
    se = np.sqrt(np.diag((r @ r / (len(y) - 2)) * np.linalg.inv(x.T @ x)))
    pinned = bool(b[1] > PINNED_SE * se[1])
    return {"kernel_s": {CARD: float(b[0])}, "lookup_s": {CARD: float(b[1]) if pinned else 0.0},
            "warmup_sizes": sorted(warmup), "lookup_fit_s": float(b[1]), "se_s": [float(s) for s in se], "lookup_pinned": pinned, "points": len(pts),
            "processes": per,
            "source": "python -m calibration.s32kern fit (docs/notes/s32kern_rule.md): the s32cold probe's records "
                      "(calibration/measurements/h200/s32cold/probe/{timed,eager,trace,trace-eager}/bench-small/, "
                      "fitting records)"}


def main(argv: list[str] | None = None) -> int:
    ap = entry.parser("calibration.s32kern", __doc__)
    ap.add_argument("what", nargs="?", default="fit", choices=["fit"])
    ap.add_argument("--json", help="write the result here")
    a = ap.parse_args(argv)
    out = fit()
    text = json.dumps(out, indent=1, sort_keys=True)
    if a.json:
        Path(a.json).write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
