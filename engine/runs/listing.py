"""The runs of a runs folder as the shell lists them (which folders are runs: engine/rundir.py's `list_runs`, the
one listing behind the web app's pickers, the job runner, the Hub panel, the benches and this command), and as the
Fine-tuning tab lists them: every run, whether the job runner started it, a search ran it as a trial or someone
trained it from the shell into the same folder (`describe`, `file_record`; engine/runs/jobs.py's
`JobManager.every_run`).

    python -m engine.runs [RUNS_DIR] [--finished] [--json]
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from engine.data import given_name
from engine.errors import CliParser, ConfigError, report
from engine.rundir import RunDir, best_metric, list_runs, read_config, read_json
from engine.runs import processes


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


def data_label(cfg) -> str:
    """The data a run trains on, as people name it: the dataset (without 'bundled:') or the uploaded file's name."""
    get = cfg.get if isinstance(cfg, dict) else lambda k: getattr(cfg, k)
    if get("dataset_name"):
        return str(get("dataset_name")).removeprefix("bundled:")
    if get("train_file"):
        return Path(given_name(get("train_file"))).stem  # the name the user recognises
    return "data"


def describe(run: RunDir, state: str | None, status: dict, job: dict, cfg: dict, **more) -> dict:
    """What the web app shows of one run (its progress line, runs table and actions), from its files: state,
    progress, command, base model, data and the run's one best number (engine/rundir.py's best_metric)."""
    metrics = read_json(run.metrics, default={}) or {}
    best = best_metric(run, cfg, status)
    return {
        "name": run.path.name, "dir": str(run.path), "state": state, "step": status.get("step"),
        "total_steps": status.get("total_steps"), "eta_seconds": status.get("eta_seconds"),
        "error": status.get("error"), "command": job.get("command"),
        # what a running run is doing: training, evaluating, checkpointing, saving (then done, maybe pushing)
        "phase": status.get("phase") if state in ("running", "done") else None,
        # a done run pushing to the Hub at the end of training: pushing, pushed or failed (with hub_error)
        "hub_push": status.get("hub_push"), "hub_url": status.get("hub_url"), "hub_error": status.get("hub_error"),
        "accelerate_config": job.get("accelerate_config"), "created_at": job.get("created_at"),
        "queue_position": None, "base_model": cfg.get("model_name_or_path"), "dataset": data_label(cfg),
        "best_metric": best.value, "metric": best.metric, "accuracy": metrics.get("accuracy"),
        "f1": metrics.get("f1"), "origin": "app", **more}


def file_record(run: RunDir, name: str, origin: str) -> dict:
    """The `describe` dict of a run the job runner of its folder did not start, read from its files alone: a
    search's trial (origin 'search', its job.json is its search's runner's) or a run trained from the shell (or
    linked into the folder: 'shell')."""
    status, cfg = run.read_status(), read_config(run)
    job = read_json(run.path / "job.json", {}) or {}
    state, pid = status.get("state") or "prepared", job.get("pid") or status.get("pid")
    if state == "running" and pid and processes.start_time(pid) is None:  # stopped without a final record
        state, status = "failed", {**status, "error": status.get("error") or "the training process is gone "
                                                                           "without a final record"}
    started = status.get("started_at") or status.get("launched_at") or _mtime(run)
    return describe(run, state, status, job, cfg, name=name, origin=origin,
                    created_at=job.get("created_at") or started)


def _mtime(run: RunDir) -> float:
    try:
        return run.config.stat().st_mtime
    except OSError:
        return 0.0


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
