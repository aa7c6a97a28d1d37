"""Work shared only while a `with` block is open: a dict there from the outermost block's start to
its end, nested blocks sharing it, nothing kept outside one.

Two users: calibration.memo (a validation's results computed once and served again: `sharing`) and
twin.serving.timing (the replays of one serving scenario sharing their iteration-time grid:
`sharing_grids`). Each keeps its own store; what goes in it, and why that is safe while the block is
open, is theirs to say.
"""

from __future__ import annotations

import contextlib


class BlockStore:
    """A dict that exists while a `block()` is open (the outermost one: nested blocks share it)."""

    def __init__(self) -> None:
        self._kept: dict | None = None

    @contextlib.contextmanager
    def block(self):
        outermost = self._kept is None
        if outermost:
            self._kept = {}
        try:
            yield
        finally:
            if outermost:
                self._kept = None

    @property
    def kept(self) -> dict | None:
        """The open block's dict; None where no block is open."""
        return self._kept
