"""One error type for every problem with input data or configuration.

The message always names the file (or "<config>"), the field and what was expected, so a user
with a thousand recordings knows which one to look at without reading a traceback.
"""

from __future__ import annotations

from pathlib import Path


class BiosignalError(ValueError):
    """Bad input: names the file, the field and what was expected."""

    def __init__(self, source: str | Path | None, field: str, problem: str):
        self.source = str(source) if source is not None else "<in-memory>"
        self.field = field
        self.problem = problem
        super().__init__(f"{self.source}: {field}: {problem}")


class ConfigError(BiosignalError):
    """An invalid configuration value."""

    def __init__(self, field: str, problem: str, source: str | Path | None = "<config>"):
        super().__init__(source, field, problem)
