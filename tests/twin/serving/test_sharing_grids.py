"""twin.serving.timing.sharing_grids: replays of one scenario share their iteration-time grid (and, s32ci, the
engine-table iterations priced) inside a block and give the figures each replay gives with a grid of its own
(calibration.serve_load_validation's predict_run replays every load run under SPREAD_SEEDS seeds inside one)."""

import dataclasses
import json

import numpy as np

import twin.serving.timing as timing
from calibration.serve_load_validation import scenario_for
from twin.core.scenario import SERVING, load_scenario
from twin.serving.engine import _Draws
from twin.serving.simulate import simulate
from twin.serving.timing import IterationCosts, sharing_grids, sharing_iterations
from twin.serving.workload import from_records


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


RUN = {"run_id": "r", "split": "fit", "arrival": "poisson", "rate_per_s": "40", "concurrency": "0",
       "model": "v3-slice-2l", "precision": "bf16", "num_gpus": "1", "ep_size": "1", "attention_parallel": "dp",
       "page_size": "64", "num_pages": "4096", "token_budget": "2048", "max_running": "64",
       "cuda_graphs": "1", "graph_batch_buckets": "1 2 4 8 16 32 64", "graph_page_buckets": "1 2 4 8 16 33",
       "gpu_name": "NVIDIA H200"}


def _engine_replay(seed: int):
    """A recorded-run replay on the committed H200 table (engine terms, its measured spread drawn per seed)."""
    sc = scenario_for(RUN)
    sc = dataclasses.replace(sc, traffic=dataclasses.replace(sc.traffic, seed=seed))
    rng = np.random.default_rng(3)
    n = 60
    reqs = from_records(np.cumsum(rng.exponential(1 / 40, n)), rng.integers(128, 512, n), np.full(n, 32), sc.traffic)
    return simulate(sc, requests=reqs)


def test_engine_table_replays_look_up_the_iterations_another_seed_priced_and_give_its_figures(monkeypatch):
    """(s32ci) Inside a sharing_iterations() block an engine-table iteration priced by one seed's replay is looked
    up by the next (IterationCosts._iteration_engine_s' memo): fewer iterations priced, the same figures to the bit;
    nothing kept outside the block."""
    priced = []
    real = timing.IterationCosts._priced_iteration_s
    monkeypatch.setattr(timing.IterationCosts, "_priced_iteration_s",
                        lambda self, *a: priced.append(1) or real(self, *a))
    alone = [_figures(_engine_replay(seed)) for seed in range(3)]
    priced_alone, priced[:] = len(priced), []
    with sharing_grids(), sharing_iterations():
        shared = [_figures(_engine_replay(seed)) for seed in range(3)]
    assert shared == alone
    assert alone[0] != alone[1]
    assert 0 < len(priced) < priced_alone
    assert timing._SHARED_ITERATIONS.kept is None
    sc = scenario_for(RUN)
    assert IterationCosts(sc.model, sc.gpu, sc.serve)._iterations is None
    print(f"iterations priced: {priced_alone} alone, {len(priced)} in a block")


def test_a_decode_runs_draws_are_the_generators_as_drawn_at_once():
    """engine._Draws: draw i is rng.random(n)'s i-th, and once finished the generator stands where rng.random(n)
    left it (the next draw the same), however few of the n were used."""
    for n, used in [(4096, 1), (4096, 3), (4096, 4096), (37, 17), (16, 16), (1, 1), (100, 0)]:
        at_once, lazy = np.random.default_rng([5, 15]), np.random.default_rng([5, 15])
        want = at_once.random(n).tolist()
        draws = _Draws(lazy, n)
        assert [draws.at(i) for i in range(used)] == want[:used]
        draws.finish()
        assert lazy.bit_generator.state == at_once.bit_generator.state
        assert lazy.random() == at_once.random()
