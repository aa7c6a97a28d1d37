"""DeepSeek's day prefill taken apart (docs/notes/s23deep_rule.md part 2; figures in its outcome): the unit's
forward by component at the day's and the profile's conditions, the day row over the busiest hour's load with
TTFT, and the sensitivities the note sizes (conditions the day does not publish; none is adopted):
prompt-length spread (lognormal CVs), no cache hits, smaller forwards, and, given local copies of Kimi's
public traces (kvcache-ai/Mooncake@3b5a594 FAST25-release/traces/*.jsonl: 512-token prefix blocks), the unit
under each trace's prompt-length and prefix-hit shape scaled to the day's 4,384-token mean against every
prompt alike at the same mean and hit share.

Run: PYTHONPATH=. python benchmarks/s23deep_prefill.py [--trace PATH.jsonl ...]
"""
from __future__ import annotations

import argparse
import json

import numpy as np

from twin.core.scenario import SERVING, load_scenario, packaged_scenario
from twin.serving.published import (DEEPSEEK_PREFILL_SCENARIO, DEEPSEEK_PROFILE_PREFILL_CONDITIONS,
                                    deepseek_day_rows, deepseek_prefill_components, deepseek_prefill_over_load)
from twin.serving.simulate import simulate
from twin.serving.workload import from_records

BLOCK_TOKENS = 512   # the Mooncake traces' prefix block (FAST25-release/README.md)
SENSITIVITIES = (("lognormal prompt lengths, CV 1", ('traffic.input_dist="lognormal"', "traffic.input_cv=1.0")),
                 ("lognormal prompt lengths, CV 2", ('traffic.input_dist="lognormal"', "traffic.input_cv=2.0")),
                 ("no cache hits", ("traffic.prefix_hit_frac=0",)),
                 ("8K tokens per GPU per forward", ("serve.prefill_chunk_tokens=8192",)),
                 ("4K tokens per GPU per forward", ("serve.prefill_chunk_tokens=4096",)))


def fully_loaded(overrides=()) -> float:
    return simulate(load_scenario(packaged_scenario(DEEPSEEK_PREFILL_SCENARIO), list(overrides), SERVING)).input_tokens_per_s_per_node


def trace_prompts(path: str) -> tuple[np.ndarray, np.ndarray]:
    """(prompt lengths, cached tokens) of a Mooncake trace: a prompt's cached tokens are its leading prefix
    blocks seen in an earlier request (an unbounded cache, as DeepSeek's on-disk one), at most length - 1."""
    seen: set = set()
    lengths, cached = [], []
    with open(path) as f:
        for line in f:
            r = json.loads(line)
            hit = 0
            for block in r["hash_ids"]:
                if block not in seen:
                    break
                hit += 1
            seen.update(r["hash_ids"])
            lengths.append(r["input_length"])
            cached.append(min(hit * BLOCK_TOKENS, r["input_length"] - 1))
    return np.array(lengths, dtype=float), np.array(cached, dtype=float)


def trace_ratio(path: str) -> dict:
    """The unit fully loaded (closed loop) under the trace's shape scaled to the scenario's mean prompt, over
    the same with every prompt alike at that mean and the trace's hit share."""
    sc = load_scenario(packaged_scenario(DEEPSEEK_PREFILL_SCENARIO), kind=SERVING)
    lengths, cached = trace_prompts(path)
    k = sc.serve.input_len / lengths.mean()
    isl = np.maximum(2, np.round(lengths * k)).astype(int)
    hit = np.minimum(np.round(cached * k).astype(int), isl - 1)
    ones = np.ones_like(isl)
    shaped = simulate(sc, requests=from_records(None, isl, ones, sc.traffic, hit)).input_tokens_per_s_per_node
    share = hit.sum() / isl.sum()
    alike_hit = np.full(len(isl), int(sc.serve.input_len * share))
    alike = simulate(sc, requests=from_records(None, np.full(len(isl), sc.serve.input_len), ones, sc.traffic,
                                               alike_hit)).input_tokens_per_s_per_node
    return {"requests": len(isl), "length_cv": float(lengths.std() / lengths.mean()), "hit_share": float(share),
            "shaped_per_node": shaped, "alike_per_node": alike, "ratio": shaped / alike}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--trace", nargs="*", default=[])
    args = ap.parse_args(argv)
    for label, over in (("day", ()), ("profile", DEEPSEEK_PROFILE_PREFILL_CONDITIONS)):
        c = deepseek_prefill_components(over)
        print(f"== {label}: {c['conditions']}")
        print(f"   forward + prefix {c['total_s'] * 1e3:.1f} ms; {c['input_tokens_per_s_per_node']:,.0f} input "
              f"({c['computed_tokens_per_s_per_node']:,.0f} computed) tok/s per node; all-to-all {c['all_to_all_s'] * 1e3:.0f} ms, "
              f"{c['all_to_all_hidden_s'] * 1e3:.0f} hidden")
        for k, v in c["components_s"].items():
            print(f"   {k:24s} {v * 1e3:8.1f} ms {v / c['total_s']:6.1%} {c['node_us_per_input_token'][k]:6.3f} node-us/input token")
    row = deepseek_day_rows()[0]
    curve = deepseek_prefill_over_load(day_row=row)
    print(f"== day row {row['predicted']:,.0f} ({row['rel_error']:+.1%}); meets 73.7k at busiest-hour load "
          f"{curve['published_at_load_frac']:.3f}, within 15% over {curve['within_15_percent_load_frac'][0]:.3f}-"
          f"{curve['within_15_percent_load_frac'][1]:.3f}")
    for q in curve["points"]:
        print(f"   load {q['busiest_hour_load_frac']:.2f}: {q['predicted']:,.0f} ({q['rel_error']:+.1%}); TTFT P50/P99 "
              f"Poisson {q['poisson_ttft_p50_s']:.2f}/{q['poisson_ttft_p99_s']:.2f} s, bursty "
              f"{q['gamma_ttft_p50_s']:.2f}/{q['gamma_ttft_p99_s']:.2f} s")
    base = fully_loaded()
    print(f"== fully loaded unit {base:,.0f} input tok/s per node; sensitivities (x the day row if it scaled alike):")
    for label, over in SENSITIVITIES:
        x = fully_loaded(over)
        print(f"   {label}: {x:,.0f} ({x / base:.3f}x; day row {row['predicted'] * x / base:,.0f}, "
              f"{row['predicted'] * x / base / row['claimed'] - 1:+.1%})")
    for path in args.trace:
        r = trace_ratio(path)
        print(f"   {path}: {r['requests']} prompts, length CV {r['length_cv']:.2f}, hit share {r['hit_share']:.3f}: "
              f"{r['shaped_per_node']:,.0f} against {r['alike_per_node']:,.0f} alike, {r['ratio']:.3f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
