"""Where the serving engine's host thread runs: CPU pinning and per-iteration CPU readings.

real/serve is host-bound at small batches (an eager iteration is mostly Python launching kernels),
so its speed follows the CPU its main thread runs on: a migration to another core or NUMA node, a
core shared with another rank's threads, or a core that has clocked down while the thread waited
on the GPU. `pin` modes for the main thread (Linux `sched_setaffinity` on the calling thread;
threads already started, e.g. NCCL's proxy, keep theirs):

  none       every CPU the process was allowed at start (the OS places and moves the thread);
  numa       this rank's share of the CPUs local to its GPU (NVML's CPU affinity of the device,
             else every allowed CPU), the share split by local rank when ranks share a node;
  core       the last CPU of that share only (no migration at all; the last, as CPU 0 takes most
             interrupts).

`current_cpu()` (sched_getcpu) and `cpu_mhz(cpu)` (cpufreq sysfs; NaN where a VM hides it) are
read once per iteration, outside its timed window.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import math
import os

try:
    import pynvml
except ImportError:  # CPU machines, or no nvidia-ml-py: every allowed CPU counts as GPU-local
    pynvml = None

PIN_MODES = ("none", "numa", "core")

_libc = None
ALLOWED_AT_START = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []


def current_cpu() -> int:
    """The CPU the calling thread runs on now (-1 where sched_getcpu is unavailable)."""
    global _libc
    if _libc is None:
        try:
            _libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
            _libc.sched_getcpu.restype = ctypes.c_int
        except (OSError, AttributeError):
            _libc = False
    return int(_libc.sched_getcpu()) if _libc else -1


def cpu_mhz(cpu: int) -> float:
    """The kernel's current frequency of `cpu` in MHz (cpufreq sysfs); NaN if not exposed."""
    if cpu < 0:
        return math.nan
    try:
        with open(f"/sys/devices/system/cpu/cpu{cpu}/cpufreq/scaling_cur_freq") as f:
            return int(f.read()) / 1000.0
    except (OSError, ValueError):
        return math.nan


def parse_cpu_list(text: str) -> list[int]:
    """'0-3,8,10-11' -> [0, 1, 2, 3, 8, 10, 11] (the kernel's cpulist format)."""
    out = []
    for part in text.strip().split(","):
        if not part:
            continue
        lo, _, hi = part.partition("-")
        out.extend(range(int(lo), int(hi or lo) + 1))
    return out


@functools.cache
def gpu_local_cpus(device_index: int) -> list[int]:
    """CPUs local to GPU `device_index` (NVML's ideal CPU affinity of the device), intersected with
    the CPUs this process may use; every allowed CPU when NVML cannot say."""
    allowed = set(ALLOWED_AT_START)
    if pynvml is None:
        return sorted(allowed)
    try:
        pynvml.nvmlInit()
        h = pynvml.nvmlDeviceGetHandleByIndex(device_index)
        words = pynvml.nvmlDeviceGetCpuAffinity(h, (os.cpu_count() + 63) // 64)
        local = {64 * i + b for i, w in enumerate(words) for b in range(64) if (int(w) >> b) & 1}
        cpus = sorted(local & allowed)
        if cpus:
            return cpus
    except Exception:  # no nvidia-ml-py, no driver, no GPU: NVMLError subclasses
        pass
    return sorted(allowed)


def rank_share(cpus: list[int], local_rank: int, ranks_on_same_cpus: int) -> list[int]:
    """This rank's contiguous slice when `ranks_on_same_cpus` ranks share `cpus` (never empty)."""
    n = max(1, ranks_on_same_cpus)
    size = max(1, len(cpus) // n)
    part = cpus[local_rank % n * size:(local_rank % n + 1) * size]
    return part or cpus[:1]


def pin_cpus(mode: str, local_rank: int, local_world: int, device_index: int | None) -> list[int]:
    """The CPUs mode `mode` gives this rank's main thread (see the module docstring)."""
    if mode not in PIN_MODES:
        raise ValueError(f"pin mode {mode!r}: expected one of {', '.join(PIN_MODES)}")
    if mode == "none" or not ALLOWED_AT_START:
        return list(ALLOWED_AT_START)
    if device_index is None:  # CPU ranks: split what the process may use
        share = rank_share(list(ALLOWED_AT_START), local_rank, local_world)
    else:
        local = gpu_local_cpus(device_index)
        # ranks whose GPUs report the same local CPUs split them; others keep their node's all
        same = sum(1 for r in range(local_world) if gpu_local_cpus(r) == local) if local_world > 1 else 1
        order = [r for r in range(local_world) if gpu_local_cpus(r) == local] if local_world > 1 else [local_rank]
        share = rank_share(local, order.index(local_rank) if local_rank in order else 0, same)
    return share[-1:] if mode == "core" else share


def apply_pin(mode: str, local_rank: int = 0, local_world: int = 1, device_index: int | None = None) -> list[int]:
    """Set the calling thread's CPU affinity for `mode`; returns the CPUs set ([] if unsupported)."""
    cpus = pin_cpus(mode, local_rank, local_world, device_index)
    if cpus and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, cpus)
    return cpus
