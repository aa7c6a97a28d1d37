"""Per-op SAC under torch.compile keeps only what the backward reads where
memory.ADOPT_COMPILED_SAC_NEEDED_ONLY (docs/notes/s28tt_rule.md, candidate C): a compiled block
('fused_blocks') keeps nothing of the linears whose output only the residual add reads (Llama's w2 /
ffn_down: one hidden-width BF16 tensor a token a block). Both settings: only the compiled selective_op
plan's activations move, by exactly that tensor; eager SAC, other recompute modes and the 'fused' stack
stay; the step's time does not move."""

import dataclasses

import pytest

from calibration.published_runs import load_runs, scenario_of
from twin.costs import memory
from twin.costs.flops import BF16_BYTES
from twin.training import step
from twin.training.results import Perturb

RUNS = {r.id: r for r in load_runs()[0]}


def _per_token(row: str, switch: bool, monkeypatch, **plan):
    monkeypatch.setattr(memory, "ADOPT_COMPILED_SAC_NEEDED_ONLY", switch)
    sc = scenario_of(RUNS[row])
    p = dataclasses.replace(sc.plan, **plan)
    return memory.activation_bytes_per_token(sc.model, True, p), sc.model


def test_a_compiled_block_drops_the_residual_only_linear(monkeypatch):
    off, m = _per_token("tt-8b-fsdp8-compile", False, monkeypatch)
    on, _ = _per_token("tt-8b-fsdp8-compile", True, monkeypatch)
    assert off == 63616.0   # block input, wq, wv, attention output + log-sum-exp, w1, w2 (Llama 3.1 8B, TP 1)
    assert off - on == m.hidden_size * BF16_BYTES   # w2's output, 8,192 B


@pytest.mark.parametrize("plan", [dict(kernels="eager"), dict(kernels="fused"), dict(recompute="none"),
                                  dict(recompute="full"), dict(recompute="selective")])
def test_other_stacks_and_modes_do_not_move(plan, monkeypatch):
    off, _ = _per_token("tt-8b-fsdp8-compile", False, monkeypatch, **plan)
    on, _ = _per_token("tt-8b-fsdp8-compile", True, monkeypatch, **plan)
    assert on == off


def test_the_step_time_does_not_move(monkeypatch):
    sc = scenario_of(RUNS["tt-8b-fsdp8-compile"])
    monkeypatch.setattr(memory, "ADOPT_COMPILED_SAC_NEEDED_ONLY", False)
    off = step.simulate_step(sc, record_events=False)
    monkeypatch.setattr(memory, "ADOPT_COMPILED_SAC_NEEDED_ONLY", True)
    on = step.simulate_step(sc, record_events=False)
    assert on.step_time_s == off.step_time_s and on.op_time_s == off.op_time_s
    tokens = sc.plan.micro_batch_seqs * sc.workload.seq_len
    drop = off.memory_breakdown_bytes["activations"] - on.memory_breakdown_bytes["activations"]
    assert drop == pytest.approx(sc.model.num_layers * tokens * sc.model.hidden_size * BF16_BYTES)
    # the block re-created in the backward (what 'none' keeps less what the plan keeps) grows by the same
    # tensor, inside the loss's larger working set at the peak: their sum, and every other part, stay
    moved = ("activations", "recompute", "loss")
    assert {k: v for k, v in on.memory_breakdown_bytes.items() if k not in moved} == \
        {k: v for k, v in off.memory_breakdown_bytes.items() if k not in moved}
    assert on.memory_breakdown_bytes["recompute"] - off.memory_breakdown_bytes["recompute"] == \
        pytest.approx(tokens * sc.model.hidden_size * BF16_BYTES)
    assert on.memory_breakdown_bytes["recompute"] + on.memory_breakdown_bytes["loss"] == \
        pytest.approx(off.memory_breakdown_bytes["recompute"] + off.memory_breakdown_bytes["loss"])
    assert off.memory_per_gpu_bytes - on.memory_per_gpu_bytes == pytest.approx(drop)
    assert step._costs_and_memory(sc, None, Perturb())[3][0]["activations"] == on.memory_breakdown_bytes["activations"]
