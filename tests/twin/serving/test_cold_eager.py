"""(s15srv2, docs/notes/s15srv2_rule.md) A one-GPU engine's eager path gone cold after CUDA-graph replays:
an eager iteration after cold_eager_iterations graph iterations since the instance's last eager one pays
cold_eager_s (twin.serving.engine, timing), and the fit marks and fits it on the fit runs
(calibration.serve_engine_fit ADOPT_COLD_EAGER, off: the tables carry cold_eager_s = 0)."""

import pandas as pd
import pytest

import calibration.serve_engine_fit as sef
from calibration import records as rec
from twin.core.specs import serve_engines
from twin.serving import timing
from tests.twin.serving.synthetic_run import served, with_terms


def _first_token_s(monkeypatch, output_len: int, **terms):
    """Three lone 300-token prompts 1 s apart (each decodes output_len - 1 graph iterations before the
    next arrives), the committed h200 table with `terms` (first-size stalls off, no spread)."""
    with_terms(monkeypatch, wake_s=0.0, new_size_s=0.0, new_bin_s=0.0, **terms)
    return served([1.0, 2.0, 3.0], 300, output_len)["first_token_s"]


def test_an_eager_iteration_after_enough_graph_replays_pays_cold_eager_s(monkeypatch):
    base = _first_token_s(monkeypatch, 40, cold_eager_s=0.0, cold_eager_iterations=32.0)
    # 39 graph decodes between prompts (>= 32): every prompt pays it, the first one too (cold at start)
    cold = _first_token_s(monkeypatch, 40, cold_eager_s=0.002, cold_eager_iterations=32.0)
    assert (cold - base).tolist() == pytest.approx([0.002, 0.002, 0.002], abs=1e-12)
    # 19 graph decodes between prompts (< 32): only the first prompt pays it
    base = _first_token_s(monkeypatch, 20, cold_eager_s=0.0, cold_eager_iterations=32.0)
    warm = _first_token_s(monkeypatch, 20, cold_eager_s=0.002, cold_eager_iterations=32.0)
    assert (warm - base).tolist() == pytest.approx([0.002, 0.0, 0.0], abs=1e-12)


def test_no_term_without_cold_eager_s():
    costs = timing.IterationCosts.__new__(timing.IterationCosts)
    costs.engine = {"cold_eager_iterations": 32.0, "cold_eager_s": 0.0}
    assert costs.cold_eager_after == 0
    costs.engine = {"cold_eager_iterations": 16.0, "cold_eager_s": 0.001}
    assert costs.cold_eager_after == 16


def test_mark_cold_eager_counts_graph_rows_since_the_runs_last_eager_row():
    """Run a: eager, 3 graph rows, eager, 1 graph row, eager; run b: graph, eager. With 2: the first
    eager row of each run (cold at start) and the one after 3 graph rows; with 0: none."""
    rows = [("a", 0), ("a", 8), ("a", 8), ("a", 8), ("a", 0), ("a", 8), ("a", 0), ("b", 8), ("b", 0)]
    df = pd.DataFrame([{"run_id": r, "graph_rows": g} for r, g in rows])
    assert sef.mark_cold_eager(df, 2).cold_eager_s.tolist() == [1, 0, 0, 0, 1, 0, 0, 0, 1]
    assert sef.mark_cold_eager(df, 0).cold_eager_s.tolist() == [0.0] * len(rows)


def test_the_committed_tables_carry_no_cold_eager_term_while_the_switch_is_off():
    assert not sef.ADOPT_COLD_EAGER   # not adopted (docs/notes/s15srv2_rule.md outcome)
    for name, t in serve_engines().items():
        assert t["cold_eager_s"] == 0.0 and t["cold_eager_iterations"] == 0.0, name


@pytest.mark.parametrize("adopt", [False, True])
def test_the_fit_gives_the_term_only_with_the_switch_on(monkeypatch, adopt):
    """h200's fit runs: off, no term; on, a positive cold_eager_s at a threshold of COLD_EAGER_CHOICES
    (the rule's fit: 32 graph iterations, ~1.1 ms)."""
    monkeypatch.setattr(sef, "ADOPT_COLD_EAGER", adopt)
    r = sef.fit_folder(rec.MEASUREMENTS_DIR / "h200")
    if not adopt:
        assert r["cold_eager_s"] == 0.0 and r["cold_eager_iterations"] == 0.0
        return
    assert r["cold_eager_iterations"] in sef.COLD_EAGER_CHOICES
    assert 0.0005 < r["cold_eager_s"] < 0.002
