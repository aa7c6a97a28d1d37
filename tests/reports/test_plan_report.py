"""The plan report: a verdict, the ranked table, the front, and one unit per plot axis."""

from reports.page import COMMON_FILES
from reports.plan_report import PLAN_CSV, PLOT, build_page, front, write_plan_report
from twin.core.results import to_json


def test_front_keeps_only_plans_nothing_beats_on_time_and_cost(planned):
    rows = [r for r in to_json(planned[1])["rows"] if r["feasible"]]
    f = front(rows, "cost_usd")
    assert [(r["label"], r["wall_days"]) for r in f] == [("h200 x4096 pp16", 20.0), ("h800 x4096 pp16", 30.0),
                                                         ("h800 x2048 pp16", 45.0)]
    assert [r["label"] for r in front(rows, "gpu_hours")] == ["b200 x2048 pp16"]   # fastest and fewest GPU-hours


def test_page_names_the_cheapest_plan_on_time(planned):
    p = build_page(to_json(planned[1]))
    assert p.verdict == ("The cheapest plan that trains 14.8T tokens within 40 days is h800 x4096 pp16: 30 days, "
                         "2.95M GPU-hours, $5.90M (4 of 6 candidates meet the deadline).")
    md = p.markdown()
    assert "| 1 | h800 x4096 pp16 | H800 | 4,096 | 1 / 16 / 64 |" in md
    assert "no price" in md and "in GPU-hours, over every feasible plan" in md
    assert "| out of memory | 1 |" in md


def test_no_plan_on_time_says_so(planned):
    data = to_json(planned[1])
    data.update(best=None, ranked=[], num_meeting_deadline=0, deadline_days=10.0)
    assert build_page(data).verdict == ("None of the 6 candidates trains 14.8T tokens within 10 days; the fastest, "
                                        "b200 x2048 pp16, takes 18 days.")


def test_writes_the_common_files(tmp_path, planned):
    sc, plan = planned
    paths = write_plan_report(plan, sc, tmp_path / "p")
    assert {p.name for p in paths} == set(COMMON_FILES) | {PLAN_CSV, PLOT}
    assert (tmp_path / "p" / PLAN_CSV).read_text().count("\n") == len(plan.rows) + 1
    assert "[search]" in (tmp_path / "p" / "scenario.resolved.toml").read_text()
