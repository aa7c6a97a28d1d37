"""Published serving figures against the request simulation, under their published conditions.

DeepSeek's production figures (open-infra-index day 6) are predicted by the two scenarios that state
those conditions (scenarios/r1_serve_h800_prefill.toml, r1_serve_h800_decode.toml): the error is
reported whatever it is, never fitted.

NVIDIA's 3,872 tokens/s on one HGX H200 was published without its conditions, so it is not one
number to hit: `h200_curve` simulates output tokens/s per node over concurrency and lengths (closed
loop, R1 on one HGX H200, the default serving scenario) and `crossings` reads off the conditions
under which the curve reaches it.
"""

from __future__ import annotations

from dataclasses import dataclass

from twin.core.scenario import SERVING, load_scenario
from twin.serving.simulate import simulate

H200_CLAIM_TOKENS_PER_S = 3872.0     # twin/data/serving_claims.toml h200.nim_3872
CURVE_CONCURRENCY = (1, 4, 16, 32, 64, 128, 256)
CURVE_LENGTHS = ((1024, 1024), (1024, 256), (4096, 1024), (256, 2048))   # (ISL, OSL)


@dataclass(frozen=True)
class CurvePoint:
    """One closed-loop simulation of the H200 node: `concurrency` clients at (input_len, output_len)."""

    input_len: int
    output_len: int
    concurrency: int
    output_tokens_per_s_per_node: float
    tpot_p50_s: float
    ttft_p50_s: float
    preemptions: int


def h200_curve(concurrency=CURVE_CONCURRENCY, lengths=CURVE_LENGTHS, waves: int = 3, overrides=()) -> tuple[CurvePoint, ...]:
    """Output tokens/s per node of R1 on one HGX H200 over concurrency and lengths (each point
    simulates `waves` x concurrency requests, at least 8)."""
    rows = []
    for isl, osl in lengths:
        for c in concurrency:
            sc = load_scenario(None, [f"serve.input_len={isl}", f"serve.output_len={osl}", 'traffic.arrival="closed"',
                                      f"traffic.concurrency={c}", *overrides], SERVING)
            r = simulate(sc, num_requests=max(8, waves * c))
            rows.append(CurvePoint(isl, osl, c, r.output_tokens_per_s_per_node, r.tpot_s.p50, r.ttft_s.p50, r.preemptions))
    return tuple(rows)


def crossings(points: tuple[CurvePoint, ...], target: float = H200_CLAIM_TOKENS_PER_S) -> list[dict]:
    """Per length pair, the concurrency at which the curve first reaches `target` (interpolated
    linearly between simulated points), or None where it never does."""
    out = []
    for isl, osl in sorted({(p.input_len, p.output_len) for p in points}, key=lambda x: (x[0], x[1])):
        row = sorted((p for p in points if (p.input_len, p.output_len) == (isl, osl)), key=lambda p: p.concurrency)
        hit = None
        for a, b in zip(row, row[1:]):
            if a.output_tokens_per_s_per_node < target <= b.output_tokens_per_s_per_node:
                f = (target - a.output_tokens_per_s_per_node) / (b.output_tokens_per_s_per_node - a.output_tokens_per_s_per_node)
                hit = {"concurrency": a.concurrency + f * (b.concurrency - a.concurrency),
                       "tpot_s": a.tpot_p50_s + f * (b.tpot_p50_s - a.tpot_p50_s)}
                break
        if row and row[0].output_tokens_per_s_per_node >= target:
            hit = {"concurrency": float(row[0].concurrency), "tpot_s": row[0].tpot_p50_s}
        out.append({"input_len": isl, "output_len": osl, "reaches": hit is not None,
                    "max_tokens_per_s_per_node": max(p.output_tokens_per_s_per_node for p in row),
                    **({"concurrency": hit["concurrency"], "tpot_s": hit["tpot_s"]} if hit else {})})
    return out


def deepseek_production(root) -> list[dict]:
    """DeepSeek's prefill and decode figures beside the twin's, from the two scenarios under `root`."""
    rows = []
    for name in ("r1_serve_h800_prefill", "r1_serve_h800_decode"):
        sc = load_scenario(root / "scenarios" / f"{name}.toml", kind=SERVING)
        r = simulate(sc)
        metric = "input_tokens_per_s_per_node" if "prefill" in name else "output_tokens_per_s_per_node"
        claimed = 73_700.0 if "prefill" in name else 14_800.0
        pred = getattr(r, metric)
        rows.append({"scenario": name, "metric": metric, "claimed": claimed, "predicted": pred,
                     "rel_error": pred / claimed - 1.0, "concurrency": r.concurrency, "tpot_p50_s": r.tpot_s.p50,
                     "ttft_p50_s": r.ttft_s.p50, "output_tokens_per_s_per_request": r.output_tokens_per_s_per_request})
    return rows
