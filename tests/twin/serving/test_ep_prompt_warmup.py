"""(s19srv2, docs/notes/s19srv2_rule.md) An EP engine's prompt path warms up with its process's host-bound prompt
work: a host-bound prompt iteration pays cold_prompt_s x h / (h + H), H the host-bound prompt iterations its
process ran before (twin.serving.engine counts them from the run's prompts_before), fitted on the EP fit runs
(calibration.serve_engine_fit ADOPT_EP_PROMPT_WARMUP; off: the tables carry cold_prompt_iterations = 0)."""

import pandas as pd
import pytest

import calibration.serve_engine_fit as sef
from calibration import records as rec
from twin.core.specs import serve_engines
from twin.serving import timing
from tests.twin.serving.synthetic_run import served, with_terms

COLD_S = 0.004


def _ttft_s(monkeypatch, input_len, h, **simulate_kw) -> pd.Series:
    """TTFT of three lone prompts 1 s apart (each done before the next arrives), the committed h200 table with
    cold_prompt_s = COLD_S over h host-bound prompts (first-size stalls off, no spread)."""
    with_terms(monkeypatch, wake_s=0.0, new_size_s=0.0, new_bin_s=0.0, cold_prompt_s=COLD_S if h else 0.0,
               cold_prompt_iterations=float(h))
    per = pd.DataFrame(served([1.0, 2.0, 3.0], input_len, 4, **simulate_kw))
    return per.first_token_s - per.arrival_s


def test_each_host_bound_prompt_pays_the_warm_up_share_of_its_process(monkeypatch):
    base = _ttft_s(monkeypatch, 64, 0)
    warm = _ttft_s(monkeypatch, 64, 2)
    # a 64-token prompt is host-bound (kernels 1.6 ms < host terms 3.0 ms): h / (h + H) with H = 0, 1, 2
    assert (warm - base).tolist() == pytest.approx([COLD_S, COLD_S * 2 / 3, COLD_S / 2], abs=1e-12)
    later = _ttft_s(monkeypatch, 64, 2, prompts_before=2)   # the process ran 2 host-bound prompts before the run
    assert (later - base).tolist() == pytest.approx([COLD_S / 2, COLD_S * 2 / 5, COLD_S / 3], abs=1e-12)


def test_a_kernel_bound_prompt_neither_pays_nor_counts(monkeypatch):
    base = _ttft_s(monkeypatch, [2048, 64, 64], 0)
    warm = _ttft_s(monkeypatch, [2048, 64, 64], 2)
    # 2048 tokens: kernels 8.6 ms over the host terms: no stall, H stays 0 for the next prompt
    assert (warm - base).tolist() == pytest.approx([0.0, COLD_S, COLD_S * 2 / 3], abs=1e-12)


def test_no_term_without_cold_prompt_s_or_its_count():
    costs = timing.IterationCosts.__new__(timing.IterationCosts)
    costs.engine = {"cold_prompt_iterations": 25.0, "cold_prompt_s": 0.0}
    assert not costs.warms_prompts and costs.warmup_weight(0) == 0.0
    costs.engine = {"cold_prompt_iterations": 0.0, "cold_prompt_s": 0.003}
    assert not costs.warms_prompts and costs.warmup_weight(0) == 0.0
    costs.engine = {"cold_prompt_iterations": 25.0, "cold_prompt_s": 0.003}
    assert costs.warms_prompts and costs.warmup_weight(75) == pytest.approx(0.25)
    assert "cold_prompt_s" in timing.HOST_SCALED_TERMS and "cold_prompt_s" in timing.PROMPT_SCALED_TERMS


def test_host_bound_prompts_before_counts_per_process_and_a_run_without_one_alone():
    before = sef.host_bound_prompts_before(["a", "a", "b", "c", "c"], [True, True, True, True, True],
                                           [True, True, True, True, True], {"a": "s", "b": "s", "c": ""})
    assert before.tolist() == [0, 1, 2, 0, 1]


def test_counts_before_is_a_running_count_per_group_read_before_each_item_adds():
    assert sef.counts_before(["s", "s", "t", "s", "t"], [3, 0, 2, 5, 1]) == [0, 3, 0, 3, 2]


def test_warmup_weights_count_only_host_bound_prompt_rows():
    """Rows of one process: a host-bound prompt (physics 1 ms under 3 ms of host terms), a kernel-bound prompt
    (5 ms), a decode row, a host-bound prompt: weights h / (h + H) on prompts, H = 0, 1, 1."""
    rows = pd.DataFrame({"run_id": ["a", "a", "b", "b"], "physics_s": [0.001, 0.005, 0.001, 0.001],
                         "prompt_iteration_s": [1.0, 1.0, 0.0, 1.0], "iteration_s": 1.0, "eager_iteration_s": 1.0})
    coef = {"iteration_s": 0.002, "eager_iteration_s": 0.0, "prompt_iteration_s": 0.001}
    w = sef.warmup_weights(rows, coef, 10.0, {"a": "s", "b": "s"})
    assert w.tolist() == pytest.approx([1.0, 10 / 11, 0.0, 10 / 11])


def test_the_committed_tables_carry_no_warm_up_while_the_switch_is_off():
    assert not sef.ADOPT_EP_PROMPT_WARMUP   # see docs/notes/s19srv2_rule.md for the outcome
    for name, t in serve_engines().items():
        assert t["cold_prompt_iterations"] == 0.0 and t["cold_prompt_s"] == 0.0, name
    assert sef.prompts_run_before(rec.MEASUREMENTS_DIR / "h100x2") == {}   # nothing to count


@pytest.mark.parametrize("adopt", [False, True])
def test_the_fit_gives_the_term_only_with_the_switch_on(monkeypatch, adopt):
    """h100x2's fit runs: off, no term; on, a positive cold_prompt_s at an h of COLD_PROMPT_CHOICES."""
    monkeypatch.setattr(sef, "ADOPT_EP_PROMPT_WARMUP", adopt)
    r = sef.fit_folder(rec.MEASUREMENTS_DIR / "h100x2")
    if not adopt:
        assert r["cold_prompt_s"] == 0.0 and r["cold_prompt_iterations"] == 0.0
        return
    assert r["cold_prompt_iterations"] in sef.COLD_PROMPT_CHOICES
    assert 0.001 < r["cold_prompt_s"] < 0.02


def test_a_run_starts_from_its_sessions_earlier_host_bound_prompts(monkeypatch):
    """h100x2 with a table that warms up: the lo session's first run starts at 0, every later run at the count
    of its session's earlier runs (non-decreasing), the first session's runs apart."""
    table = {k: dict(v) for k, v in serve_engines().items()}
    table["real-serve-h100-ep2"].update(cold_prompt_s=0.004, cold_prompt_iterations=25.0)
    monkeypatch.setattr(sef, "serve_engines", lambda: table)
    before = sef.prompts_run_before(rec.MEASUREMENTS_DIR / "h100x2")
    assert before["ep2-closed-c16-short"] == 0 and before["ep2lo-poisson-r4-long"] == 0
    lo = ["ep2lo-poisson-r4-long", "ep2lo-poisson-r20-short", "ep2lo-poisson-r30-short", "ep2lo-closed-c4-short"]
    counts = [before[r] for r in lo]
    assert counts == sorted(counts) and counts[2] > counts[1] >= 0   # r20-short's host-bound prompts count for r30
