"""twin.serving.timing.sharing_grids: replays of one scenario share their iteration-time grid inside a
block and give the figures each replay gives with a grid of its own (calibration.serve_load_validation's
predict_run replays every load run under SPREAD_SEEDS seeds inside one)."""

import dataclasses
import json

import numpy as np

import twin.serving.timing as timing
from twin.core.scenario import SERVING, load_scenario
from twin.serving.simulate import simulate
from twin.serving.timing import IterationCosts, sharing_grids


def _scenario(seed: int):
    sc = load_scenario(None, ['traffic.arrival="poisson"', "traffic.rate_per_s=4.0", "traffic.num_requests=60",
                              "serve.input_len=2048", "serve.output_len=64"], SERVING)
    return dataclasses.replace(sc, traffic=dataclasses.replace(sc.traffic, seed=seed))


def _figures(result) -> str:
    """Every field of the result but grid_points (inside a block: the shared grid's count), arrays as
    lists, floats written exactly (repr)."""
    fields = {k: v for k, v in dataclasses.asdict(result).items() if k != "grid_points"}
    return json.dumps(fields, sort_keys=True, default=lambda v: v.tolist() if isinstance(v, np.ndarray) else repr(v))


def test_replays_in_a_block_give_each_replays_own_figures_to_the_bit():
    alone = [_figures(simulate(_scenario(seed))) for seed in range(3)]
    with sharing_grids():
        shared = [_figures(simulate(_scenario(seed))) for seed in range(3)]
    assert shared == alone
    assert alone[0] != alone[1]      # the seeds draw other arrivals: the comparison is not of one run


def test_costs_of_one_scenario_share_their_grid_only_inside_a_block(monkeypatch):
    sc = _scenario(0)
    a, b = IterationCosts(sc.model, sc.gpu, sc.serve), IterationCosts(sc.model, sc.gpu, sc.serve)
    assert a._prefill is not b._prefill
    calls = []
    real = timing.prefill_forward
    monkeypatch.setattr(timing, "prefill_forward", lambda *args, **kw: calls.append(1) or real(*args, **kw))
    with sharing_grids():
        first, second = IterationCosts(sc.model, sc.gpu, sc.serve), IterationCosts(sc.model, sc.gpu, sc.serve)
        other = IterationCosts(sc.model, sc.gpu, dataclasses.replace(sc.serve, input_len=4096))
        assert first._prefill is second._prefill and first.decode_parts is second.decode_parts
        assert other._prefill is not first._prefill          # another serve spec: a grid of its own
        t = first.iteration_s(4, 1500.0, 2048, 2048)
        computed = len(calls)
        assert computed > 0
        assert second.iteration_s(4, 1500.0, 2048, 2048) == t
        assert len(calls) == computed                         # the second found every point computed
    assert timing._SHARED_GRIDS.kept is None                   # nothing kept after the block
    assert IterationCosts(sc.model, sc.gpu, sc.serve)._prefill == {}
