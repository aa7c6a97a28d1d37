"""Session s25v3pre (issue 15): the eager engine's prompt kernels as the engine runs them, and their judgement
(docs/notes/s25v3pre_rule.md).

The engine terms (twin.serving.timing.ADOPT_ENGINE_PREFILL_KERNELS) replace the ops the serving engine runs differently
from the twin's prefill forward (docs/notes/s24v3pre.md): the math-SDPA attention core, the eager MoE's routing passes,
the fp32 RoPE. Their constants are fitted here on the fitting record h100/s24v3pre alone (real/serve/prefillprof.py's
kernels by region, both serve-fit models it profiled, 4 prompt-only compositions each), by non-negative least squares
on relative residuals (every step alike):

    attention core  (measured 'attention core')                       = H L (a pairs + b keys)
    MoE routing     (measured 'MoE routing + elementwise' less the twin's router, top-k and shared SwiGLU)
                                                                      = L_moe (c0 + c1 T top_k hidden)
    RoPE            (measured q path + kv latents less the twin's q/kv GEMMs and norms)
                                                                      = r T H L

(H heads, L layers, L_moe MoE layers, T prompt tokens, pairs = sum of n (c + n) over chunks, keys = sum of (c + n)).

    python -m calibration.serve_prefill_kernels constants   # the fit, per step against the record
    python -m calibration.serve_prefill_kernels             # the judgement (set F and the guards; rule first)
"""

from __future__ import annotations

import sys
from collections import defaultdict
from pathlib import Path

import numpy as np
from scipy.optimize import nnls

from calibration import records as rec
from calibration import serve_eager_host as seh
from calibration import serve_v3_prefill as v3
from calibration.serve_pipeline import costs_for
from twin.core.specs import get_model
from twin.serving.pipeline import is_moe_layer

NAME = "s25v3pre"
# the twin's ops each measured part keeps (the rest of the part is what the engine terms price)
KEPT_MOE_OPS = ("router", "router_topk", "shared_swiglu")
KEPT_ROPE_OPS = ("q_down", "q_norm", "q_up", "q_proj", "kv_down", "kv_norm")


def fitting_steps(root: Path | str = rec.MEASUREMENTS_DIR) -> list[dict]:
    """Per profiled step of h100/s24v3pre: the model's shape, the step's features and the three measured targets
    (seconds a step, all layers), each less the twin's ops that the engine terms do not replace."""
    root = Path(root)
    steps, kernels = v3.measured_steps(root), v3.measured_kernels(root)
    out = []
    for key in sorted(kernels):
        model, p, n = key
        m = get_model(model)
        row0 = steps[key]["row"]
        costs = costs_for(model, row0, seh.probe_s(row0), v3.TABLE, root)
        dense = {k for k in range(m.num_layers) if not is_moe_layer(m, k)}
        got = defaultdict(float)
        for (region, op, _), x in kernels[key].items():
            got[v3.measured_part(region, op, dense)] += x
        ops = {name: x for part, name, x in v3.twin_step(costs, p, n)["ops"]}
        moe_layers = m.num_moe_layers
        out.append({
            "model": model, "prompts": p, "tokens": n, "heads": m.num_heads, "layers": m.num_layers,
            "moe_layers": moe_layers, "top_k": m.top_k, "hidden": m.hidden_size,
            "pairs": float(p * n * n), "keys": float(p * n), "prompt_tokens": float(p * n),
            "core_s": got["attention core"],
            "moe_s": got["MoE routing + elementwise"] - moe_layers * sum(ops.get(k, 0.0) for k in KEPT_MOE_OPS),
            "rope_s": (got["q path (incl. rope)"] + got["kv latents"]
                       - m.num_layers * sum(ops.get(k, 0.0) for k in KEPT_ROPE_OPS))})
    return out


def _relative_nnls(X: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Non-negative least squares of X c = y on relative residuals (each row divided by its y)."""
    w = 1.0 / y
    scale = np.maximum(np.abs(X).max(axis=0), 1e-30)
    c, _ = nnls((X / scale) * w[:, None], np.ones_like(y))
    return c / scale


def design_rows(s: dict) -> dict[str, list[float]]:
    """The three terms' features of one step (the columns of each term's constants)."""
    hl = s["heads"] * s["layers"]
    return {"core": [hl * s["pairs"], hl * s["keys"]],
            "moe": [float(s["moe_layers"]), s["moe_layers"] * s["prompt_tokens"] * s["top_k"] * s["hidden"]],
            "rope": [s["prompt_tokens"] * hl]}


def fit_constants(root: Path | str = rec.MEASUREMENTS_DIR) -> dict[str, float]:
    """The engine terms' constants from the fitting record (h100/s24v3pre), every profiled step of both models."""
    steps = fitting_steps(root)
    if not steps:
        raise ValueError(f"no kernel records under {Path(root) / v3.KERNELS}(.gz)")
    rows = [design_rows(s) for s in steps]
    a, b = _relative_nnls(np.array([r["core"] for r in rows]), np.array([s["core_s"] for s in steps]))
    c0, c1 = _relative_nnls(np.array([r["moe"] for r in rows]), np.array([s["moe_s"] for s in steps]))
    (r,) = _relative_nnls(np.array([r["rope"] for r in rows]), np.array([s["rope_s"] for s in steps]))
    return {"core_s_per_pair_head_layer": float(a), "core_s_per_key_head_layer": float(b),
            "moe_routing_s_per_layer": float(c0), "moe_routing_s_per_row_element": float(c1),
            "rope_s_per_token_head_layer": float(r)}


def _print_constants(root: Path) -> None:
    c = fit_constants(root)
    print("constants (h100/s24v3pre): " + ", ".join(f"{k} {v:.4g}" for k, v in c.items()))
    for s in fitting_steps(root):
        d = design_rows(s)
        core = float(np.dot(d["core"], [c["core_s_per_pair_head_layer"], c["core_s_per_key_head_layer"]]))
        moe = float(np.dot(d["moe"], [c["moe_routing_s_per_layer"], c["moe_routing_s_per_row_element"]]))
        rope = d["rope"][0] * c["rope_s_per_token_head_layer"]
        print(f"  {s['model']:20s} {s['prompts']}x{s['tokens']:<5d} core {s['core_s'] * 1e3:6.3f} / {core * 1e3:6.3f} "
              f"({core / s['core_s'] - 1:+6.1%})  moe {s['moe_s'] * 1e3:6.3f} / {moe * 1e3:6.3f} "
              f"({moe / s['moe_s'] - 1:+6.1%})  rope {s['rope_s'] * 1e3:6.3f} / {rope * 1e3:6.3f} ({rope / s['rope_s'] - 1:+6.1%})")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    root = Path(rec.MEASUREMENTS_DIR)
    if argv[:1] == ["constants"]:
        _print_constants(root)
        return 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
