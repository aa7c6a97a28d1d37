"""twin.serving.timing.ADOPT_LAUNCH_FLOOR (docs/notes/s23closed_rule.md, third candidate): under the switch an eager
one-GPU iteration takes at least its launch floor (loop + the table's launch_floor_* terms + a first-met stall); a
kernel-bound iteration, a table without the terms, or the switch off: the additive terms as before."""

import pytest

from calibration import prereg_serve as ps
from calibration.serve_host_speed import tables_with
from twin.serving import timing

TABLE = "real-serve-h100-ep1"
# floor terms of the size the launch-overlap fit of the h100 fit runs gives (s23closed: 0.56, 3.93, 1.23 ms)
FLOOR = {"launch_floor_iteration_s": 0.56e-3, "launch_floor_eager_s": 3.93e-3, "launch_floor_chunk_s": 1.23e-3}


@pytest.fixture
def switch(monkeypatch):
    def set_to(on: bool):
        for name in timing.T_SWITCHES:   # the committed pricing before candidate T (docs/notes/s26start2_rule.md)
            monkeypatch.setattr(timing, name, False)
        monkeypatch.setattr(timing, "ADOPT_LAUNCH_FLOOR", on)
    return set_to


def _costs(model: str) -> timing.IterationCosts:
    run = next(r for r in ps.S22.runs if r.arrival == "closed")
    sc = ps.scenario_for(ps.run_row("h100", model, run, 0.0), engine=ps.engine_table("h100"))   # the fit host
    return timing.IterationCosts(sc.model, sc.gpu, sc.serve)


def _one_prompt_s(model: str, tokens: int) -> float:
    """An eager iteration of one fresh prompt of `tokens` tokens (one chunk, no decode rows)."""
    return _costs(model).iteration_s(0, 0.0, tokens, tokens, 0.0, 1, float(tokens * tokens))[0]


def test_off_or_without_floor_terms_the_iteration_is_as_before(switch):
    switch(False)
    base = _one_prompt_s("qwen2moe-mla-slice", 250)
    with tables_with({TABLE: FLOOR}):
        assert _one_prompt_s("qwen2moe-mla-slice", 250) == base
    switch(True)
    assert _one_prompt_s("qwen2moe-mla-slice", 250) == base   # the committed table carries no floor terms


def test_on_a_host_bound_iteration_takes_its_launches(switch):
    """qwen2moe-mla-slice (2 layers: the floor as fitted), 250 tokens: ~1 ms of kernels under 5.7 ms of launches."""
    switch(False)
    base = _one_prompt_s("qwen2moe-mla-slice", 250)
    switch(True)
    with tables_with({TABLE: FLOOR}):
        on = _one_prompt_s("qwen2moe-mla-slice", 250)
        loop = _costs("qwen2moe-mla-slice").engine["loop_s"]
    assert on == pytest.approx(loop + 0.56e-3 + 3.93e-3 + 1.23e-3, rel=1e-12)
    assert on > base


def test_on_the_floor_is_layer_scaled_and_a_kernel_bound_iteration_keeps_its_time(switch):
    switch(True)
    with tables_with({TABLE: FLOOR}):
        mixtral = _costs("mixtral-mla-slice")   # one layer: half the per-forward and per-chunk launches
        assert mixtral.engine["launch_floor_eager_s"] == pytest.approx(3.93e-3 / 2)
        assert mixtral.engine["launch_floor_chunk_s"] == pytest.approx(1.23e-3 / 2)
        assert mixtral.engine["launch_floor_iteration_s"] == pytest.approx(0.56e-3)
        on = _one_prompt_s("v3-slice-2l", 2048)
    switch(False)
    assert _one_prompt_s("v3-slice-2l", 2048) == on   # 2,048 tokens of V3 shapes: the kernels set the time


# s24eager (docs/notes/s24eager_rule.md): the floor's per-token, per-decode-row and decode-path terms
S24 = {**FLOOR, "launch_floor_token_s": 0.5e-6, "launch_floor_row_s": 8e-6, "launch_floor_decode_s": 0.4e-3}


def test_the_floor_counts_prompt_tokens_decode_rows_and_the_decode_path():
    e = {"loop_s": 1e-5, **S24}
    alone = timing.launch_floor_s(e, 1, 0.0, 250, 0)
    assert alone == pytest.approx(1e-5 + 0.56e-3 + 3.93e-3 + 1.23e-3 + 250 * 0.5e-6, rel=1e-12)
    mixed = timing.launch_floor_s(e, 1, 0.0, 250, 16)
    assert mixed - alone == pytest.approx(16 * 8e-6 + 0.4e-3, rel=1e-12)
    # a table without the s24eager terms: the s23closed floor
    assert timing.launch_floor_s({"loop_s": 1e-5, **FLOOR}, 1, 0.0, 250, 16) == pytest.approx(1e-5 + 5.72e-3, rel=1e-12)


def test_the_decode_path_term_is_layer_scaled_and_the_per_token_terms_are_not(switch):
    switch(True)
    with tables_with({TABLE: S24}):
        mixtral = _costs("mixtral-mla-slice")
        assert mixtral.engine["launch_floor_decode_s"] == pytest.approx(0.4e-3 / 2)
        assert mixtral.engine["launch_floor_token_s"] == pytest.approx(0.5e-6)
        assert mixtral.engine["launch_floor_row_s"] == pytest.approx(8e-6)
        on = _one_prompt_s("qwen2moe-mla-slice", 250)
        loop = _costs("qwen2moe-mla-slice").engine["loop_s"]
    assert on == pytest.approx(loop + 5.72e-3 + 250 * 0.5e-6, rel=1e-12)
