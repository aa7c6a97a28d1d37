"""A report re-rendered from the result a command saved: `twin report D/result.json --out E`.

`twin replay`, `twin serve` and `twin plan` (its training search, its serving question and its capacity
curve) write their result as JSON (`--out D`: D/result.json beside D/scenario.resolved.toml; `--json F`:
F beside F's stem + .scenario.resolved.toml). That JSON and the resolved scenario are what the report
is drawn from, so the same writer renders the same page again from them: report.html, report.md, the
plots, the command's tables (results.csv, serve_sweep.csv, plan.csv and plan.parquet) and result.json and
scenario.resolved.toml themselves. A replay's Gantt chart needs the step's event log, which the JSON leaves
out: the caller simulates that step again (twin.training.replay.stages.saved_gantt_step; the twin is
deterministic) and passes it in.

The kind of a result is told by the fields only it has (KINDS). Not re-rendered: `twin balance` (its page
draws the measured loads and a step curve it does not save) and `twin sweep` (a folder of rows).
"""

from __future__ import annotations

from pathlib import Path

from reports import plan_report, replay_report, serve_report
from twin.core.scenario import PLAN, SERVING, TRAINING

# kind -> (the fields that tell its JSON apart, the scenario kind it was run from, the command that wrote it)
KINDS = {
    "replay": (("stages", "size_sweep", "claims_describe_run"), TRAINING, "twin replay"),
    "serve": (("simulation", "ttft_p50_s", "sweep"), SERVING, "twin serve"),
    "plan": (("axes", "pareto", "screen_error", "rows"), PLAN, "twin plan --tokens"),
    "serving_plan": (("rate_per_s", "layouts", "best_colocated"), SERVING, "twin plan --rate R"),
    "serving_capacity": (("plans", "percentile", "ttft_target_s"), SERVING, "twin plan --rate R1,R2"),
}
ALLOWED = ("the result.json of `twin replay`, `twin serve` or `twin plan` --out DIR (or the DIR), or their "
           "--json FILE, with the resolved scenario beside it")


def result_kind(data) -> str | None:
    """The KINDS name of a saved result (a JSON object), or None where it is none of them."""
    if not isinstance(data, dict):
        return None
    found = [kind for kind, (fields, _, _) in KINDS.items() if all(f in data for f in fields)]
    return found[0] if len(found) == 1 else None


def scenario_kind(kind: str) -> str:
    """The scenario kind (TRAINING or SERVING) the result's command ran."""
    return KINDS[kind][1]


def write(kind: str, data: dict, scenario, out_dir: str | Path, gantt_step=None) -> Path:
    """Render the saved result `data` of `kind` with its `scenario` into `out_dir` as its command's report
    writer does (staged: nothing there changes until every file is written; other files are left alone).
    `gantt_step`: a replay's Gantt step (saved_gantt_step). Returns `out_dir`."""
    if kind == "replay":
        replay_report.write_result(data, scenario, out_dir, gantt_step)
    elif kind == "serve":
        serve_report.write_result(data, scenario, out_dir)
    elif kind == "plan":
        plan_report.write_saved_plan_report(data, scenario, out_dir)
    elif kind == "serving_plan":
        plan_report.write_serving_plan_json(data, scenario, out_dir)
    elif kind == "serving_capacity":
        plan_report.write_serving_capacity_json(data, scenario, out_dir)
    else:
        raise ValueError(f"kind {kind!r}: one of {', '.join(KINDS)}")
    return Path(out_dir)
