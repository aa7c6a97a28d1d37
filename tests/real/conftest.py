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


def _forked_ranks(fn, args=(), nprocs=1, join=True, daemon=False):
    """torch.multiprocessing.spawn with its ranks forked from the test process where that is safe.
    A spawned rank starts a fresh interpreter that imports torch, real/ and the test module again:
    about 3 s of CPU a rank, most of a gloo test's cost on CI's two cores (tests/real/test_ep.py and
    test_tp_cp.py: 53 s of CPU spawned, 19 s forked). A forked rank inherits them; it runs the same
    function with the same arguments, ends in os._exit and reports its exception to the parent as a
    spawned one does. Its generators start where the seeded test's are; it opens its own process group.
    Spawned still where the test process runs more than one intra-op thread (an OpenMP thread team
    does not survive a fork; tests/conftest.py sets one thread unless the caller chose more)."""
    method = "fork" if torch.get_num_threads() == 1 else "spawn"
    return torch.multiprocessing.start_processes(fn, args, nprocs, join, daemon, start_method=method)


@pytest.fixture(autouse=True)
def _ranks_forked(monkeypatch):
    """Every tests/real module calls torch.multiprocessing.spawn as `mp.spawn(...)`: forked ranks (above)."""
    monkeypatch.setattr(torch.multiprocessing, "spawn", _forked_ranks)
