"""The flat batch sizes real/serve's start-up warm-up runs eagerly before its first recorded run (issue 15,
s17srv2; docs/notes/s17srv2_rule.md).

`python -m real.serve` (cli.py main) captures the decode graphs, then runs the plan's `warmup` loads
(`run_load` of each, untimed and unrecorded) before its runs. Which sizes a warm-up runs follows from the
scheduler alone (Engine.schedule, the closed loop's seeded requests), except where its wall clock stops the
closed loop issuing (load_s): this module replays the warm-up loads through the real Engine with the model
stubbed out and a clock that advances a fixed `iteration_s` per iteration, so the count of finished warm-up
requests (what cli.py logs: "warm-up warmup-short: 92 requests") picks the timing.

`common_sizes` keeps the sizes every replay whose finished count lies in a logged range runs: the sizes the
warm-up certainly ran on every logged session, whatever its speed. One GPU: the iterations with a prompt
(decode-only ones replay the captured graphs); under EP (no graphs) every iteration of the rank.
"""

from __future__ import annotations

import types

import torch

from real.serve.engine import Engine, EngineConfig
from real.serve.loadgen import make_arrivals, run_load
from real.serve.plans import PLANS


class _Clock:
    def __init__(self):
        self.now_s = 0.0

    def __call__(self) -> float:
        return self.now_s


def _stub_model(max_context: int):
    """What Engine reads of a model: its spec's cache shape (1-wide: only pages are counted), rope length,
    device and dtype, and no EP layers."""
    spec = types.SimpleNamespace(num_layers=1, kv_lora_rank=1, qk_rope_head_dim=1)
    return types.SimpleNamespace(spec=spec, cos_LR=torch.zeros(max_context, 1),
                                 embed_YD=types.SimpleNamespace(weight=torch.zeros(1, dtype=torch.bfloat16)),
                                 moe_layers=lambda: [])


class _ReplayEngine(Engine):
    """The real scheduler and bookkeeping; the forward replaced by zeros and a clock step."""

    def __init__(self, cfg: EngineConfig, iteration_s: float, graphs: bool):
        super().__init__(_stub_model(cfg.max_context), cfg, clock=_Clock())
        self.iteration_s, self.replays_graphs, self.eager_sizes = iteration_s, graphs, []

    def _run(self, plan):
        emitting = len(plan.decode) + sum(1 for r, n in plan.prefill if r.num_prefilled + n == r.input_len)
        self.clock.now_s += self.iteration_s
        if plan.prefill or not self.replays_graphs:
            self.eager_sizes.append(len(plan.decode) + sum(n for _, n in plan.prefill))
        return torch.zeros(emitting, dtype=torch.long), 0


def replay(plan_name: str, iteration_s: float, rank: int = 0, world: int = 1) -> list[tuple[str, int, list[int]]]:
    """Per warm-up load of the plan: (name, requests finished, eager flat sizes in order) of one rank."""
    plan = PLANS[plan_name]
    cfg = EngineConfig(page_size=plan.page_size, num_pages=plan.num_pages, token_budget=plan.token_budget,
                       max_running=plan.max_running, max_context=plan.max_context, cuda_graphs=True)
    engine = _ReplayEngine(cfg, iteration_s, graphs=world == 1)
    out = []
    for run in plan.warmup:
        engine.eager_sizes = []
        run_load(engine, make_arrivals(run, 1000, rank, world), run.max_duration_s, None)
        out.append((run.name, len(engine.finished), list(engine.eager_sizes)))
    return out


def common_sizes(plan_name: str, world: int, finished_range: tuple[int, int],
                 iteration_grid_s: tuple[float, ...]) -> tuple[tuple[int, ...], ...]:
    """Per rank, the sorted eager sizes of every replay (iteration_s on the grid) whose first warm-up load
    finished a count of requests within `finished_range` (rank 0, as cli.py logs it)."""
    per_rank: list[set | None] = [None] * world
    for iteration_s in iteration_grid_s:
        replays = [replay(plan_name, iteration_s, rank, world) for rank in range(world)]
        lo, hi = finished_range
        if not lo <= replays[0][0][1] <= hi:
            continue
        for rank, loads in enumerate(replays):
            sizes = {n for _, _, ss in loads for n in ss}
            per_rank[rank] = sizes if per_rank[rank] is None else per_rank[rank] & sizes
    return tuple(tuple(sorted(s or ())) for s in per_rank)
