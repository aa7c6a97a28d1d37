"""s27walk: the readers keyed by a GPU alone, deep inside a prediction (b_kernels, index_put, grouped_clock,
bwd_grouped, moe_skew), read under the records root in use (calibration.records.records_root), which `twin fit
--records DIR` (fit_gpu), `twin validate --records DIR` (validate) and layer_gaps.eager_terms set: a fit of another
root read calibration/measurements' h100/kernels.csv, h100x2 and h100x4 pipeline_op_kernels.csv and the s14epl
ep_kernels.csv whatever it was told. A few CPU-seconds."""

import pytest

from calibration import b_kernels, entry, moe_skew
from calibration import records as rec
from calibration.bwd_grouped import layout_factors
from calibration.grouped_clock import gpu_clock_factors
from calibration.index_put import index_put_s_per_elem
from calibration.predict import gpu_spec, row_kernel


def test_the_gpu_keyed_readers_read_under_the_records_root_in_use(tmp_path):
    h100 = gpu_spec("h100").name
    assert rec.records_root() == rec.MEASUREMENTS_DIR
    # the committed tree measures them
    assert b_kernels.measured(h100) and index_put_s_per_elem(h100) and gpu_clock_factors(h100, row_kernel)
    (tmp_path / "h100").mkdir()   # a records root without these records: each reads as unmeasured
    with rec.records_root_scope(tmp_path):
        assert rec.records_root() == tmp_path
        assert b_kernels.measured(h100) is None
        assert index_put_s_per_elem(h100) is None
        assert gpu_clock_factors(h100, row_kernel) == {}
        assert layout_factors(h100) == {}
        with pytest.raises(FileNotFoundError, match=str(tmp_path)):
            moe_skew.read_rows("h100")
        with rec.records_root_scope(rec.MEASUREMENTS_DIR):   # nested: the inner root, then the outer again
            assert b_kernels.measured(h100)
        assert b_kernels.measured(h100) is None
    assert rec.records_root() == rec.MEASUREMENTS_DIR and b_kernels.measured(h100)


def test_the_layout_factors_take_their_twin_seconds_from_the_profiles_in_use(tmp_path):
    """s27walk round 2: bwd_grouped.layout_factors (measured / twin seconds of the backward layouts, over the
    forward's) timed the twin with the committed profile whatever `twin validate --profiles DIR` predicted with;
    now with the profiles folder in use (calibration.records.profiles_scope, set by validate)."""
    import json

    from calibration.fit import PROFILES_DIR
    h100 = gpu_spec("h100").name
    committed = layout_factors(h100)
    prof = json.loads((PROFILES_DIR / "h100.json").read_text())
    prof["grouped_gemm"].pop("bf16/wgrad")   # the transposed layout timed with the forward's curve: another wgrad ratio
    (tmp_path / "h100.json").write_text(json.dumps(prof))
    assert rec.profiles_dir() is None
    with rec.profiles_scope(tmp_path):
        other = layout_factors(h100)
    assert rec.profiles_dir() is None and layout_factors(h100) == committed
    assert other["wgrad"] != pytest.approx(committed["wgrad"], rel=1e-3), (other, committed)
    with rec.profiles_scope(tmp_path / "none"):   # a folder without the GPU's profile: the committed one
        assert layout_factors(h100) == committed


def test_a_judge_run_through_main_reads_the_records_root_it_is_given(tmp_path, monkeypatch, capsys):
    """s27walk round 2: `python -m calibration.<judge>` read calibration/measurements whatever records the user
    wanted judged; every script's parser (calibration.entry.parser) now takes --records DIR, the process's records
    root (the readers keyed by a GPU alone, load_records without a folder, a GPU name's check)."""
    from calibration import bwd_grouped

    monkeypatch.setattr(rec, "_ROOT", rec._ROOT)   # the run sets the process's root: restored after the test
    (tmp_path / "h100").mkdir()
    (tmp_path / "h100" / "gemm.csv").write_text("bench,time_s\n")   # a GPU folder of the root, without layouts
    assert bwd_grouped.main(["h100", "--records", str(tmp_path)]) == 0
    assert rec.records_root() == tmp_path and rec.load_records.__defaults__ == (None,)
    assert "factors {}" in capsys.readouterr().out
    with pytest.raises(SystemExit):   # a GPU the root does not hold is refused as one of its GPUs
        bwd_grouped.main(["h200", "--records", str(tmp_path)])
    assert "got 'h200'; allowed: one of h100" in capsys.readouterr().err


def _exit_status(main, argv: list[str]) -> int:
    try:
        return main(argv)
    except SystemExit as exc:
        return exc.code


@pytest.mark.parametrize("module, what", [("serve_graph_ops", "fit"), ("serve_graph_floor", "fit"),
                                          ("serve_graph_floor_h200", "guards"), ("serve_load_host", "fit"),
                                          ("serve_start_sync", "fit"), ("serve_start_sync", "guards"),
                                          ("serve_pipeline", "fit"), ("serve_prefill_kernels", "constants")])
def test_a_serving_judge_reads_its_fitting_runs_under_the_records_root(module, what, tmp_path, monkeypatch, capsys):
    """The serving judges' main() took calibration/measurements as their root whatever --records said: given an
    empty root they judged the committed runs. Now they look under the root given, find no fitting run, exit 2 with
    one line naming the root (s28prod: serve_start_sync and serve_pipeline ended in a ValueError traceback there)."""
    import importlib

    monkeypatch.setattr(rec, "_ROOT", rec._ROOT)   # the run sets the process's root: restored after the test
    (tmp_path / "h200").mkdir()
    assert _exit_status(importlib.import_module(f"calibration.{module}").main, ["--records", str(tmp_path), what]) == 2
    err = capsys.readouterr().err
    assert str(tmp_path) in err and err.count("\n") == 1 and "Traceback" not in err, err


def test_a_records_root_without_a_folder_is_refused_before_any_work(tmp_path, monkeypatch, capsys):
    """s28prod: a --records DIR that holds no <gpu>/ folder (a mistyped or unfilled path) is refused on parsing, one
    line naming it, exit 2 (calibration.entry.records_root_folder), before a script reads anything."""
    from calibration import serve_start_sync

    monkeypatch.setattr(rec, "_ROOT", rec._ROOT)
    with pytest.raises(SystemExit) as exc:
        serve_start_sync.main(["fit", "--records", str(tmp_path)])
    assert exc.value.code == 2 and rec.records_root() == rec.MEASUREMENTS_DIR
    assert capsys.readouterr().err == (f"error: --records: got {str(tmp_path)!r}; allowed: {entry.RECORDS_EXPECTED} "
                                       "(it holds no folder)\n")


def test_the_serving_validation_reads_the_records_root_in_use(tmp_path):
    """s28prod: serve_validation.validate_measured (the serve report's measured rows) read calibration/measurements
    whatever root was in use; now the records root (records_root_scope, --records)."""
    from calibration.records_io import open_csv
    from calibration.serve_validation import validate_measured

    with open_csv(rec.MEASUREMENTS_DIR / "h100" / "model.csv") as f:
        lines = f.read().splitlines()
    head, row = lines[0], next(r for r in lines[1:] if ",prefill," in f",{r},")
    (tmp_path / "h100").mkdir()
    (tmp_path / "h100" / "model.csv").write_text(f"{head}\n{row}\n")
    with rec.records_root_scope(tmp_path):
        rows = validate_measured()
    assert len(rows) == 1 and rows[0]["bench"] == "prefill" and rows[0]["gpu"].startswith("h100"), rows


def test_a_default_root_is_the_records_root_in_use_and_the_cached_readers_key_on_it_resolved(tmp_path):
    """s28prod: a reader's `root` default was calibration/measurements fixed at import (~220 of them), so a call
    without a root under `twin validate --records DIR` read the committed tree; now None, the records root in
    use (calibration.records.records_root). The cached readers key on the resolved root: one entry per tree."""
    from calibration import kernel_map, op_host_rate
    assert kernel_map.available_maps() == kernel_map.available_maps(rec.MEASUREMENTS_DIR) != []
    with rec.records_root_scope(tmp_path):
        assert kernel_map.available_maps() == []
    term = op_host_rate.call_term()
    before = op_host_rate._call_term.cache_info().currsize
    assert op_host_rate.call_term(str(rec.MEASUREMENTS_DIR)) == term
    assert op_host_rate.call_term(rec.MEASUREMENTS_DIR / "h100" / "..") == term
    assert op_host_rate._call_term.cache_info().currsize == before
