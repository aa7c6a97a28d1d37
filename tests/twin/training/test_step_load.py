import dataclasses

import pytest

from twin.costs.flops import ExpertLoad
from twin.training.balance import pretrain_steps
from twin.moe.load import LoadModel
from twin.moe.placement import scenario_layer_loads
from twin.training.results import Perturb
from twin.training.step import simulate_step


def _step(sc, imb):
    return simulate_step(sc, perturb=Perturb(routing_imbalance=imb), record_events=False, check_memory=False).step_time_s


def test_balanced_load_model_reproduces_todays_step_exactly(v3):
    loads = scenario_layer_loads(v3, LoadModel("balanced"))
    assert _step(v3, loads) == simulate_step(v3, record_events=False).step_time_s


def test_step_time_monotone_in_imbalance(v3):
    n = v3.model.num_layers
    times = [_step(v3, [ExpertLoad(r, r, 1 + (r - 1) / 2)] * n) for r in (1.0, 1.2, 1.5, 2.0)]
    assert all(a < b for a, b in zip(times, times[1:]))
    # the scalar knob still works and equals the per-layer form with equal ratios
    assert _step(v3, 1.5) == pytest.approx(_step(v3, [ExpertLoad(1.5, 1.5, 1.5)] * n))


def test_skewed_model_slower_and_scenario_section_hook(v3):
    loads = scenario_layer_loads(v3, LoadModel("measured"))
    assert _step(v3, loads) > simulate_step(v3, record_events=False).step_time_s
    assert pretrain_steps(v3) == pytest.approx(14.8e12 / (4096 * 15360))


def test_moe_section_drives_simulate_step(v3):
    from twin.core.moe_specs import MoeLoadSpec

    @dataclasses.dataclass(frozen=True)
    class WithMoe:  # stands in for Scenario until the lead registers the [moe] section
        base: object
        moe: MoeLoadSpec

        def __getattr__(self, name):
            return getattr(self.base, name)

    from twin.training.step import routing_loads
    assert routing_loads(WithMoe(v3, MoeLoadSpec())) == v3.workload.routing_imbalance
    loads = routing_loads(WithMoe(v3, MoeLoadSpec(load_model="measured")))
    assert loads[0] == 1.0 and loads[-1].rows_frac > 1.2
    assert routing_loads(WithMoe(v3, MoeLoadSpec(load_model="measured")), Perturb(routing_imbalance=1.3)) == 1.3


def test_balance_of_a_dense_model_exits_2_naming_the_field(tmp_path, capsys):
    """`twin balance` on a dense model ended in an IndexError traceback until s21walk."""
    from twin.cli.main import main
    argv = ["balance", "--quiet", "--set", 'model.name="llama3-8b"', "--set", "cluster.num_gpus=8", "--set", "plan.pp=2",
            "--set", "plan.ep=1", "--set", "plan.comm_sms=0", "--set", 'plan.schedule="1f1b"', "--set", "workload.global_batch_seqs=32",
            "--out", str(tmp_path / "report")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: model.num_routed_experts: got 0; allowed: > 0: `twin balance` weighs the expert load")
    assert not (tmp_path / "report").exists()
