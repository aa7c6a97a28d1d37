"""Device memory a training process holds outside torch's caching allocator (session s26mem, rule
docs/notes/s26mem2_rule.md): the CUDA context, the kernels' modules as they load, cuBLAS's handles
and NCCL's communicators and their buffers. torch.cuda.memory_reserved() does not see any of them;
the device's used memory does. Run under torchrun (one rank a GPU, NCCL; gloo on CPU for the dry run).

Each rank records, after each stage, the device's used memory (NVML, the process alone on its GPU)
and cudart's (total - free from torch.cuda.mem_get_info, which needs the context), torch's
reserved and allocated bytes, and `outside_bytes` = used - reserved:
  nvml_before_cuda   NVML's used memory before this process makes a CUDA context (the baseline)
  context            torch.cuda.init and a one-element tensor: the primary context
  block_fwd_bwd      a BF16 transformer block (RMSNorm, SDPA, SwiGLU) forward and backward, twice:
                     cuBLAS/cuBLASLt handles, the kernels' modules (lazy loading)
  nccl_world         init_process_group(nccl) and an all-reduce on every rank
  nccl_groups        two more groups over all ranks (as a TP and a DP group), each with an all-gather
                     and a reduce-scatter
  nccl_p2p           batch_isend_irecv between neighbours (a pipeline's send and receive)
  steady             the block forward and backward once more after all communicators exist
Output: OUT/runtime_memory.csv (one row a rank and stage, the environment in every row).

Usage: torchrun --nproc-per-node N -m real.runtime_memory --out DIR [--tiny]
"""

from __future__ import annotations

import argparse
import csv
import datetime
import os
import pathlib
import platform

import torch
import torch.distributed as dist
import torch.nn.functional as F

COLS = ["stage", "rank", "world_size", "nvml_used_bytes", "cudart_used_bytes", "reserved_bytes",
        "allocated_bytes", "outside_bytes", "gpu_name", "total_memory_bytes", "max_sm_clock_mhz",
        "max_mem_clock_mhz", "power_limit_w", "driver_version", "torch_version", "cuda_version",
        "nccl_version", "nccl_nvls_enable", "cuda_module_loading", "hostname", "timestamp_utc"]


def nvml_used(index: int) -> float:
    """NVML's used bytes of GPU `index` (no CUDA context needed); NaN without NVML."""
    try:
        import pynvml   # lazy: a CPU dry run has no NVML
        pynvml.nvmlInit()
        return float(pynvml.nvmlDeviceGetMemoryInfo(pynvml.nvmlDeviceGetHandleByIndex(index)).used)
    except Exception:
        return float("nan")


def block_fwd_bwd(dev: torch.device, tiny: bool) -> None:
    """A BF16 Llama-style block, forward and backward (RMSNorm, SDPA, SwiGLU): the kernels a step runs."""
    d, heads, ffn, tokens = (64, 4, 128, 32) if tiny else (4096, 32, 14336, 4096)
    dt = torch.bfloat16 if dev.type == "cuda" else torch.float32
    g = torch.Generator(device="cpu").manual_seed(0)
    w = [torch.randn(a, b, generator=g).to(dev, dt).mul_(0.02).requires_grad_()
         for a, b in ((3 * d, d), (d, d), (2 * ffn, d), (d, ffn))]
    x = torch.randn(1, tokens, d, generator=g).to(dev, dt).requires_grad_()
    h = F.rms_norm(x, (d,))
    q, k, v = F.linear(h, w[0]).view(1, tokens, 3, heads, d // heads).permute(2, 0, 3, 1, 4)
    a = F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).reshape(1, tokens, d)
    x2 = x + F.linear(a, w[1])
    gate, up = F.linear(F.rms_norm(x2, (d,)), w[2]).chunk(2, dim=-1)
    out = x2 + F.linear(F.silu(gate) * up, w[3])
    out.float().square().mean().backward()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--tiny", action="store_true", help="CPU dry run on gloo ranks (no GPU)")
    args = ap.parse_args(argv)
    rank, world = int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    index = local   # CUDA_VISIBLE_DEVICES of the campaign is 0..N-1: NVML's index is the rank's GPU
    if not args.tiny:
        # each rank sees its own GPU alone, set before the first CUDA call: s26mem's first run (m1) found a
        # second context on GPU 0, the other rank's, made before its set_device (torch.cuda.is_available)
        visible = os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",")
        os.environ["CUDA_VISIBLE_DEVICES"] = visible[local] if len(visible) > local and visible[local] else str(local)
    record_before = nvml_used(index) if not args.tiny else float("nan")
    cuda = torch.cuda.is_available() and not args.tiny
    rows: list[dict] = []
    env: dict = {}

    def record(stage: str) -> None:
        if cuda:
            torch.cuda.synchronize()
            free, total = torch.cuda.mem_get_info()
            used, reserved, allocated = total - free, torch.cuda.memory_reserved(), torch.cuda.memory_allocated()
        else:
            used = reserved = allocated = 0
        nv = nvml_used(index) if cuda else float("nan")
        rows.append({"stage": stage, "rank": rank, "world_size": world, "nvml_used_bytes": nv,
                     "cudart_used_bytes": used if stage != "nvml_before_cuda" else "",
                     "reserved_bytes": reserved, "allocated_bytes": allocated,
                     "outside_bytes": (used - reserved) if stage != "nvml_before_cuda" else "",
                     "timestamp_utc": datetime.datetime.now(datetime.timezone.utc).isoformat()})

    record("nvml_before_cuda")
    rows[-1]["nvml_used_bytes"] = record_before   # read before torch.cuda.is_available
    dev = torch.device("cuda", 0) if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(dev)
        torch.cuda.init()
        torch.ones(1, device=dev)
        p = torch.cuda.get_device_properties(dev)
        env.update(gpu_name=p.name, total_memory_bytes=p.total_memory)
        try:
            from real.telemetry import Telemetry   # lazy: NVML's static info, on the GPU image only
            info = Telemetry(index).static_info()
            env.update({k: info.get(k, "") for k in ("max_sm_clock_mhz", "max_mem_clock_mhz", "power_limit_w",
                                                     "driver_version")})
        except Exception:
            pass
    else:
        env.update(gpu_name=f"cpu-{platform.machine()}", total_memory_bytes=0)
    try:
        nccl = ".".join(map(str, torch.cuda.nccl.version())) if cuda else ""
    except Exception:
        nccl = ""
    env.update(torch_version=torch.__version__, cuda_version=torch.version.cuda or "", nccl_version=nccl,
               nccl_nvls_enable=os.environ.get("NCCL_NVLS_ENABLE", ""),
               cuda_module_loading=os.environ.get("CUDA_MODULE_LOADING", ""), hostname=platform.node())
    record("context")
    for _ in range(2):
        block_fwd_bwd(dev, args.tiny)
    record("block_fwd_bwd")
    backend = "nccl" if cuda else "gloo"
    dist.init_process_group(backend, **({"device_id": dev} if cuda else {}))
    t = torch.ones(1 << 20, device=dev)
    dist.all_reduce(t)
    record("nccl_world")
    n = 1 << 22 if not args.tiny else 1 << 10
    for _ in range(2):   # a TP-like and a DP-like group over the same ranks: two more communicators
        grp = dist.new_group(list(range(world)))
        src = torch.ones(n, device=dev, dtype=torch.bfloat16 if cuda else torch.float32)
        gathered = torch.empty(n * world, device=dev, dtype=src.dtype)
        dist.all_gather_into_tensor(gathered, src, group=grp)
        dist.reduce_scatter_tensor(src, gathered, group=grp)
    record("nccl_groups")
    send = torch.ones(n, device=dev)
    recv = torch.empty(n, device=dev)
    ops = [dist.P2POp(dist.isend, send, (rank + 1) % world), dist.P2POp(dist.irecv, recv, (rank - 1) % world)]
    for w in dist.batch_isend_irecv(ops):
        w.wait()
    record("nccl_p2p")
    block_fwd_bwd(dev, args.tiny)
    record("steady")
    dist.barrier()
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    gathered_rows: list = [None] * world
    dist.all_gather_object(gathered_rows, rows)
    if rank == 0:
        with open(out / "runtime_memory.csv", "w", newline="") as fh:
            wr = csv.DictWriter(fh, fieldnames=COLS)
            wr.writeheader()
            for rank_rows in gathered_rows:
                for r in rank_rows:
                    wr.writerow({**{k: env.get(k, "") for k in COLS}, **r})
        print(f"runtime_memory: {sum(map(len, gathered_rows))} rows -> {out / 'runtime_memory.csv'}")
    dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
