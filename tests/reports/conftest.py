"""Fixtures for the report tests: a replayed result from the analytic stand-in for the step twin."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest


def load_fake_step():
    spec = importlib.util.spec_from_file_location("replay_fake_step", Path(__file__).with_name("fake_step.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.fake_step


@pytest.fixture(scope="session")
def fake_step():
    return load_fake_step()


@pytest.fixture(scope="session")
def replayed(fake_step):
    from twin.replay import replay_run
    from twin.scenario import load_scenario

    sc = load_scenario()
    result, internals = replay_run(sc, step_fn=fake_step)
    return sc, result, internals
