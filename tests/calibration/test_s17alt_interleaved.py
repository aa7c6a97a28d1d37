"""s17alt (docs/notes/s17alt_rule.md): the ranking target judged on interleaved steps paired by cycle:
the signed-rank statistics on their own (worked examples and scipy's exact test), each pair's judgement
on synthetic cycles (resolved pairs by sign, ties by the interval, too few cycles undecided), and the
reading of pipeline_interleaved.csv (plain or gzipped) through records_io."""

import gzip
from math import comb

import numpy as np
import pytest

import calibration.interleaved as il
from calibration import records as rec
from calibration.records_io import read_csv
from real.pipeline.engine import cycle_order


def test_signed_rank_null_counts_are_the_subsets_of_ranks_by_their_sum():
    # n = 3: subsets of {1, 2, 3} sum to 0, 1, 2, 3 (twice: {3}, {1, 2}), 4, 5, 6
    assert il.signed_rank_null_counts(3).tolist() == [1, 1, 1, 2, 1, 1, 1]
    for n in (1, 5, 12, 24):
        c = il.signed_rank_null_counts(n)
        assert len(c) == n * (n + 1) // 2 + 1 and c.sum() == 2 ** n and np.array_equal(c, c[::-1])
    assert il.signed_rank_null_counts(4).sum() == sum(comb(4, k) for k in range(5))


def test_walsh_interval_rank_matches_the_exact_tables():
    # two-sided 0.05 critical values of T (reject where T <= k - 1): n = 12: 13, n = 24: 81
    assert il.walsh_interval_rank(12) == 14 and il.walsh_interval_rank(24) == 82
    assert il.walsh_interval_rank(5) == 0   # 5 cycles: smallest two-sided p is 2/32 > 0.05, no interval


def test_signed_rank_p_exact_values():
    assert il.signed_rank_p([0.01] * 12) == pytest.approx(2 / 2 ** 12)   # every cycle one way
    assert il.signed_rank_p([0.0] * 5) == 1.0                            # no difference at all
    # n = 12, T+ = 13: P(T+ <= 13) = 0.021 under the exact null (walsh_interval_rank's worked figure)
    d = [-(i + 1) * 1e-3 for i in range(12)]
    for r in (1, 2, 10):          # ranks 1 + 2 + 10 = 13 positive
        d[r - 1] = -d[r - 1]
    assert il.signed_rank_p(d) == pytest.approx(2 * 0.02124, abs=2e-4)


def test_hodges_lehmann_paired_worked_example_and_interval_inverts_the_test():
    # d = 1, 2, 3: Walsh averages 1, 1.5, 2, 2, 2.5, 3 -> median 2; 3 cycles give no interval
    assert il.hodges_lehmann_paired([1.0, 2.0, 3.0]) == (2.0, -np.inf, np.inf)
    rng = np.random.default_rng(11)
    for shift in (0.0, 0.004, 0.008, 0.02):
        for _ in range(20):
            d = rng.normal(shift, 0.01, 16).tolist()
            g, lo, hi = il.hodges_lehmann_paired(d)
            assert lo <= g <= hi
            # Tukey's interval is the signed-rank test inverted: 0 outside it where p < 0.05 (k's level
            # is <= 0.05, so the interval can be a little wider than the test's edge: never narrower)
            if lo > 0 or hi < 0:
                assert il.signed_rank_p(d) < 0.05


def _cycles(times):
    return dict(enumerate(times))


def test_a_pair_resolved_by_its_cycles_is_met_only_in_the_measured_direction():
    # b 2% over a in every cycle, with a shared host state that swings 10% from cycle to cycle: the
    # pairing removes the swing, so 12 cycles resolve the 2%
    host = np.exp(np.random.default_rng(5).normal(0.0, 0.05, 12))
    jitter = np.exp(np.random.default_rng(6).normal(0.0, 0.002, 12))
    a = _cycles(0.230 * host)
    b = _cycles(0.230 * 1.02 * host * jitter)
    met = il.judge_paired(a, b, twin_gap=0.001)
    assert met["resolved"] and not met["tie"] and met["met"] and met["positive"] == 12
    assert met["lo"] > 0 and met["gap"] == pytest.approx(np.log(1.02), abs=0.003)
    assert not il.judge_paired(a, b, twin_gap=-0.001)["met"]
    assert not il.judge_paired(a, b, twin_gap=0.0)["met"]


def test_a_tie_is_met_where_the_twins_gap_is_inside_the_interval():
    rng = np.random.default_rng(8)
    a = _cycles(np.exp(rng.normal(0.0, 0.01, 16)))
    b = _cycles(np.exp(rng.normal(0.0, 0.01, 16)))
    r = il.judge_paired(a, b, twin_gap=0.0)
    assert r["tie"] and not r["resolved"] and r["lo"] < 0 < r["hi"]
    assert r["met"]                                                   # both orders count inside it
    assert il.judge_paired(a, b, twin_gap=(r["lo"] + r["hi"]) / 2)["met"]
    assert not il.judge_paired(a, b, twin_gap=r["hi"] + 0.001)["met"]  # a gap the cycles exclude
    assert not il.judge_paired(a, b, twin_gap=None)["met"]


def test_fewer_cycles_than_the_floor_leave_the_pair_undecided():
    a = _cycles([1.0] * 11)
    b = _cycles([1.05] * 11)
    r = il.judge_paired(a, b, twin_gap=0.05)
    assert not r["decided"] and not r["met"] and r["cycles"] == 11
    # only cycles holding both count
    r = il.judge_paired(_cycles([1.0] * 14), {c: 1.05 for c in range(3, 14)}, twin_gap=0.05)
    assert r["cycles"] == 11 and not r["decided"]


def test_every_pair_of_a_configuration_is_judged_in_the_measured_order():
    base = {"dualpipe": 0.230, "dualpipev": 0.235, "zb1p": 0.270, "1f1b": 0.290}
    host = np.exp(np.random.default_rng(2).normal(0.0, 0.03, 12))
    steps = {4: {s: _cycles(t * host) for s, t in base.items()}}
    twin = {4: {"dualpipe": 0.220, "dualpipev": 0.221, "zb1p": 0.25, "1f1b": 0.27}}
    (g,) = il.judge_interleaved(steps, twin)
    assert g["measured"] == ["dualpipe", "dualpipev", "zb1p", "1f1b"] == g["predicted"]
    assert len(g["pairs"]) == 6 and g["met"] and g["complete"]
    twin[4]["dualpipev"] = 0.219   # the twin puts DualPipeV first: the resolved pair is lost
    (g,) = il.judge_interleaved(steps, twin)
    assert not g["met"] and [(p["a"], p["b"]) for p in g["pairs"] if not p["met"]] == [("dualpipe", "dualpipev")]
    lines = il.format_interleaved_judgement("h200x4/s17alt_x", [g])
    assert lines[0].startswith("ranking interleaved h200x4/s17alt_x n4: NOT met (5 of 6 pairs)")
    assert any("dualpipev over dualpipe: D +2.15%" in x and "resolved" in x and "NOT met" in x for x in lines)


HEADER = "bench,schedule,pp,num_microbatches,cycle,time_s\n"


@pytest.mark.parametrize("gz", [False, True])
def test_interleaved_steps_are_read_by_cycle_from_plain_or_gzipped_records(tmp_path, gz):
    text = HEADER + "".join(f"pipeline_step,{s},2,{n},{c},{0.2 + 0.01 * c + (s == 'zb1p') * 0.05}\n"
                            for n in (4, 8) for c in range(3) for s in ("dualpipe", "zb1p"))
    text += "ep_step,1f1b,1,2,0,0.1\n"   # pp = 1 rows are no pipeline
    if gz:
        with gzip.open(tmp_path / "pipeline_interleaved.csv.gz", "wt") as f:
            f.write(text)
    else:
        (tmp_path / "pipeline_interleaved.csv").write_text(text)
    got = il.interleaved_steps_by_cycle(tmp_path)
    assert sorted(got) == [4, 8] and sorted(got[4]) == ["dualpipe", "zb1p"]
    assert got[8]["zb1p"] == pytest.approx({0: 0.25, 1: 0.26, 2: 0.27})
    assert il.interleaved_steps_by_cycle(tmp_path / "none") == {}


def test_a_configuration_short_of_a_schedule_or_of_cycles_is_not_complete():
    full = {s: _cycles([0.2 + 0.01 * i] * 12) for i, s in enumerate(sorted(il.INTERLEAVED_SCHEDULES))}
    twin = {s: 0.2 + 0.01 * i for i, s in enumerate(sorted(il.INTERLEAVED_SCHEDULES))}
    (g,) = il.judge_interleaved({4: full}, {4: twin})
    assert g["complete"]
    (g,) = il.judge_interleaved({4: {s: v for s, v in full.items() if s != "zb1p"}}, {4: twin})
    assert not g["complete"]
    short = dict(full, zb1p=_cycles([0.25] * 11))
    (g,) = il.judge_interleaved({4: short}, {4: twin})
    assert not g["complete"] and not g["met"]


@pytest.mark.parametrize("host", sorted(il.INTERLEAVED_FOLDERS))
def test_committed_interleaved_folders_are_complete_deliveries(host):
    """Each named folder is one run of real/campaigns/s17alt.sh: the four schedules at 4 and 8
    micro-batches, >= INTERLEAVED_MIN_CYCLES cycles each holding one step of every schedule in the
    Williams order of its cycle (the campaign's schedule order), its pair_key the cycle's, the
    8-micro-batch rows held out; pipeline_step's time_s the median of the configuration's own steps."""
    folder = rec.MEASUREMENTS_DIR / host / il.INTERLEAVED_FOLDERS[host]
    rows = read_csv(folder / il.INTERLEAVED_FILE)
    steps = read_csv(folder / "pipeline_step.csv")
    names = ["dualpipe", "dualpipev", "1f1b", "zb1p"]   # real/campaigns/s17alt.sh --schedules
    assert sorted(rows["num_microbatches"].unique().tolist()) == [4, 8]
    for n, g in rows.groupby("num_microbatches"):
        cycles = sorted(g["cycle"].unique().tolist())
        assert len(cycles) >= il.INTERLEAVED_MIN_CYCLES and cycles == list(range(len(cycles)))
        for c, cyc in g.groupby("cycle"):
            assert cyc.sort_values("step_index")["schedule"].tolist() == cycle_order(names, int(c))
            layout = f"pp{cyc['pp'].iloc[0]}ep{cyc['ep'].iloc[0]}"   # pp2ep2 on 4 GPUs, pp2ep1 on 2
            assert set(cyc["pair_key"]) == {f"{layout} n{n} c{c}"}
        assert set(g["split"]) == {"holdout" if n == 8 else "fit"}
        for s, mine in g.groupby("schedule"):
            row = steps[(steps["schedule"] == s) & (steps["num_microbatches"] == n)].iloc[0]
            assert row["reps"] == len(mine) and row["time_s"] == pytest.approx(float(np.median(mine["time_s"])), rel=1e-6)
