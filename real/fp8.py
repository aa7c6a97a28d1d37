"""The one precision seam: every GEMM of `real/` goes through `linear()` or `grouped_mm()`.

Legend: M rows (tokens), K contraction, N output features, E experts (groups), T routed token
rows (sorted by expert), Kb = K/128, Nb = N/128 (block counts).

A `Precision` policy (passed down from the model, never a global) says which GEMM runs:

* `gemm="bf16"`: `F.linear` / `torch._grouped_mm` in the weights' dtype.
* `gemm="fp8"`: E4M3 operands, BF16 output, FP32 accumulation inside the kernel. What runs
  depends on `fp8_kernel`:

  - `"blockwise"` (the DeepSeek-V3 recipe, report §3.3.2): activations quantized in 1x128 tiles
    along K, weights in 128x128 blocks, through `F.scaled_mm` with `BlockWise1x128` /
    `BlockWise128x128` scales (cuBLAS >= 12.9 on Hopper). `blockwise_kernel_available()` probes
    it and checks it numerically against the emulation; shapes whose K or N is not a multiple of
    128 fall back to rowwise.
  - `"rowwise"`: `torch._scaled_mm` with one scale per row of A (per token) and one per column of
    B (per output channel). This is what Hopper runs when blockwise scales are refused. It also
    runs on the CPU.
  - `"emulated"`: the V3 quantization exactly (1x128 tiles, 128x128 blocks, E4M3 rounding), then
    dequantize per block and multiply in the input dtype. The numerics of the recipe at BF16 speed;
    used on the CPU and to check the kernels.

  On the GPU, a GEMM whose K or N is not a multiple of 16 stays BF16 (the kernels refuse it;
  only toy configs have such dims). Dense FP8 layers use FP8 for all three GEMMs (forward, input gradient, weight gradient), each
  `a_MK @ b_KN` quantizing A along K and B along K with the kernel's scale granularity.
  Operands (weights included) are quantized on every call by eager PyTorch ops, which the
  benchmarks measure as such (no cached FP8 weights, no fused quantize-GEMM kernels).
  Grouped (expert) GEMMs use `torch._scaled_grouped_mm` with row-wise scales forward (that is
  what the Hopper kernel accepts) and BF16 `torch._grouped_mm` for their two backward GEMMs.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import sys
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from real.wgrad import split_grouped_mm, split_linear

FP8_DTYPE = torch.float8_e4m3fn
FP8_MAX = 448.0  # largest finite E4M3 value
BLOCK = 128  # V3 tile / block edge
EPS = 1e-12


@dataclass(frozen=True)
class Precision:
    """Which GEMMs run: `gemm` in {"bf16", "fp8"}; `fp8_kernel` in {"blockwise", "rowwise",
    "emulated"} (see the module docstring)."""

    gemm: str = "bf16"
    fp8_kernel: str = "rowwise"
    # BF16 GEMMs whose weight gradient a zero-bubble schedule may defer (real/wgrad.py); FP8 GEMMs
    # ignore it (their weight gradients are computed in the input-gradient backward)
    split_wgrad: bool = False

    def __post_init__(self):
        if self.gemm not in ("bf16", "fp8"):
            raise ValueError(f"Precision.gemm must be 'bf16' or 'fp8', got {self.gemm!r}")
        if self.fp8_kernel not in ("blockwise", "rowwise", "emulated"):
            raise ValueError(
                f"Precision.fp8_kernel must be 'blockwise', 'rowwise' or 'emulated', "
                f"got {self.fp8_kernel!r}"
            )

    @property
    def label(self) -> str:
        return "bf16" if self.gemm == "bf16" else f"fp8-{self.fp8_kernel}"


BF16 = Precision()


def best_fp8(device: torch.device | str) -> Precision:
    """The fastest faithful FP8 policy on `device`: blockwise if the kernel exists, else rowwise."""
    kernel = "blockwise" if blockwise_kernel_available(device) else "rowwise"
    return Precision("fp8", kernel)


# --------------------------------------------------------------------------------------------
# Quantization (scales returned are *decode* scales: x ~= q * scale)
# --------------------------------------------------------------------------------------------


def quantize_rowwise(x_MK: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """E4M3 with one scale per row: returns q_MK (fp8) and scale_M1 (fp32)."""
    x_MK = x_MK.contiguous()  # the kernels want row-major fp8 operands
    amax_M1 = x_MK.abs().amax(dim=-1, keepdim=True).float().clamp(min=EPS)
    scale_M1 = amax_M1 / FP8_MAX
    q_MK = (x_MK.float() / scale_M1).clamp(-FP8_MAX, FP8_MAX).to(FP8_DTYPE)
    return q_MK, scale_M1


def quantize_1x128(x_MK: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """E4M3 with one scale per 1x128 tile along K (K % 128 == 0): q_MK and scale_MKb."""
    M, K = x_MK.shape
    x_MKbB = x_MK.contiguous().float().view(M, K // BLOCK, BLOCK)
    scale_MKb1 = x_MKbB.abs().amax(dim=-1, keepdim=True).clamp(min=EPS) / FP8_MAX
    q_MK = (x_MKbB / scale_MKb1).clamp(-FP8_MAX, FP8_MAX).to(FP8_DTYPE).view(M, K)
    return q_MK, scale_MKb1.squeeze(-1)


def quantize_128x128(w_NK: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """E4M3 with one scale per 128x128 block (N, K % 128 == 0): q_NK and scale_NbKb."""
    N, K = w_NK.shape
    w_NbBKbB = w_NK.contiguous().float().view(N // BLOCK, BLOCK, K // BLOCK, BLOCK)
    scale_Nb1Kb1 = w_NbBKbB.abs().amax(dim=(1, 3), keepdim=True).clamp(min=EPS) / FP8_MAX
    q_NK = (w_NbBKbB / scale_Nb1Kb1).clamp(-FP8_MAX, FP8_MAX).to(FP8_DTYPE).view(N, K)
    return q_NK, scale_Nb1Kb1[:, 0, :, 0]


def _pad_to(x: torch.Tensor, dim: int, multiple: int) -> torch.Tensor:
    pad = (-x.shape[dim]) % multiple
    if pad == 0:
        return x
    shape = list(x.shape)
    shape[dim] = pad
    return torch.cat([x, x.new_zeros(shape)], dim=dim)


def fake_quant_1x128(x_MK: torch.Tensor) -> torch.Tensor:
    """x_MK rounded through E4M3 with 1x128 tiles along K (K padded with zeros if needed)."""
    M, K = x_MK.shape
    q, s_MKb = quantize_1x128(_pad_to(x_MK, 1, BLOCK))
    deq = q.float().view(M, -1, BLOCK) * s_MKb.unsqueeze(-1)
    return deq.view(M, -1)[:, :K].to(x_MK.dtype)


def fake_quant_128x128(w_NK: torch.Tensor) -> torch.Tensor:
    """w_NK rounded through E4M3 with 128x128 blocks (zero-padded to whole blocks if needed)."""
    N, K = w_NK.shape
    q, s_NbKb = quantize_128x128(_pad_to(_pad_to(w_NK, 0, BLOCK), 1, BLOCK))
    Np, Kp = q.shape
    deq = q.float().view(Np // BLOCK, BLOCK, Kp // BLOCK, BLOCK) * s_NbKb[:, None, :, None]
    return deq.view(Np, Kp)[:N, :K].to(w_NK.dtype)


def fake_quant_rowwise(x_MK: torch.Tensor) -> torch.Tensor:
    q, s = quantize_rowwise(x_MK)
    return (q.float() * s).to(x_MK.dtype)


# --------------------------------------------------------------------------------------------
# FP8 matrix products a_MK @ b_KN -> BF16 (or a's dtype when emulated)
# --------------------------------------------------------------------------------------------


def mm_rowwise(a_MK: torch.Tensor, b_KN: torch.Tensor, out_dtype=torch.bfloat16) -> torch.Tensor:
    """`torch._scaled_mm` with per-row scales for A and per-column scales for B."""
    aq_MK, sa_M1 = quantize_rowwise(a_MK)
    bq_NK, sb_N1 = quantize_rowwise(b_KN.t())  # column-major B, as the kernel wants
    return torch._scaled_mm(aq_MK, bq_NK.t(), scale_a=sa_M1, scale_b=sb_N1.t(),
                            out_dtype=out_dtype)


def _blockwise_call(aq_MK, sa_MKb, bq_NK, sb_NbKb, out_dtype, variant: int):
    """One of the scale layouts that PyTorch versions have used for Hopper block scaling."""
    sa_colmajor = sa_MKb.t().contiguous().t()  # "outer-dim-major" 1x128 scales
    if variant == 0:
        return F.scaled_mm(aq_MK, bq_NK.t(), sa_colmajor, F.ScalingType.BlockWise1x128,
                           sb_NbKb.t(), F.ScalingType.BlockWise128x128, output_dtype=out_dtype)
    if variant == 1:
        return F.scaled_mm(aq_MK, bq_NK.t(), sa_MKb, F.ScalingType.BlockWise1x128,
                           sb_NbKb.t().contiguous(), F.ScalingType.BlockWise128x128,
                           output_dtype=out_dtype)
    if variant == 2:
        return torch._scaled_mm(aq_MK, bq_NK.t(), scale_a=sa_colmajor, scale_b=sb_NbKb.t(),
                                out_dtype=out_dtype)
    return torch._scaled_mm(aq_MK, bq_NK.t(), scale_a=sa_MKb, scale_b=sb_NbKb.t().contiguous(),
                            out_dtype=out_dtype)


_BLOCKWISE_VARIANT: dict[str, int | None] = {}  # capability cache per device type, not config


def blockwise_kernel_available(device: torch.device | str) -> bool:
    """Probe once per device type whether a 1x128/128x128 block-scaled FP8 GEMM runs *and*
    matches the emulated recipe (relative error < 1%)."""
    return _probe_variant(_BLOCKWISE_VARIANT, device, _blockwise_call, quantize_128x128, fake_quant_128x128, 4) is not None


def _probe_variant(cache: dict, device, call, quantize_b, fake_quant_b, variants: int) -> int | None:
    """Once per device type (cached in `cache`): the scale-layout variant of `call` that runs a
    256x512 @ (384x512)^T product with A in 1x128 tiles and B quantized by `quantize_b`, matching
    the emulated recipe; None off CUDA or where no variant works."""
    dev = torch.device(device)
    if dev.type not in cache:
        cache[dev.type] = None
        if dev.type == "cuda" and hasattr(F, "scaled_mm"):
            g = torch.Generator(device=dev).manual_seed(0)
            a = torch.randn(256, 512, device=dev, generator=g).to(torch.bfloat16)
            b_NK = torch.randn(384, 512, device=dev, generator=g).to(torch.bfloat16)
            ref = fake_quant_1x128(a).float() @ fake_quant_b(b_NK).float().t()
            cache[dev.type] = _first_matching_variant(call, (*quantize_1x128(a), *quantize_b(b_NK)), ref, variants)
    return cache[dev.type]


def _first_matching_variant(call, operands, ref: torch.Tensor, variants: int) -> int | None:
    """The first scale-layout variant of `call(*operands, torch.bfloat16, variant)` that runs and
    matches `ref` (relative error < 1%); None if none does."""
    for variant in range(variants):
        try:
            out = call(*operands, torch.bfloat16, variant).float()
        except (RuntimeError, NotImplementedError, ValueError, TypeError):
            continue
        if ((out - ref).norm() / ref.norm()).item() < 1e-2:
            return variant
    return None


def _wgrad_1d1d_call(aq_MK, sa_MKb, bq_NK, sb_NKb, out_dtype, variant: int):
    """a_MK @ b_NK^T with 1x128 scales along K on *both* operands (the weight-gradient recipe of V3
    §3.3.3: both operands re-quantized in 128-token groups along the contraction), in one of the
    scale layouts PyTorch versions have used for Hopper's 1D x 1D block scaling."""
    sa = (sa_MKb.t().contiguous().t(), sa_MKb)[variant // 4]
    sb = (sb_NKb.t().contiguous().t(), sb_NKb, sb_NKb.t(), sb_NKb.t().contiguous())[variant % 4]
    return F.scaled_mm(aq_MK, bq_NK.t(), sa, F.ScalingType.BlockWise1x128, sb, F.ScalingType.BlockWise1x128,
                       output_dtype=out_dtype)


_WGRAD_1D1D_VARIANT: dict[str, int | None] = {}


def wgrad_1d1d_variant(device: torch.device | str) -> int | None:
    """Probe once per device type for a 1x128 x 1x128 block-scaled FP8 GEMM that runs and matches
    the emulated recipe (relative error < 1%); None where the kernel does not exist."""
    return _probe_variant(_WGRAD_1D1D_VARIANT, device, _wgrad_1d1d_call, quantize_1x128, fake_quant_1x128, 8)


def blockwise_shape_ok(K: int, N: int) -> bool:
    """Shapes the Hopper block-scaled kernel takes: whole 128x128 blocks, and K-blocks in
    multiples of 4 (cuBLAS pads the scale rows to 4; seen on H100, torch 2.11, K = 2816
    refused). Other shapes run row-wise."""
    return N % BLOCK == 0 and K % (4 * BLOCK) == 0


def mm_blockwise(a_MK: torch.Tensor, b_KN: torch.Tensor, out_dtype=torch.bfloat16) -> torch.Tensor:
    """V3 recipe on the kernel: A in 1x128 tiles, B in 128x128 blocks (K, N % 128 == 0)."""
    aq_MK, sa_MKb = quantize_1x128(a_MK)
    bq_NK, sb_NbKb = quantize_128x128(b_KN.t())
    return _blockwise_call(aq_MK, sa_MKb, bq_NK, sb_NbKb, out_dtype,
                           _BLOCKWISE_VARIANT[a_MK.device.type])


def mm_emulated(a_MK: torch.Tensor, b_KN: torch.Tensor) -> torch.Tensor:
    """V3 quantization (1x128 tiles of A, 128x128 blocks of B), dequantized, then a plain matmul."""
    return fake_quant_1x128(a_MK) @ fake_quant_128x128(b_KN.t()).t()


def fp8_mm(a_MK: torch.Tensor, b_KN: torch.Tensor, kernel: str) -> torch.Tensor:
    """a_MK @ b_KN with FP8 operands, through the named kernel (module docstring)."""
    if kernel == "emulated":
        return mm_emulated(a_MK, b_KN)
    K, N = b_KN.shape
    if a_MK.is_cuda and (K % 16 or N % 16):  # the FP8 kernels need 16-aligned K and N
        return a_MK @ b_KN
    if kernel == "blockwise" and blockwise_shape_ok(K, N) and blockwise_kernel_available(a_MK.device):
        return mm_blockwise(a_MK, b_KN)
    return mm_rowwise(a_MK, b_KN)


class _Fp8Linear(torch.autograd.Function):
    """y_MN = x_MK @ w_NK^T with all three GEMMs (fwd, dgrad, wgrad) in FP8."""

    @staticmethod
    def forward(ctx, x_MK, w_NK, kernel):
        ctx.save_for_backward(x_MK, w_NK)
        ctx.kernel = kernel
        return fp8_mm(x_MK, w_NK.t(), kernel).to(x_MK.dtype)

    @staticmethod
    def backward(ctx, g_MN):
        x_MK, w_NK = ctx.saved_tensors
        g_MN = g_MN.contiguous()
        dx_MK = fp8_mm(g_MN, w_NK, ctx.kernel).to(x_MK.dtype)
        dw_NK = fp8_mm(g_MN.t(), x_MK, ctx.kernel).to(w_NK.dtype)
        return dx_MK, dw_NK, None


def linear(x_xK: torch.Tensor, w_NK: torch.Tensor, precision: Precision = BF16) -> torch.Tensor:
    """y = x @ w^T over the last dim of x (any leading dims), in the policy's precision."""
    if precision.gemm == "bf16":
        return split_linear(x_xK, w_NK) if precision.split_wgrad else F.linear(x_xK, w_NK)
    lead = x_xK.shape[:-1]
    x_MK = x_xK.reshape(-1, x_xK.shape[-1])
    if precision.fp8_kernel == "emulated":  # straight-through: FP8 values, autograd in x's dtype
        xq = x_MK + (fake_quant_1x128(x_MK) - x_MK).detach()
        wq = w_NK + (fake_quant_128x128(w_NK) - w_NK).detach()
        y_MN = xq @ wq.t()
    else:
        y_MN = _Fp8Linear.apply(x_MK, w_NK, precision.fp8_kernel)
    return y_MN.reshape(*lead, w_NK.shape[0])


# --------------------------------------------------------------------------------------------
# torchao's tensorwise Float8Linear, as torchtitan's Float8 rows train (session s18tt)
# --------------------------------------------------------------------------------------------
E5M2_DTYPE = torch.float8_e5m2
E5M2_MAX = 57344.0  # largest finite E5M2 value


def quantize_tensorwise(x: torch.Tensor, dtype=FP8_DTYPE, fmax: float = FP8_MAX) -> tuple[torch.Tensor, torch.Tensor]:
    """One scale for the whole tensor (torchao float8 `hp_tensor_to_float8_dynamic`: amax, then
    scale = fmax / amax): returns q (fp8, x's layout) and the inverse scale (a 0-dim FP32 tensor,
    what torch._scaled_mm multiplies the product by)."""
    amax = x.abs().amax().float().clamp(min=EPS)
    scale = fmax / amax
    return (x.float() * scale).clamp(-fmax, fmax).to(dtype), scale.reciprocal()


def mm_tensorwise(aq_MK: torch.Tensor, inv_a: torch.Tensor, bq_KN: torch.Tensor, inv_b: torch.Tensor) -> torch.Tensor:
    """a @ b with one scale per operand, BF16 out: torch._scaled_mm on a GPU (a row-major, b
    column-major, as the kernel takes them); off a GPU the dequantized product."""
    if aq_MK.is_cuda:
        return torch._scaled_mm(aq_MK, bq_KN, scale_a=inv_a, scale_b=inv_b, out_dtype=torch.bfloat16)
    return ((aq_MK.float() * inv_a) @ (bq_KN.float() * inv_b)).to(torch.bfloat16)


# Which implementation `tensorwise_linear` runs (session s18fp8). s18tt's autograd.Function, traced
# by dynamo, saved the FP8 casts made in its forward for its backward; compiled with inductor on one
# H100 (torch 2.11, full AC) that block's linears got zero gradients (docs/notes/s18fp8.md).
#   "custom_op": the linear and its backward are torch.library custom ops (opaque to dynamo,
#                AOTAutograd and inductor; the gradient formula registered with register_autograd);
#                the casts run inside them, so inductor cannot fuse them (as eager);
#   "function":  an autograd.Function put in the graph whole (torch._dynamo.allow_in_graph, applied when
#                dynamo is imported: _AllowInGraphWhenDynamoLoads) that
#                saves the high-precision input and weight and casts them again in its backward, as
#                torchao's matmul_with_hp_or_float8_args (float8_linear.py @ eab345c); AOTAutograd
#                traces its ops, so inductor fuses the casts.
# Both give the same numbers eager (the casts are deterministic); tests compare them compiled.
# Default "function" since session 19: on one H100 (torch 2.11, inductor, checkpoint wrapper) its
# compiled gradients are the eager ones within FP8 rounding (0.053 / 0.079, custom_op 0.037 / 0.072)
# and its compiled step is 2.0-2.8x faster than custom_op's (fused casts: 5.1 / 6.5 ms against
# 14.3 / 13.0 ms, tiny / mid block; h100/fp8_grad_check, docs/notes/s18fp8.md "Session 19").
TENSORWISE_IMPLS = ("custom_op", "function")
TENSORWISE_IMPL = "function"


def tensorwise_forward(x_MK: torch.Tensor, w_NK: torch.Tensor) -> torch.Tensor:
    """y_MN = x_MK @ w_NK^T: input and weight cast to E4M3 (row-major a, column-major b, as the
    kernel takes them), BF16 product, returned in x's dtype."""
    xq_MK, inv_x = quantize_tensorwise(x_MK.contiguous())
    wq_NK, inv_w = quantize_tensorwise(w_NK.contiguous())
    return mm_tensorwise(xq_MK, inv_x, wq_NK.t(), inv_w).to(x_MK.dtype)


def tensorwise_backward(g_MN: torch.Tensor, x_MK: torch.Tensor, w_NK: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(dx_MK, dw_NK) of `tensorwise_forward`: input and weight cast again (the same E4M3 values as
    the forward's), the output gradient to E5M2; dX = g @ W with W copied column-major, dW = g^T @ X
    with g^T and X copied into the layouts the kernel takes (torchao float8_ops.py float8_mm:
    `b_data.t().contiguous().t()`, `a_data.contiguous()`)."""
    xq_MK, inv_x = quantize_tensorwise(x_MK.contiguous())
    wq_NK, inv_w = quantize_tensorwise(w_NK.contiguous())
    gq_MN, inv_g = quantize_tensorwise(g_MN.contiguous(), E5M2_DTYPE, E5M2_MAX)
    dx_MK = mm_tensorwise(gq_MN, inv_g, wq_NK.t().contiguous().t(), inv_w)
    dw_NK = mm_tensorwise(gq_MN.t().contiguous(), inv_g, xq_MK.t().contiguous().t(), inv_x)
    return dx_MK.to(x_MK.dtype), dw_NK.to(w_NK.dtype)


@torch.library.custom_op("real_fp8::tensorwise_linear", mutates_args=())
def tensorwise_linear_op(x_MK: torch.Tensor, w_NK: torch.Tensor) -> torch.Tensor:
    return tensorwise_forward(x_MK, w_NK)


@tensorwise_linear_op.register_fake
def _tensorwise_linear_fake(x_MK, w_NK):
    return x_MK.new_empty((x_MK.shape[0], w_NK.shape[0]))


@torch.library.custom_op("real_fp8::tensorwise_linear_backward", mutates_args=())
def tensorwise_linear_backward_op(g_MN: torch.Tensor, x_MK: torch.Tensor,
                                  w_NK: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return tensorwise_backward(g_MN, x_MK, w_NK)


@tensorwise_linear_backward_op.register_fake
def _tensorwise_linear_backward_fake(g_MN, x_MK, w_NK):
    return x_MK.new_empty(x_MK.shape), w_NK.new_empty(w_NK.shape)


def _save_inputs(ctx, inputs, output):
    ctx.save_for_backward(*inputs)   # the high-precision x and w (graph inputs of the op), as torchao


def _tensorwise_linear_grads(ctx, g_MN):
    x_MK, w_NK = ctx.saved_tensors
    return tuple(tensorwise_linear_backward_op(g_MN, x_MK, w_NK))


tensorwise_linear_op.register_autograd(_tensorwise_linear_grads, setup_context=_save_inputs)


class _Float8TensorwiseLinear(torch.autograd.Function):
    """y_MN = x_MK @ w_NK^T as torchao's Float8Linear (float8_linear.py @ eab345c,
    matmul_with_hp_or_float8_args): saves the high-precision input and weight, casts them to E4M3
    each call (no cached FP8 weight) and again in the backward, where the output gradient is cast
    to E5M2 (`tensorwise_forward`, `tensorwise_backward`)."""

    @staticmethod
    def forward(ctx, x_MK, w_NK):
        ctx.save_for_backward(x_MK, w_NK)
        return tensorwise_forward(x_MK, w_NK)

    @staticmethod
    def backward(ctx, g_MN):
        x_MK, w_NK = ctx.saved_tensors
        return tensorwise_backward(g_MN, x_MK, w_NK)


class _AllowInGraphWhenDynamoLoads(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Puts _Float8TensorwiseLinear in dynamo's graphs whole (torch._dynamo.allow_in_graph) as soon as
    torch._dynamo is imported, by whatever imports it (torch.compile does). Decorating the class with
    `@torch._dynamo.allow_in_graph` imported dynamo with this module: ~1.1 s of CPU in every process
    that imports real.model or real.bench (each rank of a CPU dry run, each campaign part), most of
    which never compile. This finder, first on sys.meta_path until then, finds torch._dynamo as the
    path finder does, runs it with its own loader, then registers the class; it is removed once used."""

    def find_spec(self, fullname, path, target=None):
        if fullname != "torch._dynamo":
            return None
        sys.meta_path.remove(self)
        spec = importlib.machinery.PathFinder.find_spec(fullname, path, target)
        if spec is not None:
            self.loader = spec.loader
            spec.loader = self
        return spec

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module):
        module.__loader__ = module.__spec__.loader = self.loader   # the module keeps its own loader
        self.loader.exec_module(module)
        module.allow_in_graph(_Float8TensorwiseLinear)


if "torch._dynamo" in sys.modules:
    torch._dynamo.allow_in_graph(_Float8TensorwiseLinear)
else:
    sys.meta_path.insert(0, _AllowInGraphWhenDynamoLoads())


def tensorwise_linear(x_xK: torch.Tensor, w_NK: torch.Tensor, impl: str | None = None) -> torch.Tensor:
    """y = x @ w^T over the last dim of x (any leading dims), torchao's tensorwise Float8 recipe;
    `impl` one of TENSORWISE_IMPLS (default TENSORWISE_IMPL)."""
    impl = impl or TENSORWISE_IMPL
    if impl not in TENSORWISE_IMPLS:
        raise ValueError(f"tensorwise_linear: impl {impl!r} not in {TENSORWISE_IMPLS}")
    lead = x_xK.shape[:-1]
    x_MK = x_xK.reshape(-1, x_xK.shape[-1])
    y_MN = tensorwise_linear_op(x_MK, w_NK) if impl == "custom_op" else _Float8TensorwiseLinear.apply(x_MK, w_NK)
    return y_MN.reshape(*lead, w_NK.shape[0])


# --------------------------------------------------------------------------------------------
# Grouped (expert) GEMMs: rows of x_TK are sorted by expert; offs_E are cumulative end rows
# --------------------------------------------------------------------------------------------


def _scaled_grouped_fwd(x_TK, w_EKN, offs_E):
    xq_TK, sx_T1 = quantize_rowwise(x_TK)
    E, K, N = w_EKN.shape
    wq_ENK, sw_EN1 = quantize_rowwise(w_EKN.transpose(-2, -1).reshape(E * N, K))
    wq_ENK = wq_ENK.view(E, N, K)
    return torch._scaled_grouped_mm(
        xq_TK, wq_ENK.transpose(-2, -1), sx_T1.squeeze(-1), sw_EN1.view(E, N),
        offs=offs_E, out_dtype=torch.bfloat16,
    )


class _Fp8GroupedMM(torch.autograd.Function):
    """Forward `torch._scaled_grouped_mm` (row-wise scales); backward BF16 `_grouped_mm`."""

    @staticmethod
    def forward(ctx, x_TK, w_EKN, offs_E):
        ctx.save_for_backward(x_TK, w_EKN, offs_E)
        return _scaled_grouped_fwd(x_TK, w_EKN, offs_E)

    @staticmethod
    def backward(ctx, g_TN):
        x_TK, w_EKN, offs_E = ctx.saved_tensors
        g_TN = g_TN.contiguous()
        dx_TK = torch._grouped_mm(g_TN, w_EKN.transpose(-2, -1), offs=offs_E)
        dw_EKN = torch._grouped_mm(x_TK.t(), g_TN, offs=offs_E)
        return dx_TK, dw_EKN, None


def grouped_mm(x_TK: torch.Tensor, w_EKN: torch.Tensor, offs_E: torch.Tensor,
               precision: Precision = BF16) -> torch.Tensor:
    """y_TN[rows of expert e] = x_TK[rows of e] @ w_EKN[e]; one grouped kernel for all experts.

    offs_E (int32) holds cumulative end rows; rows past offs_E[-1] are left unspecified.
    """
    if precision.gemm == "bf16":
        if precision.split_wgrad:
            return split_grouped_mm(x_TK, w_EKN, offs_E)
        return torch._grouped_mm(x_TK, w_EKN, offs=offs_E)
    if precision.fp8_kernel == "emulated" or x_TK.device.type != "cuda":
        # Row-wise E4M3 rounding of x and of each expert's output columns, then the BF16 kernel
        xq = x_TK + (fake_quant_rowwise(x_TK) - x_TK).detach()
        wt_ENK = w_EKN.transpose(-2, -1)
        wq_ENK = wt_ENK + (fake_quant_rowwise(wt_ENK.reshape(-1, wt_ENK.shape[-1]))
                           .view_as(wt_ENK) - wt_ENK).detach()
        return torch._grouped_mm(xq, wq_ENK.transpose(-2, -1), offs=offs_E)
    return _Fp8GroupedMM.apply(x_TK, w_EKN, offs_E)
