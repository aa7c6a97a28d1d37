"""(s18srv, docs/notes/s18srv_rule.md) A decode-only iteration within post_prompt_iterations iterations after its
instance's last prompt iteration pays post_prompt_s (twin.serving.engine, timing), and the fit marks and fits it
on the fit runs (calibration.serve_engine_fit ADOPT_POST_PROMPT_DECODE; off: the tables carry post_prompt_s = 0)."""

import pandas as pd
import pytest

import calibration.serve_engine_fit as sef
from calibration import records as rec
from twin.core.specs import serve_engines
from twin.serving import timing
from tests.twin.serving.synthetic_run import served, with_terms


def _per_request(monkeypatch, **terms) -> pd.DataFrame:
    """Three lone 300-token prompts 1 s apart, 40 output tokens each (done before the next arrives), the
    committed h200 table with `terms` (first-size stalls off, no spread)."""
    with_terms(monkeypatch, wake_s=0.0, new_size_s=0.0, new_bin_s=0.0, **terms)
    return pd.DataFrame(served([1.0, 2.0, 3.0], 300, 40))


def test_the_decode_iterations_right_after_a_prompt_pay_post_prompt_s(monkeypatch):
    base = _per_request(monkeypatch, post_prompt_s=0.0, post_prompt_iterations=4.0)
    slow = _per_request(monkeypatch, post_prompt_s=0.002, post_prompt_iterations=4.0)
    # the first token is the prompt iteration's: unchanged; the first 4 of the 39 decode iterations pay 2 ms each
    assert (slow.first_token_s - base.first_token_s).tolist() == pytest.approx([0.0] * 3, abs=1e-12)
    assert (slow.finish_s - base.finish_s).tolist() == pytest.approx([0.008] * 3, abs=1e-12)
    wide = _per_request(monkeypatch, post_prompt_s=0.002, post_prompt_iterations=100.0)   # every decode iteration
    assert (wide.finish_s - base.finish_s).tolist() == pytest.approx([39 * 0.002] * 3, abs=1e-12)


def test_no_term_without_post_prompt_s():
    costs = timing.IterationCosts.__new__(timing.IterationCosts)
    costs.engine = {"post_prompt_iterations": 4.0, "post_prompt_s": 0.0}
    assert costs.post_prompt_after == 0
    costs.engine = {"post_prompt_iterations": 4.0, "post_prompt_s": 0.001}
    assert costs.post_prompt_after == 4
    assert "post_prompt_s" in timing.HOST_SCALED_TERMS   # host work: scaled by the host input


def test_mark_post_prompt_counts_decode_rows_since_the_runs_last_prompt_row():
    """Run a: decode (before any prompt), prompt, 3 decode rows, prompt, decode; run b: decode, prompt, decode.
    With a window of 2: the first two decode rows after each prompt; with 0: none."""
    rows = [("a", 0), ("a", 1), ("a", 0), ("a", 0), ("a", 0), ("a", 1), ("a", 0), ("b", 0), ("b", 1), ("b", 0)]
    df = pd.DataFrame([{"run_id": r, "prompt_iteration_s": float(p)} for r, p in rows])
    assert sef.mark_post_prompt(df, 2).post_prompt_s.tolist() == [0, 0, 1, 1, 0, 0, 1, 0, 0, 1]
    assert sef.mark_post_prompt(df, 0).post_prompt_s.tolist() == [0.0] * len(rows)


def test_the_committed_tables_carry_no_post_prompt_term_while_the_switch_is_off():
    assert not sef.ADOPT_POST_PROMPT_DECODE   # see docs/notes/s18srv_rule.md for the outcome
    for name, t in serve_engines().items():
        assert t["post_prompt_s"] == 0.0 and t["post_prompt_iterations"] == 0.0, name


@pytest.mark.parametrize("adopt", [False, True])
def test_the_fit_gives_the_term_only_with_the_switch_on(monkeypatch, adopt):
    """h100x2's fit runs: off, no term; on, a positive post_prompt_s at a window of POST_PROMPT_CHOICES (the
    rule's fit-split result: 0.55 ms over 4 iterations)."""
    monkeypatch.setattr(sef, "ADOPT_POST_PROMPT_DECODE", adopt)
    r = sef.fit_folder(rec.MEASUREMENTS_DIR / "h100x2")
    if not adopt:
        assert r["post_prompt_s"] == 0.0 and r["post_prompt_iterations"] == 0.0
        return
    assert r["post_prompt_iterations"] in sef.POST_PROMPT_CHOICES
    assert 0.0002 < r["post_prompt_s"] < 0.002
