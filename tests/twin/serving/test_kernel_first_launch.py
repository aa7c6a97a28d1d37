"""(s17srv, docs/notes/s17srv_rule.md) A first-met size's large cost per GPU kernel first launched: the per-GPU
kernel maps (twin/data/kernel_map.toml from the s16srv2 campaigns' kernel names), the per-kernel cost measured on
the s16srv sweeps, the engine paying new_bin_s per kernel new to its process where the table says
new_bin_kernels = 1, the fit counting the same with new_bin_s held (ADOPT_KERNEL_FIRST_LAUNCH), both settings."""

import numpy as np
import pandas as pd
import pytest

import calibration.serve_engine_fit as sef
from calibration import kernel_map
from twin.core.specs import _catalog, serve_engines
from twin.serving.first_launch import KERNEL_MAP_FALLBACK, kernels
from tests.twin.serving.synthetic_run import served, with_terms

BUCKETS = (1, 2, 4, 8, 16, 32, 64)


@pytest.mark.parametrize("gpu", ["h100", "h200"])
def test_the_committed_map_is_the_campaigns_kernel_names(gpu):
    calls = kernel_map.call_kernels(gpu)
    segs, n = kernel_map.segments(calls)
    assert _catalog("kernel_map.toml")[gpu]["num_kernels"] == n and len(segs) == 9
    # every flat size's kernels in the twin are the union of the records' calls at that M
    names = sorted({k for (w, m), ks in calls.items() if kernel_map.is_flat(w) for k in ks})
    for m in (1, 9, 300, 301, 1024, 2048):
        recorded = {k for (w, mm), ks in calls.items() if mm == m and kernel_map.is_flat(w) for k in ks}
        assert {names[i] for i in kernels(gpu, m)} == recorded


def test_the_h200_launches_other_kernels_and_a_gpu_without_a_map_counts_on_the_fallback():
    assert any(kernels("h100", m) != kernels("h200", m) for m in range(1, 2049, 7))
    assert kernels("b200", 300) == kernels(KERNEL_MAP_FALLBACK, 300)


def test_the_measured_first_launch_is_the_campaigns_spike():
    # s16srv2: a call launching a kernel new to its process costs 2.7-3.0 ms more (s16srv spikes 2.2-2.9 ms);
    # the look-ups of a size without a new kernel a tenth of that per weight
    d = kernel_map.first_launch_excess()
    one = d[d.new_kernels == 1]
    assert len(one) > 900 and 2.2e-3 < kernel_map.first_launch_s() < 3.0e-3
    assert (d[d.new_kernels == 0].lookup_s < 0.4e-3).all()


def _first_token_s(monkeypatch, sizes, **terms):
    """Lone prompts of `sizes` tokens 1 s apart (two output tokens), the committed h200 table with `terms`
    (the exact-size look-ups off, no spread)."""
    with_terms(monkeypatch, wake_s=0.0, new_size_s=0.0, **terms)
    return served(np.arange(1.0, 1.0 + len(sizes)), sizes, 2)["first_token_s"]


def test_the_engine_pays_new_bin_s_per_kernel_first_launched_on_its_gpus_map(monkeypatch):
    sizes = [300, 300, 200]   # host-bound on the h200 table
    base = _first_token_s(monkeypatch, sizes, new_bin_s=0.0, new_bin_kernels=1.0)
    on = _first_token_s(monkeypatch, sizes, new_bin_s=0.002, new_bin_kernels=1.0)
    captured = set().union(*(kernels("h200", b) for b in BUCKETS))
    first = len(kernels("h200", 300) - captured)
    third = len(kernels("h200", 200) - captured - kernels("h200", 300))
    assert first > 0
    assert (on - base).tolist() == pytest.approx([0.002 * first, 0.0, 0.002 * third], abs=1e-9)
    # off (new_bin_kernels 0): a new 16-token bin per new size
    bins = _first_token_s(monkeypatch, sizes, new_bin_s=0.002, new_bin_kernels=0.0)
    assert (bins - base).tolist() == pytest.approx([0.002, 0.0, 0.002], abs=1e-9)


def test_the_fit_counts_the_kernels_a_ranks_size_launches_first():
    """EP2 rows: rank 0 at 300 then 301, rank 1 at 1 then 1000; nothing run before, no graphs."""
    rows = [{"run_id": "r", "graph_rows": 0, "prompt_iteration_s": 1.0, "rank_sizes": (300, 1), "sizes_before": frozenset(),
             "captured": ()},
            {"run_id": "r", "graph_rows": 0, "prompt_iteration_s": 1.0, "rank_sizes": (301, 1000), "sizes_before": frozenset(),
             "captured": ()}]
    on = sef.mark_new_sizes(pd.DataFrame(rows), kernel_gpu="h100")
    k = lambda n: kernels("h100", n)   # noqa: E731
    assert on.new_bin_s.tolist() == [float(max(len(k(300)), len(k(1)))),
                                      float(max(len(k(301) - k(300)), len(k(1000) - k(1))))]
    assert sef.mark_new_sizes(pd.DataFrame(rows)).new_bin_s.tolist() == [1.0, 1.0]   # off: 16-token bins


def _design(per_kernel_s: float) -> pd.DataFrame:
    """Synthetic rows: decode-only iterations and prompt iterations launching 0-3 new kernels, measured as
    physics + 5 ms + 1 ms a prompt + per_kernel_s a new kernel."""
    rows = []
    for i in range(80):
        prompt, new = i % 2 == 1, (i // 2) % 4
        row = {k: 0.0 for k in sef.TERMS}
        row.update(iteration_s=1.0, prompt_iteration_s=float(prompt), new_bin_s=float(new * prompt), run_id="r",
                   graph_rows=0, physics_s=0.001, prefill_ok=True, decode_ok=True, gap_s=0.0005)
        row["measured_s"] = 0.001 + 0.005 + 0.001 * prompt + per_kernel_s * new * prompt
        rows.append(row)
    return pd.DataFrame(rows)


def test_on_new_bin_s_is_held_at_the_measured_cost_and_the_other_terms_refit():
    df = _design(0.003)
    assert sef.fit(df)["new_bin_s"] == pytest.approx(0.003, rel=1e-6)   # off: the NNLS's
    df["new_bin_fixed_s"] = 0.002
    coef = sef.fit(df)
    assert coef["new_bin_s"] == 0.002
    # the 1 ms a kernel the held cost leaves goes to the prompt term (1.5 new kernels a prompt on average)
    assert coef["prompt_iteration_s"] == pytest.approx(0.001 + 0.0015, rel=1e-6)


def test_the_committed_tables_count_bins_while_the_switch_is_off():
    assert not sef.ADOPT_KERNEL_FIRST_LAUNCH   # not adopted: docs/notes/s17srv_rule.md outcome
    for name, t in serve_engines().items():
        assert t.get("new_bin_kernels", 0.0) == 0.0, name


def test_a_gpu_named_by_its_spec_takes_its_own_map():
    # the engine knows its GPU by the spec's name (twin/data/hardware.toml), the fit by the catalog key
    assert kernels("NVIDIA H200 SXM5 141GB", 300) == kernels("h200", 300) != kernels("h100", 300)


def test_either_kernel_switch_counts_kernels_and_only_the_first_holds_the_cost(monkeypatch):
    assert not sef.counts_kernels()
    monkeypatch.setattr(sef, "ADOPT_KERNEL_FIRST_LAUNCH_FITTED", True)
    assert sef.counts_kernels()
    monkeypatch.setattr(sef, "ADOPT_KERNEL_FIRST_LAUNCH_FITTED", False)
    monkeypatch.setattr(sef, "ADOPT_KERNEL_FIRST_LAUNCH", True)
    assert sef.counts_kernels()


def test_the_second_kernel_switch_is_off():
    assert not sef.ADOPT_KERNEL_FIRST_LAUNCH_FITTED   # docs/notes/s17srv_rule.md second change
