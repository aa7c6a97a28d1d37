from reports.load_report import CURVE_CSV, EPLB_CSV, PLOTS, build, measured_model, plot_heatmap
from reports.page import COMMON_FILES


def test_quick_load_report_writes_the_common_files(tmp_path):
    out = tmp_path / "load"
    r = build(out, "h200", quick=True)
    assert {p.name for p in out.iterdir()} == set(COMMON_FILES) | set(PLOTS) | {CURVE_CSV, EPLB_CSV}
    for name in PLOTS:
        assert (out / name).read_bytes()[:4] == b"\x89PNG"
    # EPLB lowers the most loaded GPU in every layer of the measured-skew V3 loads
    assert all(a <= b for a, b in zip(r["eplb"]["after_max_over_mean"], r["eplb"]["before_max_over_mean"]))
    times = [c["step_time_s"] for c in r["step_curve"]]
    assert times == sorted(times)
    md = (out / "report.md").read_text()
    assert "They are not deepseek-v3's loads" in md and "bench-small (16 experts" in md


def test_heatmap_says_whose_loads_it_shows():
    m = measured_model("h200")
    assert (m["model"], m["num_experts"]) == ("bench-small", 16)
    fig = plot_heatmap("h200", m, "deepseek-v3", 256)
    title = fig._suptitle.get_text()
    assert "bench-small (16 experts)" in title and "not deepseek-v3's 256 experts" in title
    same = plot_heatmap("h200", m, "bench-small", 16)._suptitle.get_text()
    assert "not " not in same


def test_ep_nodes_counts_the_nodes_an_ep_group_spans():
    from reports.load_report import ep_nodes
    assert [ep_nodes(ep, 8) for ep in (1, 4, 8, 12, 16, 64, 9)] == [1, 1, 1, 2, 2, 8, 1]   # 9 over 2 nodes: uneven, one
