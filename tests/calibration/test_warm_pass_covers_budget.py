"""(s22ttft, docs/notes/s22ttft_rule.md) ADOPT_WARM_PASS_COVERS_BUDGET: a run whose process ran Engine.warm_shapes
counts every flat size up to its token budget as run before it; runs without a warm pass are unchanged. Both
settings, and the pre-registration's warmed sizes and twin settings."""

import calibration.serve_load_validation as slv
from calibration import prereg_serve as ps
from calibration.records_io import read_csv
from calibration.serve_load_validation import sizes_run_before, warm_pass_tokens
from twin.serving import timing

RUNS = [{"run_id": "w", "timestamp_utc": "2026-11-27T19:00:00Z", "warm_shapes": "8", "token_budget": "32"},
        {"run_id": "x", "timestamp_utc": "2026-11-27T19:00:03Z", "warm_shapes": "0", "token_budget": "32"}]
COLD = [{"run_id": "c", "warm_shapes": "0", "token_budget": "32"}]
ITS = [{"run_id": "w", "rank": "0", "prefill_tokens": "40", "decode_seqs": "2", "graph_batch": "0", "idle": "0"}]


def test_off_a_warmed_run_counts_its_warm_pass_alone(monkeypatch):
    monkeypatch.setattr(slv, "ADOPT_WARM_PASS_COVERS_BUDGET", False)
    assert warm_pass_tokens(RUNS[0]) == 8 and warm_pass_tokens(COLD[0]) == 0
    before = sizes_run_before(RUNS, ITS)
    assert before["w"] == {(0, n) for n in range(1, 9)}
    assert before["x"] == before["w"] | {(0, 42)}   # the same process: its earlier run's sizes
    assert ps.warmed_sizes() == {(0, n) for n in range(1, ps.WARM_TOKENS + 1)}


def test_on_a_warmed_run_counts_every_size_to_its_budget_and_a_cold_one_none(monkeypatch):
    monkeypatch.setattr(slv, "ADOPT_WARM_PASS_COVERS_BUDGET", True)
    assert warm_pass_tokens(RUNS[0]) == 32 and warm_pass_tokens(COLD[0]) == 0
    assert warm_pass_tokens({"warm_shapes": "64", "token_budget": "32"}) == 64   # a pass beyond the budget stays
    before = sizes_run_before(RUNS, ITS)
    assert before["w"] == {(0, n) for n in range(1, 33)}
    assert sizes_run_before(COLD, []) == {"c": frozenset()}
    assert ps.warmed_sizes() == {(0, n) for n in range(1, ps.ENGINE["token_budget"] + 1)}


def test_the_registered_settings_set_both_switches_and_restore_them(monkeypatch):
    monkeypatch.setattr(slv, "ADOPT_WARM_PASS_COVERS_BUDGET", False)
    monkeypatch.setattr(timing, "ADOPT_LAYER_SCALED_ENGINE", True)
    with ps.twin_setting("warm_covers"):
        assert slv.ADOPT_WARM_PASS_COVERS_BUDGET and timing.ADOPT_LAYER_SCALED_ENGINE
    with ps.twin_setting("current"):
        assert not slv.ADOPT_WARM_PASS_COVERS_BUDGET and not timing.ADOPT_LAYER_SCALED_ENGINE
    assert not slv.ADOPT_WARM_PASS_COVERS_BUDGET and timing.ADOPT_LAYER_SCALED_ENGINE
    rows = [{"twin": "layer_scaled"}, {"twin": "warm_covers"}]
    assert ps.in_force_twin(rows) == "layer_scaled"
    monkeypatch.setattr(slv, "ADOPT_WARM_PASS_COVERS_BUDGET", True)
    assert ps.in_force_twin(rows) == "warm_covers"
    assert ps.S22.rule == ("layer_scaled", "warm_covers") and set(ps.S22.twins) == set(ps.S22.rule)


def test_adopted_by_its_rule_on_the_s22ttft_records():
    """docs/notes/s22ttft.md: the registered predictions beside the records of one H100 and one H200 meet the rule
    (more checks pooled, a lower median, neither GPU worse), and the switch is on."""
    rows = ps.compare(read_csv(ps.S22.predictions_file), ps.measured(reg=ps.S22))
    verdict = ps.rule_verdict(rows, *ps.S22.rule)
    assert set(verdict["layer_scaled"]["by_gpu"]) == {"h100", "h200"}
    assert verdict["adopt"] and slv.ADOPT_WARM_PASS_COVERS_BUDGET
