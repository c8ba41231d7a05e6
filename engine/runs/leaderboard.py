"""The runs leaderboard: one row per run of a runs folder (search trials included), read from the run's own files
alone (config.yaml, status.json, events.jsonl, metrics.json; no torch), to sort, filter and export as CSV. The web
app's Runs tab shows these rows; the shell prints them:

    python -m engine.leaderboard [RUNS_DIR] [--sort best_metric] [--ascending] [--state done] [--task T]
                                 [--filter TEXT] [--csv out.csv]
"""

from __future__ import annotations

import csv
import io
import os
import statistics
import time
from pathlib import Path

from engine.errors import ConfigError, report
from engine.rundir import RunDir, list_runs, read_config
from engine.runs.listing import data_label, parse_runs_args, print_table, runs_parser, summary

# one row's keys, in the CSV's column order
COLUMNS = ("name", "group", "state", "task", "base_model", "dataset", "metric", "best_metric", "learning_rate",
           "num_train_epochs", "batch_size", "max_seq_length", "step", "total_steps", "duration_s",
           "samples_per_second", "started", "path")
ACTIVE = ("queued", "running")


def rows(runs_dir: str | os.PathLike) -> list[dict]:
    """Every run under `runs_dir` (two levels deep: runs/x and runs/group/x, e.g. a search's trials), newest first."""
    return [row(run, runs_dir) for run in list_runs(runs_dir, depth=2)]


def row(run: RunDir, runs_dir: str | os.PathLike | None = None) -> dict:
    """What the leaderboard shows of one run (None where the run has no such value yet)."""
    base = summary(run, runs_dir)
    cfg, status = read_config(run), run.read_status()
    events = run.read_events()
    speeds = [e["samples_per_second"] for e in events
              if e.get("type") == "train" and isinstance(e.get("samples_per_second"), (int, float))]
    started = status.get("started_at") or status.get("launched_at")
    task = status.get("task") or _task(cfg)
    # metric and best_metric: the run's one best number (engine/rundir.py's best_metric), as every view shows it
    return {"name": base["name"], "group": base["name"].rpartition("/")[0], "state": base["state"],
            "task": task, "base_model": base["model"],
            "dataset": data_label(cfg) if cfg else None, "metric": base["metric"], "best_metric": base["score"],
            "learning_rate": cfg.get("learning_rate"), "num_train_epochs": cfg.get("num_train_epochs"),
            "batch_size": cfg.get("per_device_train_batch_size"),
            "max_seq_length": cfg.get("max_seq_length") if _reads_text(task) else None,
            "step": base["step"], "total_steps": base["total_steps"], "duration_s": _duration(status, started),
            # the median of the train events' throughput windows: the first window's warm-up does not drag it down
            "samples_per_second": round(statistics.median(speeds), 2) if speeds else None,
            "started": time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(started)) if started else None,
            "path": base["path"]}


def _task(cfg: dict) -> str | None:
    """The pipeline tag a run of this config gets, judged from its data's name (a run not started yet)."""
    if not cfg:
        return None
    from engine import tasks

    return tasks.for_data(cfg.get("dataset_name"), cfg.get("train_file")).tag


def _reads_text(tag: str | None) -> bool:
    """Whether runs of this task read text: max_seq_length means nothing to an image run (its config still has
    the default)."""
    from engine import tasks

    try:
        return tasks.get(tag).input_kind == "text" if tag else True
    except ConfigError:  # a tag this version does not serve: show what the config says
        return True


def _duration(status: dict, started: float | None) -> float | None:
    if not started:
        return None
    if status.get("state") == "running":
        return round(time.time() - started, 1)
    finished = status.get("finished_at")
    return round(finished - started, 1) if isinstance(finished, (int, float)) and finished >= started else None


# ------------------------------------------------------------------------------------------------------------
# sort, filter, export


def sort_rows(table: list[dict], key: str | None, descending: bool = True) -> list[dict]:
    """`table` sorted by column `key` (None: as listed, newest first); runs without a value always come last."""
    if not key:
        return list(table)
    if key not in COLUMNS:
        raise ConfigError(f"sort: unknown column '{key}'; choose one of {', '.join(COLUMNS)}")
    present = [r for r in table if r.get(key) is not None]
    missing = [r for r in table if r.get(key) is None]

    def order(r):
        value = r[key]
        return (0, value, "") if isinstance(value, (int, float)) else (1, 0, str(value).casefold())

    return sorted(present, key=order, reverse=descending) + missing


def filter_rows(table: list[dict], text: str = "", states=(), tasks=()) -> list[dict]:
    """The rows whose state is one of `states` and task one of `tasks` (empty: any) and whose name, group, base
    model, dataset, metric, task or state contain every word of `text` (case-insensitive)."""
    words = text.casefold().split()
    fields = ("name", "group", "base_model", "dataset", "metric", "task", "state")

    def matches(r):
        haystack = " ".join(str(r.get(f) or "") for f in fields).casefold()
        return all(w in haystack for w in words)

    return [r for r in table if (not states or r["state"] in states) and (not tasks or r["task"] in tasks)
            and matches(r)]


def to_csv(table: list[dict], columns=COLUMNS) -> str:
    """The rows as CSV text, one column per key of `columns` (empty cells where a run has no value)."""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(columns), extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows({k: ("" if r.get(k) is None else r.get(k)) for k in columns} for r in table)
    return out.getvalue()


# ------------------------------------------------------------------------------------------------------------
# the shell


def _parser():
    p = runs_parser("python -m engine.leaderboard", "The runs of a runs folder as a leaderboard.")
    p.add_argument("--sort", choices=COLUMNS, default=None, help="the column to sort by (default: newest first)")
    p.add_argument("--ascending", action="store_true", help="smallest first (default: largest first)")
    p.add_argument("--state", action="append", default=[], help="only runs in this state (repeatable)")
    p.add_argument("--task", action="append", default=[], help="only runs of this task (repeatable)")
    p.add_argument("--filter", default="", help="only runs whose name, model, data ... contain these words")
    p.add_argument("--csv", default=None, help="write the table to this CSV file instead of printing it")
    return p


def _number(value, fmt: str) -> str:
    return fmt.format(value) if isinstance(value, (int, float)) else "-"


def main(argv: list[str] | None = None) -> int:
    """Print the leaderboard (or write it as CSV); 2 with one line on a bad argument."""
    try:
        args = parse_runs_args(_parser(), argv)
    except ConfigError as e:
        return report(e)
    table = sort_rows(filter_rows(rows(args.runs_dir), args.filter, args.state, args.task), args.sort,
                      descending=not args.ascending)
    if args.csv:
        Path(args.csv).write_text(to_csv(table), encoding="utf-8")
        print(f"wrote {len(table)} runs to {args.csv}")
        return 0
    if not table:
        print(f"no runs in {args.runs_dir}")
        return 0
    head = ("name", "state", "task", "model", "data", "best", "lr", "epochs", "batch", "len", "time", "samples/s")
    lines = [[r["name"], r["state"], r["task"] or "-", Path(str(r["base_model"] or "")).name or "-",
              r["dataset"] or "-", f"{r['metric']} {r['best_metric']:.4f}" if r["best_metric"] is not None else "-",
              _number(r["learning_rate"], "{:g}"), _number(r["num_train_epochs"], "{:g}"),
              _number(r["batch_size"], "{}"), _number(r["max_seq_length"], "{}"),
              _number(r["duration_s"], "{:.0f} s"), _number(r["samples_per_second"], "{:.1f}")] for r in table]
    print_table(head, lines)
    return 0
