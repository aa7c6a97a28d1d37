"""calibration.pipe_op_terms (docs/notes/s26pipeop_rule.md): which ranks start with the step (term L's
ops), the per-GPU pace read from a data-parallel probe (term G) and how it reaches a pipeline rank, each
term's op durations, T equal to the baseline without a lead-in and without a probe, the registered
predictions equal to today's code, the mirrored-pair and flip bookkeeping of the verdict's D1 / D2; and the
fresh judgement read back from calibration/s26pipeop_judgement.json (one configuration recomputed by today's
code, the verdict from its sections), its misses kept as strict xfails carrying the figures."""

import numpy as np
import pandas as pd
import pytest

from calibration import idle_terms, pipe_op_terms as po
from calibration import records as rec
from calibration.records_io import read_csv


@pytest.fixture(scope="module")
def inputs():
    return {}


@pytest.mark.parametrize("name, pp, level", [("1f1b", 4, [0]), ("zb1p", 4, [0]), ("dualpipev", 4, [0]),
                                             ("dualpipe", 4, [0, 3]), ("dualpipe", 2, [0, 1]), ("1f1b", 2, [0])])
def test_level_start_ranks_are_those_whose_first_op_is_a_stage_0_forward(name, pp, level):
    schedule = idle_terms.schedule_of({"schedule": name, "pp": pp, "num_microbatches": 8})
    assert [r for r in range(pp) if po.starts_level(schedule, r)] == level


def _probe_ops(scale: dict, reps: int = 3, ops_per_rep: int = 4) -> pd.DataFrame:
    rows = [{"pp": 1, "ep": 1, "rank": g, "rep": rep, "op_index": k, "kind": "F" if k % 2 == 0 else "BW",
             "start_s": 0.0, "end_s": (0.01 + 0.002 * k) * s}
            for rep in range(reps) for k in range(ops_per_rep) for g, s in scale.items()]
    # noise the probe must ignore: a warm-up step, a transfer, an all-reduce, a pipeline configuration
    rows += [{"pp": 1, "ep": 1, "rank": 0, "rep": None, "op_index": 0, "kind": "F", "start_s": 0.0, "end_s": 9.0},
             {"pp": 1, "ep": 1, "rank": 1, "rep": 0, "op_index": 9, "kind": "allreduce", "start_s": 0.0, "end_s": 9.0},
             {"pp": 2, "ep": 2, "rank": 2, "rep": 0, "op_index": 0, "kind": "F", "start_s": 0.0, "end_s": 9.0}]
    return pd.DataFrame(rows)


def test_gpu_pace_is_each_gpus_span_over_the_mean_of_the_same_op():
    pace = po.gpu_pace(_probe_ops({0: 1.0, 1: 1.0, 2: 1.0, 3: 1.04}))
    assert pace == pytest.approx({0: 1 / 1.01, 1: 1 / 1.01, 2: 1 / 1.01, 3: 1.04 / 1.01}, rel=1e-12)
    assert po.gpu_pace(_probe_ops({0: 1.0})) == {}                   # one GPU: no pace
    assert po.gpu_pace(_probe_ops({0: 1.0, 1: 1.1}).query("pp > 1")) == {}   # no probe rows


def test_a_pipeline_rank_runs_at_its_slowest_replica_over_the_mean():
    pace = {0: 0.99, 1: 1.0, 2: 1.0, 3: 1.03}
    mean = np.mean(list(pace.values()))
    assert po.rank_pace(pace, 4) == pytest.approx({r: v / mean for r, v in pace.items()})
    assert po.rank_pace(pace, 2) == pytest.approx({0: 1.0 / mean, 1: 1.03 / mean})   # ranks 0, 2 and 1, 3
    assert po.rank_pace({}, 2) == {}


def test_each_terms_durations():
    row = {"schedule": "dualpipe", "pp": 4, "num_microbatches": 8}
    schedule = idle_terms.schedule_of(row)
    twin = {(r, k): 1e-3 * (1 + r + k) for r, program in enumerate(schedule.programs) for k in range(len(program))}
    pace = {0: 1.0, 1: 1.0, 2: 1.0, 3: 1.2}
    mean = 1.05
    assert po.term_durations(row, twin, "B", 5e-3, pace) == twin
    lead = po.term_durations(row, twin, "L", 5e-3, pace)
    assert {key for key in twin if lead[key] != twin[key]} == {(0, 0), (3, 0)}   # DualPipe's two ends
    assert lead[0, 0] == pytest.approx(twin[0, 0] + 5e-3)
    g = po.term_durations(row, twin, "G", 5e-3, pace)
    assert g[3, 2] == pytest.approx(twin[3, 2] * 1.2 / mean) and g[1, 2] == pytest.approx(twin[1, 2] / mean)
    t = po.term_durations(row, twin, "T", 5e-3, pace)
    assert t[3, 0] == pytest.approx(twin[3, 0] * 1.2 / mean + 5e-3)
    assert po.term_durations(row, twin, "T", 0.0, None) == twin


def test_t_without_lead_in_or_probe_is_the_baseline(inputs):
    rows = [r for r in po.case_rows(("h200",)) if r["pp"] == 4 and r["schedule"] == "dualpipe"][:1]
    base = po.predict_rows(rows, "B", 0.0, None, inputs)
    for term in ("L", "G", "T"):
        got = po.predict_rows(rows, term, 0.0, {}, inputs)
        assert got["predicted_s"].tolist() == pytest.approx(base["predicted_s"].tolist(), rel=1e-12), term
        cols = [c for c in base.columns if c.startswith("predicted_idle")]
        assert got[cols].to_numpy() == pytest.approx(base[cols].to_numpy(), abs=1e-12), term


def test_registered_predictions_are_todays_code(inputs):
    """The file written before the run: B and L of the 16 fresh cases on each GPU, L = the rule's 1.34 ms;
    two cases recomputed (mixtral pp2ep2 1F1B and qwen2moe pp4 DualPipe, h200)."""
    reg = read_csv(po.PREDICTIONS_FILE)
    assert len(reg) == 64 and set(reg["term"]) == {"B", "L"}
    delta = float(reg["lead_in_s"].iloc[0])
    assert set(reg["lead_in_s"]) == {delta} and round(delta * 1e3, 2) == 1.34
    cases = [r for r in po.case_rows(("h200",)) if (r["model"], r["pp"], r["schedule"]) in
             {("mixtral-mla-slice", 2, "1f1b"), ("qwen2moe-mla-slice", 4, "dualpipe")}]
    assert len(cases) == 2
    for term in ("B", "L"):
        got = po.predict_rows(cases, term, delta, None, inputs)
        for _, g in got.iterrows():
            (want,) = reg[(reg["term"] == term) & (reg["gpu"] == "h200") & (reg["model"] == g["model"])
                          & (reg["pp"] == g["pp"]) & (reg["schedule"] == g["schedule"])].to_dict("records")
            assert g["predicted_s"] == pytest.approx(want["predicted_s"], rel=1e-9), term
            for k in range(int(g["pp"])):
                assert g[f"predicted_idle_r{k}_s"] == pytest.approx(want[f"predicted_idle_r{k}_s"], rel=1e-9, abs=1e-12)


def _section(diffs: dict, steps_s: float = 0.5) -> dict:
    """A compared section of DualPipe rows: {(model, pp): (measured idle per pipeline rank, predicted)}."""
    idle, rows = [], []
    for (model, pp), (meas, pred) in diffs.items():
        rows.append({"gpu": "h200", "model": model, "pp": pp, "ep": 2 if pp == 2 else 1, "num_microbatches": 8,
                     "schedule": "dualpipe", "measured_s": steps_s})
        for g in range(4):
            idle.append({"gpu": "h200", "model": model, "pp": pp, "ep": 2 if pp == 2 else 1, "num_microbatches": 8,
                         "schedule": "dualpipe", "rank": g, "measured_idle_s": meas[g % pp],
                         "predicted_idle_s": pred[g % pp]})
    return {"idle": idle, "rows": rows}


def test_mirrored_pairs_and_their_flip():
    normal = _section({("m", 2): ([0.012, 0.001], [0.004, 0.001]), ("m", 4): ([0.001, 0.03, 0.03, 0.002],
                                                                             [0.001, 0.03, 0.03, 0.001])})
    pairs = po.mirrored_pairs(normal, "h200")
    assert [(p["pp"], p["ranks"], p["resolved"], p["ordered"]) for p in pairs] == [
        (2, [0, 1], True, True), (4, [0, 3], False, False), (4, [1, 2], False, True)]   # [1, 2]: both equal
    assert pairs[0]["measured_diff_s"] == pytest.approx(0.011)
    reverse = _section({("m", 2): ([0.0005, 0.013], [0.004, 0.001])})
    flips = po.flip_pairs(normal, reverse, "h200")
    assert [(f["pp"], f["resolved_both"], f["flipped"]) for f in flips] == [(2, True, True)]


# ---- the fresh judgement (calibration/s26pipeop_judgement.json, written by
# `python -m calibration.pipe_op_terms fresh --json calibration/s26pipeop_judgement.json`)

STALE = "rerun `python -m calibration.pipe_op_terms fresh --json calibration/s26pipeop_judgement.json`"


@pytest.fixture(scope="module")
def judgement():
    return po.read_judgement()


def _match(rows, **key):
    return [r for r in rows if all(r[k] == v for k, v in key.items())]


def test_the_committed_judgement_is_todays_code_on_one_configuration(judgement, inputs):
    """qwen2moe pp4 DualPipe (fresh, h200): the probe's paces from its records, and the row's step and
    each rank's idle under B and T at the judgement's lead-in (the registered predictions' L, which the
    test above ties to today's code)."""
    folder = rec.MEASUREMENTS_DIR / "h200x4" / po.FRESH_SUBDIR
    model = "qwen2moe-mla-slice"
    pace = po.gpu_pace(read_csv(folder / model / "pipeline_ops.csv"))
    committed = {int(k): v for k, v in judgement["paces"][po.FRESH_SUBDIR][f"h200 {model}"].items()}
    assert pace == pytest.approx(committed, rel=1e-12), STALE
    assert judgement["lead_in_s"] == pytest.approx(float(read_csv(po.PREDICTIONS_FILE)["lead_in_s"].iloc[0]), rel=1e-9)
    case = _match(po.case_rows(("h200",)), model=model, pp=4, schedule="dualpipe")
    for term in ("B", "T"):
        got = po.predict_rows(case, term, judgement["lead_in_s"], {("h200", model): pace}, inputs).iloc[0]
        key = dict(gpu="h200", model=model, pp=4, schedule="dualpipe")
        (want,) = _match(judgement["fresh"][term]["rows"], **key)
        assert got["predicted_s"] == pytest.approx(want["predicted_s"], rel=1e-12), (term, STALE)
        idle = _match(judgement["fresh"][term]["idle"], **key)
        assert len(idle) == 4
        for x in idle:
            assert got[f"predicted_idle_r{x['rank']}_s"] == pytest.approx(x["predicted_idle_s"], rel=1e-12, abs=1e-15)


def test_the_committed_verdict_is_its_sections(judgement):
    again = po.verdict(judgement["fresh"], judgement["reversed"])
    assert idle_terms._plain(again) == judgement["verdict"]


def test_fresh_t_is_not_adopted(judgement):
    """H1 fails (T 38 of 64 rank-rows within against the 43 needed; B 36), H2 and H3 hold, D1 fails: the
    probe's pace orders 2 of the 6 resolved mirrored pairs as measured."""
    v = judgement["verdict"]["h200"]
    assert v["idle_within_B"] == [36, 64] and v["idle_within_T"] == [38, 64] and v["needed"] == 43
    assert not v["H1"] and v["H2"] and v["H3"] and not v["D1"] and v["D1_ordered"] == [2, 6]
    assert not v["adopt_T"] and not po.ADOPT_PIPE_OP_TERMS


def test_a_mirrored_pairs_idle_follows_the_physical_gpu(judgement):
    """D2: with the GPU order reversed every DualPipe mirrored pair swaps which rank idles more (6 of 6;
    3 of 3 resolved in both orders): the asymmetry belongs to the GPUs, not to the schedule."""
    flips = judgement["mirrored"]["h200"]["flips"]
    assert len(flips) == 6 and all(f["flipped"] for f in flips)
    assert judgement["verdict"]["h200"]["D2_flipped"] == [3, 3] and judgement["verdict"]["h200"]["D2"]


def test_the_replay_of_the_fresh_op_durations(judgement):
    """The twin's schedule on the measured op durations: 73 of 80 rank-rows (all of mixtral's and of
    qwen2moe pp4; qwen2moe pp2ep2 13 of 20), against the twin's 46 of 80."""
    rows = judgement["replay"]
    assert len(rows) == 80
    assert sum(r["replay_within"] for r in rows) == 73 and sum(r["twin_within"] for r in rows) == 46
    qwen_ep = [r for r in rows if r["model"] == "qwen2moe-mla-slice" and r["ep"] == 2]
    assert sum(r["replay_within"] for r in qwen_ep) == 13


@pytest.mark.xfail(strict=True, reason="s26pipeop fresh rows, 4xH200: B puts 36 of 64 rank-rows within 10% of the "
                   "measured idle or 1% of the step, T (lead-in + the probe's GPU pace) 38: the idle target is missed")
def test_fresh_predicts_every_ranks_idle(judgement):
    idle = judgement["fresh"]["B"]["idle"]
    assert sum(i["within"] for i in idle) == len(idle), (sum(i["within"] for i in idle), len(idle))


@pytest.mark.xfail(strict=True, reason="s26pipeop fresh rows, 4xH200: B's steps median 3.5%, P90 19.5% (target 5% / "
                   "10%): qwen2moe seq 2048 pp2ep2 at 10 micro-batches under-predicted by 15.5-24.9% (393.6-440.9 ms "
                   "against 510.0-533.9 measured); the other 12 rows -5.1% to +0.2%")
def test_fresh_steps_meet_issue13_target_under_the_baseline(judgement):
    s = judgement["fresh"]["B"]["by_gpu"]["h200"]
    assert s["meets_target"], (s["median_abs_rel_error"], s["p90_abs_rel_error"])


# ---- round 2 (docs/notes/s26pipeop2_rule.md): term H, each GPU's host pace

def test_host_pace_reads_the_probes_forwards_only():
    ops = _probe_ops({0: 1.0, 1: 1.0, 2: 1.0, 3: 1.0})
    ops.loc[(ops["kind"] == "F") & (ops["rank"] == 2), "end_s"] *= 1.3    # GPU 2's forwards 30% longer
    ops.loc[(ops["kind"] == "BW") & (ops["rank"] == 1), "end_s"] *= 2.0   # a backward: not host-paced here
    assert po.host_pace(ops) == pytest.approx({0: 1 / 1.075, 1: 1 / 1.075, 2: 1.3 / 1.075, 3: 1 / 1.075}, rel=1e-12)


def test_scaled_host_keeps_the_gpu_figure_and_the_factor():
    host = {"fwd": 2e-5, "between_ops": 2e-4, "ep_send_sync": 5e-5, "device_gap": 1e-6, "first_op": 1.5}
    assert po.scaled_host(host, 1.1) == pytest.approx({"fwd": 2.2e-5, "between_ops": 2.2e-4, "ep_send_sync": 5.5e-5,
                                                       "device_gap": 1e-6, "first_op": 1.5})


def test_h_at_equal_paces_is_the_baseline_and_a_slower_host_idles_its_mirror(inputs):
    """DualPipe pp4 (qwen2moe seq 3072, h200): every GPU at pace 1 gives B's figures; GPU 0's host 20%
    slower makes rank 0 the busier of the mirrored pair (0, 3), so rank 3 idles more than rank 0."""
    rows = [r for r in po.case_rows2(("h200",)) if r["pp"] == 4 and r["schedule"] == "dualpipe"
            and r["model"] == "qwen2moe-mla-slice"]
    base = po.predict_rows2(rows, "B", 0.0, None, inputs).iloc[0]
    key = ("h200", "qwen2moe-mla-slice")
    even = po.predict_rows2(rows, "H", 0.0, {key: {0: 1.0, 1: 1.0, 2: 1.0, 3: 1.0}}, inputs).iloc[0]
    assert even["predicted_s"] == pytest.approx(base["predicted_s"], rel=1e-9)
    for k in range(4):
        assert even[f"predicted_idle_r{k}_s"] == pytest.approx(base[f"predicted_idle_r{k}_s"], rel=1e-9, abs=1e-12)
    slow = po.predict_rows2(rows, "H", 0.0, {key: {0: 1.2, 1: 1.0, 2: 1.0, 3: 1.0}}, inputs).iloc[0]
    assert slow["predicted_idle_r3_s"] > slow["predicted_idle_r0_s"] + 1e-3


# ---- round 2's judgement (calibration/s26pipeop2_judgement.json, written by
# `python -m calibration.pipe_op_terms fresh2 --json calibration/s26pipeop2_judgement.json`)

STALE2 = "rerun `python -m calibration.pipe_op_terms fresh2 --json calibration/s26pipeop2_judgement.json`"


@pytest.fixture(scope="module")
def judgement2():
    return po.read_judgement(po.JUDGEMENT2_FILE)


def test_round_2_judgement_is_todays_code_on_one_configuration(judgement2, inputs):
    """qwen2moe pp4 DualPipe (round 2's fresh set, h200): the host probe's paces from its records, and the
    row's step and each rank's idle under B and U."""
    model = "qwen2moe-mla-slice"
    probe = rec.MEASUREMENTS_DIR / "h200x4" / po.HOSTPROBE_SUBDIRS[po.FRESH2_SUBDIR] / model / "pipeline_ops.csv"
    pace = po.host_pace(read_csv(probe))
    committed = {int(k): v for k, v in judgement2["paces"][po.FRESH2_SUBDIR][f"h200 {model}"].items()}
    assert pace == pytest.approx(committed, rel=1e-12), STALE2
    case = _match(po.case_rows2(("h200",)), model=model, pp=4, schedule="dualpipe")
    key = dict(gpu="h200", model=model, pp=4, schedule="dualpipe")
    for term in ("B", "U"):
        got = po.predict_rows2(case, term, judgement2["lead_in_s"], {("h200", model): pace}, inputs).iloc[0]
        (want,) = _match(judgement2["fresh"][term]["rows"], **key)
        assert got["predicted_s"] == pytest.approx(want["predicted_s"], rel=1e-12), (term, STALE2)
        for x in _match(judgement2["fresh"][term]["idle"], **key):
            assert got[f"predicted_idle_r{x['rank']}_s"] == pytest.approx(x["predicted_idle_s"], rel=1e-12, abs=1e-15)


def test_round_2_verdict_is_its_sections_and_u_is_not_adopted(judgement2):
    """U (H + L): 33 of 64 rank-rows within against the 39 needed (B 30): H1 fails; H2, H3 hold; D1 3 of 7.
    D2 does not replicate round 1: neither pair resolved in both orders swaps sides under the reversed order."""
    assert idle_terms._plain(po.verdict2(judgement2["fresh"], judgement2["reversed"])) == judgement2["verdict"]
    v = judgement2["verdict"]["h200"]
    assert v["idle_within_B"] == [30, 64] and v["idle_within_U"] == [33, 64] and v["needed"] == 39
    assert not v["H1"] and v["H2"] and v["H3"] and v["D1_ordered"] == [3, 7] and not v["D1"]
    assert v["D2_flipped"] == [0, 2] and not v["adopt_U"] and not po.ADOPT_GPU_HOST_PACE


def test_round_2_guards_restate_the_committed_sets(judgement2):
    """No committed set has a host probe, so U is L there: round 1's guard table, and s26pipeop unchanged."""
    g = {sub: {t: tuple(v["h200"][t]["idle_within"]) for t in ("B", "L")} for sub, v in judgement2["guards"].items()}
    assert g == {"s21pp4": {"B": (107, 140), "L": (111, 140)}, "s21pp4b": {"B": (33, 48), "L": (37, 48)},
                 "s25idle": {"B": (44, 64), "L": (45, 64)}, "s26pipeop": {"B": (36, 64), "L": (36, 64)}}


@pytest.mark.xfail(strict=True, reason="s26pipeop2 fresh rows, 4xH200: B 30 of 64 rank-rows within, U 33; the replay of "
                   "the measured op durations 60 of 72 (qwen3moe pp2ep2 10/16, qwen2moe pp2ep2 14/20): the idle target "
                   "is missed")
def test_round_2_predicts_every_ranks_idle(judgement2):
    idle = judgement2["fresh"]["B"]["idle"]
    assert sum(i["within"] for i in idle) == len(idle), (sum(i["within"] for i in idle), len(idle))


@pytest.mark.xfail(strict=True, reason="s26pipeop2 fresh rows, 4xH200: B's steps median 8.1%, P90 19.8% (target 5% / "
                   "10%): every pp2ep2 row under-predicted, qwen3moe seq 2048 n12 by 11.2-19.8%, qwen2moe seq 3072 n6 "
                   "by 11.8-24.8%; pp4 -4.9% to +1.4%")
def test_round_2_steps_meet_issue13_target_under_the_baseline(judgement2):
    s = judgement2["fresh"]["B"]["by_gpu"]["h200"]
    assert s["meets_target"], (s["median_abs_rel_error"], s["p90_abs_rel_error"])
