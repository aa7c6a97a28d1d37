"""What torchtitan's per-op selective AC keeps of a Llama 3.1 8B block, by the attention kernel SDPA runs
(session s28tt, docs/notes/s28tt_rule.md).

Campaign s27mlm2's FSDP2 record (calibration/measurements/h200x2/s27mlm2/fsdp_memory.csv) kept 55,296 B a
token a block, 8,320 B (the attention output in BF16, 8,192, and its FP32 log-sum-exp, 128) under the
63,616 the twin counts for torchtitan 9dec370's policy (twin.costs.memory._op_sac_parts). torchtitan 9dec370's
`_save_list` names SDPA's flash and memory-efficient ops only; torch 2.11 on Hopper with cuDNN > 9.15.0 puts
cuDNN's attention first (aten/src/ATen/native/transformers/cuda/sdp_utils.cpp check_prefer_cudnn_attention,
pytorch/pytorch#169849), which the list does not name: the policy then recomputes the attention instead of
keeping its outputs. This measures that on one GPU, one fresh process a mode (SDPA picks its backend order
on its first call):
- the block: real.fsdp_memory.Block (torchtitan 9dec370's Llama block) at the 8B's width, BF16 weights, no
  FSDP, each block wrapped in real.fsdp_memory.op_sac (torchtitan's 'op' policy); `--blocks` of them;
- input (local batch 2, 8,192 tokens: the record's 16,384 tokens a rank), forward block by block, the
  allocated bytes after each block (the block's kept tensors and its output, the next block's input);
  then a backward (the step runs) and its peak;
- modes: `default` (the backend torch picks, torch._fused_sdp_choice recorded), `flash` / `cudnn`
  (sdpa_kernel forcing one), `cudnn_saved` (cuDNN with its op added to the policy's save list, as torchtitan's
  later `_op_sac_save_list` does), `flash_compile` (flash, each wrapped block under torch.compile as
  torchtitan's apply_compile after apply_ac: compile's saved set, a diagnostic).
Output: OUT/sac_attention_memory.csv (one row a mode and block; the environment in every row).

Usage: python -m real.sac_attention_memory --out DIR --mode MODE [--blocks N] [--tiny]
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

import torch
from torch.multiprocessing.reductions import StorageWeakRef
from torch.utils._python_dispatch import TorchDispatchMode

from real import fsdp_memory as fm

MODES = ("default", "flash", "cudnn", "cudnn_saved", "flash_compile")
COLS = ["mode", "block", "blocks", "dim", "n_heads", "n_kv_heads", "ffn_dim", "seq_len", "local_batch", "tokens",
        "sdp_choice", "allocated_before_bytes", "allocated_after_bytes", "block_kept_bytes",
        "block_kept_bytes_per_token", "backward_peak_allocated_bytes", "status", "wall_s", "gpu_name",
        "total_memory_bytes", "max_sm_clock_mhz", "max_mem_clock_mhz", "power_limit_w", "driver_version",
        "torch_version", "cuda_version", "cudnn_version", "nccl_version", "hostname", "timestamp_utc"]
CHOICE = {0: "math", 1: "flash", 2: "efficient", 3: "cudnn", 4: "overrideable"}   # torch.nn.attention.SDPBackend


def environment(cuda: bool) -> dict:
    env = {"torch_version": torch.__version__, "cuda_version": torch.version.cuda or "", "hostname": platform.node()}
    if not cuda:
        return {**env, "gpu_name": f"cpu-{platform.machine()}", "total_memory_bytes": 0}
    p = torch.cuda.get_device_properties(0)
    env.update(gpu_name=p.name, total_memory_bytes=p.total_memory, cudnn_version=torch.backends.cudnn.version(),
               nccl_version=".".join(map(str, torch.cuda.nccl.version())))
    try:
        from real.telemetry import Telemetry   # lazy: NVML's static info, on the GPU image only
        info = Telemetry(0).static_info()
        env.update({k: info.get(k, "") for k in ("max_sm_clock_mhz", "max_mem_clock_mhz", "power_limit_w",
                                                 "driver_version")})
    except Exception:
        pass
    return env


class LiveStorages(TorchDispatchMode):
    """The CPU dry run's allocated bytes: every storage an op makes while the mode is on, counted while it
    lives (torch's CPU allocator keeps no statistics)."""

    def __init__(self):
        super().__init__()
        self.made: dict = {}
        self.before: set = set()

    def ignore(self, tensors) -> None:
        """Storages made before the forward (weights, RoPE table): not the forward's."""
        self.before |= {StorageWeakRef(t.untyped_storage()).cdata for t in tensors}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in torch.utils._pytree.tree_leaves(out):
            if isinstance(t, torch.Tensor) and t.device.type == "cpu" and t.untyped_storage().nbytes():
                ref = StorageWeakRef(t.untyped_storage())
                if ref.cdata not in self.before:
                    self.made.setdefault(ref.cdata, (ref, t.untyped_storage().nbytes()))
        return out

    def bytes(self) -> int:
        return sum(n for ref, n in self.made.values() if not ref.expired())


def backends(mode: str, cuda: bool) -> list:
    """The SDPA backends a mode allows (sdpa_kernel's list); None: torch's own choice. On the CPU (the dry run)
    every mode runs torch's CPU kernel."""
    from torch.nn.attention import SDPBackend   # lazy: torch's attention module, only for the forced modes
    if not cuda or mode == "default":
        return []
    return [SDPBackend.FLASH_ATTENTION] if mode.startswith("flash") else [SDPBackend.CUDNN_ATTENTION]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--mode", required=True, choices=MODES)
    ap.add_argument("--blocks", type=int, default=4)
    ap.add_argument("--tiny", action="store_true", help="CPU dry run (a tiny block)")
    args = ap.parse_args(argv)
    if args.blocks < 2:
        raise SystemExit(f"sac_attention_memory: --blocks {args.blocks}: need >= 2")
    cuda = torch.cuda.is_available() and not args.tiny
    c = fm.TINY if args.tiny else fm.FULL
    dev = torch.device("cuda", 0) if cuda else torch.device("cpu")
    env = environment(cuda)
    saved = set(fm.SAVE)
    if args.mode == "cudnn_saved":
        fm.SAVE.add(torch.ops.aten._scaled_dot_product_cudnn_attention.default)
    if args.tiny and args.mode in ("flash", "flash_compile", "cudnn_saved"):
        # the dry run: the CPU kernel (which no save list names, as torchtitan 9dec370's does not name cuDNN's)
        # stands for a listed op in the modes whose GPU op is listed
        fm.SAVE.add(torch.ops.aten._scaled_dot_product_flash_attention_for_cpu.default)
    torch.manual_seed(0)
    blocks = []
    for _ in range(args.blocks):
        b = fm.op_sac(fm.Block(c).to(device=dev, dtype=torch.bfloat16))
        blocks.append(torch.compile(b, fullgraph=True) if args.mode == "flash_compile" else b)
    hd = c["dim"] // c["n_heads"]
    inv = 1.0 / (500000.0 ** (torch.arange(0, hd, 2, device=dev)[: hd // 2].float() / hd))
    freqs = torch.polar(torch.ones(c["seq_len"], hd // 2, device=dev),
                        torch.outer(torch.arange(c["seq_len"], device=dev).float(), inv))
    bs, s = c["local_batch"], c["seq_len"]
    tokens = bs * s
    choice = ""
    if cuda:
        q = torch.randn(bs, c["n_heads"], s, hd, device=dev, dtype=torch.bfloat16)
        choice = CHOICE.get(int(torch._fused_sdp_choice(q, q, q, is_causal=True)), "?")
        del q
    from torch.nn.attention import sdpa_kernel   # lazy: the forced backends' context

    live = LiveStorages()
    live.ignore([freqs, *(p for b in blocks for p in b.parameters())])

    def allocated() -> int:
        if not cuda:
            return live.bytes()
        torch.cuda.synchronize()
        return torch.cuda.memory_allocated()

    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "sac_attention_memory.csv"
    rows, status, t0 = [], "ok", time.perf_counter()
    allowed = backends(args.mode, cuda)
    ctx = sdpa_kernel(allowed) if allowed else contextlib.nullcontext()
    ctx_live = contextlib.nullcontext() if cuda else live
    try:
        with ctx, ctx_live:
            for rep in range(2 if args.mode == "flash_compile" else 1):   # compile's first pass compiles
                x = torch.randn(bs, s, c["dim"], device=dev, dtype=torch.bfloat16, requires_grad=True)
                h, before, kept = x, allocated(), []
                if cuda:
                    torch.cuda.reset_peak_memory_stats()
                for b in blocks:
                    h = b(h, freqs)
                    after = allocated()
                    kept.append((before, after))
                    before = after
                h.float().pow(2).mean().backward()
                peak = torch.cuda.max_memory_allocated() if cuda else 0
                del h, x
                for b in blocks:
                    b.zero_grad(set_to_none=True)
    except torch.OutOfMemoryError:
        status, kept, peak = "oom", [], 0
    wall = time.perf_counter() - t0
    stamp = datetime.datetime.now(datetime.timezone.utc).isoformat()
    for i, (before, after) in enumerate(kept):
        rows.append({"mode": args.mode, "block": i, "blocks": args.blocks, "dim": c["dim"], "n_heads": c["n_heads"],
                     "n_kv_heads": c["n_kv_heads"], "ffn_dim": c["ffn_dim"], "seq_len": s, "local_batch": bs,
                     "tokens": tokens, "sdp_choice": choice, "allocated_before_bytes": before,
                     "allocated_after_bytes": after, "block_kept_bytes": after - before,
                     "block_kept_bytes_per_token": (after - before) / tokens, "backward_peak_allocated_bytes": peak,
                     "status": status, "wall_s": wall, "timestamp_utc": stamp})
    if not rows:
        rows.append({"mode": args.mode, "blocks": args.blocks, "status": status, "wall_s": wall, "timestamp_utc": stamp})
    new = not path.exists()
    with open(path, "a", newline="") as fh:
        wr = csv.DictWriter(fh, fieldnames=COLS)
        if new:
            wr.writeheader()
        for r in rows:
            wr.writerow({**{k: env.get(k, "") for k in COLS}, **r})
    per = [r.get("block_kept_bytes_per_token", float("nan")) for r in rows]
    print(f"sac_attention_memory {args.mode} sdp_choice {choice or '-'} {status} kept B/token a block "
          f"{', '.join(f'{v:.0f}' for v in per)} wall {wall:.1f} s", flush=True)
    fm.SAVE.clear()
    fm.SAVE.update(saved)
    return 0 if status == "ok" else 1


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    raise SystemExit(main())
