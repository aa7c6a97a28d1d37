"""DeepEP's low-latency dispatch and combine with return_recv_hook: the send kernel and the receive
kernel timed apart (s22dep, issue 15).

Why: DeepSeek's decode runs each dispatch and combine as two kernels on the compute stream, a send
kernel (dispatch: FP8 cast of the tokens and one write per top-k pick; combine: one BF16 row back per
pick) and, when the hook is called, a receive kernel (dispatch: unpack the rows landed into the
expert-major layout; combine: the weighted sum of each token's top-k rows). While either runs it holds
the SMs. The twin books that time at zero (docs/notes/s20srv2.md); this harness measures it.

Run on one host under torchrun (one rank a GPU), DeepEP importable (its own build; it is not part of
this repository, and this module imports it only when present):
    python -m torch.distributed.run --standalone --nproc-per-node 2 -m real.bench.deepep_ll --out DIR
Where `deep_ep` is absent the harness writes one row with status=deep_ep_absent and exits 0.

Per rank and tokens a rank (32, 64, 96, 128 by default; the buffer sized for --max-tokens), hidden
7168, top-8 of 256 experts (random distinct picks, DeepEP's test_low_latency routing), FP8 dispatch,
BF16 combine, and mode:
  hook      return_recv_hook=True with a GPU sleep of gap_us between each send and its hook, so that
            the receive kernel finds its rows landed (gap 0: it may wait for them); kernel times from
            the torch profiler's trace, send and receive told apart by their order (each op launches
            its kernel twice)
  nohook    return_recv_hook=False: one kernel per op (send, wait and receive together), for reference
Rows go to DIR/deepep_ll.csv as they are measured (COLS: medians and p10/p90 over the profiled
iterations, in seconds; the kernels' grid; rows received), each with GPU name, clocks, torch, CUDA,
NCCL, NVSHMEM and the DeepEP commit (env DEEPEP_COMMIT).
"""

from __future__ import annotations

import argparse
import csv
import datetime
import importlib.metadata
import json
import math
import os
import re
import statistics
import sys
import tempfile
from pathlib import Path

import torch
import torch.distributed as dist

from real.bench.device import nccl_version
from real.telemetry import Telemetry

FAMILY = "deepep_ll"
SHAPE_COLS = ["bench", "status", "rank", "num_ranks", "tokens_per_rank", "max_tokens_per_rank", "hidden",
              "num_experts", "local_experts", "top_k", "dispatch_fp8", "mode", "gap_us", "iters",
              "rows_received", "dispatch_grid_blocks", "combine_grid_blocks"]
KERNEL_COLS = [f"{op}_{phase}_{stat}" for op in ("dispatch", "combine") for phase in ("send", "recv")
               for stat in ("s", "p10_s", "p90_s")]
ENV_COLS = ["gpu_name", "sm_clock_mhz", "mem_clock_mhz", "max_sm_clock_mhz", "torch_version", "cuda_version",
            "nccl_version", "nvshmem_version", "deepep_commit", "num_gpus", "timestamp_utc"]
COLS = SHAPE_COLS + KERNEL_COLS + ENV_COLS

# DeepEP's low-latency kernels: deep_ep::internode_ll::dispatch<...> / combine<...>
_KERNEL_RE = re.compile(r"internode_ll::(dispatch|combine)\b")


class RowWriter:
    """Appends rows to DIR/deepep_ll.csv (header first), flushing each, so a cut run keeps its rows."""

    def __init__(self, out_dir: Path):
        out_dir.mkdir(parents=True, exist_ok=True)
        self.path = out_dir / f"{FAMILY}.csv"
        self.file = open(self.path, "w", newline="")
        self.writer = csv.DictWriter(self.file, fieldnames=COLS, extrasaction="raise")
        self.writer.writeheader()
        self.file.flush()

    def row(self, **values) -> None:
        row = {k: "" for k in COLS}
        row["timestamp_utc"] = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
        row.update(values)
        self.writer.writerow({k: _fmt(v) for k, v in row.items()})
        self.file.flush()

    def close(self) -> None:
        self.file.close()


def _fmt(v):
    if isinstance(v, float):
        return "" if math.isnan(v) else f"{v:.6g}"
    return v


def kernel_kind(name: str) -> str | None:
    """'dispatch' or 'combine' for DeepEP's low-latency kernels, else None.
    E.g. 'void deep_ep::internode_ll::dispatch<true, false, 7168>(...)' -> 'dispatch'."""
    m = _KERNEL_RE.search(name)
    return m.group(1) if m else None


def trace_kernels(trace: dict) -> list[dict]:
    """The DeepEP low-latency kernels of a chrome trace, in start order: kind, start_us, dur_us, grid
    blocks."""
    out = []
    for e in trace.get("traceEvents", []):
        if e.get("cat") != "kernel" or e.get("ph") != "X":
            continue
        kind = kernel_kind(str(e.get("name", "")))
        if kind is None:
            continue
        grid = e.get("args", {}).get("grid", [])
        out.append({"kind": kind, "start_us": float(e["ts"]), "dur_us": float(e["dur"]),
                    "grid_blocks": math.prod(grid) if grid else 0})
    return sorted(out, key=lambda k: k["start_us"])


def split_phases(kernels: list[dict], kind: str, hook: bool) -> dict[str, list[float]]:
    """Durations (seconds) of `kind`'s kernels by phase. With the hook each op launches its kernel
    twice, send then receive, so they alternate; without it the one kernel is booked as the send
    (it holds the whole op) and receive stays empty.
    E.g. durations [10, 3, 11, 4] us with hook -> send [1.0e-5, 1.1e-5], recv [3e-6, 4e-6]."""
    durs = [k["dur_us"] * 1e-6 for k in kernels if k["kind"] == kind]
    if not hook:
        return {"send": durs, "recv": []}
    if len(durs) % 2:
        raise ValueError(f"{kind}: {len(durs)} kernels with the receive hook, expected send/receive pairs")
    return {"send": durs[0::2], "recv": durs[1::2]}


def stats(xs: list[float]) -> tuple[float, float, float]:
    """(median, p10, p90) of xs; NaNs when empty."""
    if not xs:
        return math.nan, math.nan, math.nan
    q = statistics.quantiles(xs, n=10, method="inclusive") if len(xs) > 1 else [xs[0]] * 9
    return statistics.median(xs), q[0], q[-1]


def kernel_columns(kernels: list[dict], hook: bool) -> dict:
    cols = {}
    for op in ("dispatch", "combine"):
        phases = split_phases(kernels, op, hook)
        for phase in ("send", "recv"):
            med, p10, p90 = stats(phases[phase])
            cols.update({f"{op}_{phase}_s": med, f"{op}_{phase}_p10_s": p10, f"{op}_{phase}_p90_s": p90})
        grids = [k["grid_blocks"] for k in kernels if k["kind"] == op]
        cols[f"{op}_grid_blocks"] = max(grids) if grids else ""
    return cols


def package_version(*names: str) -> str:
    for name in names:
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return ""


def environment(num_gpus: int) -> dict:
    cuda = torch.cuda.is_available()
    tel = Telemetry(torch.cuda.current_device() if cuda else 0)
    nccl = nccl_version() if cuda else ""
    return {"gpu_name": torch.cuda.get_device_name() if cuda else "cpu", "sm_clock_mhz": tel.sm_clock_mhz(),
            "mem_clock_mhz": tel.mem_clock_mhz(), "max_sm_clock_mhz": tel.static_info().get("max_sm_clock_mhz", ""),
            "torch_version": torch.__version__, "cuda_version": torch.version.cuda or "", "nccl_version": nccl,
            "nvshmem_version": package_version("nvidia-nvshmem-cu13", "nvidia-nvshmem-cu12"),
            "deepep_commit": os.environ.get("DEEPEP_COMMIT", ""), "num_gpus": num_gpus}


def sleep_cycles_per_us() -> float:
    """GPU clock cycles of torch.cuda._sleep per microsecond, timed once with CUDA events."""
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    torch.cuda._sleep(1_000_000)
    start.record()
    torch.cuda._sleep(2_000_000)
    end.record()
    torch.cuda.synchronize()
    return 2_000_000 / (start.elapsed_time(end) * 1e3)


def measure(buf, deep_ep, args, experts: int, tokens: int, hook: bool, gap_cycles: int, rank: int,
            num_ranks: int) -> tuple[list, int]:
    """Profile args.iters dispatch + combine rounds at `tokens` a rank; (kernels, rows received)."""
    torch.manual_seed(1 + rank)
    e, k, h = experts, args.topk, args.hidden
    x = torch.randn((tokens, h), dtype=torch.bfloat16, device="cuda") * 0.1
    scores = torch.randn((tokens, e), dtype=torch.float32, device="cuda").abs() + 1
    topk_idx = torch.topk(scores, k, dim=-1, largest=True, sorted=True)[1].to(deep_ep.topk_idx_t)
    topk_w = torch.rand((tokens, k), dtype=torch.float32, device="cuda")
    expert_out = torch.randn((e // num_ranks, num_ranks * args.max_tokens, h), dtype=torch.bfloat16, device="cuda")

    def round_trip():
        _, count, handle, _, recv_hook = buf.low_latency_dispatch(
            x, topk_idx, args.max_tokens, e, use_fp8=True, async_finish=False, return_recv_hook=hook)
        if hook:
            if gap_cycles:
                torch.cuda._sleep(gap_cycles)
            recv_hook()
        _, _, recv_hook = buf.low_latency_combine(expert_out, topk_idx, topk_w, handle, return_recv_hook=hook)
        if hook:
            if gap_cycles:
                torch.cuda._sleep(gap_cycles)
            recv_hook()
        return count

    for _ in range(args.warmup):
        count = round_trip()
    torch.cuda.synchronize()
    rows = int(count.sum().item())
    dist.barrier()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
        for _ in range(args.iters):
            round_trip()
        torch.cuda.synchronize()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"trace_{rank}.json"
        prof.export_chrome_trace(str(path))
        trace = json.loads(path.read_text())
    return trace_kernels(trace), rows


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--tokens", default="32,64,96,128", help="tokens a rank, comma-separated")
    p.add_argument("--max-tokens", type=int, default=128, help="num_max_dispatch_tokens_per_rank of the buffer")
    p.add_argument("--hidden", type=int, default=7168)
    p.add_argument("--experts", default="256", help="experts in all, comma-separated (the kernels' grid follows it)")
    p.add_argument("--topk", type=int, default=8)
    p.add_argument("--gaps-us", default="0,300", help="GPU sleep between a send and its hook (hook mode)")
    p.add_argument("--nohook", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--iters", type=int, default=20)
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    rank, num_ranks = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    experts_list = [int(e) for e in args.experts.split(",")]
    base = {"bench": FAMILY, "rank": rank, "num_ranks": num_ranks, "max_tokens_per_rank": args.max_tokens,
            "hidden": args.hidden, "num_experts": experts_list[0], "local_experts": experts_list[0] // num_ranks,
            "top_k": args.topk, "dispatch_fp8": True}
    try:
        import deep_ep  # lazy: DeepEP's own build, carried beside the repository; absent on most images
    except ImportError as err:
        if rank == 0:
            out = RowWriter(args.out / f"rank{rank}")
            out.row(**base, **environment(num_ranks), status="deep_ep_absent")
            out.close()
        print(f"deepep_ll: deep_ep not importable ({err}); wrote the status row", flush=True)
        return 0
    if not torch.cuda.is_available():
        print("deepep_ll: no CUDA device", flush=True)
        return 0

    local = int(os.environ.get("LOCAL_RANK", 0))
    torch.cuda.set_device(local)
    dist.init_process_group("nccl", device_id=torch.device(f"cuda:{local}"))
    group = dist.new_group(list(range(num_ranks)))
    env = environment(num_ranks)
    out = RowWriter(args.out / f"rank{rank}")
    # one buffer for the largest layout; a different expert count re-lays it (clean_low_latency_buffer)
    rdma_bytes = max(deep_ep.Buffer.get_low_latency_rdma_size_hint(args.max_tokens, args.hidden, num_ranks, e)
                     for e in experts_list)
    buf = deep_ep.Buffer(group, num_rdma_bytes=rdma_bytes, low_latency_mode=True,
                         num_qps_per_rank=max(experts_list) // num_ranks, allow_nvlink_for_low_latency_mode=True,
                         explicitly_destroy=True)
    cycles_per_us = sleep_cycles_per_us()
    modes = [(True, float(g)) for g in args.gaps_us.split(",")] + ([(False, 0.0)] if args.nohook else [])
    cases = [(e, int(t), hook, gap) for e in experts_list for t in args.tokens.split(",") for hook, gap in modes]
    for i, (experts, tokens, hook, gap_us) in enumerate(cases):
        if i and experts != cases[i - 1][0]:
            buf.clean_low_latency_buffer(args.max_tokens, args.hidden, experts)
            torch.cuda.synchronize()
            dist.barrier()
        kernels, rows = measure(buf, deep_ep, args, experts, tokens, hook, int(gap_us * cycles_per_us), rank,
                                num_ranks)
        cols = kernel_columns(kernels, hook)
        out.row(**{**base, **env, **cols, "status": "ok", "num_experts": experts, "local_experts": experts // num_ranks,
                   "tokens_per_rank": tokens, "mode": "hook" if hook else "nohook", "gap_us": gap_us,
                   "iters": args.iters, "rows_received": rows})
        print(f"[rank {rank}] experts {experts} tokens {tokens} {'hook' if hook else 'nohook'} gap {gap_us:.0f} us: "
              f"dispatch {cols['dispatch_send_s'] * 1e6:.1f} + {cols['dispatch_recv_s'] * 1e6:.1f} us, combine "
              f"{cols['combine_send_s'] * 1e6:.1f} + {cols['combine_recv_s'] * 1e6:.1f} us, rows {rows}",
              flush=True)
    out.close()
    dist.barrier()
    buf.destroy()
    dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
