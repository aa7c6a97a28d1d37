"""The allocator's reserve pooled over our records (docs/notes/s32mem_rule.md, candidate
calibration.published_runs.ADOPT_RESERVED_PEAK_POOLED): the pooled fraction per allocator setting worked by hand on
synthetic rows (capped parts and unfinished steps left out), and the comparison, which moves only the compared memory
of rows with an allocator setting, capped at the row's capacity, never a count or a fit."""

import dataclasses

import numpy as np
import pandas as pd
import pytest

from calibration import allocator_reserve as ar
from calibration import published_runs

GIB = 2 ** 30


def _rows(parts: dict) -> pd.DataFrame:
    """Rows of parts {config: (setting, memory_fraction or nan, [(status, reserve fraction) of steps 1..])}, 100 GiB
    allocated at each step's peak."""
    rows = []
    for config, (setting, cap, steps) in parts.items():
        for step, (status, f) in enumerate(steps, start=1):
            rows.append({"record": "h200/s32mem", "config": config, "setting": setting, "memory_fraction": cap,
                         "ac": "op", "layers": 16, "step": step, "status": status, "peak_allocated_bytes": 100 * GIB,
                         "peak_reserved_bytes": (1 + f) * 100 * GIB, "num_alloc_retries": 0, "num_ooms": 0})
    return pd.DataFrame(rows)


def test_the_pooled_fraction_by_hand():
    df = _rows({"a": ("expandable", np.nan, [("ok", 0.9), ("ok", 0.20), ("ok", 0.22), ("ok", 0.30)]),  # step 1 left out
                "b": ("expandable", np.nan, [("ok", 0.0), ("ok", 0.30), ("oom", 0.0)]),   # OOM steps left out
                "c": ("expandable", 0.5, [("ok", 0.0), ("ok", 0.01), ("ok", 0.01)]),      # capped: not pooled
                "d": ("default", np.nan, [("ok", 0.0), ("ok", 0.40)])})
    parts = ar.pooled_parts(df)
    assert parts["h200/s32mem/a"]["reserve_frac"] == pytest.approx(0.22)   # median of 0.20, 0.22, 0.30
    assert parts["h200/s32mem/b"]["steady_rows"] == 1 and parts["h200/s32mem/b"]["statuses"] == ["ok", "oom"]
    assert parts["h200/s32mem/c"]["capped"] and parts["h200/s32mem/c"]["memory_fraction"] == 0.5
    pooled = ar.pooled_fractions(parts)
    # expandable: median of a 0.22 and b 0.30 = 0.26 (c capped); default: d alone
    assert pooled["expandable"]["f"] == pytest.approx(0.26) and sorted(pooled["expandable"]["parts"]) == [
        "h200/s32mem/a", "h200/s32mem/b"]
    assert pooled["default"]["f"] == pytest.approx(0.40)


def test_the_comparison_moves_only_rows_with_a_setting_and_stops_at_capacity(monkeypatch):
    runs = {r.id: r for r in published_runs.load_runs()[0]}
    monkeypatch.setattr(ar, "pooled_reserve_fraction", lambda s: {"expandable": 0.25, "default": 0.30}.get(s, 0.0))
    monkeypatch.setattr(published_runs, "ADOPT_RESERVED_PEAK_POOLED", True)
    breakdown = {"weights": 10 * GIB, "activations": 50 * GIB}
    e = published_runs.memory_fields(runs["tt-8b-fsdp8"], breakdown, 100 * GIB)
    assert e["memory_compared_bytes"] == pytest.approx(75 * GIB) and e["memory_per_gpu_bytes"] == 60 * GIB
    assert e["memory_rel_error"] == pytest.approx(75 / runs["tt-8b-fsdp8"].published_memory_gib - 1)
    d = published_runs.memory_fields(runs["tt-8b-fsdp128"], breakdown, 70 * GIB)   # 78 GiB capped at 70
    assert d["memory_compared_bytes"] == 70 * GIB and d["memory_fits"]
    none = published_runs.memory_fields(runs["mlm-gpt-7.1b"], breakdown, 100 * GIB)
    assert none["memory_compared_bytes"] == 60 * GIB and none["memory_rel_error"] is None
    # the switch off: the count, whatever the fraction
    monkeypatch.setattr(published_runs, "ADOPT_RESERVED_PEAK_POOLED", False)
    assert published_runs.memory_fields(runs["tt-8b-fsdp8"], breakdown, 100 * GIB)["memory_compared_bytes"] == 60 * GIB
    # a row without a published figure but with a setting is estimated and not compared
    bare = dataclasses.replace(runs["tt-8b-fsdp8"], published_memory_gib=None)
    monkeypatch.setattr(published_runs, "ADOPT_RESERVED_PEAK_POOLED", True)
    assert published_runs.memory_fields(bare, breakdown, 100 * GIB)["memory_rel_error"] is None


def test_the_committed_records_pool_a_quarter():
    parts = ar.pooled_parts(ar.pool_rows(fresh=False))
    pooled = ar.pooled_fractions(parts)
    # seven expandable parts (s27mlm2 e16 / e32, s31pub's three, s30tt's two), two default (s27mlm2 n16 / n32)
    assert len(pooled["expandable"]["parts"]) == 7 and len(pooled["default"]["parts"]) == 2
    assert 0.24 < pooled["expandable"]["f"] < pooled["default"]["f"] < 0.30
