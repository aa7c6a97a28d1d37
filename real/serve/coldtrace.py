"""What a serving process's first prompt steps spend their extra time on (issue 15, s32cold; docs/notes/s32cold.md).

`python -m real.serve --kernel-trace` profiles the process from after its decode graphs are captured to its end
(warm-up loads, the warm pass, every run) under torch.profiler, each engine iteration in its own host range, and
writes per iteration (serve_kernels.csv):
- the kernels its eager ops launched (num_kernels, their GPU time), and how many of their names the process had not
  launched before in the profiled window (new_kernels, the first names in new_kernel_names): a kernel's first launch;
- the CUDA runtime / driver calls made inside it (CUPTI's runtime activity): launches (count, total, the longest, the
  ones of 200 us or more: a first launch that loads a module under CUDA_MODULE_LOADING=LAZY shows here), cudaMalloc /
  cudaFree (the caching allocator growing), every other call but the waits (sync_s: synchronisations and copies,
  the host waiting for the GPU), by name;
- the profiler's own "Lazy Function Loading" / module-loading records where CUPTI gives them (lazy_load_*);
- the host time of its dense GEMM ops (aten::mm / addmm / bmm / baddbmm, inclusive: cuBLASLt's heuristics run
  there) and the longest op outside the waits.
And every runtime / driver call of 100 us or more outside the waits (serve_apicalls.csv): its name, duration, the
aten op that made it and that op's kernels.

Ranges: phase `warmup` (the warm-up loads' iterations), `warm_pass` (a run's warm pass of flat sizes, one range),
`run` (the plan's runs: run_id, the engine's iteration index; the iteration's flat prompt tokens, decode rows, graph
bucket and measured duration_s, as serve_iterations.csv has them, though profiled). The profiler slows the host:
its durations are for comparing within the trace, not with unprofiled runs.
"""

from __future__ import annotations

import bisect
import csv
import re
from pathlib import Path

from torch.profiler import ProfilerActivity, profile, record_function

TAG = "s32it/"
SLOW_LAUNCH_S = 200e-6
SLOW_CALL_S = 100e-6
_API = re.compile(r"^cu[A-Z]|^cuda[A-Z]")
_WAIT = re.compile(r"Synchronize|Memcpy|EventSynchronize|StreamWaitEvent|EventQuery")
_GEMM = {"aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm"}
_WAIT_OPS = {"aten::item", "aten::_local_scalar_dense", "aten::to", "aten::_to_copy", "aten::copy_"}
KERNEL_COLS = ["phase", "run_id", "iteration", "range_s", "prefill_tokens", "decode_seqs", "graph_batch", "duration_s",
               "num_kernels", "kernels_gpu_s", "new_kernels", "new_kernel_names", "launch_calls", "launch_s",
               "launch_max_s", "slow_launches", "slow_launch_s", "malloc_calls", "malloc_s", "free_calls", "free_s",
               "other_api_calls", "other_api_s", "other_api_top", "sync_s", "gemm_calls", "gemm_s", "gemm_max_s",
               "op_max_name", "op_max_s", "lazy_load_calls", "lazy_load_s", "module_loading", "model"]
CALL_COLS = ["phase", "run_id", "iteration", "name", "duration_s", "op_name", "op_kernels", "module_loading", "model"]


def _kind(e) -> str:
    return str(e.device_type()).rsplit(".", 1)[-1]


class KernelTrace:
    """Profile an Engine's iterations (wraps engine.step and engine.warm_shapes); `stop()` returns the rows."""

    def __init__(self, engine, cuda: bool):
        self.engine, self.cuda = engine, cuda
        self.index: list[dict] = []   # range k -> phase, run_id, iteration and (runs) the iteration's record
        self.phase, self.run_id = "warmup", ""
        self.prof = None

    def start(self) -> None:
        acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if self.cuda else [])
        self.prof = profile(activities=acts)
        self.prof.__enter__()
        step, warm = self.engine.step, self.engine.warm_shapes

        def traced_step():
            entry = {"phase": self.phase, "run_id": self.run_id, "iteration": len(self.engine.iterations)}
            with record_function(f"{TAG}{len(self.index)}"):
                self.index.append(entry)
                rec = step()
            if rec is not None:
                entry.update(prefill_tokens=rec.prefill_tokens, decode_seqs=rec.decode_seqs,
                             graph_batch=rec.graph_batch, duration_s=rec.duration_s)
            return rec

        def traced_warm(max_tokens: int) -> int:
            entry = {"phase": "warm_pass", "run_id": self.run_id, "iteration": -1, "prefill_tokens": max_tokens}
            with record_function(f"{TAG}{len(self.index)}"):
                self.index.append(entry)
                return warm(max_tokens)

        self.engine.step, self.engine.warm_shapes = traced_step, traced_warm

    def stop(self) -> tuple[list[dict], list[dict]]:
        """End the profile; (per-range rows, slow-call rows)."""
        self.prof.__exit__(None, None, None)
        results = self.prof.profiler.kineto_results
        return summarize(list(results.events()), self.index)


def summarize(events, index: list[dict]) -> tuple[list[dict], list[dict]]:
    """Per annotated range (TAG<k>, index[k]) the KERNEL_COLS figures, and the slow calls (CALL_COLS), from kineto's
    raw events (name(), device_type(), start_ns(), duration_ns(), correlation_id(), linked_correlation_id())."""
    ranges, cpu_ops, cpu_events, calls, kernels = [], {}, [], [], []
    for e in events:
        name, kind = e.name(), _kind(e)
        if kind == "CPU" and name.startswith(TAG) and name[len(TAG):].isdigit():
            ranges.append((e.start_ns(), e.start_ns() + e.duration_ns(), int(name[len(TAG):])))
        elif kind == "CPU" and _API.match(name):
            calls.append(e)
        elif kind == "CPU":
            cpu_events.append(e)
            if e.linked_correlation_id() == 0 and e.correlation_id() > 0:
                cpu_ops[e.correlation_id()] = e
        elif kind in ("CUDA", "HIP") and not name.startswith(("Memcpy", "Memset", "Memory", TAG)) and "Sync" not in name:
            kernels.append(e)
    ranges.sort()
    starts = [r[0] for r in ranges]

    def where(t_ns: int) -> int:
        k = bisect.bisect_right(starts, t_ns) - 1
        return ranges[k][2] if k >= 0 and t_ns <= ranges[k][1] else -1

    rows = {k: {**{c: 0 for c in KERNEL_COLS if c not in ("new_kernel_names", "other_api_top", "op_max_name")},
                "new_kernel_names": "", "other_api_top": "", "op_max_name": "", "_new": [], "_other": {},
                "range_s": (b - a) * 1e-9, **index[k]} for a, b, k in ranges if 0 <= k < len(index)}
    op_kernels: dict[int, list[str]] = {}
    seen: set[str] = set()
    for e in sorted(kernels, key=lambda e: e.start_ns()):
        op = cpu_ops.get(e.linked_correlation_id())
        op_kernels.setdefault(e.linked_correlation_id(), []).append(e.name())
        r = rows.get(where(op.start_ns())) if op is not None else None
        new = e.name() not in seen
        seen.add(e.name())
        if r is None:
            continue
        r["num_kernels"] += 1
        r["kernels_gpu_s"] += e.duration_ns() * 1e-9
        if new:
            r["new_kernels"] += 1
            r["_new"].append(e.name()[:80])
    for op in cpu_events:
        r = rows.get(where(op.start_ns()))
        if r is None:
            continue
        d = op.duration_ns() * 1e-9
        if "Lazy" in op.name() or "Loading" in op.name():
            r["lazy_load_calls"] += 1
            r["lazy_load_s"] += d
        if op.name() in _GEMM:
            r["gemm_calls"] += 1
            r["gemm_s"] += d
            r["gemm_max_s"] = max(r["gemm_max_s"], d)
        if op.name() not in _WAIT_OPS and d > r["op_max_s"]:
            r["op_max_s"], r["op_max_name"] = d, op.name()
    slow = []
    for c in calls:
        k = where(c.start_ns())
        r = rows.get(k)
        if r is None:
            continue
        name, d = c.name(), c.duration_ns() * 1e-9
        if _WAIT.search(name):
            r["sync_s"] += d
            continue
        if "Launch" in name:
            r["launch_calls"] += 1
            r["launch_s"] += d
            r["launch_max_s"] = max(r["launch_max_s"], d)
            if d >= SLOW_LAUNCH_S:
                r["slow_launches"] += 1
                r["slow_launch_s"] += d
        elif "Malloc" in name or "MemCreate" in name or "MemMap" in name:
            r["malloc_calls"] += 1
            r["malloc_s"] += d
        elif "Free" in name or "MemUnmap" in name or "MemRelease" in name:
            r["free_calls"] += 1
            r["free_s"] += d
        else:
            r["other_api_calls"] += 1
            r["other_api_s"] += d
            r["_other"][name] = r["_other"].get(name, 0.0) + d
        if d >= SLOW_CALL_S:
            op = cpu_ops.get(c.linked_correlation_id())
            slow.append({"phase": r["phase"], "run_id": r["run_id"], "iteration": r["iteration"], "name": name,
                         "duration_s": d, "op_name": op.name() if op is not None else "",
                         "op_kernels": ";".join(k[:80] for k in op_kernels.get(c.linked_correlation_id(), [])[:3])})
    out = []
    for k in sorted(rows):
        r = rows[k]
        r["new_kernel_names"] = ";".join(r.pop("_new")[:6])
        other = r.pop("_other")
        r["other_api_top"] = ";".join(f"{n}:{s * 1e3:.3f}ms" for n, s in sorted(other.items(), key=lambda x: -x[1])[:3])
        out.append(r)
    return out, slow


def write(path: Path, cols: list[str], rows: list[dict], fixed: dict) -> None:
    """rows with `fixed` (model, module loading, the environment columns) to a CSV at path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, cols + [c for c in fixed if c not in cols], extrasaction="ignore")
        w.writeheader()
        for r in rows:
            w.writerow({**r, **fixed})
