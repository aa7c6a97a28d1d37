"""What the engine's host thread was doing when an iteration stalled (issue 15, session s24stall).

On some H100 hosts real/serve's eager iterations run 10-30 ms long, in runs of consecutive iterations
(docs/notes/s23srvh_rule.md, extra hosts); the stalls are host time (host_s ~ duration_s: the GPU starved of
launches), on a pinned CPU that never changed. This module records, per iteration, the counters that tell the
candidate causes apart, so a stall's row says which one it was:

  thread_cpu_s      the main thread's CPU time (CLOCK_THREAD_CPUTIME_ID): near the span's wall time, the thread
                    (thread_user_s / thread_sys_s: getrusage's user / kernel split, e.g. time in the driver's ioctls)
                    ran (Python, GC, the driver spinning); far below it, it was off the CPU;
  run_delay_s       /proc/thread-self/schedstat's wait time: runnable but not running (the guest scheduler
                    gave the CPU to another task), with timeslices (times scheduled in);
  nvcsw / nivcsw    voluntary (blocked in a syscall, e.g. a driver wait) and involuntary (preempted) context
                    switches of the thread (getrusage RUSAGE_THREAD); minflt / majflt its page faults;
  cpu_*_s           the thread's CPU's steal (the hypervisor ran someone else's vCPU: invisible to the guest's
                    schedstat), irq and softirq time, from /proc/stat;
  gc_*              Python's cyclic collections that started in the span (gc.callbacks): how many, their seconds,
                    the oldest generation, gen-2 seconds;
  cuda_*            the caching allocator's cudaMalloc / cudaFree of segments and its retries
                    (torch.cuda.memory_stats): a new size's allocation.
One snapshot is taken right before each iteration's start; an iteration's row is the difference to the next
snapshot (the iteration, its bookkeeping and the loop's arrivals: the load generator has no thread of its own).
Snapshots are taken outside the timed window; with the trace off (the default) none is taken.

`run_host_rows` is the per-run view: every CPU's busy / steal / irq time and interrupts over the run (another
task or device on the pinned CPU), this process's threads' CPU time and where they ran, other processes' CPU
time, and the objects each GC generation tracks at the run's start.
"""

from __future__ import annotations

import csv
import gc
import os
import resource
import sys
import time

import torch

from real.serve.hostpin import current_cpu
from real.serve.records import STALL_CUDA_COLS

CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
# the caching allocator's counters (torch.cuda.memory_stats keys) each row carries, as real/serve/records.py names them
CUDA_KEYS = dict(zip(STALL_CUDA_COLS, ("segment.all.allocated", "segment.all.freed", "num_alloc_retries",
                                       "num_device_alloc", "num_device_free")))


def read_proc_stat_cpu(text: str, cpu: int) -> tuple[float, float, float]:
    """(steal, irq, softirq) seconds of `cpu` from /proc/stat's text (zeros when the line is absent)."""
    tag = f"cpu{cpu} "
    for line in text.splitlines():
        if line.startswith(tag):
            f = [int(x) for x in line.split()[1:]]
            steal = f[7] if len(f) > 7 else 0
            return steal / CLK_TCK, f[5] / CLK_TCK, f[6] / CLK_TCK
    return 0.0, 0.0, 0.0


def parse_schedstat(text: str) -> tuple[float, float, int]:
    """(run seconds, run-delay seconds, timeslices) from a schedstat line 'run_ns wait_ns slices'."""
    run_ns, wait_ns, slices = (int(x) for x in text.split()[:3])
    return run_ns / 1e9, wait_ns / 1e9, slices


def open_readonly(path: str) -> int | None:
    """A file descriptor kept open for pread (a /proc file re-read every iteration); None where there is none."""
    try:
        return os.open(path, os.O_RDONLY)
    except OSError:
        return None


def read_run_delay_s(schedstat_fd: int | None) -> float:
    """The calling thread's run delay so far (schedstat's wait time), 0 without /proc/thread-self/schedstat."""
    return parse_schedstat(os.pread(schedstat_fd, 256, 0).decode())[1] if schedstat_fd is not None else 0.0


def thread_rusage():
    """getrusage of the calling thread (of the process where the OS has no per-thread figures)."""
    return resource.getrusage(getattr(resource, "RUSAGE_THREAD", resource.RUSAGE_SELF))


class GcLog:
    """Python's cyclic collections as (start, stop, generation), from gc.callbacks while installed."""

    def __init__(self, clock=time.perf_counter):
        self.clock, self.events, self._start = clock, [], None

    def __call__(self, phase: str, info: dict) -> None:
        if phase == "start":
            self._start = self.clock()
        elif self._start is not None:
            self.events.append((self._start, self.clock(), int(info.get("generation", -1))))
            self._start = None

    def install(self) -> None:
        if self not in gc.callbacks:
            gc.callbacks.append(self)

    def remove(self) -> None:
        if self in gc.callbacks:
            gc.callbacks.remove(self)


class HostCounters:
    """Per-iteration host counters of the calling (main) thread; `snapshot()` before each iteration."""

    def __init__(self, device: torch.device, clock=time.perf_counter):
        self.clock, self.device = clock, device
        self.cuda = device.type == "cuda"
        self.gc = GcLog(clock)
        self.gc.install()
        self._schedstat = open_readonly("/proc/thread-self/schedstat")
        self._stat = open_readonly("/proc/stat")
        self.last: dict | None = None
        self.rows: list[dict] = []  # one per iteration: records.STALL_COLS but run_id and rank

    def _pread(self, fd, size: int = 1 << 16) -> str:
        return os.pread(fd, size, 0).decode() if fd is not None else ""

    def thread_now(self) -> tuple[float, float, int, int]:
        """(thread CPU s, run delay s, involuntary, voluntary context switches) of the calling thread now: the pause
        probe's per-chain reading (hostspeed.pause_probe)."""
        ru = thread_rusage()
        return time.thread_time(), read_run_delay_s(self._schedstat), ru.ru_nivcsw, ru.ru_nvcsw

    def snapshot(self) -> dict:
        ru = thread_rusage()
        snap = {"t": self.clock(), "thread_cpu_s": time.thread_time(), "thread_user_s": ru.ru_utime,
                "thread_sys_s": ru.ru_stime, "nvcsw": ru.ru_nvcsw, "nivcsw": ru.ru_nivcsw,
                "minflt": ru.ru_minflt, "majflt": ru.ru_majflt, "gc_n": len(self.gc.events)}
        cpu = current_cpu()
        snap["cpu"] = cpu
        run_delay, slices = 0.0, 0
        if self._schedstat is not None:
            _, run_delay, slices = parse_schedstat(self._pread(self._schedstat, 256))
        snap["run_delay_s"], snap["timeslices"] = run_delay, slices
        snap["cpu_steal_s"], snap["cpu_irq_s"], snap["cpu_softirq_s"] = (
            read_proc_stat_cpu(self._pread(self._stat), cpu) if self._stat is not None and cpu >= 0 else (0.0,) * 3)
        if self.cuda:
            stats = torch.cuda.memory_stats(self.device)
            for col, key in CUDA_KEYS.items():
                snap[col] = stats.get(key, 0)
        return snap

    def mark(self, iteration: int) -> None:
        """Snapshot now, before iteration `iteration`; the previous mark's iteration gets its row (the counters'
        change since then). A mark with no iteration since the last (an empty schedule) replaces it."""
        snap = self.snapshot()
        if self.last is not None and self.last["iteration"] != iteration:
            self.rows.append(self.delta(self.last, snap))
        snap["iteration"] = iteration
        self.last = snap

    def close_run(self) -> None:
        """End the run: the last iteration's row, then forget the open snapshot."""
        if self.last is not None and self.last.get("iteration", -1) >= 0:
            self.rows.append(self.delta(self.last, self.snapshot()))
        self.last = None

    def reset(self) -> None:
        self.rows, self.last = [], None
        self.gc.events.clear()

    def delta(self, before: dict, after: dict) -> dict:
        """An iteration's row: the counters' change between its snapshot and the next."""
        events = self.gc.events[before["gc_n"]:after["gc_n"]]
        row = {"iteration": before["iteration"], "span_s": after["t"] - before["t"], "cpu": before["cpu"],
               "gc_count": len(events), "gc_s": sum(s - t for t, s, _ in events),
               "gc_max_gen": max((g for *_, g in events), default=-1),
               "gc_gen2_s": sum(s - t for t, s, g in events if g == 2)}
        for k in ("thread_cpu_s", "thread_user_s", "thread_sys_s", "run_delay_s", "timeslices", "nvcsw", "nivcsw", "minflt", "majflt",
                  "cpu_steal_s", "cpu_irq_s", "cpu_softirq_s", *(CUDA_KEYS if self.cuda else ())):
            row[k] = after[k] - before[k]
        return row

    def close(self) -> None:
        self.gc.remove()
        for fd in (self._schedstat, self._stat):
            if fd is not None:
                os.close(fd)


# ---- per run: the whole host ------------------------------------------------------------------
def _read(path: str) -> str:
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return ""


def _task_stat(text: str) -> tuple[str, float, int]:
    """(comm, utime+stime seconds, last processor) from a /proc/<pid>/stat line ('' / 0 / -1 if unreadable)."""
    if ")" not in text:
        return "", 0.0, -1
    comm = text[text.index("(") + 1:text.rindex(")")]
    f = text[text.rindex(")") + 2:].split()
    # fields after comm: state(0) ... utime(11) stime(12) ... processor(36)
    return comm, (int(f[11]) + int(f[12])) / CLK_TCK, int(f[36]) if len(f) > 36 else -1


def host_state() -> dict:
    """Every CPU's /proc/stat times, /proc/interrupts per CPU, this process's threads and other processes."""
    cpus = {}
    for line in _read("/proc/stat").splitlines():
        if line.startswith("cpu") and line[3:4].isdigit():
            name, *vals = line.split()
            v = [int(x) / CLK_TCK for x in vals] + [0.0] * 10
            cpus[int(name[3:])] = {"busy": v[0] + v[1] + v[2] + v[5] + v[6], "steal": v[7], "irq": v[5],
                                   "softirq": v[6]}
    irq_per_cpu: dict[int, int] = {}
    lines = _read("/proc/interrupts").splitlines()
    if lines:
        n = len(lines[0].split())
        for line in lines[1:]:
            parts = line.split()
            for i, x in enumerate(parts[1:n + 1]):
                if x.isdigit():
                    irq_per_cpu[i] = irq_per_cpu.get(i, 0) + int(x)
    threads = {}
    for tid in os.listdir("/proc/self/task") if os.path.isdir("/proc/self/task") else []:
        threads[int(tid)] = _task_stat(_read(f"/proc/self/task/{tid}/stat"))
    procs = {}
    me = os.getpid()
    for pid in (p for p in os.listdir("/proc") if p.isdigit()):
        if int(pid) != me:
            procs[int(pid)] = _task_stat(_read(f"/proc/{pid}/stat"))
    return {"cpus": cpus, "irqs": irq_per_cpu, "threads": threads, "procs": procs}


def run_host_rows(before: dict, after: dict, run_id: str, rank: int, gc_tracked: dict) -> list[dict]:
    """The per-run rows (records.HOSTRUN_COLS) from host_state() before and after a run."""
    rows = []
    base = {"run_id": run_id, "rank": rank}
    for cpu, b in sorted(after["cpus"].items()):
        a = before["cpus"].get(cpu, b)
        rows.append({**base, "scope": "cpu", "key": cpu, "cpu_s": b["busy"] - a["busy"], "steal_s": b["steal"] - a["steal"],
                     "irq_s": b["irq"] - a["irq"], "softirq_s": b["softirq"] - a["softirq"],
                     "interrupts": after["irqs"].get(cpu, 0) - before["irqs"].get(cpu, 0)})
    for scope, key in (("thread", "threads"), ("process", "procs")):
        for tid, (name, cpu_s, proc) in sorted(after[key].items()):
            used = cpu_s - before[key].get(tid, (name, 0.0, proc))[1]
            if scope == "thread" or used > 0:
                rows.append({**base, "scope": scope, "key": tid, "name": name, "cpu_s": used, "processor": proc})
    for gen, n in gc_tracked.items():
        rows.append({**base, "scope": "gc_tracked", "key": gen, "value": n})
    rows.append({**base, "scope": "gc_frozen", "key": 0, "value": gc.get_freeze_count()})
    return rows


def timed_full_collection(clock=time.perf_counter) -> float:
    """Seconds one full (generation 2) collection of the process's heap takes now: what a gen-2 collection during a
    run would have cost this host (taken after the part's last run, so no run's GC state is changed)."""
    t = clock()
    gc.collect(2)
    return clock() - t


def gc_tracked() -> dict[int, int]:
    """Objects each GC generation tracks now."""
    return {g: len(gc.get_objects(generation=g)) for g in range(3)}


# ---- without the engine: does the host pause a thread that launches nothing? ------------------
HICCUP_MIN_S = 0.5e-3  # a gap between two clock reads this long or longer is a hiccup (a busy loop reads ~0.1 us apart)
HICCUP_COLS = ["cpu", "window_s", "reads", "hiccups", "hiccup_s", "max_hiccup_s", "thread_cpu_s", "run_delay_s",
               "nivcsw", "nvcsw", "cpu_steal_s", "sizes_s"]


def hiccups(cpu: int, window_s: float, min_gap_s: float = HICCUP_MIN_S) -> dict:
    """A busy loop pinned to `cpu` for window_s, reading the clock: every gap of min_gap_s or more between two reads
    (the thread lost the CPU, or the vCPU its host core), with the thread's CPU time, run delay, context switches and
    the CPU's steal over the window (HICCUP_COLS). Pure Python: no kernel launch, no allocation to speak of."""
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, [cpu])
    sched = open_readonly("/proc/thread-self/schedstat")
    steal = lambda: read_proc_stat_cpu(_read("/proc/stat"), cpu)[0]  # noqa: E731
    ru0, s0, d0, c0 = thread_rusage(), steal(), read_run_delay_s(sched), time.thread_time()
    clock = time.perf_counter
    gaps, reads = [], 0
    t0 = last = clock()
    end = t0 + window_s
    while last < end:
        now = clock()
        reads += 1
        if now - last >= min_gap_s:
            gaps.append(now - last)
        last = now
    ru1 = thread_rusage()
    out = {"cpu": cpu, "window_s": last - t0, "reads": reads, "hiccups": len(gaps), "hiccup_s": sum(gaps),
           "max_hiccup_s": max(gaps, default=0.0), "thread_cpu_s": time.thread_time() - c0,
           "run_delay_s": read_run_delay_s(sched) - d0, "nivcsw": ru1.ru_nivcsw - ru0.ru_nivcsw, "nvcsw": ru1.ru_nvcsw - ru0.ru_nvcsw,
           "cpu_steal_s": steal() - s0, "sizes_s": ";".join(f"{g:.6g}" for g in gaps)}
    if sched is not None:
        os.close(sched)
    return out


GAP_COLS = ["cpu", "t_monotonic_s", "gap_s", "thread_cpu_s"]


def gap_log(cpu: int, window_s: float, out_path: str, min_gap_s: float = HICCUP_MIN_S) -> int:
    """The hiccup meter run long beside an engine (another CPU, another process): every gap of min_gap_s or more
    written as it ends (GAP_COLS: the gap's start on CLOCK_MONOTONIC, time.perf_counter's clock in every process, so
    it lines up with an engine run's run_t0_monotonic_s; the thread's CPU time over the gap: near the gap, the guest
    believed the thread ran). Returns the gaps written."""
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, [cpu])
    clock, cpu_clock = time.perf_counter, time.thread_time
    n = 0
    with open(out_path, "a", newline="") as f:
        w = csv.writer(f)
        if f.tell() == 0:
            w.writerow(GAP_COLS)
            f.flush()   # a meter stopped before its first gap still leaves the header (s24stall round 3 left 0 bytes)
        last, last_cpu = clock(), cpu_clock()
        end = last + window_s
        while last < end:
            now, now_cpu = clock(), cpu_clock()
            if now - last >= min_gap_s:
                w.writerow([cpu, f"{last:.6f}", f"{now - last:.6g}", f"{now_cpu - last_cpu:.6g}"])
                f.flush()
                n += 1
            last, last_cpu = now, now_cpu
    return n


def main(argv=None) -> int:
    """python -m real.serve.stalltrace OUT.csv SECONDS CPU [CPU ...]: the hiccup meter on each CPU in turn, one row
    each (appended; the header when the file is new). With --gaps OUT.csv SECONDS CPU: gap_log."""
    args = sys.argv[1:] if argv is None else argv
    if args[:1] == ["--gaps"]:  # --gaps OUT.csv SECONDS CPU: the long meter (gap_log)
        try:
            return 0 if gap_log(int(args[3]), float(args[2]), args[1]) >= 0 else 1
        except (IndexError, ValueError):
            print("usage: python -m real.serve.stalltrace --gaps OUT.csv SECONDS CPU", file=sys.stderr)
            return 2
    if len(args) < 3:
        print("usage: python -m real.serve.stalltrace OUT.csv SECONDS CPU [CPU ...]", file=sys.stderr)
        return 2
    try:
        window_s, cpus = float(args[1]), [int(c) for c in args[2:]]
    except ValueError:
        print(f"SECONDS and CPU must be numbers, got {args[1:]}", file=sys.stderr)
        return 2
    allowed = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else set(cpus)
    cpus = [c if c in allowed else max(allowed) for c in cpus]
    new = not os.path.exists(args[0])
    with open(args[0], "a", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["timestamp_utc", *HICCUP_COLS])
        if new:
            w.writeheader()
        for cpu in cpus:
            row = hiccups(cpu, window_s)
            w.writerow({"timestamp_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **row})
            print(f"cpu {cpu}: {row['hiccups']} hiccups, {row['hiccup_s'] * 1e3:.2f} ms, max "
                  f"{row['max_hiccup_s'] * 1e3:.2f} ms, steal {row['cpu_steal_s'] * 1e3:.0f} ms, "
                  f"run delay {row['run_delay_s'] * 1e3:.2f} ms, nivcsw {row['nivcsw']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
