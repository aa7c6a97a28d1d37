"""real/bench/aten_count.py: the aten operators an eager MLA / MoE layer dispatches, counted off CUDA
(meta device), against the CUDA counts the host_dispatch campaigns committed."""

import pandas as pd
import pytest
import torch

from calibration import records as rec
from calibration.records_io import csv_exists, read_csv
from real.bench import aten_count as ac

META = torch.device("meta")


@pytest.fixture(scope="module")
def v2_meta_rows():
    return pd.DataFrame(ac.count_rows(("v2-lite-slice",), ("bf16",), META))


def _cuda_counts(layer: str, model: str, precision: str) -> dict:
    """{phase: aten_ops} of the committed host_dispatch.csv rows (H100 and H200 alike)."""
    out = {}
    for gpu in ("h100", "h200"):
        path = rec.MEASUREMENTS_DIR / gpu / "host_dispatch.csv"
        if not csv_exists(path):
            continue
        hd = read_csv(path)
        hd = hd[hd["config"].str.startswith(f"{layer} {model} ") & (hd["precision"] == precision)]
        for phase, g in hd.groupby("phase"):
            out.setdefault(phase, set()).update(int(v) for v in g["aten_ops"])
    return out


def test_counts_depend_on_the_configuration_not_the_shape(v2_meta_rows):
    per_shape = v2_meta_rows.groupby(["layer", "phase"])["aten_ops"].nunique()
    assert (per_shape == 1).all(), per_shape
    assert set(v2_meta_rows["shape"].unique()) == {"x".join(map(str, s)) for s in ac.MLA_SHAPES + ac.MOE_SHAPES}


def test_bf16_layers_dispatch_no_operator_inside_an_autograd_function(v2_meta_rows):
    assert (v2_meta_rows["function_ops"] == 0).all()


def test_moe_counts_off_cuda_equal_the_cuda_counts(v2_meta_rows):
    cuda = _cuda_counts("moe_layer", "v2-lite-slice", "bf16")
    if not cuda:
        pytest.skip("no committed host_dispatch.csv")
    meta = v2_meta_rows[v2_meta_rows["layer"] == "moe_layer"].groupby("phase")["aten_ops"].first()
    for phase, counts in cuda.items():
        assert counts == {int(meta[phase])}, (phase, counts, int(meta[phase]))


def test_mla_counts_off_cuda_are_the_cuda_counts_within_the_stated_residual(v2_meta_rows):
    """With the fused SDPA and RMSNorm counted as CUDA runs them (one operator each way), the meta
    counts of the MLA layer are within 2 operators of the CUDA counts (54 / 52 / 73 forward / no-grad
    / backward for V2-Lite; the rest is what s10mla.sh's CUDA rows will show); without the stand-ins
    they would be ~35 off (the math attention's ~40 operators)."""
    cuda = _cuda_counts("mla_layer", "v2-lite-slice", "bf16")
    if not cuda:
        pytest.skip("no committed host_dispatch.csv")
    meta = v2_meta_rows[v2_meta_rows["layer"] == "mla_layer"].groupby("phase")["aten_ops"].first()
    for phase, counts in cuda.items():
        assert len(counts) == 1, (phase, counts)   # the same on the H100 and the H200, at every shape
        assert abs(next(iter(counts)) - int(meta[phase])) <= 2, (phase, counts, int(meta[phase]))


def test_fp8_operators_inside_functions_are_counted_apart():
    rows = ac.mla_counts("v2-lite-slice", "fp8-blockwise", 1, 64, META)
    for phase, c in rows.items():
        assert 0 < c["function_ops"] <= c["aten_ops"], (phase, c)


def test_the_campaign_entry_point_writes_its_rows(tmp_path):
    out = tmp_path / "aten_ops.csv"
    assert ac.main(["--device", "meta", "--model", "v2-lite-slice", "--out", str(out)]) == 0
    df = pd.read_csv(out)
    assert list(df.columns) == list(ac.COLUMNS)
    assert len(df) == 2 * 3 * (len(ac.MLA_SHAPES))   # MLA and MoE, three phases, two shapes each
    assert (df["device"] == "meta").all() and df["torch_version"].notna().all()


def test_the_campaign_timelines_write_a_trace_per_case_and_phase(tmp_path):
    import json
    assert ac.timelines_main(["--device", "cpu", "--quick", "--out", str(tmp_path)]) == 0
    df = pd.read_csv(tmp_path / "mla_timeline.csv")
    assert list(df["phase"]) == ["fwd", "bwd"] and (df["time_s"] > 0).all()
    for name in df["trace"]:
        events = json.loads((tmp_path / name).read_text())["traceEvents"]
        assert any(str(e.get("name", "")).startswith("aten::") for e in events)


def test_committed_cuda_counts_match_the_host_rows_of_both_gpus():
    """h100/aten_ops.csv (s10mla.sh on CUDA, two shapes each) holds one count per configuration,
    the host_dispatch rows' of the H100 and the H200; FP8 Function operators are a part of them."""
    path = rec.MEASUREMENTS_DIR / "h100" / "aten_ops.csv"
    if not csv_exists(path):
        pytest.skip("no committed h100/aten_ops.csv")
    df = read_csv(path)
    assert (df["device"] == "cuda").all()
    for (layer, model, precision, phase), g in df.groupby(["layer", "model", "precision", "phase"]):
        assert g["aten_ops"].nunique() == 1 and g["shape"].nunique() == 2, (layer, model, precision, phase)
        assert _cuda_counts(layer, model, precision)[phase] == {int(g["aten_ops"].iloc[0])}
        assert (g["function_ops"] <= g["aten_ops"]).all()
        assert (g["function_ops"] > 0).all() == (precision != "bf16")
