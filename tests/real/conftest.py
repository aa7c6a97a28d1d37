import pytest
import torch

from real.configs import get_spec


@pytest.fixture
def tiny():
    """The catalog's `tiny` model spec (MLA with query compression, dense + MoE layers, MTP)."""
    return get_spec("tiny")


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
