"""calibration.lease_probe and the two s28pp4 switches (docs/notes/s28pp4_rule.md): F4 (F's pool on four-GPU pricing
only) and P (a probed lease's rate): their scope (F4 adds the pooled key to `h200x4` inputs and never to `h200x2`'s;
P's key only where lease_probe puts it, and then every EP forward at it, ep 1 unmoved), the registered predictions
against the rule's table and P's monotone dependence on the probe, the verdict's arithmetic on a small table, bad
input. The judgement of the delivery: test_s28pp4_judgement.py."""

import pandas as pd
import pytest

import calibration.pipeline as pipe
from calibration import lease_probe as lp
from calibration import prereg
from calibration.records_io import read_csv
from tests import lease_inputs


@pytest.fixture(scope="module")
def cache():
    return lease_inputs.x4_cache()   # lp.inputs_of's, base and F4 (tests/lease_inputs.py: once a run)


def test_the_switches_are_as_the_rule_decided():
    """s28pp4's outcome: P adopted, F4 not (at most one)."""
    assert pipe.ADOPT_EP_FORWARD_HOST_X4 is False and pipe.ADOPT_EP_FORWARD_LEASE is True


def test_f4_adds_the_pool_to_four_gpu_inputs_only(cache):
    base = cache["base"][2]
    assert pipe.EP_FWD_POOLED_KEY not in base and pipe.EP_FWD_LEASE_KEY not in base
    with lp.setting("F4"):
        x2 = prereg.two_gpu_inputs("h200", num_gpus=2)
    assert pipe.EP_FWD_POOLED_KEY not in x2[2]          # s27epfwd's 2-GPU pricing stays as judged
    # what two_gpu_inputs adds on four GPUs (the key, F's h200x4 pool) without recomputing the folder
    assert pipe.EP_FWD_POOLED_HOST_S["h200x4"] == pytest.approx(26.7235e-6)


def test_p_carries_the_probed_rate_and_gives_it_to_every_ep_forward(cache):
    host = lp.inputs_of("P", 31e-6, cache=cache)[2]
    assert host[pipe.EP_FWD_LEASE_KEY] == 31e-6
    assert {k: v for k, v in host.items() if k != pipe.EP_FWD_LEASE_KEY} == cache["base"][2]
    assert pipe.ep_forward_at({"fwd": 1.0, "fwd@first": 2.0, f"{pipe.FB_FORWARD}@last": 3.0, "bwd": 4.0}, 5.0) == {
        "fwd": 5.0, "bwd": 4.0}
    with pytest.raises(ValueError):
        lp.inputs_of("P", None, cache=cache)


def test_registered_predictions_are_the_rule_s_and_p_rises_with_the_probe():
    reg = read_csv(lp.PREDICTIONS_FILE)
    assert len(reg) == 36 and reg["code_commit"].nunique() == 1
    r = reg.set_index(["part", "pp", "schedule", "num_microbatches"])
    # the rule's table (ms): qwen3-2k pp2ep2 1F1B at 8, base / F4 / P at 25 us
    row = r.loc[("qwen3-2k", 2, "1f1b", 8)]
    assert (row["predicted_base_s"], row["predicted_F4_s"], row["predicted_P25us_s"]) == pytest.approx(
        (0.3739, 0.4210, 0.4128), abs=6e-5)
    grid = [f"predicted_P{x * 1e6:.0f}us_s" for x in lp.P_GRID_S]
    ep = reg[reg["ep"] > 1]
    assert (ep[grid].diff(axis=1).iloc[:, 1:] > 0).all().all()          # a slower lease, a longer step
    ctrl = reg[reg["ep"] == 1]
    assert (ctrl[grid + ["predicted_F4_s"]].sub(ctrl["predicted_base_s"], axis=0) == 0).all().all()


def test_one_pp2ep2_row_live_under_p_at_a_grid_rate_is_the_registered_one(cache):
    reg = read_csv(lp.PREDICTIONS_FILE)
    row = next(r for r in lp.case_rows() if r["part"] == "qwen3g-3k" and r["pp"] == 2 and r["num_microbatches"] == 8
               and r["schedule"] == "dualpipev")
    live = lp.predict([row], "P", 30e-6, cache=cache)["predicted_s"].iloc[0]
    want = reg[(reg["part"] == "qwen3g-3k") & (reg["pp"] == 2) & (reg["num_microbatches"] == 8)
               & (reg["schedule"] == "dualpipev")]["predicted_P30us_s"].iloc[0]
    assert live == pytest.approx(want, rel=1e-9)


def _table(base, f4, p, ctrl_move=0.0):
    rows = []
    for i, (b, f, q) in enumerate(zip(base, f4, p)):
        rows.append({"part": "x", "model": "qwen3moe-mla-slice", "schedule": lp.SCHEDULES[i % 4], "pp": 2, "ep": 2,
                     "num_microbatches": 8 + 4 * (i // 4), "time_s": 1.0, "step_times_s": [1.0] * 4,
                     "measured_idle_s": {}, "predicted_base_s": 1 + b, "rel_error_base": b, "idle_base": {},
                     "predicted_F4_s": 1 + f, "rel_error_F4": f, "idle_F4": {},
                     "predicted_P_s": 1 + q, "rel_error_P": q, "idle_P": {}})
    rows.append({**rows[0], "pp": 4, "ep": 1, "predicted_F4_s": rows[0]["predicted_base_s"] + ctrl_move,
                 "predicted_P_s": rows[0]["predicted_base_s"]})
    return pd.DataFrame(rows)


def test_the_verdict_adopts_at_most_one_by_the_rule():
    n = 12
    t = _table([-0.15] * n, [-0.05] * n, [-0.02] * n)
    v = lp.verdict(t, {"rate_s": 30e-6, "ops": 100})
    assert v["F4"]["pass"] and v["P"]["pass"] and v["adopt"] == "P"
    # the control moved: F4 fails R4
    v = lp.verdict(_table([-0.15] * n, [-0.05] * n, [-0.2] * n, ctrl_move=0.01), {"rate_s": 3e-5, "ops": 100})
    assert not v["F4"]["r4"] and not v["P"]["r1"] and v["adopt"] is None
    # fewer than 12 pp2ep2 rows: not judged
    v = lp.verdict(_table([-0.15] * 8, [-0.05] * 8, [-0.02] * 8), {"rate_s": 3e-5, "ops": 100})
    assert not v["judged"] and v["adopt"] is None


def test_bad_input_exits_2_with_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        lp.main(["judge", str(tmp_path / "nope")])
    assert e.value.code == 2 and "nope" in capsys.readouterr().err
