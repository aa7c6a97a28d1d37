"""DeepSeek's H800 serving profiles (deepseek-ai/profile-data prefill.json, decode.json) against the
serving twin's iteration model (twin.serving.published.deepseek_profile_groups).

What DeepSeek published (deepseek-ai/profile-data@4496024, README and assets/*.jpg):
  prefill  EP32, TP1, 4K prompts, 16K tokens per GPU, two micro-batches whose attention load is
           balanced; the figure (assets/prefill.jpg) gives computation 108 SMs, communication 24 SMs.
  decode   EP128, TP1, 4K prompts, 128 requests per GPU, two micro-batches; the all-to-all holds no
           SMs (assets/decode.jpg: computation 132 SMs, communication 0 SMs). Per layer the figure
           orders SHARED, ATTN-0 (MLA down/up projections before the core), MLP, ATTN-1 (core
           attention, output projection, routing gate), the other micro-batch's dispatch and combine
           under them.
  Both: 'absolutely balanced' MoE routing.

Availability (checked 2026-11-26): the stored snapshot of the repository (the `fetch` tool) holds
train.json, README.md and the figures, but not the blobs of prefill.json and decode.json (git
ls-tree lists them, the objects are absent), and no indexed repository carries a copy. So no
derived CSV is committed: `compare` reports the trace as unavailable beside the twin's own
per-group figures, and the derivation below runs on a local copy when one is obtained:

    python -m calibration.serving_trace derive decode.json --phase decode --microbatches 2 \
        --out calibration/data/deepseek_decode_profile.csv

Derivation (`derive`), the way rung 3 reads train.json (calibration/trace.py):
  - GPU kernels (`cat == "kernel"`) of one device; each is attributed to the innermost enclosing
    phase annotation: a GPU-side range (`gpu_user_annotation`, which CUDA-graph replays keep) when
    the trace has them, else the CPU `user_annotation` around the launch that shares the kernel's
    `correlation` id.
  - A phase annotation's name maps to a phase by PHASE_PATTERNS (attention, shared, mlp, dispatch,
    combine, gate; DeepSeek's training annotations `attn(F)`, `mlp(B)`... match too). The k-th
    instance of one annotation name in time is layer k // n, micro-batch k % n for n micro-batches
    (the figures alternate micro-batches phase by phase).
  - Each kernel falls in a group (kernel_group): dispatch and combine (DeepEP's kernels, their
    notify kernels included), attention_core (FlashMLA / flash attention), routed_experts (grouped
    GEMMs, or any GEMM inside an MLP phase), shared_experts (GEMMs inside a SHARED phase),
    attention_gemm (other GEMMs: MLA projections, output projection, gate) and elementwise (casts,
    norms, RoPE, SwiGLU, top-k, copies).
  - idle: per layer, the device's time between the first kernel of the layer and the first of
    the next that no kernel covers (on any stream): the exposed part of the overlap and host gaps.
Rows: phase, annotation, layer, microbatch, group, kernel_us, kernels (microbatch -1 for the
layer's idle time and span).
"""

from __future__ import annotations

import bisect
import csv
import io
import json
import re
import sys
from collections import defaultdict
from pathlib import Path

from calibration import entry
from calibration.records_io import load_trace
from twin.core import atomic
from twin.core.intervals import covered_length
from twin.core.paths import shown_path
from twin.serving.published import deepseek_profile_groups

# the source of the numbers, written beside every derived CSV
SOURCE = {"repo": "deepseek-ai/profile-data", "commit": "449602428a1b023acb8a505d4f34fef536535db6"}
DATA_DIR = Path(__file__).resolve().parent / "data"
CSV_FILES = {"decode": DATA_DIR / "deepseek_decode_profile.csv", "prefill": DATA_DIR / "deepseek_prefill_profile.csv"}
FIELDS = ("phase", "annotation", "layer", "microbatch", "group", "kernel_us", "kernels")
GROUPS = ("attention_core", "attention_gemm", "shared_experts", "routed_experts", "dispatch", "combine", "elementwise")

# annotation name -> phase (first match wins; case-insensitive)
PHASE_PATTERNS = (
    ("dispatch", re.compile(r"dispatch", re.I)),
    ("combine", re.compile(r"combine", re.I)),
    ("shared", re.compile(r"shared", re.I)),
    ("gate", re.compile(r"gate|router|routing", re.I)),
    ("mlp", re.compile(r"mlp|moe|expert", re.I)),
    ("attention", re.compile(r"attn|attention|mla", re.I)),
)
_COMM = (("dispatch", re.compile(r"ep::.*dispatch|deep_ep.*dispatch|notify_dispatch|dispatch_layout", re.I)),
         ("combine", re.compile(r"ep::.*combine|deep_ep.*combine|cached_notify", re.I)))
_ATTN_CORE = re.compile(r"flash_mla|flashmla|mla_decode|flash::|flash_fwd|flash_attn|fmha|attn_fwd", re.I)
_GROUPED = re.compile(r"grouped|m_grouped", re.I)
_GEMM = re.compile(r"gemm|cutlass|xmma|nvjet|cublas|matmul", re.I)


def phase_of(annotation: str) -> str | None:
    """The phase an annotation name stands for, or None for wrappers (ProfilerStep#, 1F1B...)."""
    for phase, pat in PHASE_PATTERNS:
        if pat.search(annotation):
            return phase
    return None


def kernel_group(name: str, phase: str | None) -> str:
    """The group of one kernel, from its name and the phase it ran under."""
    for group, pat in _COMM:
        if pat.search(name):
            return group
    if _ATTN_CORE.search(name):
        return "attention_core"
    if not (_GROUPED.search(name) or _GEMM.search(name)) or _is_aux(name):
        return "elementwise"
    if phase == "mlp":
        return "routed_experts"
    if phase == "shared":
        return "shared_experts"
    if phase in ("attention", "gate"):
        return "attention_gemm"      # MLA projections, output projection, gate (DeepSeek's training stack runs them as grouped GEMMs)
    return "routed_experts" if _GROUPED.search(name) else "attention_gemm"


def _is_aux(name: str) -> bool:
    """GEMM-library helpers that move no matrix product (tensor-map fills, transposes, split-K reduces)."""
    return bool(re.search(r"fill_tensormaps|transpose|splitkreduce|split_k_reduce", name, re.I))


def load_events(path: Path | str) -> list[dict]:
    """A Chrome trace's events (a .json, .json.gz or .json.xz PyTorch-profiler export, or a bare event list)."""
    data = load_trace(path)
    return data["traceEvents"] if isinstance(data, dict) else data


def _annotations(events: list[dict]) -> tuple[str, dict]:
    """Phase annotations by the process they lie in: ('gpu', {pid: [...]}) when the trace has GPU-side
    ranges, else ('cpu', {pid: [...]}) (a process's threads together: in train.json the backward's
    kernels are launched from the autograd thread, inside the main thread's `attn(B)` range); each
    list sorted by start."""
    gpu = [e for e in events if e.get("cat") == "gpu_user_annotation" and e.get("ph") == "X" and phase_of(e["name"])]
    kind, chosen = ("gpu", gpu) if gpu else ("cpu", [e for e in events if e.get("cat") == "user_annotation"
                                                     and e.get("ph") == "X" and phase_of(e["name"])])
    tracks = defaultdict(list)
    for e in chosen:
        tracks[e["pid"]].append(e)
    for t in tracks.values():
        t.sort(key=lambda e: e["ts"])
    return kind, dict(tracks)


def _innermost(track: list[dict], starts: list[float], ts: float) -> dict | None:
    """The shortest annotation of a sorted track that contains time ts."""
    best = None
    for e in reversed(track[:bisect.bisect_right(starts, ts)]):
        if e["ts"] <= ts <= e["ts"] + e["dur"] and (best is None or e["dur"] < best["dur"]):
            best = e
    return best


def _instances(tracks: dict, microbatches: int) -> dict[int, tuple[str, str, int, int]]:
    """Every phase annotation (by id) -> (phase, name, layer, micro-batch): the k-th instance of a name in
    time is layer k // n, micro-batch k % n."""
    seen, out = defaultdict(int), {}
    for e in sorted((e for t in tracks.values() for e in t), key=lambda e: e["ts"]):
        k = seen[e["name"]]
        seen[e["name"]] += 1
        out[id(e)] = (phase_of(e["name"]), e["name"], k // microbatches, k % microbatches)
    return out


def derive(events: list[dict], microbatches: int = 1, device: int | None = None) -> list[dict]:
    """Per-layer, per-micro-batch kernel time by group (rows of FIELDS, kernel_us summed) and each
    layer's idle time (microbatch -1). `device`: the GPU's pid in the trace (default: the one with
    the most kernels)."""
    kernels = [e for e in events if e.get("cat") == "kernel" and e.get("ph") == "X"]
    if not kernels:
        raise ValueError("no GPU kernels (cat 'kernel') in the trace")
    if device is None:
        counts = defaultdict(int)
        for k in kernels:
            counts[k["pid"]] += 1
        device = max(counts, key=counts.get)
    kernels = sorted((k for k in kernels if k["pid"] == device), key=lambda k: k["ts"])
    kind, tracks = _annotations(events)
    if not tracks:
        raise ValueError("no phase annotations (attention, shared, mlp, dispatch, combine) in the trace")
    inst = _instances(tracks, max(1, microbatches))
    starts = {key: [e["ts"] for e in t] for key, t in tracks.items()}
    launches = {}
    if kind == "cpu":
        launches = {e["args"]["correlation"]: e for e in events if e.get("cat") in ("cuda_runtime", "cuda_driver")
                    and "correlation" in e.get("args", {})}
    sums = defaultdict(lambda: [0.0, 0])
    layer_first = {}
    for k in kernels:
        if kind == "gpu":
            key, ts = k["pid"], k["ts"]
        else:
            launch = launches.get(k.get("args", {}).get("correlation"))
            if launch is None:
                continue
            key, ts = launch["pid"], launch["ts"]
        ann = _innermost(tracks[key], starts[key], ts) if key in tracks else None
        if ann is None:
            continue
        phase, name, layer, mb = inst[id(ann)]
        s = sums[(phase, name, layer, mb, kernel_group(k["name"], phase))]
        s[0] += k["dur"]
        s[1] += 1
        layer_first[layer] = min(layer_first.get(layer, k["ts"]), k["ts"])
    rows = [dict(zip(FIELDS, (*key, round(v[0], 3), v[1]))) for key, v in sorted(sums.items(), key=lambda kv: kv[0][2:4])]
    return rows + _idle_rows(kernels, layer_first)


def _idle_rows(kernels: list[dict], layer_first: dict[int, float]) -> list[dict]:
    """Each layer's uncovered device time, from its first kernel to the next layer's first (the last
    layer ends at its last kernel)."""
    layers = sorted(layer_first)
    rows = []
    for i, layer in enumerate(layers):
        lo = layer_first[layer]
        hi = layer_first[layers[i + 1]] if i + 1 < len(layers) else max(k["ts"] + k["dur"] for k in kernels)
        busy = covered_length([(max(lo, k["ts"]), min(hi, k["ts"] + k["dur"])) for k in kernels
                          if k["ts"] < hi and k["ts"] + k["dur"] > lo])
        rows.append({"phase": "layer", "annotation": "", "layer": layer, "microbatch": -1, "group": "idle",
                     "kernel_us": round(hi - lo - busy, 3), "kernels": 0})
        rows.append({"phase": "layer", "annotation": "", "layer": layer, "microbatch": -1, "group": "span",
                     "kernel_us": round(hi - lo, 3), "kernels": 0})
    return rows


def per_microbatch_means(rows: list[dict]) -> dict[str, float]:
    """Mean kernel time per layer and micro-batch by group (the twin's per-micro-batch figures),
    and the mean layer span and idle time (per layer, all micro-batches)."""
    by = defaultdict(float)
    cells = {(r["layer"], r["microbatch"]) for r in rows if r["microbatch"] >= 0}
    layers = {r["layer"] for r in rows if r["group"] == "span"}
    for r in rows:
        by[r["group"]] += float(r["kernel_us"])
    out = {g: by[g] / max(1, len(cells)) for g in GROUPS}
    out["idle_per_layer"] = by["idle"] / max(1, len(layers))
    out["span_per_layer"] = by["span"] / max(1, len(layers))
    return out


def write_csv(rows: list[dict], path: Path, source_file: str) -> None:
    """The derived rows, with their source on the first comment line."""
    buf = io.StringIO()
    buf.write(f"# source: {SOURCE['repo']}@{SOURCE['commit']}:{source_file}, derived by calibration/serving_trace.py\n")
    w = csv.DictWriter(buf, fieldnames=FIELDS)
    w.writeheader()
    w.writerows(rows)
    atomic.write_text(path, buf.getvalue())


def read_csv(path: Path) -> list[dict]:
    with open(path) as fh:
        lines = [ln for ln in fh if not ln.startswith("#")]
    return [{**r, "layer": int(r["layer"]), "microbatch": int(r["microbatch"]), "kernel_us": float(r["kernel_us"]),
             "kernels": int(r["kernels"])} for r in csv.DictReader(lines)]


def compare(csv_files: dict | None = None) -> list[dict]:
    """Per phase (decode, prefill): the twin's per-micro-batch group times and layer time at the
    profile's conditions (the scenarios are package data: an installed wheel compares them too)
    beside the trace's (when its derived CSV is present), with the error."""
    files = csv_files or CSV_FILES
    out = []
    for phase in ("decode", "prefill"):
        twin = deepseek_profile_groups(phase)
        path = Path(files[phase])
        trace = per_microbatch_means(read_csv(path)) if path.is_file() else None
        rows = []
        for group in (*GROUPS, "span_per_layer"):
            pred = twin["groups_us"].get(group)
            meas = trace.get(group) if trace else None
            rows.append({"group": group, "twin_us": pred, "trace_us": meas,
                         "rel_error": (pred / meas - 1.0) if pred is not None and meas else None})
        out.append({"phase": phase, "conditions": twin["conditions"], "iteration_s": twin["iteration_s"],
                    "trace_available": trace is not None, "trace_file": shown_path(path), "groups": rows,
                    "note": None if trace else f"{path.name} absent: the snapshot of {SOURCE['repo']} lacks the "
                    f"{phase}.json blob; derive it from a local copy (python -m calibration.serving_trace derive ...)"})
    return out


def format_table(result: list[dict]) -> str:
    lines = []
    for r in result:
        head = f"DeepSeek {r['phase']} profile ({r['conditions']}): twin iteration {r['iteration_s'] * 1e3:.2f} ms"
        lines.append(head + ("" if r["trace_available"] else f"; trace not available ({r['note']})"))
        lines.append(f"  {'group (per layer, micro-batch)':34} {'twin us':>9} {'trace us':>9} {'error':>8}")
        for g in r["groups"]:
            tw = f"{g['twin_us']:9.1f}" if g["twin_us"] is not None else f"{'-':>9}"
            tr = f"{g['trace_us']:9.1f}" if g["trace_us"] is not None else f"{'-':>9}"
            er = f"{g['rel_error']:+8.1%}" if g["rel_error"] is not None else f"{'-':>8}"
            lines.append(f"  {g['group']:34} {tw} {tr} {er}")
    return "\n".join(lines)


@entry.script
def main(argv: list[str] | None = None) -> int:
    ap = entry.JudgeParser(prog="python -m calibration.serving_trace", description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    d = sub.add_parser("derive", help="per-layer, per-micro-batch kernel-group times from a local copy of a trace")
    d.add_argument("trace", help="prefill.json or decode.json (or .json.gz, .json.xz) from deepseek-ai/profile-data")
    d.add_argument("--phase", choices=("decode", "prefill"), required=True)
    d.add_argument("--microbatches", type=int, default=2, help="micro-batches per layer (DeepSeek's profiles: 2)")
    d.add_argument("--out", help="CSV path (default: calibration/data/deepseek_<phase>_profile.csv)")
    sub.add_parser("compare", help="the twin at the profiles' conditions beside the derived CSVs")
    args = ap.parse_args(argv)
    if args.cmd == "derive":
        if not Path(args.trace).is_file():
            print(f"error: trace {args.trace!r} not found", file=sys.stderr)
            return 2
        if args.microbatches < 1:
            print(f"error: --microbatches {args.microbatches} must be >= 1", file=sys.stderr)
            return 2
        try:
            rows = derive(load_events(args.trace), args.microbatches)
        except (ValueError, KeyError, json.JSONDecodeError) as exc:
            print(f"error: {args.trace}: {exc}", file=sys.stderr)
            return 2
        out = Path(args.out) if args.out else CSV_FILES[args.phase]
        write_csv(rows, out, Path(args.trace).name)
        print(f"{len(rows)} rows -> {out}")
        for g, v in per_microbatch_means(rows).items():
            print(f"  {g:16} {v:10.1f} us")
        return 0
    print(format_table(compare()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
