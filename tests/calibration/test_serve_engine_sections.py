"""The sections of twin/data/serve_engines.toml that other commands fit and `python -m calibration.serve_engine_fit`
writes from their committed fits (s29sust: the file is that command's output, not a hand edit): each one-GPU
table's `start_sync` sections (s26start2's T: calibration/s25v3pre_refit.json + calibration/s26start2_fit.json) and
the H200 one-GPU table's graph_op_floor_s (s28serve's V-H200: calibration/s27serve2_fit.json). Reads files only."""

import json
import tomllib

from calibration import serve_engine_fit as sef
from calibration import serve_graph_floor as sgf
from calibration import serve_load_host as slh
from calibration import serve_prefill_kernels as spk
from twin.core.specs import serve_engines
from twin.serving import timing


def test_the_fit_files_are_named_once():
    assert spk.REFIT_FILE == sef.START_SYNC_REFIT_FILE and slh.FIT_FILE == sef.START_SYNC_FIT_FILE
    assert sgf.FIT_FILE == sef.GRAPH_FLOOR_FILE and sgf.TERM == sef.GRAPH_FLOOR_TERM
    assert sef.START_SYNC_HOST_TERMS == (*slh.TERMS, "sync_s")


def test_start_sync_sections_read_back_as_the_fits_give_them():
    """start_sync_toml's text parses to the terms it was given (every float exact), and the committed tables carry
    start_sync_terms() exactly: one-GPU tables only."""
    terms = sef.start_sync_terms()
    assert set(terms) == {"real-serve-h100-ep1", "real-serve-h200-ep1"}
    for table, t in terms.items():
        text = sef.start_sync_toml(table, t)
        assert tomllib.loads(text)[table]["start_sync"] == t
        assert serve_engines()[table][timing.ADOPTED_TERMS_KEY] == t
    assert timing.ADOPTED_TERMS_KEY not in serve_engines()["real-serve-h200-ep2"]


def test_the_graph_floor_is_the_fits_in_its_table_only():
    fitted = json.loads(sef.GRAPH_FLOOR_FILE.read_text())["tables"]
    for name, table in serve_engines().items():
        if name in sef.GRAPH_FLOOR_TABLES:
            assert table[sef.GRAPH_FLOOR_TERM] == fitted[name][sef.GRAPH_FLOOR_TERM] > 0
        else:
            assert table.get(sef.GRAPH_FLOOR_TERM, 0.0) == 0.0, name
    assert sef.graph_floor_lines("real-serve-h100-ep1") == []
