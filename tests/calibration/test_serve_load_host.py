"""calibration.serve_load_host (docs/notes/s26start2_rule.md): the host terms' fit on fitting load iterations."""

import numpy as np
import pytest

from calibration import serve_load_host as slh


def _rows(n=200, seed=0):
    rng = np.random.default_rng(seed)
    ops = rng.uniform(200, 900, n)
    tokens = rng.uniform(100, 2000, n)
    prompt_only = (rng.uniform(size=n) < 0.4).astype(float)
    return np.column_stack([ops, tokens, np.ones(n), prompt_only])


def test_fit_terms_recovers_known_host_terms_and_the_median_outside():
    X = _rows()
    true = np.array([9e-6, 0.15e-6, 0.4e-3, 0.6e-3])
    y = X @ true
    outside = np.full(len(y), 120e-6)
    got = slh.fit_terms(X, y, outside)
    assert [got[k] for k in slh.TERMS] == pytest.approx(list(true), rel=1e-6)
    assert got["sync_s"] == pytest.approx(120e-6) and got["rows_left_out"] == 0
    assert got["fit_median_abs_rel_error"] < 1e-9


def test_fit_terms_leaves_out_the_stalls_above_twice_the_first_fit():
    X = _rows(seed=1)
    true = np.array([9e-6, 0.15e-6, 0.4e-3, 0.6e-3])
    y = X @ true
    outside = np.full(len(y), 100e-6)
    y[:10] += 0.05          # ten first-size stalls of 50 ms
    outside[:10] = 0.05
    got = slh.fit_terms(X, y, outside)
    assert got["rows_left_out"] == 10
    assert got["eager_op_s"] == pytest.approx(true[0], rel=1e-6) and got["sync_s"] == pytest.approx(100e-6)


def test_fit_terms_are_not_negative():
    X = _rows(seed=2)
    y = X @ np.array([10e-6, 0.0, 0.0, 0.0]) * np.random.default_rng(3).uniform(0.9, 1.1, len(X))
    got = slh.fit_terms(X, y, np.ones(len(y)) * 1e-4)
    assert all(got[k] >= 0 for k in slh.TERMS)
