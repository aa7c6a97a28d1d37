"""s27walk: the readers keyed by a GPU alone, deep inside a prediction (b_kernels, index_put, grouped_clock,
bwd_grouped, moe_skew), read under the records root in use (calibration.records.records_root), which `twin fit
--records DIR` (fit_gpu), `twin validate --records DIR` (validate) and layer_gaps.eager_terms set: a fit of another
root read calibration/measurements' h100/kernels.csv, h100x2 and h100x4 pipeline_op_kernels.csv and the s14epl
ep_kernels.csv whatever it was told. A few CPU-seconds."""

import pytest

from calibration import b_kernels, moe_skew
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


@pytest.mark.parametrize("module, what", [("serve_graph_ops", "fit"), ("serve_graph_floor", "fit"),
                                          ("serve_graph_floor_h200", "guards"), ("serve_load_host", "fit")])
def test_a_serving_judge_reads_its_fitting_runs_under_the_records_root(module, what, tmp_path, monkeypatch, capsys):
    """The serving judges' main() took calibration/measurements as their root whatever --records said: given an
    empty root they judged the committed runs. Now they look under the root given, find no fitting run, exit 2."""
    import importlib

    monkeypatch.setattr(rec, "_ROOT", rec._ROOT)   # the run sets the process's root: restored after the test
    (tmp_path / "h200").mkdir()
    assert importlib.import_module(f"calibration.{module}").main(["--records", str(tmp_path), what]) == 2
    assert str(tmp_path) in capsys.readouterr().err
