"""calibration/gemm_in_layer.py (s14gl): in-layer calls joined to the same calls alone, and the
calls-weighted in-layer / alone ratio per kernel class with its clocks."""

from pathlib import Path

import pandas as pd
import pytest

from calibration import gemm_in_layer as gl


def _op(where, op, shapes, cls, time_s, mhz, calls=1.0, direction="fwd"):
    return dict(config="moe x", layer="moe", model="x", precision="bf16", direction=direction, where=where, op=op,
                input_shapes=shapes, op_class=cls, calls=calls, time_s=time_s, sampled_sm_clock_mhz=mhz)


def _ops():
    return pd.DataFrame([
        _op("layer", "aten::mm", "[[8, 4], [4, 2]]", "dense_gemm", 1.0, 1900, calls=2.0),
        _op("alone_burst", "aten::mm", "[[8, 4], [4, 2]]", "dense_gemm", 1.0, 1950),
        _op("alone_graph", "aten::mm", "[[8, 4], [4, 2]]", "dense_gemm", 1.25, 1500),
        _op("layer", "aten::mm", "[[16, 4], [4, 2]]", "dense_gemm", 3.0, 1900),
        _op("alone_burst", "aten::mm", "[[16, 4], [4, 2]]", "dense_gemm", 2.0, 1950),
        _op("alone_graph", "aten::mm", "[[16, 4], [4, 2]]", "dense_gemm", 4.0, 1500),
        _op("layer", "aten::index", "[[8, 4], []]", "gather", 2.0, 1900),
        _op("alone_burst", "aten::index", "[[8, 4], []]", "gather", 1.0, 1950),
        _op("alone_graph", "aten::index", "[[8, 4], []]", "gather", 1.0, 1500),
        _op("layer", "aten::index", "[[8, 4], []]", "gather", 2.0, 1900, direction="bwd"),   # no alone row
        _op("layer", "aten::add", "[[8, 4], [8, 4]]", "elementwise", 1.0, 1900),             # no alone row
    ])


def test_only_calls_timed_in_both_places_pair():
    pairs = gl.paired_calls(_ops())
    assert len(pairs) == 3
    assert set(pairs["op_class"]) == {"dense_gemm", "gather"}


def test_class_ratio_weights_each_call_by_its_calls_per_repetition():
    r = gl.class_ratios(gl.paired_calls(_ops())).set_index("op_class")
    # dense: layer 2 x 1 + 3 = 5 s; burst 2 x 1 + 2 = 4 s; graph 2 x 1.25 + 4 = 6.5 s
    assert r.loc["dense_gemm", "ratio_burst"] == pytest.approx(5 / 4)
    assert r.loc["dense_gemm", "ratio_graph"] == pytest.approx(5 / 6.5)
    assert r.loc["gather", "ratio_graph"] == pytest.approx(2.0)
    assert r.loc["dense_gemm", "graph_mhz"] == 1500 and r.loc["dense_gemm", "layer_mhz"] == 1900


def test_committed_campaigns_pair_every_gemm_class_with_its_clocks():
    root = Path(__file__).resolve().parents[2] / "calibration" / "measurements"
    for folder in (root / "h100" / "s14gl_20261127_0243", root / "h200" / "s14gl_20261127_0246"):
        layer, ops = gl.read_folder(folder)
        assert set(layer["split"]) == {"fit"} and layer["sampled_sm_clock_mhz"].notna().all()
        r = gl.class_ratios(gl.paired_calls(ops))
        assert {"dense_gemm", "grouped_gemm", "fp8_gemm", "gather", "index_put", "elementwise"} <= set(r["op_class"])
        assert r[["layer_mhz", "burst_mhz", "graph_mhz"]].notna().all().all()
