"""The plan search's rows and answer on a small space, held bit for bit (tests/twin/plan_rows_golden.py):
the planner's speed-ups must do less work, never give other figures."""

import json

from tests.twin.plan_rows_golden import GOLDEN, sample_rows, small_search


def test_screened_and_simulated_rows_of_a_default_space_sample_are_unchanged():
    assert sample_rows() == json.loads(GOLDEN.read_text())["rows"]


def test_a_small_search_answers_as_it_did():
    assert small_search() == json.loads(GOLDEN.read_text())["search"]
