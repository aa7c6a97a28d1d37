"""Fixtures for the report tests: a replayed result from the analytic stand-in for the step twin."""

from __future__ import annotations

import pytest
from fake_step import fake_step as fake_step_fn  # tests/ is on sys.path (rootdir conftest)

from twin.core.results import to_json
from twin.core.scenario import load_scenario
from twin.training.replay.run import replay


@pytest.fixture(scope="session")
def fake_step():
    return fake_step_fn


@pytest.fixture(scope="session")
def replayed(fake_step):
    """(scenario, the result's JSON form the renderers take, the typed ReplayResult)."""
    sc = load_scenario()
    result = replay(sc, step_fn=fake_step)
    return sc, to_json(result), result
