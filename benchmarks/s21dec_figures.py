"""s21dec (docs/notes/s21dec_rule.md): every figure ADOPT_SPEED_CURVE_PEAK may move, under one setting of it
and of the H800's inferred capacity (twin.core.specs.ADOPT_USABLE_HBM_INFERRED), as JSON.

    PYTHONPATH=. python benchmarks/s21dec_figures.py PEAK(on|off) H800(on|off) OUT.json

Figures: the decode speed curve (and the MTP sensitivity's), DeepSeek's day rows and sensitivity rows
(twin.serving.published), or the ValueError a curve that does not rise raises.
"""

from __future__ import annotations

import json
import math
import sys

from twin.core import specs
from twin.serving import published

CURVE_FIELDS = ("requests_per_gpu", "output_tokens_per_s_per_node", "user_tokens_per_s", "memory_limit")


def _clean(x):
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if isinstance(x, (tuple, list)):
        return [_clean(v) for v in x]
    if isinstance(x, (int, str, bool)) or x is None:
        return x
    return _clean(float(x))


def _rows(fn) -> list[dict] | str:
    try:
        return [{k: _clean(v) for k, v in r.items()} for r in fn()]
    except ValueError as exc:   # the speed curve's refusal
        return f"ValueError: {exc}"


def _curve(*args) -> dict | str:
    try:
        c = published.decode_speed_curve(*args)
    except ValueError as exc:
        return f"ValueError: {exc}"
    return {k: _clean(getattr(c, k)) for k in CURVE_FIELDS}


def main(argv: list[str]) -> int:
    peak, h800, out = argv
    published.ADOPT_SPEED_CURVE_PEAK = peak == "on"
    specs.ADOPT_USABLE_HBM_INFERRED = h800 == "on"
    figures = {"switch": {"ADOPT_SPEED_CURVE_PEAK": published.ADOPT_SPEED_CURVE_PEAK,
                          "ADOPT_USABLE_HBM_INFERRED": specs.ADOPT_USABLE_HBM_INFERRED},
               "decode_curve": _curve(),
               "mtp_curve": _curve(("serve.mtp_draft_tokens=1",), published.MTP_CURVE_REQUESTS_PER_GPU),
               "day_rows": _rows(published.deepseek_day_rows),
               "sensitivity_rows": _rows(published.deepseek_sensitivity)}
    with open(out, "w") as f:
        json.dump(figures, f, indent=1, sort_keys=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
