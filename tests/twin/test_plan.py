"""Capacity planning over scenario variants: ranking, deadlines, and plans that can't run."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

import twin
from twin.core.errors import ScenarioError

from twin.core.results import to_json
from twin.planning.result import Candidate
from twin.planning.search import candidates, evaluate, plan
from twin.core.scenario import read_raw


ROOT = Path(__file__).resolve().parents[2]


def _raw():
    return read_raw(None)[0]


def test_invalid_and_oom_candidates_are_reported_not_raised():
    raw = _raw()
    bad_degree = to_json(evaluate(raw, Candidate("h800", 2048, 7, 64, 1, "dualpipe", 1), 14.8e12, {"h800": 2.0}))
    assert not bad_degree["feasible"] and bad_degree["reason"].startswith("invalid: cluster.num_gpus")
    oom = to_json(evaluate(raw, Candidate("h800", 2048, 8, 64, 1, "dualpipe", 1), 14.8e12, {"h800": 2.0}))
    assert not oom["feasible"] and "out of memory" in oom["reason"]


def test_cost_and_days_follow_from_the_step():
    raw = _raw()
    row = to_json(evaluate(raw, Candidate("h800", 2048, 16, 64, 1, "dualpipe", 1), 14.8e12, {"h800": 2.0}))
    steps = 14.8e12 / (15360 * 4096)
    assert row["feasible"]
    assert row["wall_days"] * 86400 == __import__("pytest").approx(steps * row["step_time_s"])
    assert row["cost_usd"] == __import__("pytest").approx(row["gpu_hours"] * 2.0)


def test_ranking_respects_deadline_and_missing_prices():
    raw = _raw()
    cands = candidates(["h800", "h200"], [2048, 4096], [16], [64], [1], ["dualpipe"], [1])
    out = to_json(plan(raw, 14.8e12, 40.0, cands, {"h800": 2.0}, workers=1))
    assert out["num_candidates"] == 4
    assert all(r["wall_days"] <= 40.0 for r in out["ranked"])
    priced = [r for r in out["ranked"] if r["cost_usd"] is not None]
    assert [r["cost_usd"] for r in priced] == sorted(r["cost_usd"] for r in priced)
    # a GPU without a price ranks after every priced plan
    seen_unpriced = False
    for r in out["ranked"]:
        seen_unpriced |= r["cost_usd"] is None
        assert not (seen_unpriced and r["cost_usd"] is not None)
    assert out["fastest"]["wall_days"] == min(r["wall_days"] for r in out["rows"] if r["feasible"])


def test_plan_cli(tmp_path):
    out = tmp_path / "plan.json"
    proc = subprocess.run([sys.executable, "-m", "twin.cli.main", "plan", "--tokens", "1e12", "--days", "30", "--pp", "8,16",
                           "--json", str(out), "--out", str(tmp_path / "p"), "--quiet"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    data = json.loads(out.read_text())
    assert data["num_candidates"] == 2 and (tmp_path / "p" / "cost_vs_days.png").is_file()
    proc = subprocess.run([sys.executable, "-m", "twin.cli.main", "plan", "--tokens", "1e12", "--days", "30", "--pp", "8,x"],
                          capture_output=True, text=True)
    assert proc.returncode == 2 and "--pp" in proc.stderr and "Traceback" not in proc.stderr


def test_plan_scenario_carries_its_search_and_flags_override_it(tmp_path):
    out = tmp_path / "plan.json"
    # the scenario's [search] has 2 GPU types x 2 counts x 2 PP degrees; the flags narrow it to 2
    proc = subprocess.run([sys.executable, "-m", "twin.cli.main", "plan", "scenarios/v3_plan.toml", "--gpu", "h800",
                           "--num-gpus", "2048", "--json", str(out), "--quiet"], capture_output=True, text=True,
                          cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    data = json.loads(out.read_text())
    assert data["num_candidates"] == 2 and data["tokens"] == 14.8e12 and data["deadline_days"] == 60


@pytest.mark.parametrize("argv, field", [
    (["plan", "--tokens", "nan", "--days", "30"], "search.tokens"),
    (["plan", "--days", "30"], "search.tokens"),
    (["plan", "scenarios/r1_serve_h200.toml", "--tokens", "1e12", "--days", "30"], "serve"),
    (["step", "scenarios/r1_serve_h200.toml"], "serve"),
    (["serve", "scenarios/v3_plan.toml"], "search"),
])
def test_wrong_kind_or_bad_search_exits_2_naming_the_field(argv, field):
    proc = subprocess.run([sys.executable, "-m", "twin.cli.main", *argv], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.startswith(f"error: {field} ")


def test_python_api_plan_takes_the_search_of_a_plan_scenario():
    sc = twin.load_scenario(ROOT / "scenarios" / "v3_plan.toml")
    out = twin.plan(sc, gpus=["h800"], num_gpus=[2048], pp=[16])
    assert out.num_candidates == 1 and out.best.label.startswith("2048xh800 TP1 PP16")
    with pytest.raises(ScenarioError, match="search.days"):
        twin.plan(sc, days=-1)
