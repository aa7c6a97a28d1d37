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


def test_validate_reports_each_two_gpu_hosts_sweep_held_out(tmp_path):
    """`twin validate` fits every <gpu>x2 folder's sweep and reports its held-out error per op."""
    from calibration.nccl import format_summary, sweep_summary
    from calibration.validate import format_table, validate
    (tmp_path / "h100x2").mkdir()
    _rows(noise=0.02).to_csv(tmp_path / "h100x2" / "nccl.csv", index=False)
    result = validate(tmp_path, tmp_path / "no-profiles")
    entry = result["nccl"]["h100x2"]
    assert (entry["gpu"], entry["num_gpus"]) == ("h100", 2)
    assert entry["ops"] == sweep_summary(tmp_path / "h100x2")
    for op, (lat, bw) in TRUE.items():
        v = entry["ops"][op]
        assert v["rows"] == 9 and v["median_abs_rel_err"] < 0.05
        assert v["latency_s"] == pytest.approx(lat, rel=0.3) and v["bus_bytes_per_s"] == pytest.approx(bw, rel=0.1)
    assert format_summary("h100x2", entry["ops"]) in format_table(result)
    assert sweep_summary(tmp_path) == {}


def test_block_verdicts_count_held_out_two_gpu_blocks_per_host():
    from calibration.validate import format_blocks

    def case(name, gpus, err, held=True, kind="tp_block"):
        return {"name": name, "gpu": "h100", "kind": kind, "num_gpus": gpus, "rel_error": err, "held_out": held}
    cases = [case("a tp2", 2, 0.05), case("b tp2", 2, -0.15), case("c cp2", 2, 0.099, kind="cp_block"),
             case("d tp2 fit", 2, 0.5, held=False), case("e tp1", 1, 0.9)]
    assert format_blocks(cases) == ["TP/CP blocks h100x2: 2 of 3 held-out within 10%; worst b tp2 -15.0%"]
    assert format_blocks([case("e tp1", 1, 0.9)]) == []
