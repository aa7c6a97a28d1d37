"""The GRPO stage: rollouts on the serving twin, extra forward passes and the policy update."""

import dataclasses
import json
from pathlib import Path

import pytest

import twin
from twin.core.errors import InfeasiblePlan, ScenarioError
from twin.core.run_specs import GrpoSpec
from twin.training.replay.rollout import generation_lengths, grpo_step

ROOT = Path(__file__).resolve().parents[3]
SMALL = GrpoSpec(prompts_per_step=4, samples_per_prompt=4, steps_per_rollout=2, gen_len_mean=300.0, gen_len_max=1024)


@pytest.fixture(scope="module")
def v3():
    return twin.load_scenario()


def test_step_is_rollout_plus_passes_plus_update(v3):
    r = grpo_step(v3, SMALL, train_step_s=10.0, stage_tokens_per_step=1e6)
    # update: 10 s x (16 outputs x (256 + 300) tokens) / 1e6 tokens; reference + old-policy forwards: 2 x 1/3 of it
    assert r["update_s"] == pytest.approx(10.0 * 16 * 556 / 1e6)
    assert r["forward_s"] == pytest.approx(r["update_s"] * 2 / 3)
    assert r["step_s"] == pytest.approx(r["rollout_s"] + r["update_s"] + r["forward_s"])
    # one rollout (2 steps' outputs) over 2,048 / 32 = 64 instances: 1 request each, and the rollout
    # lasts as long as the longest generation on an instance
    assert r["rollout_instances"] == 64 and r["rollout_requests_per_instance"] == 1
    assert r["rollout_s"] == pytest.approx(r["rollout_makespan_s"] / 2)


def test_longer_generations_and_more_passes_cost_more(v3):
    base = grpo_step(v3, SMALL, 10.0, 1e6)
    longer = grpo_step(v3, dataclasses.replace(SMALL, gen_len_mean=600.0), 10.0, 1e6)
    no_ref = grpo_step(v3, dataclasses.replace(SMALL, reference_forward=False), 10.0, 1e6)
    assert longer["rollout_s"] > 1.5 * base["rollout_s"]
    assert no_ref["forward_s"] == pytest.approx(base["forward_s"] / 2)


def test_generation_lengths_follow_the_spec():
    g = dataclasses.replace(SMALL, gen_len_mean=2000.0, gen_len_cv=0.5, gen_len_max=2500)
    x = generation_lengths(g, 4000)
    assert x.max() == 2500 and x.min() >= 1
    assert generation_lengths(dataclasses.replace(g, gen_len_cv=0.0), 3).tolist() == [2000, 2000, 2000]


def test_rollout_instances_must_divide_the_cluster(v3):
    with pytest.raises(InfeasiblePlan, match="rollout_gpus = 48"):
        grpo_step(v3, dataclasses.replace(SMALL, rollout_gpus=48), 10.0, 1e6)


def test_the_v3_rl_stage_is_grpo_not_an_overhead_factor(v3):
    rl = next(s for s in v3.run.stages if s.name == "rl")
    assert rl.grpo is not None and rl.overhead_factor == 1.0
    assert (rl.grpo.prompts_per_step, rl.grpo.samples_per_prompt, rl.grpo.gen_len_max) == (32, 16, 32768)


def test_bad_grpo_field_is_named():
    with pytest.raises(ScenarioError, match=r"run\.stages\[0\]\.grpo\.samples_per_prompt.*got 0"):
        twin.load_scenario(ROOT / "scenarios" / "r1_zero_rl.toml", ["run.stages=[{name='x', steps=1, grpo={samples_per_prompt=0}}]"])


def test_an_rl_stage_whose_rollouts_cannot_run_is_an_infeasible_stage(tmp_path, capsys):
    """grpo.rollout_gpus that does not divide the stage's GPUs ended the whole replay with no report and
    no JSON (`twin replay --json` wrote nothing) until s21walk: the stage is infeasible, the rest runs,
    the command exits 3 with the reason, the report and the JSON."""
    from twin.cli.main import main
    scenario = tmp_path / "tiny_rl.toml"
    scenario.write_text("""name = "tiny-rl"
[model]
name = "tiny"
[cluster]
gpu = "h800"
num_gpus = 8
[plan]
pp = 2
ep = 4
[workload]
seq_len = 512
global_batch_seqs = 32
[uncertainty]
num_samples = 100
[[run.stages]]
name = "pretrain"
tokens = 1e9
seq_len = 512
global_batch_seqs = 32
[[run.stages]]
name = "rl"
tokens = 1e6
seq_len = 512
global_batch_seqs = 32
[run.stages.grpo]
rollout_gpus = 32
""")
    code = main(["replay", str(scenario), "--quiet", "--out", str(tmp_path / "out"), "--json", str(tmp_path / "r.json")])
    assert code == 3
    err = capsys.readouterr().err
    assert "infeasible: stage rl: GRPO rollouts: grpo.rollout_gpus = 32 does not divide the stage's 8 GPUs" in err
    result = json.loads((tmp_path / "r.json").read_text())
    assert result["complete"] is False
    assert [s["feasible"] for s in result["stages"]] == [True, False]
    assert (tmp_path / "out" / "report.html").is_file()
