from reports.load_report import build


def test_quick_load_report_writes_pngs(tmp_path):
    out = tmp_path / "load"
    r = build(out, "h200", quick=True)
    for name in ("expert_load_heatmap.png", "step_time_vs_imbalance.png", "eplb_before_after.png", "load_report.md"):
        assert (out / name).read_bytes()[:4] in (b"\x89PNG", b"# Ex")
    # EPLB lowers the most loaded GPU in every layer of the measured-skew V3 loads
    assert all(a <= b for a, b in zip(r["eplb"]["after_max_over_mean"], r["eplb"]["before_max_over_mean"]))
    times = [c["step_time_s"] for c in r["step_curve"]]
    assert times == sorted(times)
