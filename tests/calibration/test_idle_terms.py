"""calibration.idle_terms (docs/notes/s25idle_rule.md). The replay is the twin's own simulation (a
synthetic host-led schedule's op durations give its idle back exactly); the fresh judgement and the
rule's section-1 replay of the seen second delivery are read back from calibration/s25idle_judgement.json
(written by `python -m calibration.idle_terms fresh --json ...`), one configuration of it recomputed by
today's code so the file cannot go stale silently; term S is the baseline exactly where no seen ratios
exist and the baseline is prereg_pp4's path; the registered predictions are the judgement's."""

import dataclasses

import numpy as np
import pandas as pd
import pytest

from calibration import idle_terms, prereg, prereg_pp4
from calibration import pipeline as pipe
from calibration import records as rec
from calibration.records_io import read_csv

STALE = "rerun `python -m calibration.idle_terms fresh --json calibration/s25idle_judgement.json`"


@pytest.fixture(scope="module")
def judgement():
    return idle_terms.read_judgement()


@pytest.fixture(scope="module")
def inputs():
    return {}


def _synthetic_ops(stage: int) -> pipe.StageOps:
    """(host s, GPU s) kernels of one stage: a host-bound kernel in every op, so the host-led simulation
    gives ops of one kind different spans."""
    gpu = 1e-3 * (1 + 0.25 * stage)
    return pipe.StageOps(f=[(2e-4, gpu), (3e-3, 5e-4)], b=[(2e-4, 2 * gpu), (2e-3, 4e-4)], w=[(1e-4, gpu)])


@pytest.mark.parametrize("name", ["1f1b", "zb1p", "dualpipev", "dualpipe"])
def test_replay_of_the_twins_own_durations_is_the_twin(name):
    row = {"schedule": name, "pp": 2, "num_microbatches": 4}
    schedule = idle_terms.schedule_of(row)
    ops = {s: _synthetic_ops(s) for s in range(schedule.num_model_stages)}
    twin = pipe.simulate_host_led(schedule, ops, 2e-4, between_s=5e-5, first_op=1.5, hold_before_last_w_s=1e-4)
    spans = idle_terms.twin_op_s(twin)
    assert len(set(np.round(list(spans.values()), 12))) > 2 * schedule.num_model_stages   # ops of a kind differ
    details = {"stage_costs": {s: dataclasses.asdict(o.steady()) for s, o in ops.items()}, "p2p_s": 2e-4}
    again = idle_terms.simulate_durations(row, details, spans, 1e-4)
    assert again.idle_s == pytest.approx(twin.idle_s, abs=1e-12)
    assert again.makespan_s == pytest.approx(twin.makespan_s, abs=1e-12)


def test_measured_op_durations_are_medians_over_steps_and_replicas():
    """Global ranks 0 and 2 are pipeline rank 0's two data-parallel replicas; warm-up ops (no rep) and
    transfers do not count."""
    spans = [(0, 0, "F", 0, 1.0), (0, 0, "F", 1, 3.0), (2, 0, "F", 0, 2.0), (2, 0, "F", 1, 9.0),
             (0, 0, "F", None, 50.0), (1, 0, "recv", 0, 7.0), (1, 1, "B", 0, 4.0)]
    ops = pd.DataFrame([{"rank": r, "op_index": k, "kind": kind, "rep": rep, "start_s": 0.0, "end_s": d}
                        for r, k, kind, rep, d in spans])
    assert idle_terms.measured_op_s({"pp": 2}, ops) == {(0, 0): 2.5, (1, 1): 4.0}


def test_the_seen_second_delivery_replays_as_the_rule_says(judgement):
    """Rule section 1: s21pp4's second delivery, 48 rank-rows: the twin 33 within, the replay of the
    measured op durations 46, each rank's first op alone 40 (it closes 7 of the 15 misses)."""
    seen = judgement["seen_replay"]
    assert seen["subdir"] == "h200x4/" + prereg_pp4.SECOND_SUBDIR
    rows, firsts = seen["all"], seen["first"]
    assert len(rows) == len(firsts) == 48
    assert sum(r["twin_within"] for r in rows) == 33
    assert sum(r["replay_within"] for r in rows) == 46
    assert sum(r["replay_within"] for r in firsts) == 40


def _same(got: dict, want: dict) -> bool:
    """got's fields equal want's (floats to 1e-12 relative)."""
    return all(got[k] == pytest.approx(want[k], rel=1e-12) if isinstance(got[k], float) else got[k] == want[k]
               for k in got)


def _match(rows, **key):
    return [r for r in rows if all(r[k] == v for k, v in key.items())]


def test_the_committed_judgement_is_todays_code_on_one_configuration(judgement, inputs):
    """One configuration of the file recomputed: qwen3moe pp2ep2's seen ratios (its seven seen
    configurations), the fresh h200 qwen3moe pp2ep2 n8 DualPipeV row under B and S (step and each
    rank's idle), its replay rank-rows, and the seen second delivery's DualPipeV row replayed."""
    model, pp, ep, sched = "qwen3moe-mla-slice", 2, 2, "dualpipev"
    ratios = idle_terms.seen_ratios(inputs=inputs, only=(model, pp, ep))
    committed = idle_terms.table_from_json(judgement["ratios"])[model, pp, ep]
    assert ratios.keys() == {(model, pp, ep)} and ratios[model, pp, ep].keys() == committed.keys(), STALE
    assert ratios[model, pp, ep] == pytest.approx(committed, rel=1e-12), STALE
    case = _match(idle_terms.fresh_case_rows(("h200",)), model=model, pp=pp, schedule=sched)
    key = dict(gpu="h200", model=model, pp=pp, ep=ep, schedule=sched)
    for term, table in (("B", None), ("S", ratios)):
        got = idle_terms.predict_rows(case, table, inputs).iloc[0]
        (want,) = _match(judgement[term]["rows"], **key)
        assert got["predicted_s"] == pytest.approx(want["predicted_s"], rel=1e-12), (term, STALE)
        idle = _match(judgement[term]["idle"], **key)
        assert len(idle) == 4
        for x in idle:
            assert got[f"predicted_idle_r{x['rank'] % pp}_s"] == pytest.approx(x["predicted_idle_s"], rel=1e-12), STALE
    h200x4, seen = rec.MEASUREMENTS_DIR / "h200x4", judgement["seen_replay"]
    for sub, which, section in ((idle_terms.FRESH_SUBDIR, None, judgement["replay"]),
                                (prereg_pp4.SECOND_SUBDIR, None, seen["all"]),
                                (prereg_pp4.SECOND_SUBDIR, frozenset({"first"}), seen["first"])):
        folder = h200x4 / sub
        (row, ops), = [(r, o) for r, o in idle_terms.folder_rows(folder, model) if r["schedule"] == sched and r["pp"] == pp]
        got = idle_terms.replay_config(row, ops, "h200", inputs, which)
        want = _match(section, model=model, pp=pp, schedule=sched)
        assert len(got) == len(want) == 4, folder
        for g, w in zip(got, want):
            assert _same(g, w), (folder, g, w, STALE)


def test_term_s_without_ratios_is_the_baseline_and_the_baseline_is_prereg_pp4s_path(inputs):
    rows = [r for r in idle_terms.fresh_case_rows(("h200",)) if r["pp"] == 2 and r["schedule"] == "dualpipev"][:1]
    base = idle_terms.predict_rows(rows, None, inputs)
    assert idle_terms.predict_rows(rows, {}, inputs).equals(base)
    ref = prereg.predict_ep(rows, num_gpus=prereg_pp4.NUM_GPUS, inputs=inputs)
    assert base["predicted_s"].tolist() == pytest.approx(ref["predicted_s"].tolist(), rel=1e-12)
    cols = [c for c in ref.columns if c.startswith("predicted_idle")]
    assert base[cols].to_numpy() == pytest.approx(ref[cols].to_numpy(), abs=1e-12)


def test_term_s_scales_only_the_ops_of_a_seen_model_and_layout(judgement, inputs):
    ratios = idle_terms.table_from_json(judgement["ratios"])
    assert set(ratios) == {(m, pp, ep) for m, _ in prereg_pp4.CASES for pp, ep in prereg_pp4.LAYOUTS}
    # the first op of a rank carries its own ratio (the lead-in the next stage waits out)
    assert ratios["qwen3moe-mla-slice", 2, 2]["F", "first", True] > ratios["qwen3moe-mla-slice", 2, 2]["F", "first", False]
    other = [{**r, "model": "v2-lite-slice"} for r in idle_terms.fresh_case_rows(("h200",))[:1]]
    assert idle_terms.predict_rows(other, ratios, inputs).equals(idle_terms.predict_rows(other, None, inputs))


def test_registered_predictions_are_the_judgements(judgement):
    """The file written before the run (B and S of the 32 fresh cases on each GPU) holds, for every
    measured h200 row, the step the judgement predicted (which the test above ties to today's code)."""
    reg = read_csv(idle_terms.PREDICTIONS_FILE)
    assert len(reg) == 64 and set(reg["term"]) == {"B", "S"}
    for term in ("B", "S"):
        rows = judgement[term]["rows"]
        assert len(rows) == 16
        for r in rows:
            (want,) = reg[(reg["term"] == term) & (reg["gpu"] == r["gpu"]) & (reg["model"] == r["model"])
                          & (reg["pp"] == r["pp"]) & (reg["schedule"] == r["schedule"])
                          & (reg["num_microbatches"] == r["num_microbatches"])]["predicted_s"]
            assert r["predicted_s"] == pytest.approx(want, rel=1e-9), (term, r)


def test_the_committed_verdict_is_its_sections(judgement):
    """R0 and H1-H3 recomputed from the committed B and S sections and replay rows give the verdict."""
    again = idle_terms.verdict(judgement["B"], judgement["S"], judgement["replay"])
    assert idle_terms._plain(again) == judgement["verdict"]


def test_fresh_replay_meets_every_ranks_idle_r0(judgement):
    """R0: the twin's schedule simulation on each fresh configuration's measured op durations puts 64 of
    64 rank-rows within 10% / 1% of step (the twin itself 44): the misses are the op durations."""
    v = judgement["verdict"]["h200"]
    assert v["R0"] and v["replay_within"] == [64, 64]
    assert v["idle_within_B"] == [44, 64]


def test_fresh_term_s_is_not_adopted(judgement):
    """S (seen op ratios) met H2 (steps 4.5% -> 1.4% median, no row over +3%) and H3 (1 misordered pair
    either way) but not H1: 46 of 64 rank-rows within against the 54 it needed (B 44)."""
    v = judgement["verdict"]["h200"]
    assert v["idle_within_S"] == [46, 64] and not v["H1"] and v["H2"] and v["H3"] and not v["adopt_S"]
    assert not idle_terms.ADOPT_SEEN_OP_RATIOS
    s, b = judgement["S"]["by_gpu"]["h200"], judgement["B"]["by_gpu"]["h200"]
    assert s["median_abs_rel_error"] < b["median_abs_rel_error"]
    assert judgement["X"]["idle_within"]["h200"] == [46, 64]   # the diagnostic after the judgement


def test_fresh_steps_meet_issue13_target_under_the_baseline(judgement):
    """B: 16 rows, median |error| 4.5%, P90 8.8%, every row under-predicted (pp2ep2 -5.5..-10.0%)."""
    s = judgement["B"]["by_gpu"]["h200"]
    assert s["num_cases"] == 16 and s["meets_target"]
    assert all(r["rel_error"] < 0.001 for r in judgement["B"]["rows"])


def _within(sec):
    return sum(i["within"] for i in sec["idle"]), len(sec["idle"])


@pytest.mark.xfail(strict=True, reason="s25idle fresh rows, 4xH200: the twin (B) puts 44 of 64 rank-rows within 10% "
                   "of the measured idle or 1% of the step (pp2ep2 16/32, pp4 28/32), S 46, the diagnostic X 46; the "
                   "replay of the measured op durations 64/64: the idle target (every rank-row within) is missed")
def test_fresh_predicts_every_ranks_idle(judgement):
    assert _within(judgement["B"]) == (64, 64), _within(judgement["B"])


@pytest.mark.xfail(strict=True, reason="s25idle fresh rows, 4xH200: 22 of 24 pairs resolved, 1 misordered under B "
                   "and S (mixtral pp2ep2 n6 dualpipev/zb1p: measured zb1p 459.3 < dualpipev 473.2 ms, p 0.029)")
def test_fresh_orders_every_resolved_pair(judgement):
    bad = [p["pair"] for p in judgement["B"]["ranking"] if p["resolved"] and not p["ordered"]]
    assert not bad, bad
