"""The errors hubtune reports to people, and how its commands report them: one line each, naming the field and the
fix (CLI: `hubtune: error: ...` and exit code 2; web app: gr.Error with the same text). Also what every command
shares: the argument parser that turns a bad flag into such a line, and the log format. Every engine module may
import this one; it imports nothing of the engine."""

from __future__ import annotations

import argparse
import logging
import sys


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



class CliParser(argparse.ArgumentParser):
    """argparse for hubtune's commands: a bad flag raises ConfigError (one line, exit 2 via `report`)."""

    def error(self, message):
        raise ConfigError(message)


def cli_logging(level: int = logging.INFO) -> None:
    """Log lines of hubtune's commands: `12:00:00 hubtune INFO ...` on stderr."""
    logging.basicConfig(level=level, format="%(asctime)s hubtune %(levelname)s %(message)s", datefmt="%H:%M:%S")


def report(e: ConfigError) -> int:
    """Print each problem as one `hubtune: error: ...` line on stderr; returns the exit code for bad input (2)."""
    for problem in e.problems:
        print(f"hubtune: error: {problem}", file=sys.stderr)
    return 2
