"""The plan report: a verdict, the front, the screen's error, and one unit per plot axis."""

import pyarrow.parquet as pq
import pytest

from reports.page import COMMON_FILES
from reports.plan_report import PLAN_CSV, PLAN_PARQUET, PLOT, build_page, front, write_plan_report
from twin.core.results import to_json


def test_front_keeps_only_plans_nothing_beats_on_time_and_cost(planned):
    rows = [r for r in to_json(planned[1])["rows"] if r["feasible"]]
    f = front(rows, "cost_usd")
    assert [(r["label"], r["wall_days"]) for r in f] == [("h200 x4096 pp16", 20.0), ("h800 x4096 pp16", 30.0),
                                                         ("h800 x2048 pp16", 45.0)]
    assert [r["label"] for r in front(rows, "gpu_hours")] == ["b200 x2048 pp16"]   # fastest and fewest GPU-hours


def test_page_names_the_cheapest_plan_on_time_and_the_screen_error(planned):
    p = build_page(to_json(planned[1]))
    assert p.verdict == ("The cheapest plan that trains 14.8T tokens within 40 days is h800 x4096 pp16: 30 days with the "
                         "expected failure downtime (30 days of compute, ETTR 100%), 2.95M GPU-hours, $5.90M (4 of 5 "
                         "simulated plans qualify; 6 candidates screened).")
    md = p.markdown()
    assert "| h800 x4096 pp16 | H800 | 4,096 | 1 / 16 / 64 |" in md
    assert "no price" in md and "in GPU-hours, over every simulated plan" in md
    assert "| out of memory | 1 |" in md
    e = planned[1].screen_error
    assert e.num_compared == 5 and "median of" in md and "P90" in md


def test_no_plan_on_time_says_so(planned):
    data = to_json(planned[1])
    data.update(best=None, num_meeting_deadline=0, deadline_days=10.0)
    assert build_page(data).verdict == ("None of the 5 simulated plans trains 14.8T tokens within 10 days; the fastest, "
                                        "b200 x2048 pp16, takes 18 days with the expected failure downtime (18 days "
                                        "of compute).")


def test_writes_the_common_files_and_one_table_in_csv_and_parquet(tmp_path, planned):
    sc, plan = planned
    paths = write_plan_report(plan, sc, tmp_path / "p")
    assert {p.name for p in paths} == set(COMMON_FILES) | {PLAN_CSV, PLAN_PARQUET, PLOT}
    assert (tmp_path / "p" / PLAN_CSV).read_text().count("\n") == len(plan.rows) + 1
    table = pq.read_table(tmp_path / "p" / PLAN_PARQUET)
    assert table.num_rows == len(plan.rows)
    assert table.column("plan.pp").to_pylist() == [r.plan["pp"] for r in plan.rows]       # typed: ints, not text
    assert table.column("wall_days").to_pylist()[:2] == [45.0, 30.0]
    assert "[search]" in (tmp_path / "p" / "scenario.resolved.toml").read_text()


def test_serving_plan_page_states_its_inputs():
    """The serving question's page names the resolved scenario beside it, as every other report
    does (it had no Files section until s19ux2)."""
    from reports.plan_report import build_serving_page
    r = {"rate_per_s": 2.0, "ttft_target_s": 5.0, "tpot_target_s": 0.1, "instance_gpus": 8, "evaluated": 0,
         "feasible": 0, "infeasible_by_reason": {}, "best": None, "checks": []}
    page = build_serving_page(r, "r1-serve-h200").html()
    assert "scenario.resolved.toml" in page and "r1-serve-h200" in page and "result.json" in page


def test_the_report_is_written_a_row_at_a_time_with_the_whole_writers_bytes(tmp_path, planned, monkeypatch):
    """A plan's result.json, plan.csv, plan.parquet and --json were built whole in memory, as JSON
    values and as text (~12 KB a row at their peak: ~0.7 GB for the default space's 57,600
    candidates, ~3 GB at the 250,000 limit; until s21ux). They are written a row at a time now:
    the same bytes (the Parquet file the same schema and values), and the whole result is never
    turned into JSON values at once."""
    import dataclasses
    import io
    import json

    from reports import plan_report, table
    from reports.plan_report import page_result, plan_table, write_json_rows
    from twin.planning.result import PlanResult
    sc, plan = planned
    whole = to_json(plan)
    real = plan_report.to_json

    def one_row_at_a_time(obj):
        assert not (isinstance(obj, PlanResult) and obj.rows), "the whole result turned into JSON values"
        return real(obj)

    monkeypatch.setattr(plan_report, "to_json", one_row_at_a_time)
    write_plan_report(plan, sc, tmp_path / "p")
    out = tmp_path / "p"
    assert (out / "result.json").read_text() == json.dumps(whole, indent=2, allow_nan=False) + "\n"
    rows, columns = plan_table(whole)
    assert (out / PLAN_CSV).read_bytes() == table.to_csv(rows, columns).encode()
    streamed, reference = pq.read_table(out / PLAN_PARQUET), pq.read_table(io.BytesIO(table.to_parquet(rows, columns)))
    assert streamed.schema == reference.schema and streamed.to_pylist() == reference.to_pylist()
    assert build_page(page_result(plan)).markdown() == build_page(whole).markdown()
    for result in (plan, dataclasses.replace(plan, rows=())):
        fh = io.StringIO()
        write_json_rows(fh, result)
        assert fh.getvalue() == json.dumps(real(result), indent=2, allow_nan=False) + "\n"


@pytest.mark.parametrize("served", [0, 1])
def test_capacity_page_verdict_names_the_rates_no_deployment_serves(served):
    from reports.plan_report import build_capacity_page
    best = {"num_gpus": 8, "layout": "co-located", "prefill_gpus": 0, "decode_gpus": 8, "ttft_s": 0.1, "tpot_s": 0.04,
            "usd_per_hour": 28.0, "usd_per_million_output_tokens_all_gpus": 7.7}
    plans = [{"rate_per_s": 1.0, "best": best if served else None, "best_colocated": best if served else None,
              "best_disaggregated": None, "instance_gpus": 8, "evaluated": 3, "infeasible_by_reason": {"TTFT over target": 1}},
             {"rate_per_s": 2.0, "best": None, "best_colocated": None, "best_disaggregated": None, "instance_gpus": 8,
              "evaluated": 0, "infeasible_by_reason": {"TTFT of one prompt alone (0.059 s) over target": 1}}]
    page = build_capacity_page({"ttft_target_s": 2.0, "tpot_target_s": 0.1, "percentile": 90.0, "plans": plans}).markdown()
    verdict = page.split("\n")[2]
    assert verdict.endswith(("8 at 1/s; " if served else ": ") + "no deployment serves " + ("2/s.**" if served else "1/s, 2/s.**"))
