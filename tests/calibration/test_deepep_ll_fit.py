"""calibration/deepep_ll_fit.py (s22dep): DeepEP's low-latency kernel times as fixed + per-row lines, from the
hook rows at the largest gap only, each token count the mean over ranks; on rows made from known lines it gives
those lines back; the committed table is the fit of its committed records."""

import csv
from pathlib import Path

import pytest

from calibration import deepep_ll_fit
from real.bench.deepep_ll import COLS
from twin.core.specs import serving_tables

# known lines (seconds = fixed + per_row x rows), 256 experts
LINES = {"dispatch_send": (6e-6, 1.0e-8), "dispatch_recv": (4e-6, 0.8e-8), "combine_send": (5e-6, 1.2e-8),
         "combine_recv": (3e-6, 0.6e-8)}


def _write(path, rank_offset_s=1e-7):
    rows = []
    for rank in (0, 1):
        for tokens in (32, 64, 96, 128):
            for mode, gap, scale in (("hook", 0.0, 1.5), ("hook", 300.0, 1.0), ("nohook", 0.0, 9.0)):
                r = {c: "" for c in COLS}
                r.update(bench="deepep_ll", status="ok", rank=rank, num_ranks=2, tokens_per_rank=tokens, top_k=8,
                         num_experts=256, mode=mode, gap_us=gap, gpu_name="NVIDIA H100 80GB HBM3", deepep_commit="567632d")
                for k, (a, b) in LINES.items():
                    # ranks differ by +-rank_offset_s: their mean is the line; other modes are off the line
                    r[f"{k}_s"] = scale * (a + b * tokens * 8) + (rank_offset_s if rank else -rank_offset_s)
                rows.append(r)
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=COLS)
        w.writeheader()
        w.writerows(rows)


def test_fit_recovers_the_lines_from_the_gap_rows(tmp_path):
    path = tmp_path / "deepep_ll.csv"
    _write(path)
    r = deepep_ll_fit.fit(path)
    t = r["table"]
    assert t["experts"] == [256]
    for k, (a, b) in LINES.items():
        assert t[f"{k}_fixed_s"][0] == pytest.approx(a, rel=1e-6)
        assert t[f"{k}_per_row_s"][0] == pytest.approx(b, rel=1e-6)
    assert deepep_ll_fit.within(r["residuals"])
    assert r["gpu_name"].startswith("NVIDIA H100")


def test_fit_line_worked_example():
    # 10, 12, 14 us at 256, 512, 768 rows: 2 us per 256 rows, 8 us at zero
    assert deepep_ll_fit.fit_line([(256, 10e-6), (512, 12e-6), (768, 14e-6)]) == pytest.approx((8e-6, 2e-6 / 256))


def test_within_flags_a_point_off_its_line():
    assert not deepep_ll_fit.within({("dispatch_send", 256): [(256, 20e-6, 3.5e-6)]})   # 17.5% and > 2 us
    assert deepep_ll_fit.within({("dispatch_send", 256): [(256, 10e-6, 1.9e-6)]})       # 19% but < 2 us


def test_committed_table_is_the_fit_of_its_records():
    """twin/data/serving_claims.toml [deepep_ll_sm] holds calibration/deepep_ll_fit.py's fit of the CSV it names
    (campaign s22dep), to the 4 digits written, and that fit meets the rule's residual criterion."""
    t = serving_tables()["deepep_ll_sm"]
    r = deepep_ll_fit.fit(Path(__file__).resolve().parents[2] / t["source"])
    assert r["table"]["experts"] == t["experts"] and t["measured_gpu"] in r["gpu_name"].lower()
    for k in deepep_ll_fit.KERNELS:
        for col in (f"{k}_fixed_s", f"{k}_per_row_s"):
            assert t[col] == pytest.approx(r["table"][col], rel=1e-3), col
    assert deepep_ll_fit.within(r["residuals"])


def test_committed_h100_table_is_the_fit_of_its_records():
    """[deepep_ll_sm_h100] (docs/notes/s23deep_rule.md part 1) holds the same fit of the H100 pair's rows, which
    meets s22dep's criterion 1: all four kernels in every hook row at the largest gap, the receive kernels there
    not slower than at gap 0 (they do not wait for the flight), residuals within 15% or 2 us."""
    t = serving_tables()["deepep_ll_sm_h100"]
    path = Path(__file__).resolve().parents[2] / t["source"]
    r = deepep_ll_fit.fit(path)
    assert r["table"]["experts"] == t["experts"] and t["measured_gpu"] in r["gpu_name"].lower()
    for k in deepep_ll_fit.KERNELS:
        for col in (f"{k}_fixed_s", f"{k}_per_row_s"):
            assert t[col] == pytest.approx(r["table"][col], rel=1e-3), col
    assert deepep_ll_fit.within(r["residuals"])
    df = deepep_ll_fit.read_csv(path)
    used = deepep_ll_fit.usable_rows(df)
    assert len(used) == 16 and not used[[f"{k}_s" for k in deepep_ll_fit.KERNELS]].isna().any().any()
    hook = df[(df["status"] == "ok") & (df["mode"] == "hook")]
    for k in ("dispatch_recv", "combine_recv"):
        assert used[f"{k}_s"].mean() <= 1.10 * hook[hook["gap_us"] == 0][f"{k}_s"].mean()
