import pytest

from twin.core.scenario import load_scenario


@pytest.fixture(scope="session")
def v3():
    """The embedded default: DeepSeek-V3 pre-training on 2,048 H800."""
    return load_scenario()
