"""calibration.serve_eager_host (docs/notes/s24eager_rule.md): the eager iteration host term fitted from
real/serve/eagerhost.py's records, written as a one-GPU table's launch floor, and the rule's criteria."""

import csv
import math

import pytest

from calibration import serve_eager_host as seh
from real.serve.eagerhost import COLS, COMPOSITIONS
from twin.serving.timing import engine_costs, host_scale

TABLE = "real-serve-h100-ep1"
# a host of known terms (seconds at the H100 table's reference host)
TRUE = {"a_s": 0.6e-3, "b_s_per_layer": 1.9e-3, "c_s_per_chunk_layer": 0.35e-3, "e_s_per_token": 0.6e-6,
        "r_s_per_row": 9e-6, "g_s_per_decode_layer": 0.25e-3}
MODELS = {"v3-slice-2l": (2, 8.0e-6), "qwen2moe-mla-slice": (2, 11.0e-6), "mixtral-mla-slice": (1, 9.5e-6)}


def _rows() -> list[dict]:
    """eager_host rows of the known host, each model at its own probe, round 0 slowed (sizes met first)."""
    table = engine_costs(TABLE)
    out = []
    for model, (layers, probe) in MODELS.items():
        for rnd in range(3):
            for p, n, d in COMPOSITIONS:
                x = seh.design(layers, p, p * n, d)
                host = seh.predicted_host_s(TRUE, x) * host_scale(table, probe) * (1.5 if rnd == 0 else 1.0)
                out.append({k: "" for k in COLS} | {
                    "model": model, "num_layers": str(layers), "prompts": str(p), "tokens": str(n),
                    "decode_rows": str(d), "chunks": str(p), "flat_tokens": str(p * n + d), "round": str(rnd),
                    "first_met": str(int(rnd == 0)), "host_s": repr(host), "ops": str(80 * layers),
                    "probe_before_launch_s": repr(probe), "probe_after_launch_s": repr(probe)})
    return out


def test_the_fit_recovers_a_known_host_at_the_tables_reference():
    fit = seh.fit_floor(_rows(), engine_costs(TABLE))
    for k, v in TRUE.items():
        assert fit[k] == pytest.approx(v, rel=1e-6, abs=1e-12), k


def test_the_first_round_is_left_out_and_a_fit_needs_rows():
    rows = _rows()
    assert all(r["first_met"] == "0" for r in seh.fit_rows(rows))
    with pytest.raises(ValueError, match="no fitting rows"):
        seh.fit_floor([r for r in rows if r["first_met"] == "1"], engine_costs(TABLE))


def test_floor_terms_are_the_fit_in_the_tables_units(tmp_path):
    d = tmp_path / "h100" / "s24eager" / "fit"
    d.mkdir(parents=True)
    with (d / "eager_host.csv").open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=COLS)
        w.writeheader()
        w.writerows(_rows())
    terms = seh.floor_terms(tmp_path)
    h100 = terms[TABLE]
    assert h100["launch_floor_iteration_s"] == pytest.approx(TRUE["a_s"], rel=1e-6)
    assert h100["launch_floor_eager_s"] == pytest.approx(2 * TRUE["b_s_per_layer"], rel=1e-6)
    assert h100["launch_floor_chunk_s"] == pytest.approx(2 * TRUE["c_s_per_chunk_layer"], rel=1e-6)
    assert h100["launch_floor_decode_s"] == pytest.approx(2 * TRUE["g_s_per_decode_layer"], rel=1e-6)
    assert h100["launch_floor_token_s"] == pytest.approx(TRUE["e_s_per_token"], rel=1e-6)
    assert h100["launch_floor_row_s"] == pytest.approx(TRUE["r_s_per_row"], rel=1e-6)
    # the H200 table's terms: the same host seconds at its own reference probe
    h200 = engine_costs("real-serve-h200-ep1")
    f = host_scale(engine_costs(TABLE), h200["host_probe_launch_s"])
    assert terms["real-serve-h200-ep1"]["launch_floor_eager_s"] == pytest.approx(h100["launch_floor_eager_s"] * f,
                                                                                 rel=1e-6)


def test_per_model_reads_the_host_per_operator_and_the_left_out_fit():
    rows = _rows()
    table = engine_costs(TABLE)
    fit = seh.fit_floor(rows, table)
    by = {m["model"]: m for m in seh.per_model(rows, table, fit)}
    assert set(by) == set(MODELS)
    assert all(abs(m["fit_error"]) < 1e-6 for m in by.values())
    # left out, a two-layer model is predicted from the others; mixtral (the only one-layer model) is not: without it
    # every model has two layers and the per-iteration and per-layer terms cannot be told apart
    assert abs(by["v3-slice-2l"]["left_out_error"]) < 1e-3 and abs(by["qwen2moe-mla-slice"]["left_out_error"]) < 1e-3
    assert by["mixtral-mla-slice"]["ops_p50"] == 80


def _row(gpu, run_id, err, met):
    return {"gpu": gpu, "run_id": run_id, **{f"{k}_rel_error": err for k in seh.FIGURES},
            **{f"{k}_within_target": met for k in seh.FIGURES}}


def test_fresh_criteria_need_more_checks_a_lower_median_and_no_worse_closed_p99():
    off = [_row("h100", "n24-v2lite-poisson-r20-mid", 0.3, False), _row("h100", "n24-v2lite-closed-c16-mid", 0.3, False)]
    better = [_row("h100", "n24-v2lite-poisson-r20-mid", 0.02, True), _row("h100", "n24-v2lite-closed-c16-mid", 0.2, False)]
    assert seh.fresh_criteria(off, better)["met"]
    worse_closed = [_row("h100", "n24-v2lite-poisson-r20-mid", 0.02, True),
                    _row("h100", "n24-v2lite-closed-c16-mid", 0.4, False)]
    c = seh.fresh_criteria(off, worse_closed)
    assert not c["criteria"]["D2_closed_ttft_p99_median"] and not c["met"]
    assert not seh.fresh_criteria([], [])["met"]   # no records: nothing adopted


def test_guards_need_no_fewer_checks_on_each_set_and_no_higher_pooled_median():
    off = [{**_row("h100", "a", 0.1, True), "registration": "s21srvnew"},
           {**_row("h100", "c", 0.3, False), "registration": "s23closed"}]
    on_ok = [{**off[0]}, {**_row("h100", "c", 0.25, False), "registration": "s23closed"}]
    assert seh.guard_criteria(off, on_ok)["met"]
    on_lost = [{**_row("h100", "a", 0.3, False), "registration": "s21srvnew"}, {**on_ok[1]}]
    g = seh.guard_criteria(off, on_lost)
    assert not g["criteria"]["G1_set_A_no_fewer"] and not g["met"]
    assert math.isfinite(g["pooled"][1][1])
