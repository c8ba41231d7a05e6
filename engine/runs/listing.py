"""The runs of a runs folder as the shell lists them (which folders are runs: engine/rundir.py's `list_runs`, the
one listing behind the web app's pickers, the job runner, the Hub panel, the benches and this command).

    python -m engine.runs [RUNS_DIR] [--finished] [--json]
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from engine.errors import CliParser, ConfigError, report
from engine.rundir import RunDir, best_metric, list_runs, read_config, read_json


def summary(run: RunDir, runs_dir: str | os.PathLike | None = None) -> dict:
    """What a listing shows of one run: name, state, base model, data, headline metrics, steps."""
    status, cfg = run.read_status(), read_config(run)
    metrics = read_json(run.metrics, {}) or {}
    val = metrics.get("validation") or {}
    best = best_metric(run, cfg, status)
    name = run.path.name
    if runs_dir is not None and run.path.is_relative_to(runs_dir):
        name = str(run.path.relative_to(runs_dir))
    return {"name": name, "path": str(run.path), "state": status.get("state") or "prepared",
            "model": cfg.get("model_name_or_path"), "data": cfg.get("dataset_name") or cfg.get("train_file"),
            "accuracy": val.get("accuracy"), "f1": val.get("f1"), "step": status.get("step"),
            # the metric that picks the best model (accuracy, f1_micro, r2, ...) and the run's one best value
            "metric": best.metric, "score": best.value,
            "total_steps": status.get("total_steps"), "error": status.get("error")}


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
