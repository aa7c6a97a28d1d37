"""The precision seam: quantization granularity and FP8 error bounds against BF16/FP32."""

import pytest
import torch

from real import fp8
from real.fp8 import Precision, grouped_mm, linear


def rel(a, b):
    return ((a.float() - b.float()).norm() / b.float().norm()).item()


def test_quantize_1x128_has_one_scale_per_tile():
    x = torch.randn(4, 256)
    q, s = fp8.quantize_1x128(x)
    assert q.dtype == torch.float8_e4m3fn and s.shape == (4, 2)
    torch.testing.assert_close(s, x.view(4, 2, 128).abs().amax(-1) / 448.0)
    # E4M3 keeps 3 mantissa bits: elementwise relative error <= 2^-4 for normal numbers
    deq = (q.float().view(4, 2, 128) * s[..., None]).view(4, 256)
    big = x.abs() > 0.05
    assert ((deq - x).abs()[big] <= x.abs()[big] * 2**-4 + 1e-6).all()


def test_quantize_128x128_has_one_scale_per_block():
    w = torch.randn(256, 384)
    q, s = fp8.quantize_128x128(w)
    assert s.shape == (2, 3)
    torch.testing.assert_close(s[1, 2], w[128:, 256:].abs().max() / 448.0)


def test_fine_grained_tiles_isolate_an_outlier():
    """V3 §3.3.2: a 1x128 tile with an outlier does not cost precision elsewhere."""
    x = torch.randn(8, 512)
    x[0, 0] = 1e6  # per-tensor scaling pushes ordinary values below E4M3 subnormals
    tile_err = (fp8.fake_quant_1x128(x) - x)[1:].norm() / x[1:].norm()
    q = (x / (x.abs().max() / 448)).to(torch.float8_e4m3fn).float() * (x.abs().max() / 448)
    tensor_err = (q - x)[1:].norm() / x[1:].norm()
    assert tile_err < 0.05 < tensor_err


@pytest.mark.parametrize("kernel", ["rowwise", "emulated"])
def test_fp8_linear_error_is_bounded_against_bf16(kernel):
    """Forward and both gradients within 6% relative (E4M3 ~3.6% RMS rounding) of BF16."""
    x = torch.randn(256, 512, requires_grad=True)
    w = (torch.randn(384, 512) * 0.05).requires_grad_()
    y = linear(x, w, Precision("fp8", kernel))
    ref = linear(x, w)
    g = torch.randn_like(ref)
    gx, gw = torch.autograd.grad(y, (x, w), g)
    rx, rw = torch.autograd.grad(ref, (x, w), g)
    assert rel(y, ref) < 0.06 and rel(gx, rx) < 0.06 and rel(gw, rw) < 0.06
    assert rel(y, ref) > 1e-3  # it really went through FP8


def test_fp8_grouped_mm_error_is_bounded():
    E, T, K, N = 4, 64, 128, 96
    x = torch.randn(T, K, dtype=torch.bfloat16)
    w = torch.randn(E, N, K, dtype=torch.bfloat16).transpose(-2, -1)
    offs = torch.tensor([16, 32, 48, 64], dtype=torch.int32)
    ref = grouped_mm(x, w, offs)
    assert rel(grouped_mm(x, w, offs, Precision("fp8", "emulated")), ref) < 0.06
    # the grouped kernel equals per-expert matmuls
    torch.testing.assert_close(ref[16:32].float(), (x[16:32] @ w[1]).float(), rtol=2e-2, atol=2e-2)


def test_precision_rejects_unknown_names():
    with pytest.raises(ValueError, match=r"gemm must be 'bf16' or 'fp8', got 'fp16'"):
        Precision("fp16")
    with pytest.raises(ValueError, match=r"fp8_kernel must be .*got 'tensor'"):
        Precision("fp8", "tensor")


def test_blockwise_shape_rule():
    assert fp8.blockwise_shape_ok(7168, 4096) and fp8.blockwise_shape_ok(512, 32768)
    assert not fp8.blockwise_shape_ok(2816, 2048)  # 22 K-blocks: refused by cuBLAS
    assert not fp8.blockwise_shape_ok(7168, 2112)  # N not whole blocks


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_gpu_fp8_kernels_match_emulation():
    x = torch.randn(512, 1024, device="cuda", dtype=torch.bfloat16)
    w = torch.randn(768, 1024, device="cuda", dtype=torch.bfloat16) * 0.05
    ref = fp8.mm_emulated(x.float(), w.float().t())
    assert rel(fp8.mm_rowwise(x, w.t()), x.float() @ w.float().t()) < 0.06
    if fp8.blockwise_kernel_available("cuda"):
        assert rel(fp8.mm_blockwise(x, w.t()), ref) < 1e-2
