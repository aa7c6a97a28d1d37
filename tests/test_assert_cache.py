"""tests/assert_cache.py (run by `make test` before the suite) writes the code pytest itself would run: the same code
object as pytest's own rewrite under this run's configuration, where pytest reads it, and only while the source is
the one it was written from."""

import shutil
from pathlib import Path

import pytest
from _pytest.assertion.rewrite import _read_pyc, _rewrite_test

from tests import assert_cache

HERE = Path(__file__).resolve().parent


@pytest.mark.parametrize("name", ["test_assert_cache.py", "conftest.py", "calibration/test_fit_inputs.py"])
def test_the_written_code_is_pytests_rewrite(tmp_path, pytestconfig, name):
    fn = tmp_path / Path(name).name
    shutil.copy(HERE / name, fn)
    assert assert_cache.write_one(fn)
    pyc = assert_cache.pyc_path(fn)
    assert pyc.parent == tmp_path / "__pycache__" and pyc.name.endswith("-pytest-" + pytest.__version__ + ".pyc")
    cached = _read_pyc(fn, pyc)
    assert cached is not None
    _, rewritten = _rewrite_test(fn, pytestconfig)
    # equal code objects (bytecode, constants, names, nested functions alike); their marshal bytes differ only in
    # how strings are shared (one loaded from a pyc, one compiled here)
    assert cached == rewritten and _names(cached) == _names(rewritten)
    # asserts rewritten (tests/conftest.py has none)
    assert any(n.startswith("@py_assert") for n in _names(cached)) == (name != "conftest.py")


def _names(co) -> list[str]:
    """Every local and global name of a code object and the code objects inside it, in order."""
    return [*co.co_names, *co.co_varnames, *(n for c in co.co_consts if isinstance(c, type(co)) for n in _names(c))]


def test_a_valid_pyc_is_kept_and_an_edited_source_rewritten(tmp_path):
    fn = tmp_path / "test_x.py"
    fn.write_text("def test_a():\n    assert 1 == 1\n")
    assert assert_cache.write_one(fn) and not assert_cache.write_one(fn)
    fn.write_text("def test_a():\n    assert 2 == 2\n")
    assert _read_pyc(fn, assert_cache.pyc_path(fn)) is None      # pytest would not use the stale one
    assert assert_cache.write_one(fn)


def test_the_files_are_the_test_modules_and_conftests():
    got = {p.relative_to(HERE).as_posix() for p in assert_cache.files([HERE])}
    assert {"conftest.py", "test_assert_cache.py", "calibration/conftest.py", "calibration/test_fit_inputs.py"} <= got
    assert "assert_cache.py" not in got and "committed.py" not in got
    assert len(got) == len(list(HERE.rglob("test_*.py"))) + len(list(HERE.rglob("conftest.py")))
