"""ZeRO-3 under pipeline parallelism counts a rank's gradients when they are alive (s26mem round 2,
step.ADOPT_FSDP_PP_GRADS_WHEN_BORN): a stage's unsharded FP32 accumulators from its first backward
(FSDP2's to_accumulated_grad_if_needed under pipelining's no-sync), the sharded gradients only after
the step's last backward (torchtitan zeroes them, set to None, before the pipeline). On torchtitan's
405B rows, counted by hand from the memory functions."""

import pytest

from calibration.published_runs import load_runs, scenario_of
from twin.costs import memory
from twin.training import step
from twin.training.results import Perturb

RUNS = {r.id: r for r in load_runs()[0]}


def _mems(row: str, switch: bool, monkeypatch) -> tuple:
    monkeypatch.setattr(step, "ADOPT_FSDP_PP_GRADS_WHEN_BORN", switch)
    sc = scenario_of(RUNS[row])
    _, costs, _, mems, totals, worst = step._costs_and_memory(sc, None, Perturb())
    return sc, costs, mems, totals, worst


def _layer_bytes(sc) -> tuple[float, float]:
    """(saved activations of one layer and micro-batch, its parameters on a rank): 405B's blocks are alike."""
    m, p = sc.model, sc.plan
    return (memory.activation_bytes(m, True, p, step.local_tokens(sc)),
            memory.block_params_on_gpu(m, True, p.tp, p.ep).total)


def test_an_interleaved_chunks_accumulators_are_born_at_its_first_backward(monkeypatch):
    # rank 1 holds stages 1 and 9 (8 layers each) and runs all 16 forwards before any backward
    # (warm-up (V-1) M + 2 (PP-1-1) >= 16): stage 9's 8 backwards first (its accumulators born with
    # all 16 micro-batch sets saved), then stage 1's (both stages' accumulators, 8 sets left)
    sc, costs, mems, _, _ = _mems("tt-405b-3d-interleaved", True, monkeypatch)
    assert [len(costs.layers[costs.schedule.stage_of(1, c)]) for c in (0, 1)] == [8, 8]
    act, params = _layer_bytes(sc)
    acc = 8 * params * memory.GRAD_BYTES   # one stage's FP32 accumulators
    peak_acts, peak_acc = max([(16 * 8 * act, acc), (8 * 8 * act, 2 * acc)], key=sum)
    got = mems[1]
    assert got["gradients"] == 0.0
    assert got["activations"] == pytest.approx(peak_acts)
    assert got["fsdp_gathered"] == pytest.approx(16 * params * memory.WEIGHT_BYTES + peak_acc)


def test_1f1b_keeps_its_first_backwards_count_less_the_sharded_gradients(monkeypatch):
    # one stage a rank: its accumulators are born at its first backward, beside every set its warm-up
    # saved, as counted before; only the sharded gradients (not alive in the pipeline) leave the peak
    *_, mems_off, totals_off, worst_off = _mems("tt-405b-3d-1f1b", False, monkeypatch)
    *_, mems_on, totals_on, worst_on = _mems("tt-405b-3d-1f1b", True, monkeypatch)
    assert worst_on == worst_off
    for off, on, t_off, t_on in zip(mems_off, mems_on, totals_off, totals_on):
        assert off["gradients"] > 0 and on["gradients"] == 0.0
        assert t_on == pytest.approx(t_off - off["gradients"])


def test_the_interleaved_rows_last_rank_peaks_in_its_cooldown_not_at_the_loss(monkeypatch):
    # rank 7 (stages 7 and 15): at the loss only stage 15's accumulators exist; stage 7's are born in
    # the cooldown, beside its 8 saved sets, and that instant is the larger
    sc, costs, mems, totals, worst = _mems("tt-405b-3d-interleaved", True, monkeypatch)
    act, params = _layer_bytes(sc)
    assert worst == 7 and "loss" not in mems[7]
    assert mems[7]["activations"] == pytest.approx(8 * 8 * act)
    # every accumulator is alive there too: the count loses the sharded gradients, stage 15's one set
    # (7 layers) and the loss's working set beyond the recomputed block, which it had beside them
    *_, mems_off, totals_off, worst_off = _mems("tt-405b-3d-interleaved", False, monkeypatch)
    assert worst_off == 7 and mems_off[7]["loss"] > 0
    assert totals[7] == pytest.approx(totals_off[7] - mems_off[7]["gradients"] - 7 * act - mems_off[7]["loss"])


def test_without_pp_one_micro_batch_holds_no_sharded_gradient_at_its_peak(monkeypatch):
    # FSDP2 reduce-scatters block by block in the backward, after the forward's peak; torchtitan zeroes
    # the previous step's (set to None) before the step: the peak loses exactly the sharded gradients
    monkeypatch.setattr(step, "ADOPT_FSDP_GRADS_WHEN_BORN_WITHOUT_PP", False)
    *_, mems_off, totals_off, _ = _mems("tt-8b-fsdp8", True, monkeypatch)
    monkeypatch.setattr(step, "ADOPT_FSDP_GRADS_WHEN_BORN_WITHOUT_PP", True)
    sc, _, mems_on, totals_on, _ = _mems("tt-8b-fsdp8", True, monkeypatch)
    assert sc.num_microbatches == 1 and sc.plan.pp == 1
    assert mems_off[0]["gradients"] > 0 and mems_on[0]["gradients"] == 0.0
    assert totals_on[0] == pytest.approx(totals_off[0] - mems_off[0]["gradients"])
    assert {k: v for k, v in mems_on[0].items() if k != "gradients"} == {
        k: v for k, v in mems_off[0].items() if k != "gradients"}


def test_without_pp_a_second_micro_batch_forwards_beside_the_firsts_sharded_gradients(monkeypatch):
    import dataclasses
    monkeypatch.setattr(step, "ADOPT_FSDP_GRADS_WHEN_BORN_WITHOUT_PP", True)
    sc = scenario_of(RUNS["tt-8b-fsdp8"])
    sc = dataclasses.replace(sc, plan=dataclasses.replace(sc.plan, micro_batch_seqs=1))
    assert sc.num_microbatches == 2
    _, _, _, mems, _, _ = step._costs_and_memory(sc, None, Perturb())
    assert mems[0]["gradients"] > 0
