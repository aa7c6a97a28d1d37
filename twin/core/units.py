"""Scale factors. The only place where TFLOPS, GB/s, GiB and friends appear.

Everything inside the twin is SI: seconds, bytes, FLOPs, watts, joules. Convert at the
boundary (catalog loading, report formatting) and nowhere else.
"""

KILO = 1e3
MEGA = 1e6
GIGA = 1e9
TERA = 1e12
PETA = 1e15

KIB = 1024
MIB = 1024**2
GIB = 1024**3

MICRO = 1e-6
MILLI = 1e-3

SECONDS_PER_HOUR = 3600.0
SECONDS_PER_DAY = 86400.0
JOULES_PER_KWH = 3.6e6

BITS_PER_BYTE = 8


def short_count(x: float) -> str:
    """14.8e12 -> '14.8T', 2.782e6 -> '2.78M' (the summaries' counts of tokens and GPU-hours)."""
    for scale, suffix in ((TERA, "T"), (GIGA, "B"), (MEGA, "M"), (KILO, "K")):
        if abs(x) >= scale:
            return f"{x / scale:.3g}{suffix}"
    return f"{x:.3g}"
