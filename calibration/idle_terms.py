"""Where the twin's per-rank pipeline idle misses come from, and one term for it (session s25idle,
docs/notes/s25idle_rule.md).

Issue 13 asks each rank's idle within 10% of the measured one. s21pp4's four-GPU deliveries (4xH200)
missed it on 33 of 140 and 15 of 48 rank-rows. Idle is the step span less a rank's op time, on both
sides (calibration.pipeline.measured_idle_s: span of the step's schedule ops less the rank's
compute-op spans; twin.sim.pipeline: makespan less the rank's compute tasks), so a miss is either the
schedule mechanism (dependencies, transfers, the host between ops) or the op durations that feed it.

`replay` separates the two: it runs the twin's own schedule simulation (twin.sim.pipeline through
calibration.pipeline.PipelineCosts' per-op durations) on the measured op durations of a run (each op's
median device span over the timed steps and the data-parallel replicas). Where the replay's idle meets
the measured idle, the mechanism is right and the miss is in the op durations; `replay(..., which=)`
takes the measured durations of some op categories only (category: the op's kind, the role of its
model stage, whether it is its rank's first op) to find which ops carry the miss.

Term S (ADOPT_SEEN_OP_RATIOS, off): each op of a four-GPU pipeline row at the twin's duration times the
median ratio measured / twin of its category over the same model's and layout's seen records
(SEEN_SUBDIRS of the ratios' GPU folder), the schedule then simulated with those durations
(`predict_with_ratios`). It scales op durations toward the op spans of other runs, never idle: idle
follows from the simulation.

    python -m calibration.idle_terms replay [SUBDIR ...]   # seen records: twin vs replayed idle
    python -m calibration.idle_terms fresh                 # the s25idle campaign's rows: baseline, S, replay
"""

from __future__ import annotations

# (model, num_layers, seq_len, {(pp, ep): micro-batch counts}): real/campaigns/s25idle.sh's MODELS in
# its order (a test holds them equal); layouts pp2ep2 then pp4 on four GPUs, one sequence a micro-batch
FRESH_CASES = (("qwen3moe-mla-slice", 8, 4096, {(2, 2): (8,), (4, 1): (12,)}),
               ("mixtral-mla-slice", 8, 2048, {(2, 2): (6,), (4, 1): (12,)}))
FRESH_SUBDIR = "s25idle"   # calibration/measurements/<gpu>x4/s25idle/<model>/
SCHEDULES = ("1f1b", "zb1p", "dualpipev", "dualpipe")
