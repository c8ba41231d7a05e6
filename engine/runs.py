"""Which folders of a runs directory are runs: the one listing behind the web app's pickers, the job runner, the
Hub panel, the benches and the shell.

    python -m engine.runs [RUNS_DIR] [--finished] [--json]

A run is a directory holding at least one of config.yaml, status.json or job.json (engine/events.py). Everything
else that lives in a runs folder is skipped: the job runner's lock file, the `uploads/` folder, hidden entries
and stray files.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from engine.cli import CliParser, report
from engine.errors import ConfigError
from engine.events import RunDir, read_json

MARKERS = ("config.yaml", "status.json", "job.json")
NOT_RUNS = ("uploads",)  # the Fine-tuning tab's stored uploads


def is_run(path: str | os.PathLike) -> bool:
    """True for a run directory (not a file, not hidden, not uploads/, holding a run's own files)."""
    path = Path(path)
    if path.name.startswith(".") or path.name in NOT_RUNS:
        return False
    try:
        return path.is_dir() and any((path / m).is_file() for m in MARKERS)
    except OSError:  # a dangling link, a folder we may not read
        return False


def list_runs(runs_dir: str | os.PathLike, finished: bool = False, depth: int = 2) -> list[RunDir]:
    """Every run under `runs_dir` (runs_dir/x and, with depth 2, runs_dir/group/x), newest first.

    `finished`: only runs whose status is done and whose model/ is complete (those a model picker offers).
    """
    root = Path(runs_dir)
    if not root.is_dir():
        return []
    found, level = [], [root]
    for _ in range(depth):
        children = []
        for parent in level:
            try:
                entries = sorted(parent.iterdir())
            except OSError:
                continue
            for entry in entries:
                if is_run(entry):
                    found.append(RunDir(entry))
                elif entry.is_dir() and not entry.name.startswith(".") and entry.name not in NOT_RUNS:
                    children.append(entry)  # maybe a group of runs (e.g. runs/search/trial-1)
        level = children
    if finished:
        found = [r for r in found if r.is_finished()]
    return sorted(found, key=_mtime, reverse=True)


def _mtime(run: RunDir) -> float:
    for path in (run.status, run.config, run.path):
        try:
            return path.stat().st_mtime
        except OSError:
            continue
    return 0.0


def summary(run: RunDir, runs_dir: str | os.PathLike | None = None) -> dict:
    """What a listing shows of one run: name, state, base model, data, headline metrics, steps."""
    status, cfg = run.read_status(), read_config(run)
    metrics = read_json(run.metrics, {}) or {}
    val = metrics.get("validation") or {}
    name = run.path.name
    if runs_dir is not None and run.path.is_relative_to(runs_dir):
        name = str(run.path.relative_to(runs_dir))
    return {"name": name, "path": str(run.path), "state": status.get("state") or "prepared",
            "model": cfg.get("model_name_or_path"), "data": cfg.get("dataset_name") or cfg.get("train_file"),
            "accuracy": val.get("accuracy"), "f1": val.get("f1"), "step": status.get("step"),
            # the metric that picked the best model (accuracy, f1_micro, r2, ...) and its validation value
            "metric": metrics.get("metric_for_best_model"), "score": val.get(metrics.get("metric_for_best_model")),
            "total_steps": status.get("total_steps"), "error": status.get("error")}


def read_config(run: RunDir) -> dict:
    """A run's config.yaml as a dict ({} when missing or unreadable)."""
    import yaml

    try:
        return yaml.safe_load(run.config.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError):
        return {}


def print_table(head, lines) -> None:
    """Print rows of cells as columns padded to their widest cell."""
    widths = [max(len(str(x)) for x in col) for col in zip(head, *lines)]
    for line in [head, *lines]:
        print("  ".join(str(x).ljust(w) for x, w in zip(line, widths)).rstrip())


def runs_parser(prog: str, description: str) -> CliParser:
    """A command's parser whose first argument is the runs folder (default: HUBTUNE_RUNS_DIR or runs/)."""
    p = CliParser(prog=prog, description=description)
    p.add_argument("runs_dir", nargs="?", default=os.environ.get("HUBTUNE_RUNS_DIR") or "runs",
                   help="the runs folder (default: HUBTUNE_RUNS_DIR or runs/)")
    return p


def parse_runs_args(parser: CliParser, argv: list[str] | None):
    """`argv` parsed; a ConfigError when an argument is bad or runs_dir is not a folder."""
    args = parser.parse_args(argv)
    if not Path(args.runs_dir).is_dir():
        raise ConfigError(f"runs_dir: '{args.runs_dir}' is not a folder; give the runs folder (default runs/)")
    return args


def _parser():
    p = runs_parser("python -m engine.runs", "List the runs of a runs folder, newest first.")
    p.add_argument("--finished", action="store_true", help="only finished runs (a complete model/)")
    p.add_argument("--json", action="store_true", help="one JSON object per run")
    return p


def main(argv: list[str] | None = None) -> int:
    """Print the runs as a table (or JSON lines); 2 with one line on a bad argument."""
    try:
        args = parse_runs_args(_parser(), argv)
    except ConfigError as e:
        return report(e)
    rows = [summary(r, args.runs_dir) for r in list_runs(args.runs_dir, finished=args.finished)]
    if args.json:
        for row in rows:
            print(json.dumps(row))
        return 0
    if not rows:
        print(f"no runs in {args.runs_dir}")
        return 0
    head = ("name", "state", "model", "data", "validation", "step")
    table = [[r["name"], r["state"], Path(str(r["model"] or "")).name or "-", Path(str(r["data"] or "")).name or "-",
              f"{r['metric']} {r['score']:.4f}" if isinstance(r["score"], (int, float)) else "-",
              f"{r['step'] or 0}/{r['total_steps'] or '?'}"] for r in rows]
    print_table(head, table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
