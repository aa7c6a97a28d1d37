"""twin.cli.prefork: a module imported in a forked process while the parent computes."""

import os

import pytest

from twin.cli.prefork import Prepared, prepared
from twin.core.errors import ScenarioError


def test_the_call_runs_in_the_forked_process_and_returns_its_value():
    with prepared("os", "getpid") as p:
        child_pid = p.call()
    assert isinstance(child_pid, int) and child_pid != os.getpid()


def test_an_exception_in_the_call_is_raised_here_with_its_fields():
    with prepared("twin.core.scenario", "load_scenario") as p, pytest.raises(ScenarioError) as err:
        p.call("/no/such/scenario.toml")
    assert err.value.field == "SCENARIO" and "/no/such/scenario.toml" in str(err.value)


def test_a_module_that_does_not_import_fails_when_called():
    with prepared("twin.no_such_module", "f") as p, pytest.raises(ModuleNotFoundError):
        p.call()


def test_closing_without_a_call_stops_the_process():
    p = Prepared("os", "getpid")
    proc = p._proc
    p.close()
    assert proc is not None and not proc.is_alive()


def test_disabled_means_no_process():
    with prepared("os", "getpid", enabled=False) as p:
        assert p is None


def test_work_ahead_runs_before_the_call_and_a_failure_there_does_not_stop_it():
    with prepared("os", "getpid", warm="os.getenv", warm_args=("HOME",)) as p:
        assert isinstance(p.call(), int)
    with prepared("os", "getpid", warm="twin.no_such_module.f") as p:
        assert isinstance(p.call(), int)
