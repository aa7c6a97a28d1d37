"""The planners' inputs under Hypothesis: whatever a user types as a sweep axis or writes in a
[search] table is either taken (and then can be written out) or refused as a ScenarioError naming
the field (exit 2), never another exception; and the plan's streamed JSON is json.dumps' own text
for any rows (NaN and infinities included, written as null)."""

import io
import json

from hypothesis import given, settings, strategies as st

from reports.plan_report import write_json_rows
from twin.core.errors import ScenarioError
from twin.core.fields import build
from twin.core.results import to_json
from twin.core.search_specs import PLAN_AXES, SearchSpec
from twin.planning.result import PlanResult, PlanRow, ScreenError
from twin.planning.sweep import _storable, parse_axis

_piece = st.one_of(st.sampled_from(["nan", "inf", "-inf", "1e400", "99999999999999999999999", "[1, 2]", "[nan]", "{a = 1}",
                                    "'x'", '"y"', "true", "8", "1.5", "-3", "", " ", ":", ",", "=", "h800", "\x00", "é"]),
                   st.text(max_size=6))


@settings(max_examples=150, deadline=None)
@given(st.sampled_from(["plan.pp", "workload.routing_imbalance", "cluster.gpu", "pp", "plan.", ".pp", ""]),
       st.lists(_piece, min_size=0, max_size=4), st.sampled_from([",", ":", ""]))
def test_a_sweep_axis_is_taken_storable_or_refused_naming_grid(key, pieces, sep):
    text = f"{key}={sep.join(pieces)}"
    try:
        axis = parse_axis(text)
    except ScenarioError as exc:
        assert exc.field.startswith("--grid")
        return
    assert all(_storable(v) for v in axis.values) and (not axis.is_range or axis.low < axis.high)


_list_values = st.one_of(st.integers(-2, 2**64), st.floats(allow_nan=True, allow_infinity=True), st.booleans(),
                         st.sampled_from(["h800", "dualpipe", "fp8", "full", "even", "bogus", ""]))


@settings(max_examples=150, deadline=None)
@given(st.dictionaries(st.sampled_from(["gpu", "num_gpus", *PLAN_AXES, "bogus"]),
                       st.one_of(st.lists(_list_values, max_size=4), _list_values), max_size=3))
def test_a_search_table_is_taken_with_each_value_once_or_refused_naming_the_field(lists):
    table = {"tokens": 1e12, "days": 30, **lists}
    try:
        spec = build(SearchSpec, table, "search")
        spec.check()
    except ScenarioError as exc:
        assert exc.field.startswith("search.")
        return
    for name in ("gpu", "num_gpus", *PLAN_AXES):
        values = list(getattr(spec, name))
        assert len(values) == len(set(map(repr, values)))


_figure = st.one_of(st.none(), st.floats(allow_nan=True, allow_infinity=True))


@settings(max_examples=50, deadline=None)
@given(st.lists(st.tuples(_figure, _figure, _figure, st.text(max_size=8)), max_size=4))
def test_the_streamed_plan_json_is_json_dumps_text(figures):
    rows = tuple(PlanRow(candidate_id=f"c{i}", label=label, gpu="h800", num_gpus=8, plan={"pp": 1, "schedule": label},
                         status="screened", feasible=True, reason=label, step_time_s=a, wall_days=b, cost_usd=c)
                 for i, (a, b, c, label) in enumerate(figures))
    plan = PlanResult(question="q", tokens=1.0, deadline_days=1.0, budget_usd=None, axes={"plan.pp": [1]}, evaluated=len(rows),
                      feasible=len(rows), simulated=0, num_meeting_deadline=0, infeasible_by_reason={}, best=None,
                      fastest=None, pareto=(), screen_error=ScreenError(0, None, None, None, None), no_answer="", rows=rows)
    fh = io.StringIO()
    write_json_rows(fh, plan)
    assert fh.getvalue() == json.dumps(to_json(plan), indent=2, allow_nan=False) + "\n"
