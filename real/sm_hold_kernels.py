"""Triton kernels that hold SMs the way a communication kernel does (imported on CUDA only).

DeepSeek's all-to-all kernels run on a fixed number of SMs (20 of the H800's 132 in V3 training,
V3 §3.2.2) for as long as they move data, so the GEMMs beside them get the rest. One program of
these kernels is one CTA of 1,024 threads: with at least 24 registers a thread it leaves too few
registers on its SM for a Hopper GEMM CTA (384 threads x ~168), so each program holds one whole SM.

- `hold_copy`: each program streams its share of a buffer from HBM to HBM, `passes` times: the
  memory traffic of a comm kernel's SMs (reading tokens, writing send and receive buffers).
- `hold_spin`: each program runs a dependent FMA chain: SMs held without memory traffic.
"""

import triton
import triton.language as tl

HOLD_WARPS = 32  # 1,024 threads per program


@triton.jit
def hold_copy(src_ptr, dst_ptr, n_elems, passes, BLOCK: tl.constexpr):
    pid = tl.program_id(0)
    nprog = tl.num_programs(0)
    n_blocks = tl.cdiv(n_elems, BLOCK)
    for _ in range(passes):
        for b in range(pid, n_blocks, nprog):
            offs = b * BLOCK + tl.arange(0, BLOCK)
            mask = offs < n_elems
            tl.store(dst_ptr + offs, tl.load(src_ptr + offs, mask=mask), mask=mask)


@triton.jit
def hold_spin(out_ptr, iters, BLOCK: tl.constexpr):
    pid = tl.program_id(0)
    x = tl.arange(0, BLOCK).to(tl.float32) + pid
    for _ in range(iters):
        x = x * 0.999999 + 0.5
    tl.store(out_ptr + pid * BLOCK + tl.arange(0, BLOCK), x)
