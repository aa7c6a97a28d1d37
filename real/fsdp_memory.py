"""The caching allocator's reserved peak beside its live-tensor peak in a torchtitan-style FSDP2 step
(session s27mlm round 2, rule docs/notes/s27mlm2_rule.md).

torchtitan's published memory column is `reserved_bytes.all.peak` of torch.cuda.memory_stats
(torchtitan/metrics.py @ 9dec370, DeviceMemoryMonitor.get_peak_stats; the peak is reset after each
logged step), the largest over the GPUs (docs/performance.md footnote 1). The twin counts live
tensors. This runs the step those rows ran, at FSDP 2 on two GPUs, and records both peaks:
- the model: Llama 3.1 8B's blocks as torchtitan 9dec370 writes them (models/llama/model.py:
  separate wq/wk/wv/wo, complex RoPE in FP32, repeat_kv by expand, SDPA causal; RMSNorm in FP32
  then type_as; w1/w3/w2 SwiGLU), embedding, final norm, output linear; `--layers` of them;
- FSDP2 as apply_fsdp: fully_shard each block (reshard_after_forward except the last block), then
  the root; MixedPrecisionPolicy(param_dtype=bf16, reduce_dtype=fp32); FP32 parameters;
- per-op selective AC as _apply_ac_to_transformer_block ('op': save every aten.mm output but each
  second, SDPA's outputs; ptd checkpoint_wrapper, preserve_rng_state False). 9dec370's list names SDPA's
  flash and memory-efficient ops only; torch 2.11 on Hopper runs cuDNN's attention, which it does not name, so
  here the attention is recomputed and its output and log-sum-exp (8,320 B a token a block at the 8B) are not
  kept, unlike the rows' December 2024 flash kernel (s28tt: docs/notes/s28tt.md, real.sac_attention_memory);
- train.py's step: zero_grad, forward, cross_entropy(pred.flatten(0, 1).float(), ...), `del pred`,
  backward, clip_grad_norm_(max_norm 1, foreach), AdamW (lr 3e-4, foreach: optimizer.fused False by
  default);
- Table 1's shape: local batch 2, sequence 8,192.
Per step (after torch.cuda.reset_peak_memory_stats, as torchtitan after each log) each rank records
the peaks of active / allocated / reserved bytes, inactive-split bytes, segments and allocator
retries, and the allocated bytes at the step's start and after the loss. The allocator's settings
come from PYTORCH_CUDA_ALLOC_CONF (recorded in every row).
Output: OUT/fsdp_memory_r<rank>.csv (one row a step, appended as it ends; the environment in every row).

Session s30tt (docs/notes/s30tt_rule.md, round 2) adds the options of torchtitan's Table 2 CP1 row (tt-8b-cp1-32k:
local batch 1 at 32,768, full AC, torch.compile, Float8), all off by default (s27mlm2's step unchanged):
--ac full (ptd checkpoint_wrapper of each block, no policy: parallelize_llama.apply_ac 'full'), --compile
(each wrapped block under torch.compile(fullgraph=True) before fully_shard, as apply_compile), --float8 (the
blocks' linears as torchao's tensorwise Float8Linear, real.fp8.tensorwise_linear; the output head stays BF16, as
torchtitan's float8 converter skips `output`), --seq-len / --local-batch, --sdpa flash (the December 2024
nightly's choice on H100; torch 2.11 would pick cuDNN), --profile-last (the last step's kernels on rank 0:
OUT/fsdp_step_kernels_r0.csv, each kernel's seconds and calls in that step) and --memory-fraction (the caching
allocator capped at that fraction of the GPU, torch.cuda.set_per_process_memory_fraction: the row's headroom).

Session s32mem (docs/notes/s32mem_rule.md) adds --ac none (no recomputation: the Llama 3 8K rows' "without activation
checkpointing"), the allocator's peaks per phase of every step (forward with the loss, backward, clip + optimizer:
torch.cuda.reset_peak_memory_stats at each boundary, host-side accounting, no synchronisation; the step's peaks are
the largest of them, as before) and --segments (the caching allocator's segments at the last step's end, when the
reserved bytes stand at their peak: OUT/fsdp_segments_r<rank>.csv, one row a segment with its stream, pool, size,
allocated and active bytes, blocks and largest free block, from torch.cuda.memory_snapshot()).

Usage: torchrun --nproc-per-node 2 -m real.fsdp_memory --out DIR --layers N [--steps K] [--tiny]
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import datetime
import os
import pathlib
import platform
import time
from collections import defaultdict

import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F
from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import checkpoint_wrapper
from torch.utils.checkpoint import CheckpointPolicy, create_selective_checkpoint_contexts

from real.fp8 import tensorwise_linear

PHASES = ("fwd", "bwd", "opt")   # forward with the loss; backward; clip + optimizer step
COLS = ["config", "ac", "compiled", "float8", "sdpa", "memory_fraction", "layers", "dim", "n_heads", "n_kv_heads", "ffn_dim", "vocab", "seq_len", "local_batch",
        "world_size", "rank", "step", "status", "step_time_s", "loss", "start_allocated_bytes",
        "after_loss_allocated_bytes", "peak_active_bytes", "peak_allocated_bytes", "peak_reserved_bytes",
        "peak_inactive_split_bytes", *[f"{ph}_peak_{k}_bytes" for ph in PHASES for k in ("allocated", "reserved")],
        "reserved_end_bytes", "segments_end", "num_alloc_retries", "num_ooms",
        "alloc_conf", "gpu_name", "total_memory_bytes", "max_sm_clock_mhz", "max_mem_clock_mhz",
        "power_limit_w", "driver_version", "torch_version", "cuda_version", "nccl_version", "nccl_nvls_enable",
        "hostname", "timestamp_utc"]

# Llama 3.1 8B (torchtitan models/llama/__init__.py llama3_configs["8B"]: dim 4096, 32 layers, 32 heads,
# 8 KV heads, ffn_dim_multiplier 1.3, multiple_of 1024 -> 14,336; vocab 128,256 from the tokenizer)
FULL = dict(dim=4096, n_heads=32, n_kv_heads=8, ffn_dim=14336, vocab=128256, seq_len=8192, local_batch=2)
TINY = dict(dim=64, n_heads=4, n_kv_heads=2, ffn_dim=160, vocab=512, seq_len=64, local_batch=2)


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x):
        xf = x.float()
        return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)).type_as(x) * self.weight


def rope(xq, xk, freqs_cis):
    xq_ = torch.view_as_complex(xq.float().reshape(*xq.shape[:-1], -1, 2))
    xk_ = torch.view_as_complex(xk.float().reshape(*xk.shape[:-1], -1, 2))
    f = freqs_cis.view(1, xq_.shape[1], 1, xq_.shape[-1])
    return torch.view_as_real(xq_ * f).flatten(3).type_as(xq), torch.view_as_real(xk_ * f).flatten(3).type_as(xk)


class Block(nn.Module):
    def __init__(self, c: dict, float8: bool = False):
        super().__init__()
        self.float8 = float8
        d, h, kv = c["dim"], c["n_heads"], c["n_kv_heads"]
        self.h, self.kv, self.hd = h, kv, d // h
        self.wq, self.wk = nn.Linear(d, d, bias=False), nn.Linear(d, kv * self.hd, bias=False)
        self.wv, self.wo = nn.Linear(d, kv * self.hd, bias=False), nn.Linear(d, d, bias=False)
        self.w1, self.w3 = nn.Linear(d, c["ffn_dim"], bias=False), nn.Linear(d, c["ffn_dim"], bias=False)
        self.w2 = nn.Linear(c["ffn_dim"], d, bias=False)
        self.attention_norm, self.ffn_norm = RMSNorm(d), RMSNorm(d)

    def forward(self, x, freqs_cis):
        bs, s, _ = x.shape
        a = self.attention_norm(x)
        q, k, v = self.lin(self.wq, a), self.lin(self.wk, a), self.lin(self.wv, a)
        q, k, v = q.view(bs, s, -1, self.hd), k.view(bs, s, -1, self.hd), v.view(bs, s, -1, self.hd)
        q, k = rope(q, k, freqs_cis)
        rep = self.h // self.kv
        k = k[:, :, :, None, :].expand(bs, s, self.kv, rep, self.hd).reshape(bs, s, self.h, self.hd)
        v = v[:, :, :, None, :].expand(bs, s, self.kv, rep, self.hd).reshape(bs, s, self.h, self.hd)
        o = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), is_causal=True)
        h = x + self.lin(self.wo, o.transpose(1, 2).contiguous().view(bs, s, -1))
        f = self.ffn_norm(h)
        return h + self.lin(self.w2, F.silu(self.lin(self.w1, f)) * self.lin(self.w3, f))

    def lin(self, layer: nn.Linear, x):
        """The linear in BF16, or as torchao's tensorwise Float8Linear (float8)."""
        return tensorwise_linear(x, layer.weight) if self.float8 else layer(x)


class Model(nn.Module):
    def __init__(self, c: dict, layers: int, float8: bool = False):
        super().__init__()
        self.tok_embeddings = nn.Embedding(c["vocab"], c["dim"])
        self.layers = nn.ModuleDict({str(i): Block(c, float8) for i in range(layers)})
        self.norm = RMSNorm(c["dim"])
        self.output = nn.Linear(c["dim"], c["vocab"], bias=False)

    def forward(self, tokens, freqs_cis):
        h = self.tok_embeddings(tokens)
        for layer in self.layers.values():
            h = layer(h, freqs_cis)
        return self.output(self.norm(h))


SAVE = {torch.ops.aten.mm.default, torch.ops.aten._scaled_dot_product_efficient_attention.default,
        torch.ops.aten._scaled_dot_product_flash_attention.default,
        torch.ops._c10d_functional.reduce_scatter_tensor.default, torch.ops.aten.abs.default,
        torch.ops.aten.max.default}


def op_sac(block: nn.Module) -> nn.Module:
    """torchtitan 9dec370's 'op' selective AC of one block (parallelize_llama._apply_ac_to_transformer_block)."""
    def context_fn():
        meta = defaultdict(int)

        def policy(ctx, func, *args, **kwargs):
            key = f"{'recompute' if ctx.is_recompute else 'forward'}_mm_count"
            if func == torch.ops.aten.mm.default:
                meta[key] += 1
            save = func in SAVE and not (func == torch.ops.aten.mm.default and meta[key] % 2 == 0)
            return CheckpointPolicy.MUST_SAVE if save else CheckpointPolicy.PREFER_RECOMPUTE
        return create_selective_checkpoint_contexts(policy)
    return checkpoint_wrapper(block, context_fn=context_fn, preserve_rng_state=False)


def sdpa_context(sdpa: str, cuda: bool):
    """SDPA restricted to flash ('flash', on a GPU), else torch's own choice."""
    if sdpa != "flash" or not cuda:
        return contextlib.nullcontext()
    from torch.nn.attention import SDPBackend, sdpa_kernel   # lazy: only where restricted
    return sdpa_kernel([SDPBackend.FLASH_ATTENTION])


def write_kernels(out: pathlib.Path, rank: int, prof, env: dict) -> None:
    """OUT/fsdp_step_kernels_r<rank>.csv: each kernel of the profiled step (seconds, calls), with the environment."""
    from real.bench.dense_clock import kernel_totals   # lazy: the profiled step only
    out.mkdir(parents=True, exist_ok=True)
    cols = ["config", "step", "kernel", "time_s", "calls", *[k for k in COLS if k in env]]
    with open(out / f"fsdp_step_kernels_r{rank}.csv", "w", newline="") as fh:
        wr = csv.DictWriter(fh, fieldnames=cols, extrasaction="ignore")
        wr.writeheader()
        for name, sec, n in kernel_totals(prof.events(), 1):
            wr.writerow({**env, "kernel": name, "time_s": sec, "calls": n})


def stats(cuda: bool) -> dict:
    if not cuda:
        return defaultdict(int)
    return torch.cuda.memory_stats()


PEAKS = ("active_bytes.all.peak", "allocated_bytes.all.peak", "reserved_bytes.all.peak", "inactive_split_bytes.all.peak")
SEGMENT_COLS = ["segment", "stream", "pool", "total_size_bytes", "allocated_size_bytes", "active_size_bytes",
                "num_blocks", "largest_free_block_bytes", "is_expandable"]


def phase_peaks(cuda: bool) -> dict:
    """The allocator's peaks since the last reset, then a reset (host-side accounting: no synchronisation needed;
    the reset sets each peak to the current value, so the step's peak is the largest of its phases')."""
    if not cuda:
        return defaultdict(int)
    m = torch.cuda.memory_stats()
    torch.cuda.reset_peak_memory_stats()
    return {k: m[k] for k in PEAKS}


def write_segments(out: pathlib.Path, rank: int, env: dict) -> None:
    """OUT/fsdp_segments_r<rank>.csv: every segment of the caching allocator now (torch.cuda.memory_snapshot(): its
    stream, large or small pool, size, allocated and active bytes, blocks, largest free block), with the row's labels."""
    out.mkdir(parents=True, exist_ok=True)
    cols = [*SEGMENT_COLS, *[k for k in COLS if k in env]]
    with open(out / f"fsdp_segments_r{rank}.csv", "w", newline="") as fh:
        wr = csv.DictWriter(fh, fieldnames=cols, extrasaction="ignore")
        wr.writeheader()
        for i, seg in enumerate(torch.cuda.memory_snapshot()):
            free = [b["size"] for b in seg.get("blocks", []) if b.get("state") == "inactive"]
            wr.writerow({**env, "segment": i, "stream": seg.get("stream", ""), "pool": seg.get("segment_type", ""),
                         "total_size_bytes": seg.get("total_size", 0), "allocated_size_bytes": seg.get("allocated_size", 0),
                         "active_size_bytes": seg.get("active_size", 0), "num_blocks": len(seg.get("blocks", [])),
                         "largest_free_block_bytes": max(free, default=0),
                         "is_expandable": seg.get("is_expandable", "")})


def write_row(out: pathlib.Path, rank: int, row: dict) -> None:
    """Append one row to OUT/fsdp_memory_r<rank>.csv at once (a rank that runs out of memory or is killed by
    the campaign's timeout keeps the steps it finished; no collective is needed to write)."""
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"fsdp_memory_r{rank}.csv"
    new = not path.exists()
    with open(path, "a", newline="") as fh:
        wr = csv.DictWriter(fh, fieldnames=COLS)
        if new:
            wr.writeheader()
        wr.writerow(row)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--layers", type=int, required=True)
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--config", default="", help="a label written in every row")
    ap.add_argument("--tiny", action="store_true", help="CPU dry run on gloo ranks (a tiny model)")
    ap.add_argument("--ac", choices=("op", "full", "none"), default="op",
                    help="torchtitan's AC mode (default op: per-op SAC; none: every block keeps what autograd saves)")
    ap.add_argument("--compile", action="store_true", help="each block under torch.compile(fullgraph=True)")
    ap.add_argument("--float8", action="store_true", help="the blocks' linears as tensorwise Float8")
    ap.add_argument("--seq-len", type=int, default=None, help="positions a sequence (default 8,192; tiny 64)")
    ap.add_argument("--local-batch", type=int, default=None, help="sequences a rank (default 2)")
    ap.add_argument("--sdpa", choices=("default", "flash"), default="default", help="flash: SDPA restricted to flash")
    ap.add_argument("--profile-last", action="store_true", help="the last step's kernels on rank 0")
    ap.add_argument("--segments", action="store_true", help="the allocator's segments at the last step's end")
    ap.add_argument("--memory-fraction", type=float, default=None,
                    help="cap the caching allocator at this fraction of the GPU (torch.cuda.set_per_process_memory_fraction)")
    args = ap.parse_args(argv)
    if args.layers < 1 or args.steps < 2:
        raise SystemExit(f"fsdp_memory: --layers {args.layers} / --steps {args.steps}: need layers >= 1, steps >= 2")
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard   # lazy: torch's FSDP2 on the GPU image
    rank, world = int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    cuda = torch.cuda.is_available() and not args.tiny
    c = dict(TINY if args.tiny else FULL)
    if args.seq_len:
        c["seq_len"] = args.seq_len
    if args.local_batch:
        c["local_batch"] = args.local_batch
    dev = torch.device("cuda", local) if cuda else torch.device("cpu")
    env: dict = {"alloc_conf": os.environ.get("PYTORCH_CUDA_ALLOC_CONF", ""), "hostname": platform.node(),
                 "torch_version": torch.__version__, "cuda_version": torch.version.cuda or "",
                 "nccl_nvls_enable": os.environ.get("NCCL_NVLS_ENABLE", "")}
    if cuda:
        torch.cuda.set_device(dev)
        if args.memory_fraction:
            torch.cuda.set_per_process_memory_fraction(args.memory_fraction, dev)
        p = torch.cuda.get_device_properties(dev)
        env.update(gpu_name=p.name, total_memory_bytes=p.total_memory,
                   nccl_version=".".join(map(str, torch.cuda.nccl.version())))
        try:
            from real.telemetry import Telemetry   # lazy: NVML's static info, on the GPU image only
            info = Telemetry(local).static_info()
            env.update({k: info.get(k, "") for k in ("max_sm_clock_mhz", "max_mem_clock_mhz", "power_limit_w",
                                                     "driver_version")})
        except Exception:
            pass
    else:
        env.update(gpu_name=f"cpu-{platform.machine()}", total_memory_bytes=0)
    dist.init_process_group("nccl" if cuda else "gloo", **({"device_id": dev} if cuda else {}))
    torch.manual_seed(0)
    with torch.device("meta"):
        model = Model(c, args.layers, args.float8)
    for lid, block in list(model.layers.items()):
        if args.ac == "op":
            wrapped = op_sac(block)
        elif args.ac == "full":
            wrapped = checkpoint_wrapper(block, preserve_rng_state=False)
        else:   # none: the block as it is
            wrapped = block
        if args.compile:   # apply_compile after apply_ac, before apply_fsdp (parallelize_llama @ 9dec370)
            wrapped = torch.compile(wrapped, fullgraph=True, backend="inductor" if cuda else "aot_eager")
        model.layers.register_module(lid, wrapped)
    mp = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
    for lid, block in model.layers.items():
        fully_shard(block, mp_policy=mp, reshard_after_forward=int(lid) < args.layers - 1)
    fully_shard(model, mp_policy=mp, reshard_after_forward=True)
    model.to_empty(device=dev)
    with torch.no_grad():
        for name, prm in model.named_parameters():
            if "norm" in name:
                prm.to_local().fill_(1.0)
            else:
                prm.to_local().normal_(0.0, 0.02)
    hd = c["dim"] // c["n_heads"]
    inv = 1.0 / (500000.0 ** (torch.arange(0, hd, 2, device=dev)[: hd // 2].float() / hd))
    freqs_cis = torch.polar(torch.ones(c["seq_len"], hd // 2, device=dev),
                            torch.outer(torch.arange(c["seq_len"], device=dev).float(), inv))
    opt = torch.optim.AdamW(model.parameters(), lr=3e-4, foreach=True)
    g = torch.Generator(device="cpu").manual_seed(1 + rank)
    shape = (c["local_batch"], c["seq_len"])
    ids = torch.randint(0, c["vocab"], shape, generator=g).to(dev)
    labels = torch.randint(0, c["vocab"], shape, generator=g).to(dev)
    rows: list[dict] = []
    base = {"config": args.config, "ac": args.ac, "compiled": args.compile, "float8": args.float8, "sdpa": args.sdpa,
            "memory_fraction": args.memory_fraction or "",
            "layers": args.layers, **{k: c[k] for k in ("dim", "n_heads", "n_kv_heads",
            "ffn_dim", "vocab", "seq_len", "local_batch")}, "world_size": world, "rank": rank}
    for step in range(1, args.steps + 1):
        status, loss_v, t0 = "ok", float("nan"), time.perf_counter()
        opt.zero_grad()
        if cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        start_alloc = stats(cuda)["allocated_bytes.all.current"]
        after_loss = 0
        profile = args.profile_last and step == args.steps and rank == 0
        prof = (torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) if profile and cuda
                else contextlib.nullcontext())
        phase: dict = {}
        try:
            with sdpa_context(args.sdpa, cuda), prof:
                pred = model(ids, freqs_cis)
                loss = F.cross_entropy(pred.flatten(0, 1).float(), labels.flatten(0, 1))
                del pred
                after_loss = stats(cuda)["allocated_bytes.all.current"]
                phase["fwd"] = phase_peaks(cuda)
                loss.backward()
                phase["bwd"] = phase_peaks(cuda)
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0, foreach=True)
                opt.step()
                loss_v = float(loss.detach())
        except torch.OutOfMemoryError:
            status = "oom"
        if cuda:
            torch.cuda.synchronize()
        m = stats(cuda)
        phase[PHASES[len(phase)]] = {k: m[k] for k in PEAKS}   # the phase it ended in (the optimizer's if ok)
        peaks = {k: max(p[k] for p in phase.values()) for k in PEAKS}   # the step's: the largest over its phases
        rows.append({**base, "step": step, "status": status, "step_time_s": time.perf_counter() - t0, "loss": loss_v,
                     "start_allocated_bytes": start_alloc, "after_loss_allocated_bytes": after_loss,
                     "peak_active_bytes": peaks["active_bytes.all.peak"],
                     "peak_allocated_bytes": peaks["allocated_bytes.all.peak"],
                     "peak_reserved_bytes": peaks["reserved_bytes.all.peak"],
                     "peak_inactive_split_bytes": peaks["inactive_split_bytes.all.peak"],
                     **{f"{ph}_peak_{k}_bytes": p[f"{k}_bytes.all.peak"] for ph, p in phase.items()
                        for k in ("allocated", "reserved")},
                     "reserved_end_bytes": m["reserved_bytes.all.current"], "segments_end": m["segment.all.current"],
                     "num_alloc_retries": m["num_alloc_retries"], "num_ooms": m["num_ooms"],
                     "timestamp_utc": datetime.datetime.now(datetime.timezone.utc).isoformat()})
        write_row(pathlib.Path(args.out), rank, {**{k: env.get(k, "") for k in COLS}, **rows[-1]})
        if rank == 0:
            r = rows[-1]
            print(f"fsdp_memory {args.config} L{args.layers} step {step} {status} {r['step_time_s']:.2f} s "
                  f"active {r['peak_active_bytes'] / 2**30:.2f} reserved {r['peak_reserved_bytes'] / 2**30:.2f} GiB "
                  f"retries {r['num_alloc_retries']}", flush=True)
        if args.segments and cuda and step == args.steps and status == "ok":
            write_segments(pathlib.Path(args.out), rank, {**base, "step": step, **env})
        if profile and cuda and status == "ok":
            write_kernels(pathlib.Path(args.out), rank, prof, {"config": args.config, "step": step, **env})
        if status != "ok":
            break
    dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
