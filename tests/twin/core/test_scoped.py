"""twin.core.scoped.BlockStore: a dict there only while the outermost block is open, shared by
nested blocks, gone after it (also when the block ends in an exception)."""

import pytest

from twin.core.scoped import BlockStore


def test_a_dict_only_inside_the_outermost_block():
    store = BlockStore()
    assert store.kept is None
    with store.block():
        store.kept["a"] = 1
        with store.block():                      # nested: the same dict, not cleared at its end
            assert store.kept == {"a": 1}
            store.kept["b"] = 2
        assert store.kept == {"a": 1, "b": 2}
    assert store.kept is None
    with store.block():                          # a new outermost block starts empty
        assert store.kept == {}


def test_the_dict_goes_when_the_block_raises():
    store = BlockStore()
    with pytest.raises(ValueError), store.block():
        store.kept["a"] = 1
        raise ValueError("inside")
    assert store.kept is None


def test_two_stores_keep_apart():
    one, two = BlockStore(), BlockStore()
    with one.block():
        assert two.kept is None
