"""calibration.nccl: alpha-beta fits of the NCCL size sweep, on synthetic rows."""

import numpy as np
import pandas as pd
import pytest

from calibration.nccl import OPS, fit_collectives, holdout_errors, load_nccl, predict_s

TRUE = {"all_reduce": (20e-6, 360e9), "all_gather": (12e-6, 370e9), "reduce_scatter": (12e-6, 365e9),
        "all_to_all": (15e-6, 340e9), "send_recv": (9e-6, 330e9), "send_recv_bidir": (11e-6, 300e9)}
FACTOR = {"all_reduce": 1.0, "all_gather": 0.5, "reduce_scatter": 0.5, "all_to_all": 0.5,
          "send_recv": 1.0, "send_recv_bidir": 1.0}  # 2 ranks


def _rows(noise=0.02, seed=0):
    rng = np.random.default_rng(seed)
    rows = []
    for op, (lat, bw) in TRUE.items():
        for e in range(12, 31):
            size = 2**e
            t = (lat + size * FACTOR[op] / bw) * (1 + noise * rng.standard_normal())
            rows.append(dict(bench="nccl", op=op, message_bytes=size, world_size=2, bus_factor=FACTOR[op],
                             time_s=t, split="fit" if e % 2 == 0 else "holdout", gpu_name="GPU X"))
    return pd.DataFrame(rows)


def test_fit_recovers_latency_and_bus_bandwidth_per_op():
    fits = fit_collectives(_rows(noise=0.0))
    assert set(fits) == set(OPS)
    for op, (lat, bw) in TRUE.items():
        assert set(fits[op]) == {"latency_s", "bus_bytes_per_s", "source"}
        assert fits[op]["latency_s"] == pytest.approx(lat, rel=1e-6)
        assert fits[op]["bus_bytes_per_s"] == pytest.approx(bw, rel=1e-6)


def test_held_out_sizes_never_reach_the_fit_and_their_error_is_reported():
    df = _rows(noise=0.02)
    fits = fit_collectives(df)
    spoiled = df.copy()
    spoiled.loc[spoiled["split"] == "holdout", "time_s"] *= 3.0  # held-out rows changed: same fit
    refit = fit_collectives(spoiled)
    for op in OPS:
        assert refit[op]["latency_s"] == fits[op]["latency_s"]
        assert refit[op]["bus_bytes_per_s"] == fits[op]["bus_bytes_per_s"]
    errs = holdout_errors(df, fits)
    assert all(e["rows"] == 9 and e["median_abs_rel_err"] < 0.05 for e in errs.values())
    assert holdout_errors(spoiled, refit)["all_reduce"]["median_abs_rel_err"] > 0.5
    assert "held-out median |err|" in fits["all_reduce"]["source"] and "GPU X" in fits["all_reduce"]["source"]


def test_predict_and_load_round_trip(tmp_path):
    df = _rows(noise=0.0)
    df.to_csv(tmp_path / "nccl.csv", index=False)
    loaded = load_nccl(tmp_path)
    fits = fit_collectives(loaded)
    big = loaded[(loaded["op"] == "all_reduce") & (loaded["message_bytes"] == 2**30)].iloc[0]
    assert predict_s(fits["all_reduce"], big["message_bytes"] * big["bus_factor"]) == pytest.approx(big["time_s"])
    with pytest.raises(ValueError, match=">= 2 sizes"):
        from calibration.nccl import fit_op
        fit_op(loaded.head(1))
