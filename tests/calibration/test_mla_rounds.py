"""calibration.mla_rounds (s14mla): the held-out MLA records and the fitting MLA host rows of one
run, each at its fastest round, and calibration.validate's replacement of the held-out records."""

import dataclasses
from pathlib import Path

import pandas as pd
import pytest

from calibration import mla_rounds as mr
from calibration.predict import gpu_spec, predict_s
from calibration.records_io import csv_bytes
from twin.costs.profile import fitted_profile

ROOT = Path(__file__).resolve().parents[2]
PILOT = ROOT / "calibration/measurements/h100/s9mla_paired/mla_paired.csv"
RATES = {"fwd": 25e-6, "bwd": 30e-6, "infer": 20e-6}    # the fitting row's host s a kernel at speed 1
RECORDS = [("v2-lite-slice", 4, 1024, "bf16"), ("v2-lite-slice", 1, 4096, "bf16")]


def _run(fit_speeds: list[float], rec_speeds: list[list[float]]) -> pd.DataFrame:
    """TEST FIXTURE (not measurements): rounds whose fitting host rows run at fit_speeds[round] and
    whose records run at rec_speeds[round][i]; each record's time is the twin's own prediction with
    the fitting row's rates at its speed (a host-bound record follows its host)."""
    prof, spec = fitted_profile("h100"), gpu_spec("h100")
    rows = []
    for rnd, (fs, rs) in enumerate(zip(fit_speeds, rec_speeds)):
        for phase in ("fwd", "infer", "bwd"):
            kernels = 46 if phase == "bwd" else 30
            rows.append({"bench": "host_dispatch", "round": rnd, "pair": 2 * rnd, "config": "mla_layer v3-slice-1l b1 s1024",
                         "phase": phase, "model": "v3-slice-1l", "batch": 1, "seq_len": 1024, "precision": "bf16",
                         "split": "fit", "profiled": "phase", "kernels": kernels, "host_s": kernels * RATES[phase] * fs,
                         "gpu_name": "NVIDIA H100 80GB HBM3"})
        for (m, b, s, label), speed in zip(RECORDS, rs):
            p = dataclasses.replace(prof, eager={**prof.eager, "host_s": {k: v * speed for k, v in RATES.items()}})
            for bench in ("mla_layer_fwd", "mla_layer_bwd"):
                r = {"bench": bench, "round": rnd, "pair": 2 * rnd, "model": m, "batch": b, "seq_len": s, "num_heads": 16,
                     "qk_head_dim": 192, "v_head_dim": 128, "causal": True, "precision": label, "split": "holdout",
                     "gpu_name": "NVIDIA H100 80GB HBM3"}
                r["time_s"] = predict_s(pd.Series({**r, "tokens": b * s}), spec, p)
                rows.append(r)
    df = pd.DataFrame(rows)
    return df.assign(tokens=df["batch"] * df["seq_len"])


def test_fastest_rounds_recover_a_two_state_host_and_median_rounds_do_not():
    # the host is fast (1.0) or slow (1.6) per item and round, as on h100/s9mla_paired
    run = _run([1.6, 1.0, 1.6, 1.6], [[1.0, 1.6], [1.6, 1.0], [1.0, 1.6], [1.6, 1.6]])
    prof = fitted_profile("h100")
    assert mr.run_rates(run, "h100", prof)["fwd"] == pytest.approx(RATES["fwd"])
    fastest = mr.held_out_summary(mr.predicted_records(run, "h100", prof))
    median = mr.held_out_summary(mr.predicted_records(run, "h100", prof, "median", "median"))
    assert fastest["num_cases"] == 4 and fastest["p90_abs_rel_error"] < 1e-6
    assert median["p90_abs_rel_error"] > 0.1


def test_complete_rounds_need_every_record_and_host_row():
    run = _run([1.0, 1.0, 1.0], [[1.0, 1.0]] * 3)
    assert mr.complete_rounds(run) == [0, 1, 2]
    cut = run.drop(run[(run["round"] == 1) & (run["bench"] == "mla_layer_bwd")].index[:1])
    assert mr.complete_rounds(cut) == [0, 2]
    cut = run.drop(run[(run["round"] == 2) & (run["phase"] == "infer")].index)
    assert mr.complete_rounds(cut) == [0, 1]
    with pytest.raises(ValueError):
        mr._pick(run, mr.RECORD_KEY, "time_s", "mean")


def _case(name, held, err=0.2, kind="mla_layer"):
    return {"name": name, "kind": kind, "held_out": held, "rel_error": err}


def test_with_rounds_replaces_only_the_held_out_records_it_has(monkeypatch):
    cases = [_case("a", True), _case("b", True), _case("v3", False), _case("m", True, kind="moe_layer")]
    rounds = {"valid": True, "cases": [_case("a", True, 0.01), _case("v3", False, 0.0)]}
    out = mr.with_rounds(cases, rounds)
    assert sorted((c["name"], c["rel_error"]) for c in out) == [("a", 0.01), ("b", 0.2), ("m", 0.2), ("v3", 0.2)]
    assert mr.with_rounds(cases, {**rounds, "valid": False}) == cases
    assert mr.with_rounds(cases, None) == cases
    monkeypatch.setattr(mr, "USE_MLA_ROUNDS", False)
    assert mr.with_rounds(cases, rounds) == cases


def test_committed_rounds_on_a_committed_run(tmp_path):
    # h100/s9mla_paired (8 rounds, one H100) laid out as a committed ROUNDS_FILE
    (tmp_path / "h100").mkdir()
    (tmp_path / "h100" / mr.ROUNDS_FILE).write_bytes(csv_bytes(PILOT))   # the pilot is committed gzipped
    prof = fitted_profile("h100")
    got = mr.committed_rounds(tmp_path, "h100", prof)
    assert got["rounds"] == 8 and got["valid"]
    held = [c for c in got["cases"] if c["held_out"]]
    assert len(held) == 12 and all("v2-lite-slice" in c["name"] for c in held)
    assert set(got["rates"]) == {"fwd", "bwd", "infer"}
    # on another GPU's name the run is not valid (the rule's point 1)
    (tmp_path / "h200").mkdir()
    (tmp_path / "h200" / mr.ROUNDS_FILE).write_bytes(csv_bytes(PILOT))
    assert not mr.committed_rounds(tmp_path, "h200", fitted_profile("h200"))["valid"]


# ---- s14mla2: the per-operator backward host rate (ADOPT_ROUNDS_PER_OP), both settings ----------
OPS = {"bf16": 83, "fp8-blockwise": 365}   # V3-slice's backward operators (host_dispatch.csv's counts)


def _with_backward_ops(run: pd.DataFrame, host_bwd_s: dict) -> pd.DataFrame:
    """TEST FIXTURE: the run's fitting rows given operator counts, and an FP8 backward row per round
    at host_bwd_s["fp8-blockwise"] x the round's BF16 speed; the BF16 backward rows' host_s kept."""
    run = run.assign(aten_ops=float("nan"))
    bwd = (run["bench"] == "host_dispatch") & (run["phase"] == "bwd")
    run.loc[bwd, "aten_ops"] = OPS["bf16"]
    fp8 = run[bwd].copy()
    fp8["precision"], fp8["aten_ops"] = "fp8-blockwise", OPS["fp8-blockwise"]
    fp8["host_s"] = fp8["host_s"] / fp8["host_s"].min() * host_bwd_s["fp8-blockwise"]
    return pd.concat([run, fp8], ignore_index=True)


def test_run_host_per_op_is_the_fastest_backward_rows_host_over_its_operators():
    run = _with_backward_ops(_run([1.6, 1.0, 1.3], [[1.0, 1.0]] * 3), {"fp8-blockwise": 6e-3})
    got = mr.run_host_per_op(run)
    assert got == {"mla_layer_bwd/bf16": pytest.approx(46 * RATES["bwd"] / OPS["bf16"]),
                   "mla_layer_bwd/fp8": pytest.approx(6e-3 / OPS["fp8-blockwise"])}
    # the median round is a slower one
    assert mr.run_host_per_op(run, "median")["mla_layer_bwd/bf16"] > got["mla_layer_bwd/bf16"]


def _host_s(ops) -> float:
    return sum(op[0] or 0.0 for op in ops)


def test_the_term_sets_a_backwards_host_and_leaves_the_forward(monkeypatch):
    from calibration.predict import mla_layer_ops
    from twin.core.specs import get_model
    run = _with_backward_ops(_run([1.0, 1.2], [[1.0, 1.0]] * 2), {"fp8-blockwise": 6e-3})
    prof, spec = fitted_profile("h100"), gpu_spec("h100")
    counts = {"mla_layer_bwd/bf16/v2-lite-slice": 73, "mla_layer_bwd/fp8/v2-lite-slice": 297}
    off, on = mr.run_profile(run, "h100", prof), mr.run_profile(run, "h100", prof, op_counts=counts)
    assert "host_s_per_op" not in off.eager and on.eager["aten_ops"] == counts
    m = get_model("v2-lite-slice")
    for label, n, rate in (("bf16", 73, 46 * RATES["bwd"] / 83), ("fp8-blockwise", 297, 6e-3 / 365)):
        f_off, b_off = mla_layer_ops(m, 1, 4096, label, spec, off)
        f_on, b_on = mla_layer_ops(m, 1, 4096, label, spec, on)
        assert _host_s(b_on.ops + b_on.w_ops) == pytest.approx(n * rate)           # rate x operators
        assert _host_s(b_on.ops + b_on.w_ops) != pytest.approx(_host_s(b_off.ops + b_off.w_ops))
        assert _host_s(f_on.ops) == pytest.approx(_host_s(f_off.ops))              # forwards: per kernel
    # a host-bound backward record's prediction moves with the term, a forward's does not
    recs_off = mr.predicted_records(run, "h100", prof).set_index(["bench", "batch", "seq_len"])["predicted_s"]
    recs_on = mr.predicted_records(run, "h100", prof, op_counts=counts).set_index(["bench", "batch", "seq_len"])["predicted_s"]
    assert recs_on[("mla_layer_fwd", 1, 4096)] == pytest.approx(recs_off[("mla_layer_fwd", 1, 4096)])
    assert recs_on[("mla_layer_bwd", 1, 4096)] != pytest.approx(recs_off[("mla_layer_bwd", 1, 4096)], rel=1e-3)


def test_committed_rounds_follow_the_switch(tmp_path, monkeypatch):
    (tmp_path / "h100").mkdir()
    run = _with_backward_ops(_run([1.0, 1.2], [[1.0, 1.0]] * 2), {"fp8-blockwise": 6e-3})
    run.to_csv(tmp_path / "h100" / mr.ROUNDS_FILE, index=False)
    hd = pd.DataFrame([{"bench": "host_dispatch", "config": "mla_layer v2-lite-slice b1 s1024", "phase": "bwd",
                        "model": "v2-lite-slice", "precision": p, "split": "holdout", "host_s": 1e-3, "kernels": 40,
                        "aten_ops": n} for p, n in (("bf16", 73), ("fp8-blockwise", 297))])
    hd.to_csv(tmp_path / "h100" / "host_dispatch.csv", index=False)
    assert mr.committed_op_counts(tmp_path, "h100") == {"mla_layer_bwd/bf16/v2-lite-slice": 73,
                                                         "mla_layer_bwd/fp8/v2-lite-slice": 297}
    prof = fitted_profile("h100")
    errors = {}
    monkeypatch.setattr(mr, "ADOPT_ROUND_PAIRED", False)    # the two are not combined
    for setting in (False, True):
        monkeypatch.setattr(mr, "ADOPT_ROUNDS_PER_OP", setting)
        got = mr.committed_rounds(tmp_path, "h100", prof)
        assert any(k.startswith("per_op/") for k in got["rates"]) == setting
        errors[setting] = {c["name"]: c["rel_error"] for c in got["cases"]}
    moved = {n for n in errors[False] if errors[False][n] != pytest.approx(errors[True][n], abs=1e-9)}
    assert moved and all("bwd" in n for n in moved)


def test_the_committed_state_leaves_the_term_off_and_pairs_rounds():
    # s14mla2's rule left the per-operator term off; s15mla's adopted the round-paired estimator
    # (docs/notes/s14mla2_rule.md, s15mla_rule.md): the committed run's cases are real rounds of it
    got = mr.committed_rounds(mr.rec.MEASUREMENTS_DIR, "h100", fitted_profile("h100"))
    assert got is not None and got["valid"] and got["rounds"] >= mr.MIN_ROUNDS
    assert not mr.ADOPT_ROUNDS_PER_OP and not any(k.startswith("per_op/") for k in got["rates"])
    assert mr.ADOPT_ROUND_PAIRED
    run = mr.host_probe.load_paired(mr.rec.MEASUREMENTS_DIR / "h100" / mr.ROUNDS_FILE)
    per_round = mr.paired_records(run, "h100", fitted_profile("h100"))
    held = {c["name"]: c for c in got["cases"] if c["held_out"]}
    assert len(held) == 12
    for _, g in per_round[per_round["held_out"]].groupby(mr.RECORD_KEY):
        errors = sorted(g["rel_error"])
        case = next(c for c in held.values() if c["measured_s"] in set(g["time_s"]))
        assert case["rel_error"] == pytest.approx(errors[(len(errors) - 1) // 2])


# ---- s15mla: the round-paired estimator (ADOPT_ROUND_PAIRED), both settings ---------------------
def test_round_paired_cancels_the_rounds_host_state_and_shrugs_off_a_wild_round():
    # both sides of a round share its host speed (1.0 .. 1.6), except round 4 whose records caught
    # the fast state while its fitting rows ran slow
    speeds = [1.6, 1.3, 1.6, 1.2, 1.6]
    run = _run(speeds, [[s, s] for s in speeds[:4]] + [[1.0, 1.0]])
    prof = fitted_profile("h100")
    per_round = mr.paired_records(run, "h100", prof)
    assert sorted(per_round["round"].unique()) == [0, 1, 2, 3, 4] and len(per_round) == 5 * 4
    errors = per_round.set_index("round")["rel_error"].abs()
    assert errors.loc[[0, 1, 2, 3]].max() < 1e-6 and errors.loc[4].min() > 0.05   # the wild round errs
    cases = mr.median_error_rounds(per_round)
    assert len(cases) == 4 and cases["rel_error"].abs().max() < 1e-6 and 4 not in set(cases["round"])
    assert mr.paired_rates(per_round)["fwd"] == pytest.approx(RATES["fwd"] * 1.6)
    # each side at its fastest round pairs round 4's fast records with round 3's fitting rows: wrong
    fastest = mr.held_out_summary(mr.predicted_records(run, "h100", prof))
    assert fastest["p90_abs_rel_error"] > 0.05


def test_median_error_round_is_the_lower_median_and_keeps_both_sides_of_that_round():
    per_round = pd.DataFrame({"bench": "mla_layer_fwd", "model": "m", "batch": 1, "seq_len": 8, "precision": "bf16",
                              "round": [0, 1, 2, 3], "time_s": [1.0, 2.0, 3.0, 4.0],
                              "predicted_s": [1.3, 1.8, 3.3, 4.0], "rel_error": [0.3, -0.1, 0.1, 0.0]})
    got = mr.median_error_rounds(per_round)
    assert got["round"].tolist() == [3] and got["predicted_s"].tolist() == [4.0] and got["time_s"].tolist() == [4.0]


def test_committed_rounds_follow_the_paired_switch(tmp_path, monkeypatch):
    (tmp_path / "h100").mkdir()
    speeds = [1.6, 1.3, 1.6, 1.2, 1.6]
    _run(speeds, [[s, s] for s in speeds[:4]] + [[1.0, 1.0]]).to_csv(tmp_path / "h100" / mr.ROUNDS_FILE, index=False)
    prof = fitted_profile("h100")
    errors = {}
    for setting in (False, True):
        monkeypatch.setattr(mr, "ADOPT_ROUND_PAIRED", setting)
        got = mr.committed_rounds(tmp_path, "h100", prof)
        assert got["valid"] is False and got["rounds"] == 5     # fewer than MIN_ROUNDS
        errors[setting] = max(abs(c["rel_error"]) for c in got["cases"] if c["held_out"])
        assert got["rates"]["fwd"] == pytest.approx(RATES["fwd"] * (1.6 if setting else 1.2))
    assert errors[True] < 1e-6 < 0.05 < errors[False]
    with pytest.raises(ValueError):
        mr.committed_rounds(tmp_path, "h100", prof, per_op=True, paired=True)


def test_half_summaries_split_the_complete_rounds_in_two():
    speeds = [1.6, 1.3, 1.6, 1.2, 1.6]
    run = _run(speeds, [[s, s] for s in speeds[:4]] + [[1.0, 1.0]])
    first, second = mr.half_summaries(mr.paired_records(run, "h100", fitted_profile("h100")))
    # the first half (rounds 0, 1) is all same-state; the second (2, 3, 4) holds the wild round 4,
    # outvoted by its two same-state rounds
    assert first["num_cases"] == second["num_cases"] == 4
    assert first["p90_abs_rel_error"] < 1e-6 and second["p90_abs_rel_error"] < 1e-6
    # rounds 3 and 4 alone: a half each, the wild one on its own
    first, second = mr.half_summaries(mr.paired_records(run[run["round"] >= 3], "h100", fitted_profile("h100")))
    assert first["p90_abs_rel_error"] < 1e-6 and second["p90_abs_rel_error"] > 0.05
