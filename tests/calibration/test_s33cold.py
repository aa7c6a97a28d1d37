"""Session s33cold (docs/notes/s33cold_rule.md): candidate S, the per-step cold charge (a look-up per flat size first met
in a warmed process's life plus kernel_s per GEMM kernel first launched on the model's map). Its constants come from
fitting records alone; its replay path is s32kern's ColdKernels, handed to a warmed one-GPU H200 session's runs with the
process's history carried from run to run."""

import pytest

from calibration import s33cold as s
from calibration import serve_eager_host as seh
from calibration import serve_load_validation as slv
from calibration.records_io import json_exists, read_json
from tests.calibration.conftest import assert_cold_judgement, cold_run_replayed
from twin.serving import engine


def test_fit_recomputes_the_committed_constants_from_the_fitting_records():
    got, committed = s.fit(), read_json(s.FIT_FILE)
    assert got["points"] == committed["points"] and got["warmup_sizes"] == committed["warmup_sizes"]
    for k in ("kernel_s", "lookup_s"):
        assert got[k]["h200"] == pytest.approx(committed[k]["h200"], rel=1e-6)
    assert set(committed["processes"]) == {name for name, _, _ in s.FIT_PROCESSES}
    # both terms pinned by the fitting records (more than 2 standard errors)
    assert all(committed[k]["h200"] > 2 * se for k, se in zip(("kernel_s", "lookup_s"), committed["se_s"]))
    assert not engine.ADOPT_COLD_STEPS or json_exists(s.JUDGEMENT_FILE)


def test_s_hands_its_constants_to_a_warmed_session_and_carries_the_process_history(monkeypatch):
    def runs(ep=1):
        base = {"model": "v3-slice-1l", "gpu_name": "NVIDIA H200", "ep_size": ep, "token_budget": 2048,
                "duration_s": 5}
        return [{**base, "run_id": "a", "warm_shapes": 352, "timestamp_utc": "2026-11-29T06:00:00Z"},
                {**base, "run_id": "b", "warm_shapes": 0, "timestamp_utc": "2026-11-29T06:00:06Z"}]
    its = [{"run_id": "a", "graph_batch": 0, "prefill_tokens": 700, "decode_seqs": 2, "rank": 0}]

    def cold(rs):
        return {k: [x for x in v if isinstance(x, engine.ColdKernels)] for k, v in slv.sizes_run_before(rs, its).items()}
    monkeypatch.setattr(engine, "ADOPT_COLD_STEPS", False)
    assert cold(runs()) == {"a": [], "b": []}   # off: nothing
    with s.candidate():
        got = cold(runs())
        (a,), (b,) = got["a"], got["b"]
        fit = read_json(s.FIT_FILE)
        assert (a.kernel_s, a.lookup_s) == (fit["kernel_s"]["h200"], fit["lookup_s"]["h200"]) and a.lookup_s > 0
        assert 352 in a.met and 353 not in a.met and 702 not in a.met and 702 in b.met   # r5 then r40: r5's met
        assert all(v == [] for v in cold(runs(ep=2)).values())
    # per step: one look-up per size new to the process, kernel_s per kernel first launched
    kmap = (frozenset(), frozenset({0}), frozenset({0, 1}), frozenset({2, 3}))
    ck = engine.ColdKernels(kmap, {1}, 2e-3, 1e-3)
    state = type("St", (), {"cold": ck, "cold_launched": set(ck.launched), "cold_met": set(ck.met)})()
    charge = engine.Instance._cold_kernel_charge
    assert charge(state, [2]) == pytest.approx(3e-3) and charge(state, [2]) == 0.0
    assert charge(state, [3]) == pytest.approx(5e-3) and charge(state, [1]) == 0.0


def test_rule_twin_sets_back_off_what_was_adopted_since_the_rule(monkeypatch):
    """Amendment 1: T is the twin in force at the judging commit; the rule's own T is reported beside it."""
    from twin.serving import timing
    monkeypatch.setattr(timing, "ADOPT_EAGER_WARMTH", False, raising=False)
    assert s.t_changed() == []
    monkeypatch.setattr(timing, "ADOPT_EAGER_WARMTH", True)
    assert s.t_changed() == ["twin.serving.timing.ADOPT_EAGER_WARMTH"]
    with s.rule_twin():
        assert timing.ADOPT_EAGER_WARMTH is False and s.t_changed() == []
    assert timing.ADOPT_EAGER_WARMTH is True


JUDGEMENT = read_json(s.JUDGEMENT_FILE)
RUN = "r33-v3s1l-closed-first-c15-r"


def test_the_judgement_is_its_commands_and_its_verdict_follows_the_criteria():
    assert s.JUDGED == "S"
    assert_cold_judgement(JUDGEMENT, s,
                          ("R1_four_more_checks_lower_median", "R2_first_run_ttft_p50_no_fewer_lower_median"),
                          "ADOPT_COLD_STEPS", exact=True)


def test_one_set_r_run_replayed_live_is_the_judgements(monkeypatch):
    """One loop-first process's first run under both settings (a few CPU-s): the same errors as the judgement file."""
    cold_run_replayed(monkeypatch, JUDGEMENT, s, "ADOPT_COLD_STEPS", RUN)


@pytest.mark.xfail(strict=True, reason="s33cold: candidate S not adopted (R1 missed on set R; G2 missed on sets I and L; "
                                       "docs/notes/s33cold.md)")
def test_candidate_s_adopted():
    a, b = (seh.checks(JUDGEMENT["J"][k]) for k in ("None", s.JUDGED))
    (ea, eb) = JUDGEMENT["early"]
    failed = [k for k, v in JUDGEMENT["criteria"].items() if not v]
    assert JUDGEMENT["adopt"] == s.JUDGED, (
        f"set R (H200, 120 checks): in force {a[0]} met, median {a[1]:.2%} -> S {b[0]}, {b[1]:.2%}; first runs' TTFT "
        f"P50 {ea[0]} -> {eb[0]} met, median {ea[1]:.2%} -> {eb[1]:.2%}; failed: {', '.join(failed)}")
