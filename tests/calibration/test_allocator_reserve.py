"""The allocator's reserve beside the count (docs/notes/s27mlm2_rule.md, candidate B): the fraction per
allocator setting from real.fsdp_memory's rows (B1 worked by hand on synthetic rows) and the published
comparison with calibration.published_runs.ADOPT_ALLOCATOR_RESERVED_PEAK, which moves only the compared
memory of rows with an allocator setting, never a fit."""

import pandas as pd
import pytest

from calibration import allocator_reserve as ar
from calibration import published_runs

GIB = 2 ** 30


def _rows(fracs: dict) -> pd.DataFrame:
    """Steady rows of parts {config: (layers, conf, [reserve fraction of each step])}, 100 GiB allocated."""
    rows = []
    for config, (layers, conf, per_step) in fracs.items():
        for rank in (0, 1):
            for step, f in enumerate(per_step, start=2):
                rows.append({"config": config, "layers": layers, "alloc_conf": conf, "rank": rank, "step": step,
                             "status": "ok", "peak_allocated_bytes": 100 * GIB, "peak_reserved_bytes": (1 + f) * 100 * GIB,
                             "peak_active_bytes": 100 * GIB, "start_allocated_bytes": 10 * GIB, "num_alloc_retries": 0})
    return pd.DataFrame(rows)


def test_the_fraction_and_b1_by_hand():
    e, n = ar.SETTINGS["expandable"], ar.SETTINGS["default"]
    df = _rows({"e16": (16, e, [0.02, 0.03, 0.04, 0.03]), "e32": (32, e, [0.01, 0.01, 0.01, 0.01]),
                "n16": (16, n, [0.10, 0.10, 0.10, 0.10]), "n32": (32, n, [0.20, 0.20, 0.20, 0.20])})
    s = ar.setting_fractions(ar.part_fractions(df))
    # expandable: f16 = median 0.03, f32 = 0.01; |0.02| <= max(0.02, 0.0025): B1 holds, f = f32
    assert s["expandable"]["f16"] == pytest.approx(0.03) and s["expandable"]["f32"] == pytest.approx(0.01)
    assert s["expandable"]["B1"] and s["expandable"]["f_taken"] == pytest.approx(0.01)
    # default: |0.10| > max(0.02, 0.05): B1 fails, its rows take 0
    assert not s["default"]["B1"] and s["default"]["f_taken"] == 0.0


def test_a_part_missing_fails_b1():
    df = _rows({"e16": (16, ar.SETTINGS["expandable"], [0.05] * 4)})
    s = ar.setting_fractions(ar.part_fractions(df))
    assert not s["expandable"]["B1"] and s["expandable"]["f_taken"] == 0.0 and s["default"]["f"] is None


def test_the_comparison_moves_only_rows_with_a_setting(monkeypatch):
    runs = {r.id: r for r in published_runs.load_runs()[0]}
    fit = runs["tt-8b-fsdp8"]
    assert fit.allocator == "expandable" and runs["tt-8b-fsdp128"].allocator == "default"
    assert runs["mlm-gpt-7.1b"].allocator is None
    breakdown = {"weights": 10 * GIB, "activations": 50 * GIB}
    monkeypatch.setattr(published_runs, "reserve_fraction", lambda a: {"expandable": 0.1, "default": 0.2}.get(a, 0.0))
    off = published_runs.memory_fields(fit, breakdown, 70 * GIB)
    monkeypatch.setattr(published_runs, "ADOPT_ALLOCATOR_RESERVED_PEAK", True)
    on = published_runs.memory_fields(fit, breakdown, 70 * GIB)
    assert off["memory_rel_error"] == pytest.approx(60 / 82.4 - 1)
    assert on["memory_rel_error"] == pytest.approx(66 / 82.4 - 1)
    assert on["memory_fits"] == off["memory_fits"] and on["memory_per_gpu_bytes"] == off["memory_per_gpu_bytes"]


def test_a_bad_allocator_is_refused(tmp_path):
    text = published_runs.RUNS_FILE.read_text().replace('allocator = "expandable"', 'allocator = "cudaMalloc"', 1)
    bad = tmp_path / "runs.toml"
    bad.write_text(text)
    with pytest.raises(ValueError, match="allocator 'cudaMalloc' not among"):
        published_runs.load_runs(bad)
