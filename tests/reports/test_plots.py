"""Every plot of every report is legible: no two drawn texts (tick labels, axis labels, titles,
legend entries, annotations) overlap. Clipping at the edges can't happen: reports.page.png saves
with bbox_inches='tight', which grows the image to everything drawn (checked below too)."""

from __future__ import annotations

import io

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
from PIL import Image
from plot_checks import drawn_texts, overlapping_texts  # tests/reports/ is on sys.path (no __init__.py)

from reports import load_report, page, plan_report, replay_report, serve_report, validation_report
from twin.core.results import to_json
from twin.core.scenario import load_scenario

# the load cases of a real `twin balance` run on the default scenario (two of them nearly coincide)
CASES = {"balanced": {"rank_max_over_mean": 1.0, "step_time_s": 19.3, "straggler_penalty_frac": 0.0, "gpu_hours_lost": 0.0},
         "measured_no_bias": {"rank_max_over_mean": 1.72, "step_time_s": 23.4, "straggler_penalty_frac": 0.215, "gpu_hours_lost": 5.56e5},
         "measured_bias_0.001": {"rank_max_over_mean": 1.73, "step_time_s": 23.6, "straggler_penalty_frac": 0.223, "gpu_hours_lost": 5.76e5},
         "zipf_fit": {"rank_max_over_mean": 9.44, "step_time_s": 98.1, "straggler_penalty_frac": 4.08, "gpu_hours_lost": 1.05e7,
                      "out_of_memory": True},
         "dirichlet_fit": {"infeasible": "out of memory"}}
CURVE = [{"rank_max_over_mean": r, "step_time_s": 19.3 * (1 + 0.85 * (r - 1))} for r in (1.0, 1.1, 1.25, 1.5, 2.0, 3.0)]


def _figures(replayed, replayed_h200, served, planned, validated):
    sc, result, typed = replayed
    _, result_h200, _ = replayed_h200
    serve_json = to_json(served[1])
    cases = pd.DataFrame(validated["cases"])
    v3 = load_scenario()
    eplb = {"policy": "hierarchical", "redundant_experts": 64, "before_max_over_mean": list(np.linspace(1.3, 2.3, 58)),
            "after_max_over_mean": list(np.linspace(1.05, 1.3, 58))}
    return {
        "replay gpu-hours (compared)": replay_report.plot_gpu_hours(result, True),
        "replay gpu-hours (context)": replay_report.plot_gpu_hours(result_h200, False),
        "replay gantt": replay_report.plot_gantt(typed.gantt_step),
        "replay tornado": replay_report.plot_tornado(result),
        "replay cost vs size": replay_report.plot_cost_vs_size(result),
        "serve vs batch": serve_report.plot_throughput_vs_batch(serve_json),
        "serve vs tpot": serve_report.plot_throughput_vs_tpot(serve_json),
        "serve latency cdf": serve_report.plot_latency_cdf(serve_json),
        "plan": plan_report.plot_cost_vs_days(to_json(planned[1])),
        "load heatmap": load_report.plot_heatmap("h200", load_report.measured_model("h200"), "deepseek-v3", 256),
        "load step": load_report.plot_step(CURVE, CASES, v3),
        "load eplb": load_report.plot_eplb(eplb, v3),
        "validation scatter": validation_report.plot_scatter(cases),
        "validation by op": validation_report.plot_error_by_op(cases[cases["held_out"]], 0.05),
        "validation trace": validation_report.plot_trace(validated["h800_trace"]),
    }


def test_no_text_overlaps_in_any_plot(replayed, replayed_h200, served, planned, validated):
    figures = _figures(replayed, replayed_h200, served, planned, validated)
    bad = {}
    for name, fig in figures.items():
        overlaps = overlapping_texts(fig)
        if overlaps:
            bad[name] = overlaps
        plt.close(fig)
    assert not bad, f"overlapping labels: {bad}"


def test_the_saved_png_holds_every_text(replayed):
    """bbox_inches='tight': the PNG is at least as large as the box around every drawn text."""
    _, result, _ = replayed
    fig = replay_report.plot_tornado(result)
    renderer = fig.canvas.get_renderer()
    texts = drawn_texts(fig)
    x0 = min(t.get_window_extent(renderer).x0 for t in texts)
    x1 = max(t.get_window_extent(renderer).x1 for t in texts)
    width_px = (x1 - x0) * page.PNG_DPI / fig.dpi
    img = Image.open(io.BytesIO(page.png(fig)))
    assert img.size[0] >= width_px - 2


@pytest.mark.parametrize("rows_priced, panels", [("all", ["rental cost"]), ("some", ["rental cost", "GPU-hours (every simulated plan)"]),
                                                 ("none", ["GPU-hours (no GPU type has a price)"])])
def test_plan_plot_keeps_one_unit_per_axis(planned, rows_priced, panels):
    result = to_json(planned[1])
    for r in result["rows"]:
        # the plot draws the cost with failure downtime (s23ettr)
        if rows_priced == "all" and r["feasible"] and r["cost_usd_goodput"] is None:
            r["cost_usd_goodput"] = r["gpu_hours_goodput"] * 4.0
        if rows_priced == "none":
            r["cost_usd_goodput"] = None
    if rows_priced == "none":
        result["best"]["cost_usd_goodput"] = None
    fig = plan_report.plot_cost_vs_days(result)
    assert [ax.get_ylabel() for ax in fig.axes] == panels
    ticks = [[t.get_text() for t in ax.get_yticklabels()] for ax in fig.axes]
    for label, tick in zip(panels, ticks):
        assert all(t.startswith("$") for t in tick if t) == (label == "rental cost"), (label, tick)
    plt.close(fig)


def test_the_check_sees_overlapping_labels():
    """The old step plot wrote each load case's name beside its point: nearly equal points collide."""
    fig, ax = page.figure(6, 3.5)
    for name in ("measured_no_bias", "measured_bias_0.001"):
        r = CASES[name]
        ax.plot(r["rank_max_over_mean"], r["step_time_s"], "x")
        ax.annotate(name, (r["rank_max_over_mean"], r["step_time_s"]), fontsize=7)
    ax.set(xlim=(0, 10), ylim=(0, 100))
    ax.set_xticks([0, 5, 10])
    pairs = overlapping_texts(fig)
    assert pairs == [("measured_no_bias", "measured_bias_0.001")]
    assert {"0", "5", "10"} <= {t.get_text() for t in drawn_texts(fig)}
    plt.close(fig)
