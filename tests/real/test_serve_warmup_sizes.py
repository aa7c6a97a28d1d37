"""(s17srv2, docs/notes/s17srv2_rule.md) real/serve/warmup.py replays a plan's start-up warm-up loads through
the real scheduler (forward stubbed, a clock stepping per iteration): the sizes the twin counts as run before a
session's first run (calibration.serve_load_validation.WARMUP_SIZES) are the replays' common sizes."""

import calibration.serve_load_validation as slv
from real.serve.plans import PLANS
from real.serve.warmup import common_sizes, replay


def test_the_committed_warmup_sizes_are_the_replays_common_sizes():
    for ep, plan in ((1, "gpu1"), (2, "ep2")):
        assert common_sizes(plan, ep, slv.WARMUP_FINISHED[ep], slv.WARMUP_GRID) == slv.WARMUP_SIZES[ep]


def test_a_slow_warmup_issues_no_second_request_and_a_fast_one_many():
    slow, fast = replay("gpu1", 0.06), replay("gpu1", 0.005)
    short = PLANS["gpu1"].warmup[0]
    assert slow[0][1] == short.concurrency   # the first iterations alone outlast load_s: no re-issue
    assert fast[0][1] > 4 * short.concurrency
    # the first iteration fills the token budget with prompts (chunked prefill), whatever the speed
    assert slow[0][2][0] == fast[0][2][0] == PLANS["gpu1"].token_budget
    # one GPU: decode-only iterations replay graphs, so every size counted had a prompt (> its decode rows)
    assert set(common_sizes("gpu1", 1, (64, 64), (0.06,))[0]) <= set(slow[0][2]) | set(slow[1][2])


def test_under_ep_every_iteration_is_eager_and_each_rank_replays_its_own_requests():
    r0, r1 = replay("ep2", 0.06, 0, 2), replay("ep2", 0.06, 1, 2)
    assert r0[0][1] == r1[0][1] == PLANS["ep2"].warmup[0].concurrency // 2
    assert min(r0[0][2]) < 16 and r0[0][2] != r1[0][2]   # decode-only sizes counted; the ranks' requests differ
