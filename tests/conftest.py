import pytest

from twin.core.scenario import load_scenario


@pytest.fixture(scope="session")
def v3():
    """The embedded default: DeepSeek-V3 pre-training on 2,048 H800."""
    return load_scenario()


# `make test` runs the suite on two pytest-xdist workers with `--dist loadgroup`: tests of one
# xdist_group run on one worker, so a fixture computed once per worker process is computed once
# (tests/committed.py's XDIST_GROUP: the committed validate(), minutes).
SESSION_FIXTURE_GROUPS = {"synthetic_fit": "synthetic-fit"}   # tests/calibration/conftest.py, minutes


def pytest_collection_modifyitems(config, items):
    """Give every test without an explicit xdist_group one: the group of the expensive session
    fixture it uses, else its module (what `--dist loadfile` would do: module-scoped fixtures are
    built once). Runs before xdist reads the marks; without xdist the marks change nothing."""
    for item in items:
        if item.get_closest_marker("xdist_group"):
            continue
        group = next((g for name, g in SESSION_FIXTURE_GROUPS.items() if name in item.fixturenames),
                     item.nodeid.split("::")[0])
        item.add_marker(pytest.mark.xdist_group(group))

