"""(s16srv, docs/notes/s16srv_rule.md, second change) A first-met size's large cost per GEMM kernel region
first launched: twin.serving.first_launch maps a flat size to its (weight, region) pairs (the s16srv sweep's
region starts), the engine pays new_bin_s per pair its group had not launched where the table says
new_bin_regions = 1 (else per new 16-token bin), and the fit counts the same (ADOPT_KERNEL_REGIONS)."""

import numpy as np
import pandas as pd
import pytest

import calibration.serve_engine_fit as sef
from calibration.kernel_regions import FLAT_WEIGHTS, region_starts
from twin.core.specs import serve_engines
from twin.serving.first_launch import regions
from tests.twin.serving.synthetic_run import served, with_terms


def test_the_committed_regions_are_the_campaign_sweeps():
    starts = region_starts()
    assert sorted(starts) == sorted(w for w in starts if any(f in w for f in FLAT_WEIGHTS)) and len(starts) == 9
    assert {w: list(s) for w, s in timing_free_starts().items()} == starts


def timing_free_starts():
    from twin.serving.first_launch import region_starts as twin_starts
    return twin_starts()


def test_sizes_of_one_region_launch_the_same_pairs():
    # wq_b's regions start at 1, 9, 17, ... at small M (the ascending sweep): 9..16 share its kernel, 16 -> 17 not
    wq_b = next(w for w in timing_free_starts() if "wq_b" in w)
    assert (wq_b, 2) in regions(9) and (wq_b, 2) in regions(16) and (wq_b, 2) not in regions(17)
    assert len(regions(300)) == 9 and regions(300) == regions(300)


def _first_token_s(monkeypatch, sizes, **terms):
    """Lone prompts of `sizes` tokens 1 s apart (two output tokens: no decode rows overlap the next), the
    committed h200 table with `terms` (the exact-size look-ups off, no spread)."""
    with_terms(monkeypatch, wake_s=0.0, new_size_s=0.0, **terms)
    return served(np.arange(1.0, 1.0 + len(sizes)), sizes, 2)["first_token_s"]


def test_the_engine_pays_new_bin_s_per_region_first_launched(monkeypatch):
    sizes = [300, 300, 200]   # all host-bound on the h200 table (a 1000-token prompt is not: its stall hides)
    base = _first_token_s(monkeypatch, sizes, new_bin_s=0.0, new_bin_regions=1.0)
    on = _first_token_s(monkeypatch, sizes, new_bin_s=0.002, new_bin_regions=1.0)
    captured = set().union(*(regions(b) for b in (1, 2, 4, 8, 16, 32, 64)))
    first = len(regions(300) - captured)
    third = len(regions(200) - captured - regions(300))
    assert first > 0 and third > 0
    assert (on - base).tolist() == pytest.approx([0.002 * first, 0.0, 0.002 * third], abs=1e-9)
    # the 16-token bins (new_bin_regions 0): one new bin for each new size, the repeat none
    bins = _first_token_s(monkeypatch, sizes, new_bin_s=0.002, new_bin_regions=0.0)
    assert (bins - base).tolist() == pytest.approx([0.002, 0.0, 0.002], abs=1e-9)


def test_the_fit_counts_the_regions_a_ranks_size_launches_first():
    """EP2 rows: rank 0 at 300 then 301 (same regions), rank 1 at 1 then 1000; nothing run before."""
    rows = [{"run_id": "r", "graph_rows": 0, "prompt_iteration_s": 1.0, "rank_sizes": (300, 1), "sizes_before": frozenset(),
             "captured": ()},
            {"run_id": "r", "graph_rows": 0, "prompt_iteration_s": 1.0, "rank_sizes": (301, 1000), "sizes_before": frozenset(),
             "captured": ()}]
    df = pd.DataFrame(rows)
    on = sef.mark_new_sizes(df, by_regions=True)
    assert on.new_bin_s.tolist() == [float(max(len(regions(300)), len(regions(1)))),
                                      float(max(len(regions(301) - regions(300)), len(regions(1000) - regions(1))))]
    off = sef.mark_new_sizes(df)
    assert off.new_bin_s.tolist() == [1.0, 1.0]   # a new 16-token bin on some rank each time


def test_the_committed_tables_count_bins_while_the_switch_is_off():
    assert not sef.ADOPT_KERNEL_REGIONS
    for name, t in serve_engines().items():
        assert t["new_bin_regions"] == 0.0, name
