"""The errors hubtune reports to people: one line each, naming the field and the fix (CLI: exit code 2;
web app: gr.Error). Every engine module may import this one; it imports nothing of the engine."""

from __future__ import annotations


class ConfigError(ValueError):
    """One or more problems with a config; `problems` holds one line each, naming the field and the fix."""

    def __init__(self, problems: list[str] | str):
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        super().__init__("; ".join(self.problems))


class DataError(ConfigError):
    """Bad data: reported like a config problem (one line, exit code 2)."""


class ModelError(ConfigError):
    """A model that cannot be used, explained in one line."""


class PredictError(ConfigError):
    """Bad prediction input (text, file, column), explained in one line."""
