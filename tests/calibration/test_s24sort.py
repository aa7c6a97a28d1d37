"""s24sort (docs/notes/s24sort_rule.md): each MoE sort takes the path of its own element count."""

import dataclasses

import pandas as pd
import pytest

import calibration.predict as P
from calibration import sort_paths as S

# the committed profiles' counts (Profile.eager, both GPUs): forward 47 missing kernels of which 41 radix
# (two argsorts), backward 45 of which 29 radix (three index_put_ sorts)
FWD_MISSING, FWD_RADIX, BWD_MISSING, BWD_RADIX = 47, 41, 45, 29


def test_thresholds_are_the_sources():
    # Sort.h should_use_small_sort: size(dim) <= 4096, inclusive
    assert S.argsort_takes_small_path(4096) and not S.argsort_takes_small_path(4097)
    # cub single tile: 256 threads x 9 int64 items
    assert P.CUB_SINGLE_TILE_ITEMS == 2304
    assert S.index_put_takes_single_tile(2304) and not S.index_put_takes_single_tile(2305)


def test_off_is_the_old_cliff_both_directions():
    with S.per_sort_paths(fwd=False, bwd=False):
        # at or below 4,096 the radix kernels go, 2 sorts x 3 small-sort kernels come: 47 - 41 + 6 = 12
        assert P.sort_path_kernels("fwd", FWD_MISSING, FWD_RADIX, 4096) == (12, 0)
        assert P.sort_path_kernels("bwd", BWD_MISSING, BWD_RADIX, 4096) == (22, 0)   # 45 - 29 + 6
        # the received rows decide even where the rank's own tokens x top-k sit below
        assert P.sort_path_kernels("fwd", FWD_MISSING, FWD_RADIX, 4129, 4096) == (FWD_MISSING, FWD_RADIX)


def test_forward_per_sort():
    with S.per_sort_paths(fwd=True, bwd=False):
        # a one-GPU layer: both argsorts count tokens x top-k, as before
        assert P.sort_path_kernels("fwd", FWD_MISSING, FWD_RADIX, 4096) == (12, 0)
        assert P.sort_path_kernels("fwd", FWD_MISSING, FWD_RADIX, 8192) == (FWD_MISSING, FWD_RADIX)
        # EP, 4,096 own rows and 4,129 received: one sort small, one radix; kept round(41 / 2) = 20,
        # missing 47 - 21 + 3 = 29
        assert P.sort_path_kernels("fwd", FWD_MISSING, FWD_RADIX, 4129, 4096) == (29, 20)


def test_backward_takes_cubs_threshold():
    with S.per_sort_paths(fwd=False, bwd=True):
        assert P.sort_path_kernels("bwd", BWD_MISSING, BWD_RADIX, 4096) == (BWD_MISSING, BWD_RADIX)
        # at or below one tile: one kernel per index_put_ sort, 45 - 29 + 3 = 19
        assert P.sort_path_kernels("bwd", BWD_MISSING, BWD_RADIX, 2304) == (19, 0)
        assert P.sort_path_kernels("bwd", BWD_MISSING, BWD_RADIX, 2304, 4096) == (BWD_MISSING, BWD_RADIX)


def test_switches_restored():
    before = (P.ADOPT_PER_SORT_FWD, P.ADOPT_PER_SORT_BWD)
    with pytest.raises(RuntimeError):
        with S.per_sort_paths(fwd=not before[0], bwd=not before[1]):
            raise RuntimeError
    assert (P.ADOPT_PER_SORT_FWD, P.ADOPT_PER_SORT_BWD) == before


def test_ep_forward_sorts_follow_real_ep():
    # real/ep.py: dispatch argsort(expert ids) and combine argsort(order) sort the rank's own tokens x top-k,
    # the local-expert argsort and argsort(perm) the received rows
    assert [n for _, n in S.ep_forward_sorts(1024, 4, 4129)] == [4096, 4129, 4129, 4096]


def test_near_cliff_marks_straddling_rows():
    df = pd.DataFrame([
        {"token_sort_elems": 4096.0, "busiest_rows_min": 4101.0, "busiest_rows_max": 4758.0},   # straddles
        {"token_sort_elems": 4096.0, "busiest_rows_min": 4096.0, "busiest_rows_max": 4096.0},   # at, no straddle
        {"token_sort_elems": 8192.0, "busiest_rows_min": 8300.0, "busiest_rows_max": 9000.0},   # far
    ])
    near = S.sorts_near_cliff(df)
    assert list(near.index) == [0, 1]
    assert list(near["crosses"]) == [True, False]


def test_ep_layer_ops_move_only_with_the_forward_switch():
    from calibration.whole_step import ep_moe_ops
    from twin.core.specs import get_model
    from calibration.validate import load_fitted_profile
    import calibration.records as rec
    gpu = P.gpu_spec("h200")
    profile = load_fitted_profile("h200", rec.load_records("h200"))[0]
    spec = get_model("bench-small")
    T, K = 1024, spec.top_k
    rows_in = T * K + 33.0

    def launches(fwd, bwd):
        with S.per_sort_paths(fwd=fwd, bwd=bwd):
            f, b = ep_moe_ops(spec, T, 2, rows_in, "bf16", gpu, profile)
        return len(f.ops), len(b.ops) + len(b.w_ops)

    off_f, off_b = launches(False, False)
    on_f, on_b = launches(True, True)
    assert off_f - on_f == (FWD_MISSING - 29)   # 18 fewer forward launches: one sort back on the small path
    assert on_b == off_b                        # received rows above one tile: the backward unchanged
    # balanced (received = own = 4,096): the forward as before, the backward keeps its radix kernels (+23)
    rows_in = float(T * K)
    off_f, off_b = launches(False, False)
    on_f, on_b = launches(True, True)
    assert on_f == off_f and on_b - off_b == BWD_MISSING - 22


# --- the rule's figures (docs/notes/s24sort_rule.md): the committed rows whose sorts change path

@pytest.mark.parametrize("gpu, off, on", [("h100", (4.65, 7.71), (3.87, 7.18)), ("h200", (3.47, 7.57), (2.77, 6.65))])
def test_s1_the_backward_at_4096_rows_keeps_its_radix_kernels_and_moves_toward_the_records(gpu, off, on):
    """S1: the 32 one-GPU moe_layer_bwd records at 512 tokens x top-8 = 4,096 rows per GPU (v3-slice-1l),
    median / P90 |error| (%) with (B) off and on; the forwards at 4,096 do not move."""
    t = S.layer_rows_at_cliff(gpu)
    bwd, fwd = t[t["bench"] == "moe_layer_bwd"], t[t["bench"] == "moe_layer_fwd"]
    assert len(bwd) == 32 and len(fwd) == 32
    assert tuple(round(x, 2) for x in S.abs_summary(bwd["rel_error_off"])) == off
    assert tuple(round(x, 2) for x in S.abs_summary(bwd["rel_error_on"])) == on
    assert (fwd["predicted_s_on"] == fwd["predicted_s_off"]).all()
    assert (bwd["predicted_s_on"] > bwd["predicted_s_off"]).all()   # 23 launches more, every row


def test_s2_the_8l_ep_forward_moves_toward_the_measured_forward_on_every_row():
    """S2: the bench-small-8l EP2 steps (h200x2/s24bwd3_20261128_0302; 4,096 own rows, the most loaded rank
    received 4,101-4,758): the pacer rank's forward a micro-batch, twin - measured (ms), (F) off and on."""
    from calibration import ep_phases, prereg
    import calibration.records as rec
    folder = rec.MEASUREMENTS_DIR / "h200x2" / "s24bwd3_20261128_0302" / "bench-small-8l"
    inputs = prereg.two_gpu_inputs("h200")
    diffs = {}
    for fwd in (False, True):
        with S.per_sort_paths(fwd=fwd, bwd=False):
            t = ep_phases.residual_table(folder, "h200", inputs)
        diffs[fwd] = [round(x * 1e3, 2) for x in t.sort_values("num_microbatches")["F_diff_s"]]
    assert diffs[False] == [2.19, 4.83, 7.26, 5.53]
    assert diffs[True] == [-1.33, 1.31, 3.74, 2.01]
    assert all(abs(a) < abs(b) for a, b in zip(diffs[True], diffs[False]))


@pytest.mark.parametrize("gpu", ["h100", "h200"])
def test_the_profiled_kernel_counts_show_the_forward_cliff_and_no_backward_cliff(gpu):
    """Committed host_dispatch rows (profiled kernels a call, BF16, v3-slice-1l with 128 experts): at 512 tokens
    (4,096 rows) the forward launches 35 kernels fewer than at 2,048 tokens, the backward 1 fewer: torch's argsort
    threshold moves the forward only. The twin's missing kernels agree with (B) on and not with it off."""
    from calibration.layer_gaps import net_kernels
    from calibration.records_io import read_csv
    from calibration.validate import load_fitted_profile
    import calibration.records as rec
    from twin.core.specs import get_model
    from calibration.whole_step import balanced_counts
    hd = read_csv(rec.MEASUREMENTS_DIR / gpu / "host_dispatch.csv")
    hd = hd.assign(net=net_kernels(hd))

    def measured(tokens, phase):
        sel = hd[(hd["config"] == f"moe_layer v3-slice-1l t{tokens} e128 skew0") & (hd["phase"] == phase)
                 & (hd["precision"] == "bf16")]
        return float(sel["net"].iloc[-1])

    assert measured(512, "fwd") - measured(2048, "fwd") == -35
    assert measured(512, "bwd") - measured(2048, "bwd") == -1
    profile = load_fitted_profile(gpu, rec.load_records(gpu))[0]
    spec = dataclasses.replace(get_model("v3-slice-1l"), num_routed_experts=128)

    def twin(tokens, bwd_on):
        with S.per_sort_paths(fwd=True, bwd=bwd_on):
            f, b = P.moe_layer_ops(spec, tokens, balanced_counts(spec, tokens), "bf16", P.gpu_spec(gpu), profile)
        return len(f.ops), len(b.ops) + len(b.w_ops)

    (f512, b512), (f2048, b2048) = twin(512, True), twin(2048, True)
    assert f512 - f2048 == -35 and b512 - b2048 == 0
    assert twin(512, False)[1] - twin(2048, False)[1] == -23   # the old pricing's backward cliff, not in the records


def test_the_h100_sweep_measures_both_cliffs_where_the_twin_puts_them():
    """real/campaigns/s24sort.sh on one H100 (h100/s24sort_20261128_0424, torch 2.11.0+cu130): argsort (stable)
    launches 5 device ops up to 4,096 elements and 22 (10 cub radix kernels, 10 memsets) from 4,097; index_put_
    (accumulate) 13 (one single-tile kernel) up to 2,304 and 20 (4 radix kernels, 4 memsets) from 2,305: torch's
    threshold (SMALL_SORT_ELEMS) and cub's tile (CUB_SINGLE_TILE_ITEMS) as read from the sources. Per argsort the
    swap is 22 -> 5 (-17), the twin's per sort -41 / 2 + SMALL_SORT_KERNELS = -17.5."""
    from calibration.records_io import read_csv
    import calibration.records as rec
    t = read_csv(rec.MEASUREMENTS_DIR / "h100" / "s24sort_20261128_0424" / "sort_sweep.csv")
    assert set(t["gpu_name"]) == {"NVIDIA H100 80GB HBM3"} and set(t["torch_version"]) == {"2.11.0+cu130"}

    def kernels(op, small):
        s = t[t["op"] == op]
        return set(s.loc[small(s["elems"]), "kernels"]), set(s.loc[~small(s["elems"]), "kernels"])

    assert kernels("argsort", lambda n: n <= P.SMALL_SORT_ELEMS) == ({5.0}, {22.0})
    assert kernels("index_put", lambda n: n <= P.CUB_SINGLE_TILE_ITEMS) == ({13.0}, {20.0})
    assert t[(t["op"] == "argsort") & (t["elems"] == 4097)]["radix_kernels"].iloc[0] == 10
    assert t[(t["op"] == "index_put") & (t["elems"] == 2304)]["radix_kernels"].iloc[0] == 1
