"""The errors hubtune reports to people, and how its commands report them: one line each, naming the field and the
fix (CLI: `hubtune: error: ...` and exit code 2; web app: gr.Error with the same text). Also what every command
shares: the argument parser that turns a bad flag into such a line, and the log format. Every engine module may
import this one; it imports nothing of the engine."""

from __future__ import annotations

import argparse
import difflib
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
    """argparse for hubtune's commands: a bad flag raises ConfigError (one line, exit 2 via `report`). Only whole
    option names are accepted (argparse would take `--learning_rat` for `--learning_rate`: a typo would silently set
    a neighbour), and an unknown flag is named before anything else, since it explains the other complaints (a
    misspelt required flag is "missing")."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message):
        raise ConfigError(message)

    def parse_args(self, args=None, namespace=None):
        args = sys.argv[1:] if args is None else list(args)
        check_options(args, self)
        return super().parse_args(args, namespace)


def _is_flag(arg: str, parser: argparse.ArgumentParser) -> bool:
    """Whether argparse reads `arg` as an option rather than a value (numbers and texts with spaces are values)."""
    if len(arg) < 2 or arg[0] not in parser.prefix_chars or " " in arg:
        return False
    try:
        float(arg)
        return False
    except ValueError:
        return True


def _actions(parsers, deep: bool = False) -> list[argparse.Action]:
    # argparse has no public listing of a parser's options; deep: its subcommands' too
    found = [a for p in parsers for a in p._actions]
    subs = [c for a in found if isinstance(a, argparse._SubParsersAction) for c in a.choices.values()]
    return found + (_actions(subs, True) if deep and subs else [])


def unknown_options(argv: list[str], *parsers: argparse.ArgumentParser) -> list[str]:
    """The flags in `argv` that none of `parsers` defines by their whole name. Values are told from flags by each
    option's arity; the scan stops where the rest belongs to someone else: after `--`, at a subcommand (whose own
    parser is then scanned) and at the script of a parser that passes everything after it on (accelerate launch)."""
    actions, prefix = _actions(parsers), parsers[0].prefix_chars
    options = {s: a for a in actions for s in a.option_strings}
    subcommands = {k: v for a in actions if isinstance(a, argparse._SubParsersAction) for k, v in a.choices.items()}
    hands_on = any(not a.option_strings and a.nargs in (argparse.REMAINDER, argparse.PARSER) for a in actions)
    unknown, i = [], 0
    while i < len(argv):
        arg, i = argv[i], i + 1
        if arg == "--":
            break
        if not _is_flag(arg, parsers[0]):
            if arg in subcommands:
                return unknown + unknown_options(argv[i:], subcommands[arg])
            if hands_on:
                break
            continue
        name = arg.split("=", 1)[0]
        # a short option may carry its value or more short flags (-n2, -qm)
        action = options.get(name) or (options.get(arg[:2]) if arg[1] not in prefix else None)
        if action is None:
            unknown.append(name)
        elif arg in options and action.nargs == argparse.REMAINDER:
            break
        elif arg in options and action.nargs != 0:  # skip its values
            most = action.nargs if isinstance(action.nargs, int) else 1 if action.nargs in (None, "?") else len(argv)
            while most and i < len(argv) and not _is_flag(argv[i], parsers[0]):
                i, most = i + 1, most - 1
    return unknown


def unknown_option(flag: str, known) -> str:
    """The line for a flag no parser defines, with the closest whole name when one is close (the one it abbreviates,
    else the most similar)."""
    bare = flag.lstrip("-").replace("-", "_")
    # parsers often define --a_b and --a-b alike: compare one spelling, suggest the one in the style typed
    style = "-" if "-" in flag.lstrip("-") else "_"
    names: dict[str, str] = {}
    for option in sorted(k for k in known if k.startswith("--")):
        key = option[2:].replace("-", "_")
        if key not in names or style in option[2:]:
            names[key] = option
    starts = [option for name, option in sorted(names.items()) if bare and name.startswith(bare)]
    near = starts if len(starts) == 1 else [names[n] for n in difflib.get_close_matches(bare, sorted(names), n=1)]
    return f"command line: unknown option '{flag}'" + (f" (did you mean '{near[0]}'?)" if near else "")


def check_options(argv: list[str], *parsers: argparse.ArgumentParser) -> None:
    """Raise ConfigError naming every flag in `argv` that none of `parsers` defines (see `unknown_options`)."""
    flags = unknown_options(argv, *parsers)
    if flags:
        known = [s for a in _actions(parsers, deep=True) for s in a.option_strings]
        raise ConfigError([unknown_option(f, known) for f in flags])


def cli_logging(level: int = logging.INFO) -> None:
    """Log lines of hubtune's commands: `12:00:00 hubtune INFO ...` on stderr."""
    logging.basicConfig(level=level, format="%(asctime)s hubtune %(levelname)s %(message)s", datefmt="%H:%M:%S")


def report(e: ConfigError) -> int:
    """Print each problem as one `hubtune: error: ...` line on stderr; returns the exit code for bad input (2)."""
    for problem in e.problems:
        print(f"hubtune: error: {problem}", file=sys.stderr)
    return 2
