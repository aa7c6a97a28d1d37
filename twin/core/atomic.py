"""Atomic writes: an interrupted run never leaves a half-written file or report in place of a good one.

Files are written to a temporary file in the target's directory and moved over it with os.replace
(atomic on POSIX within one filesystem). A report is built whole in a temporary sibling
directory and its files are moved in only when all of them are complete.

The temporary file and directory are created private (tempfile makes them 0600 and 0700); before
they are moved into place they get the mode an ordinary `open()` or `mkdir` would give them,
0666 or 0777 less the process umask, so outputs are as readable as any other file the user writes.

`check_output` tells before any work starts whether an output path can be written, so a typo in
`--json` or `--out` costs nothing.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from twin.core.errors import ScenarioError


def umask() -> int:
    """The process umask. Read from /proc where the kernel shows it (Linux 4.7+); elsewhere set
    and restored at once (os.umask is the only portable reader)."""
    with contextlib.suppress(OSError, ValueError):
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write_bytes(path: str | Path, data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o666 & ~umask())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_text(path: str | Path, text: str) -> None:
    write_bytes(path, text.encode("utf-8"))


@contextlib.contextmanager
def open_atomic(path: str | Path, newline: str | None = None) -> Iterator:
    """A text file (UTF-8) to write in pieces, moved over `path` only once the block succeeds: for
    outputs too large to build whole in memory (a plan search's every row)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline=newline) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o666 & ~umask())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def staged_dir(path: str | Path) -> Iterator[Path]:
    """Yield a temporary directory beside `path`; when the block succeeds, move each file into `path`.

    Nothing in `path` changes until every output has been written; other files there are left
    alone. Each file moves with os.replace, so no file is ever seen half-written. On error the
    temporary directory is removed and `path` is untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        os.chmod(tmp, 0o777 & ~umask())
        yield tmp
        path.mkdir(parents=True, exist_ok=True)
        for src in sorted(tmp.rglob("*")):
            if src.is_file():
                dst = path / src.relative_to(tmp)
                dst.parent.mkdir(parents=True, exist_ok=True)
                os.replace(src, dst)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def check_output(option: str, path: str | Path, kind: str = "file") -> None:
    """Raise ScenarioError naming `option` unless `path` can be written as a `kind` ("file" or
    "dir"): it is not the wrong kind of thing, and a file can be created in the nearest existing
    directory above it (where write_bytes and staged_dir put their temporary files) and, for an
    existing directory, in it. Tried with a temporary file, removed at once; nothing is created."""
    p = Path(path)
    what = "a writable file path" if kind == "file" else "a writable directory path"
    if str(path) == "" or "\0" in str(path):
        raise ScenarioError(option, str(path), what)
    try:
        probes = []
        if p.exists():
            if kind == "file" and p.is_dir():
                raise ScenarioError(option, str(path), f"{what} (this is a directory)")
            if kind == "dir" and not p.is_dir():
                raise ScenarioError(option, str(path), f"{what} (this exists and is not a directory)")
            if p.is_dir():
                probes.append(p)
        above = p.absolute().parent
        while not above.exists() and above != above.parent:
            above = above.parent
        if not above.is_dir():
            raise ScenarioError(option, str(path), f"{what} ({above} is not a directory)")
        for probe in [above, *probes]:
            fd, tmp = tempfile.mkstemp(prefix=".twin-write-check.", dir=probe)
            os.close(fd)
            os.unlink(tmp)
    except OSError as exc:   # no permission, read-only filesystem, name too long, /proc
        raise ScenarioError(option, str(path), f"{what} ({exc.strerror or exc})") from None
