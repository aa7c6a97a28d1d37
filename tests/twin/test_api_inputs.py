"""The Python API refuses bad arguments as the command line does: a ScenarioError naming the argument,
the value and what is allowed, never numpy's errors or a MemoryError (until s21walk: a negative prompt
ran, strings, an empty run or a missing output_len raised numpy's errors, num_requests=-1 or 2.5 raised
in numpy, 10**12 allocated 7 TiB)."""

import re

import pytest

import twin
from twin.core.errors import ScenarioError


@pytest.fixture(scope="module")
def sv():
    return twin.load_scenario(kind="serving")


@pytest.mark.parametrize("args, kwargs, pattern", [
    (([0.0], [-5], [10]), {}, r"^input_len: got \[-5\.0\]; allowed: a list of integers >= 1 and <= 10,000,000, one per request"),
    (([0.0], [5.5], [10]), {}, r"^input_len: got \[5\.5\]; allowed: a list of integers"),
    (([0.0], [5], [0]), {}, r"^output_len: got \[0\.0\]; allowed: a list of integers >= 1"),
    ((["a"], [5], [10]), {}, r"^arrival_s: got \['a'\]; allowed: a list of numbers >= 0"),
    (([float("nan")], [5], [10]), {}, r"^arrival_s: got \[nan\]; allowed"),
    (([], [], []), {}, r"^input_len: got \[\]; allowed: .*\(1 to 2,000,000 requests\)"),
    ((None, [5], None), {}, r"^output_len: got None; allowed: one output length per request, given with input_len"),
    (([0.0, 1.0], None, [3, 4]), {}, r"^input_len: got None; allowed: one prompt length per request, given with arrival_s, output_len"),
    ((None, [5, 6], [3]), {}, r"^output_len: got '1 values'; allowed: one per request \(2, as input_len\)"),
    ((None, [[5]], [[3]]), {}, r"^input_len: got \[5\.0\]; allowed: a list of integers"),
    ((None, [100, 200], [10, 20]), {"cached_len": [0, 500]}, r"^cached_len: got \[0\.0, 500\.0\]; allowed: 0 <= cached_len <= input_len"),
    ((), {"num_requests": 0}, r"^num_requests: got 0; allowed: integer >= 1 and <= 2,000,000"),
    ((), {"num_requests": 10**12}, r"^num_requests: got 1000000000000; allowed: integer >= 1 and <= 2,000,000"),
])
def test_simulate_load_refuses_bad_runs_naming_the_argument(sv, args, kwargs, pattern):
    with pytest.raises(ScenarioError, match=pattern):
        twin.simulate_load(sv, *args, **kwargs)


def test_simulate_load_still_takes_a_good_run(sv):
    r = twin.simulate_load(sv, [0.0, 0.1], [100, 200], [10, 20], cached_len=[0, 50])
    assert r.per_request()["ttft_s"].shape == (2,)


@pytest.mark.parametrize("n", [-1, 0, 2.5, 10**12, True])
def test_serve_refuses_a_bad_request_count(sv, n):
    with pytest.raises(ScenarioError, match=r"^num_requests: got .*; allowed: integer >= 1 and <= 2,000,000$"):
        twin.serve(sv, n)


def test_one_override_may_be_a_bare_string():
    """load_scenario(None, "plan.pp=8") read the string character by character ("--set: got 'p'")."""
    assert twin.load_scenario(None, "plan.pp=8").plan.pp == 8
    with pytest.raises(ScenarioError, match=re.escape("plan.pp")):
        twin.load_scenario(None, "plan.pp=3")


from hypothesis import HealthCheck, given, settings, strategies as st   # noqa: E402

from twin.core.errors import InfeasiblePlan   # noqa: E402

_LENGTH = st.one_of(st.integers(-5, 3000), st.floats(allow_nan=True, allow_infinity=True, width=32), st.text(max_size=3),
                    st.none(), st.booleans())
_ARRAY = st.one_of(st.none(), st.lists(_LENGTH, max_size=6), st.integers(-3, 3), st.text(max_size=4),
                   st.lists(st.lists(st.integers(1, 5), max_size=2), max_size=2))


@pytest.fixture(scope="module")
def tiny_sv():
    return twin.load_scenario(None, ['model.name="tiny"', "serve.tp=1", "serve.dp_attention=true", "serve.batch=4"],
                              kind="serving")


@settings(max_examples=80, deadline=None, database=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(arrival=_ARRAY, input_len=_ARRAY, output_len=_ARRAY, cached=st.one_of(st.none(), _ARRAY))
def test_simulate_load_on_any_arrays_runs_or_refuses_by_name(tiny_sv, arrival, input_len, output_len, cached):
    """Whatever lists a notebook passes, simulate_load returns a result or raises a ScenarioError (or an
    InfeasiblePlan for a request no cache can hold), never numpy's or Python's own errors."""
    try:
        twin.simulate_load(tiny_sv, arrival, input_len, output_len, cached_len=cached)
    except ScenarioError as exc:
        assert re.match(r"^[a-z_]+: got .*; allowed: .+", str(exc)), str(exc)
    except InfeasiblePlan:
        pass


def test_a_numpy_count_is_a_count(sv):
    """A request count from numpy (a DataFrame's column) was refused as not an integer."""
    import numpy as np
    assert twin.serve(sv, np.int64(20)).simulated_requests == 20
