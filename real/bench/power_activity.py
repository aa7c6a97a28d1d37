"""Section power_activity (one GPU, opt-in; campaign s22tt): the board's dynamic power against the SM
clock, traced below the BF16 GEMM's own capped clock by varying how much the GEMM's data toggles.

Why: the twin slows torchtitan's H100s (500 W limit) by a clock derived from our 700 W records under an
assumed law (calibration/power_cap.py: static part = idle power, dynamic power ~ f^3). s14tt's duty
sweep showed the law is not f^3 above the GEMM's capped clock (two-point exponents 1.1-2.3) and could
not reach below it, where the 500 W clock lies; a limit cannot be set on the lent machines. Dynamic
power is activity x h(f), h the chip's own voltage-frequency curve (P_dyn ~ C V(f)^2 f), the same for
every kernel; activity depends on the data the tensor cores multiply. So one GEMM shape with data of
different activity (zeros, powers of two, half zeros, Gaussian; then FP8 tensorwise, heavier) runs at
different clocks under the same 700 W limit, each a point of h: h(f_p) = (P_limit - P_s) / D_p, with
D_p the pattern's dynamic power at the maximum clock, read in the free regime (low duty cycles, no
power-cap reason: P = P_s + d D_p, s14tt's line) and f_p, the time per call and the power at full duty.

Per kernel: duty points POWER_ACTIVITY_TARGETS (1.0 capped; the rest free), each held HOLD_S seconds
with a `duty_sweep` row per WINDOW_S window (real/bench/duty_sweep.py's hold_duty: duty by CUDA events,
board power by the energy counter, the SM clock sampled each period, temperature, NVML clock-event
reasons). First the idle board power. Kernel names carry the data pattern ("... data=zeros").
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from real.bench.device import free_memory
from real.bench.duty_sweep import PERIOD_BUSY_S, calls_for, hold_duty, idle_row
from real.bench.gemm import fp8_gemm_callable
from real.bench.records import log
from twin.costs.flops import gemm_flops   # the shared formula (as real/bench/cp_sustained.py)

HOLD_S, WINDOW_S, IDLE_S = 4.0, 1.0, 3.0
POWER_ACTIVITY_TARGETS = (1.0, 0.35, 0.25, 0.15)   # capped, then three free points (s14tt: free at <= 0.42)
GEMM_MNK = (8192, 4096, 7168)                      # sustained.csv's BF16 GEMM, clock_frac's record
PATTERNS = ("zeros", "pow2", "half_zeros", "randn")


def pattern_tensor(shape: tuple[int, int], pattern: str, dev, gen: torch.Generator) -> torch.Tensor:
    """A BF16 operand whose bits toggle little (zeros), in the exponent and sign only (pow2: +-2^e,
    e in [-4, 3], a zero mantissa), half the time (half_zeros: Gaussian with half its entries zero) or
    fully (randn: Gaussian, the twin's GEMM records)."""
    if pattern == "zeros":
        return torch.zeros(shape, device=dev, dtype=torch.bfloat16)
    x = torch.randn(shape, generator=gen, device="cpu")
    if pattern == "pow2":
        e = torch.randint(-4, 4, shape, generator=gen).float()
        x = torch.sign(x) * torch.pow(2.0, e)
    elif pattern == "half_zeros":
        x = x * (torch.rand(shape, generator=gen) < 0.5)
    elif pattern != "randn":
        raise ValueError(f"unknown data pattern {pattern!r}; one of {PATTERNS}")
    return x.to(device=dev, dtype=torch.bfloat16)


def kernels(dev, quick: bool) -> list[tuple[str, str, object, float]]:
    """(name, precision, fn, flops): the BF16 GEMM on each data pattern, then (GPU only) the FP8
    tensorwise GEMM of the same shape on Gaussian data, the heaviest."""
    sc = 64 if quick else 1
    m, n, k = (d // sc for d in GEMM_MNK)
    gen = torch.Generator().manual_seed(0)
    out = []
    for pattern in PATTERNS:
        a, w = pattern_tensor((m, k), pattern, dev, gen), pattern_tensor((n, k), pattern, dev, gen)
        out.append((f"gemm m={m} n={n} k={k} data={pattern}", "bf16", lambda a=a, w=w: F.linear(a, w),
                    gemm_flops(m, n, k)))
    if dev.type == "cuda":
        a, w = pattern_tensor((m, k), "randn", dev, gen), pattern_tensor((n, k), "randn", dev, gen)
        out.append((f"gemm m={m} n={n} k={k} data=randn", "fp8-tensor", fp8_gemm_callable(a, w, "fp8-tensor"),
                    gemm_flops(m, n, k)))
    return out


def bench_power_activity(rec, timer, dev, deadline, quick, env):
    """The idle power, then each kernel over POWER_ACTIVITY_TARGETS (module docstring); rows in
    duty_sweep.csv (the duty_sweep schema)."""
    hold_s = 0.1 if quick else HOLD_S
    window_s = 0.05 if quick else WINDOW_S
    idle_row(rec, timer, 0.05 if quick else IDLE_S)
    for name, precision, fn, flops in kernels(dev, quick):
        calls = calls_for(fn, dev, PERIOD_BUSY_S)
        for target in POWER_ACTIVITY_TARGETS:
            if deadline.over():
                log("power_activity: time share spent, skipping the rest")
                return
            n = hold_duty(rec, timer, dev, name, precision, fn, flops, calls, target, hold_s, window_s)
            log(f"power_activity {name} {precision} duty={target:.2f}: {calls} calls a period, {n} windows")
    free_memory()
