"""ZeRO-3 keeps no BF16 shard beside the FP32 master where memory.ADOPT_FSDP_NO_BF16_SHARD (docs/notes/
s27mlm2_rule.md, candidate A): torch FSDP2 casts its FP32 shard into each all-gather's input. Both
settings: the "weights" component only moves, under ZeRO-3 only, and the step's time does not."""

import pytest

from calibration.published_runs import load_runs, scenario_of
from twin.costs import memory
from twin.training import step
from twin.training.results import Perturb

RUNS = {r.id: r for r in load_runs()[0]}


def _mems(row: str, switch: bool, monkeypatch):
    monkeypatch.setattr(memory, "ADOPT_FSDP_NO_BF16_SHARD", switch)
    sc = scenario_of(RUNS[row])
    return sc, step._costs_and_memory(sc, None, Perturb())[3]


def test_zero3_drops_only_its_bf16_shard(monkeypatch):
    sc, off = _mems("tt-8b-fsdp8", False, monkeypatch)
    _, on = _mems("tt-8b-fsdp8", True, monkeypatch)
    assert sc.plan.zero_stage == 3
    shard_params = off[0]["optimizer"] / sc.plan.optimizer_bytes_per_param
    assert off[0]["weights"] == pytest.approx(shard_params * memory.WEIGHT_BYTES)
    assert on[0]["weights"] == 0.0
    assert {k: v for k, v in on[0].items() if k != "weights"} == {k: v for k, v in off[0].items() if k != "weights"}
    # the parameters a rank holds are read the same either way (the optimizer tail's sizes)
    assert memory.weight_params(on[0], sc.plan) == pytest.approx(memory.weight_params(off[0], sc.plan))
    assert memory.weight_params(off[0], sc.plan) == pytest.approx(off[0]["weights"] / memory.WEIGHT_BYTES)


def test_zero1_keeps_its_bf16_weights(monkeypatch):
    _, off = _mems("mlm-gpt-7.1b", False, monkeypatch)
    _, on = _mems("mlm-gpt-7.1b", True, monkeypatch)
    assert on == off and on[0]["weights"] > 0


def test_the_step_time_does_not_move(monkeypatch):
    run = RUNS["tt-8b-fsdp8"]
    times = []
    for switch in (False, True):
        monkeypatch.setattr(memory, "ADOPT_FSDP_NO_BF16_SHARD", switch)
        times.append(step.simulate_step(scenario_of(run), record_events=False).step_time_s)
    assert times[0] == times[1]
