"""calibration.s30fb (issue 13 diagnosis): DualPipeV's FB pairs read kernel by kernel from a committed probe profile
(s29idle2's dsv2 n4, 2xH200): the pairs come in step order, the F / B split of a pair's kernels is whole and agrees
with the timed steps' F part (the send's start), and the loss marks the split where the F sends nothing."""

import numpy as np

from calibration import records as rec
from calibration import s30fb
from calibration.records_io import read_csv

FOLDER = "h200x2/s29idle2_20261128_1906/dsv2-slice"


def test_union_of_kernel_intervals():
    assert s30fb._union_s([(0.0, 2.0), (1.0, 3.0), (5.0, 6.0)]) == 4.0 and s30fb._union_s([]) == 0.0


def test_rank0_pairs_split_and_agree_with_timed_steps():
    folder = rec.records_root() / FOLDER
    host, events = read_csv(folder / "pipeline_host.csv"), read_csv(folder / "pipeline_kernel_events.csv")
    meas = s30fb.measured_pairs(host, "dsv2-slice", 4)
    kern = s30fb.kernel_pairs(events, "dsv2-slice", 4)
    assert [p["op_index"] for p in meas[0]] == [7, 8, 10]
    first = kern[0][7]
    # the F part (kernels before the send's NCCL kernel) against the timed steps' F part: same op, within 10%
    assert abs(first["F_gpu_span_ms"] - meas[0][0]["f_s"] * 1e3) < 0.1 * meas[0][0]["f_s"] * 1e3
    for idx in (7, 8, 10):   # the last stage's F (op 8, 10) is split at its loss: both parts hold kernels
        k = kern[0][idx]
        assert k["F_ms"] > 1.0 and k["B_ms"] > 1.0 and k["gaps_ms"] >= 0
        assert np.isclose(sum(k[f"{p}_{c}_ms"] for p in "FB" for c in s30fb.COMPONENTS), k["F_ms"] + k["B_ms"])


def test_attention_cycles_match_across_ranks_at_different_clocks():
    # s30fb's own records (dsv2 n10): the cuDNN SDPA forward runs >8% longer on the power-capped end-stage GPU, but
    # its duration x SM clock (cycles) is the same on both ranks within 3%: its time goes as 1 / clock
    k = s30fb.kernel_clocks(rec.records_root() / "h200x2/s30fb_20261128_2153/dsv2-slice")
    fwd = k[(k["n"] == 10) & k["kernel"].str.contains("flash_fpro")].set_index("rank")
    assert fwd.loc[0, "dur_us"] > 1.08 * fwd.loc[1, "dur_us"] and fwd.loc[0, "clock_mhz"] < fwd.loc[1, "clock_mhz"]
    assert abs(fwd.loc[0, "kcycles"] / fwd.loc[1, "kcycles"] - 1) < 0.03
