"""Write pytest's assertion-rewritten byte code of every test module and conftest.py, once, before the suite runs.

pytest rewrites the asserts of each test module (and conftest.py) it imports and keeps the rewritten code in a pyc of
its own (`__pycache__/NAME.cpython-311-pytest-9.2.0.pyc`, hash-checked against the source), but writes it only where
byte code may be written: where PYTHONDONTWRITEBYTECODE is set (as on the machine CI runs on) nothing is kept, and
each of `make test`'s two xdist workers rewrote all ~380 modules while collecting (s27ci: 25.8 s of CPU a collection
uncached, 14.1 s cached). `make test` runs this first on every core (as compileall does for the plain byte code):
the workers then read the rewritten code, which is pytest's own (its rewrite and its writer, the same code object:
tests/test_assert_cache.py). A module edited later is rewritten by pytest as before (its source hash no longer matches).

    python -m tests.assert_cache [FOLDER ...]   (default: tests)
"""

from __future__ import annotations

import os
import sys
import tomllib
import types
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from _pytest.assertion.rewrite import PYC_TAIL, _read_pyc, _rewrite_test, _write_pyc, get_cache_dir

ROOT = Path(__file__).resolve().parents[1]
# the files pytest rewrites here: test modules (pytest's default python_files) and the conftest.py files
PATTERNS = ("test_*.py", "*_test.py", "conftest.py")


def _checked_config() -> None:
    """The rewrite reads one ini option, enable_assertion_pass_hook (config=None: its default, off); a project that
    turned it on would get pycs that differ from pytest's, so refuse."""
    ini = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["pytest"]["ini_options"]
    if ini.get("enable_assertion_pass_hook") or "python_files" in ini:
        sys.exit("tests.assert_cache: pyproject.toml's pytest options set enable_assertion_pass_hook or python_files; "
                 "allowed: neither (this script rewrites as pytest's defaults do)")


def pyc_path(fn: Path) -> Path:
    """Where pytest reads the rewritten code of `fn` (its AssertionRewritingHook.exec_module)."""
    return get_cache_dir(fn) / (fn.name[:-3] + PYC_TAIL)


def write_one(fn: Path) -> bool:
    """Rewrite `fn` as pytest does and write its pyc; False where a valid one is already there."""
    pyc = pyc_path(fn)
    if _read_pyc(fn, pyc) is not None:
        return False
    source_hash, co = _rewrite_test(fn, None)
    pyc.parent.mkdir(exist_ok=True)
    _write_pyc(types.SimpleNamespace(trace=lambda _msg: None), co, source_hash, pyc)   # atomic: a temp file renamed
    return True


def files(folders: list[Path]) -> list[Path]:
    return sorted({p for folder in folders for pattern in PATTERNS for p in folder.rglob(pattern)
                   if "__pycache__" not in p.parts})


def main(argv: list[str] | None = None) -> int:
    _checked_config()
    folders = [Path(a).resolve() for a in (argv if argv is not None else sys.argv[1:])] or [ROOT / "tests"]
    todo = files(folders)
    with ProcessPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        written = sum(pool.map(write_one, todo, chunksize=8))
    print(f"tests.assert_cache: {written} of {len(todo)} modules rewritten")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
