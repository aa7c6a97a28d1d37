"""The two error types users see. Everything else is a bug."""

import reprlib

# How an offending value is shown: whole for anything a person types, cut short for a 100,000-entry
# list or a table nested hundreds deep (which would otherwise flood the one-line message, or
# exhaust the recursion limit while being printed).
_SHOW = reprlib.Repr()
_SHOW.maxlevel = 4
_SHOW.maxlist = _SHOW.maxtuple = _SHOW.maxset = _SHOW.maxfrozenset = _SHOW.maxdict = 8
_SHOW.maxstring = _SHOW.maxother = 200
_SHOW.maxlong = 60


def show_value(value: object) -> str:
    """repr(value), shortened with '...' where it would be long or deep."""
    return _SHOW.repr(value)


class ScenarioError(ValueError):
    """Invalid input: names the field, the value and what is allowed. CLI exits with status 2."""

    def __init__(self, field: str, value: object, allowed: str, source: str | None = None):
        self.field = field
        self.value = value
        self.allowed = allowed
        self.source = source
        where = (f" ({source})" if source.startswith("--set ") else f" in {source}") if source else ""
        super().__init__(f"{field}{where}: got {show_value(value)}; allowed: {allowed}")

    def __reduce__(self):
        # picklable with its fields: an error raised in a worker process must reach the parent
        # (otherwise multiprocessing's result thread dies on it and the pool hangs)
        return (ScenarioError, (self.field, self.value, self.allowed, self.source))


class InfeasiblePlan(Exception):
    """A well-formed plan that cannot run (OOM, degrees that don't divide). Sweeps catch this."""

    def __init__(self, reason: str, breakdown: dict | None = None):
        self.reason = reason
        self.breakdown = breakdown or {}
        super().__init__(reason)
