"""What every hubtune command shares: the argument parser that turns a bad flag into one line, the log format,
and the error report (one `hubtune: error:` line per problem, exit code 2)."""

from __future__ import annotations

import argparse
import logging
import sys

from engine.errors import ConfigError


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
