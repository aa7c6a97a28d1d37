"""s16dpv (docs/notes/s16dpv.md): the forward host rates grouped per configuration are the rates the
twin pools (calibration.pipeline.host_rates' "fwd@<role>"), solved on the committed 4xH200 ranking
round's own fitting split."""
import json
from pathlib import Path

import numpy as np
import pytest

from calibration import forward_rates as fr
from calibration import pipeline as pipe
from calibration.fit import PROFILES_DIR
from calibration.records import MEASUREMENTS_DIR
from twin.costs.profile import profile_from_json

ROUND = Path(MEASUREMENTS_DIR) / "h200x4" / "s15rank_20261127_0408" / "round_a"


@pytest.fixture(scope="module")
def profile():
    return profile_from_json(json.loads((Path(PROFILES_DIR) / "h200.json").read_text()))


@pytest.fixture(scope="module")
def rates(profile):
    if not ROUND.is_dir():
        pytest.skip("the s15rank 4xH200 round is not committed")
    return fr.forward_rates(ROUND, "h200", profile)


def test_every_fitting_configuration_has_first_stage_rates(rates):
    by = fr.rates_by_config(rates)
    first = by[by["role"] == "first"]
    # the fitting split of the ranking round: its four schedules at 4 micro-batches
    assert sorted(first["schedule"]) == ["1f1b", "dualpipe", "dualpipev", "zb1p"]
    assert set(first["num_microbatches"]) == {4}
    assert (first["host_rate_s"] > 0).all()
    # DualPipeV's first stage holds 2 of the 8 layers, the others' 4: fewer launches a forward
    dpv = first[first["schedule"] == "dualpipev"].iloc[0]
    dp = first[first["schedule"] == "dualpipe"].iloc[0]
    assert dpv["num_layers"] == 2 and dp["num_layers"] == 4
    assert dpv["launches"] < dp["launches"]


def test_pooled_rates_are_the_twins(rates, profile):
    # the role's pooled median over every configuration is the rate host_rates gives the twin
    host = pipe.measured_host_s(ROUND, "h200", pipe.with_measured_collectives(profile, ROUND),
                                pipe.measured_accumulate(ROUND, "h200"))
    by = fr.rates_by_config(rates)
    for role, pooled in by.groupby("role")["pooled_rate_s"].first().items():
        key = f"fwd@{role}"
        if key in host:
            assert np.isclose(pooled, host[key], rtol=1e-9), role


def test_rates_by_step_follow_the_stage_placement(rates):
    steps = fr.rates_by_step(rates)
    gpus = {s: sorted(int(c) for c in g.dropna(axis=1, how="all").columns)
            for s, g in steps.groupby(level="schedule")}
    # the first model stage is on pipeline rank 0 (GPUs 0 and 2, its EP pair) in 1F1B, ZB1P and
    # DualPipeV; DualPipe's two ranks each hold it (one direction each): all four GPUs
    assert gpus["1f1b"] == gpus["zb1p"] == [0, 2]
    assert gpus["dualpipe"] == [0, 1, 2, 3]
    # DualPipeV's pipeline rank 1 runs the middle stages (1, 2): clean forwards there too
    assert gpus["dualpipev"] == [0, 1, 2, 3]
    # one row per timed step of each configuration
    assert (steps.groupby(level="schedule").size() <= 11).all()
