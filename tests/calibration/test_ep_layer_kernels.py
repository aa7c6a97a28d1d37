"""calibration/ep_layer_kernels.py on the s14epl campaign's 2xH100 records (h100x2/s14epl_20261127_0151,
fitting split only; docs/notes/s14epl_rule.md): no kernel of the EP2 layer runs beside an NCCL kernel,
its forward grouped GEMMs run faster inside the layer than alone back to back, and A (the EP forward
without the one-GPU sort and un-sort) brings the layer forwards closer."""

import json

import numpy as np
import pandas as pd
import pytest

import calibration.whole_step as ws
from calibration import ep_layer_kernels as elk
from calibration import records as rec
from calibration.fit import PROFILES_DIR
from calibration.predict import gpu_spec
from calibration.records_io import read_csv
from twin.costs.profile import profile_from_json

FOLDER = rec.MEASUREMENTS_DIR / "h100x2" / "s14epl_20261127_0151"


@pytest.fixture(scope="module")
def h100():
    prof = profile_from_json(json.loads((PROFILES_DIR / "h100.json").read_text()))
    return ws.with_measured_collectives(prof, rec.MEASUREMENTS_DIR / "h100x2"), gpu_spec("h100")


@pytest.fixture(scope="module")
def classes(h100):
    return elk.class_table(read_csv(FOLDER / "ep_kernels.csv"), h100[1], h100[0])


def test_no_kernel_of_the_ep_layer_runs_beside_an_nccl_kernel(classes):
    assert len(classes) == 16                                  # 2 directions x 2 precisions x 2 sizes x 2 skews
    assert classes["beside_nccl_s"].max() < 1e-5
    assert (classes["nccl_r0_s"] > 0).all() and (classes["grouped_gemm_r0_s"] > 0).all()


def test_grouped_gemms_run_faster_inside_the_layer_than_alone(classes):
    cmp = elk.grouped_alone_vs_layer(read_csv(FOLDER / "ep_grouped.csv"), classes)
    assert len(cmp) == 8
    assert (cmp["in_layer_s"] < cmp["alone_profiled_s"]).all()
    assert (cmp["in_layer_clock_mhz"] > cmp["alone_clock_mhz"]).mean() >= 0.75


def test_a_brings_the_fitting_layer_forwards_closer(h100, monkeypatch):
    prof, gpu = h100
    rows = read_csv(FOLDER / "ep.csv")
    fwd = rows[rows["bench"] == "moe_layer_ep_fwd"]
    assert set(rows["split"]) == {"fit"}

    def errors(local_only):
        monkeypatch.setattr(ws, "ADOPT_EP_LOCAL_EXPERTS_ONLY", local_only)
        return np.array([ws.predict_ep_row(r, gpu, prof) / r["time_s"] - 1 for _, r in fwd.iterrows()])

    with_a, without = errors(True), errors(False)
    assert np.median(np.abs(with_a)) < np.median(np.abs(without))
    assert (with_a < without).all()                            # A only takes work away


# s22a2a: the profiler's `nccl:all_to_all` annotation row (same seconds as the ncclDevKernel it wraps)
# is not a kernel; class_table counted it into the nccl class, doubling it.
def _kernel_rows(names_s: dict) -> pd.DataFrame:
    base = {"bench": "moe_layer_ep_fwd", "precision": "bf16", "tokens_per_rank": 2048, "num_experts": 32,
            "skew": 0.0, "max_rank_rows": 16384, "rank": 0, "sampled_sm_clock_mhz": 1980.0, "nccl_overlap_s": 0.0}
    return pd.DataFrame([{**base, "kernel": n, "time_s": s} for n, s in names_s.items()])


def test_an_nccl_annotation_row_is_not_counted_as_a_kernel(h100):
    k = _kernel_rows({"ncclDevKernel_SendRecv(ncclDevKernelArgsStorage<4096ul>)": 1e-3, "nccl:all_to_all": 1e-3,
                      "vectorized_gather_kernel": 2e-4})
    assert list(elk.device_kernels(k)["kernel"]) == [k["kernel"][0], "vectorized_gather_kernel"]
    row = elk.class_table(k, h100[1], h100[0]).iloc[0]
    assert row["nccl_r0_s"] == pytest.approx(1e-3)
    assert row["memory_r0_s"] == pytest.approx(2e-4)


def test_the_committed_s22epq_records_count_each_all_to_all_once():
    k = read_csv(rec.MEASUREMENTS_DIR / "h200x2" / "s22epq_20261127_2205" / "ep_kernels.csv")
    names = k["kernel"].astype(str)
    dev, note = k[names.str.startswith("ncclDevKernel")], k[names.str.startswith("nccl:")]
    assert len(note) == len(dev) > 0                              # each all-to-all listed twice ...
    key = ["bench", "precision", "num_experts", "skew", "rank"]
    pair = dev.merge(note, on=key, suffixes=("_dev", "_note"))
    assert np.allclose(pair["time_s_dev"], pair["time_s_note"])   # ... with the same seconds
    kept = elk.device_kernels(k)
    nccl_s = kept.loc[kept["kernel"].map(elk.kernel_class) == "nccl", "time_s"].sum()
    all_nccl_named_s = k.loc[k["kernel"].map(elk.kernel_class) == "nccl", "time_s"].sum()
    assert nccl_s == pytest.approx(dev["time_s"].sum())
    assert nccl_s == pytest.approx(all_nccl_named_s / 2)          # the old reader's sum, halved
