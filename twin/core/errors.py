"""The two error types users see. Everything else is a bug."""


class ScenarioError(ValueError):
    """Invalid input: names the field, the value and what is allowed. CLI exits with status 2."""

    def __init__(self, field: str, value: object, allowed: str, source: str | None = None):
        self.field = field
        self.value = value
        self.allowed = allowed
        self.source = source
        where = f" in {source}" if source else ""
        super().__init__(f"{field}{where}: got {value!r}; allowed: {allowed}")


class InfeasiblePlan(Exception):
    """A well-formed plan that cannot run (OOM, degrees that don't divide). Sweeps catch this."""

    def __init__(self, reason: str, breakdown: dict | None = None):
        self.reason = reason
        self.breakdown = breakdown or {}
        super().__init__(reason)
