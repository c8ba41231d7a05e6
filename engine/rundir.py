"""The run directory contract, shared by the trainer, the job runner, the UI and the Hub push.

A run directory holds:
    config.yaml          the resolved TrainConfig (re-running with it reproduces the run)
    events.jsonl         one JSON object a line: train logs, evaluations, messages (appended by the main process)
    status.json          {"state": queued|running|done|failed|cancelled, ...}, rewritten atomically
    metrics.json         final evaluation: accuracy, macro F1/precision/recall, per-class report, confusion matrix
    eval_predictions.jsonl  validation examples with label, prediction and score (for error analysis)
    precision.json       what prediction's precision 'auto' measured on those validation texts (written on first use;
                         engine/tasks/text_classification/auto_precision.py)
    model/               the finished model (safetensors, config.json with id2label, tokenizer); appears only
                         by an atomic rename once it is complete, so a failed run never looks finished
    checkpoints/step-N/  accelerate state, each renamed into place only once fully written

A run's best number (`best_metric`) is read in one place for every listing, table, export and chart: the value
its saved model delivers on the validation set once it is done, else the best evaluation so far.

Which folders of a runs directory are runs (`list_runs`): a run is a directory holding at least one of config.yaml,
status.json or job.json. Everything else that lives in a runs folder is skipped: the job runner's lock file, the
`uploads/` folder, hidden entries and stray files.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator, NamedTuple

STATES = ("queued", "running", "done", "failed", "cancelled")
FINAL_STATES = ("done", "failed", "cancelled")


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write `text` to `path` so that readers see either the old file or the new one, never a torn write."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def read_json(path: str | os.PathLike, default: Any = None) -> Any:
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):  # missing, not a file (a stray entry of runs/), torn or not UTF-8 JSON
        return default


class RunDir:
    """Paths and readers/writers of one run directory."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    # paths -------------------------------------------------------------------------------------------------
    config = property(lambda self: self.path / "config.yaml")
    events = property(lambda self: self.path / "events.jsonl")
    status = property(lambda self: self.path / "status.json")
    metrics = property(lambda self: self.path / "metrics.json")
    predictions = property(lambda self: self.path / "eval_predictions.jsonl")
    precision = property(lambda self: self.path / "precision.json")
    model = property(lambda self: self.path / "model")
    checkpoints = property(lambda self: self.path / "checkpoints")
    log = property(lambda self: self.path / "train.log")

    # status ------------------------------------------------------------------------------------------------
    def read_status(self) -> dict:
        return read_json(self.status, default={}) or {}

    def write_status(self, state: str, **fields: Any) -> dict:
        """Merge `fields` into status.json and set its state; returns the new status."""
        if state not in STATES:
            raise ValueError(f"unknown run state {state!r}")
        status = self.read_status()
        status.update(fields)
        status["state"] = state
        status["updated_at"] = time.time()
        atomic_write_json(self.status, status)
        return status

    # events ------------------------------------------------------------------------------------------------
    def append_event(self, event: dict) -> None:
        """Append one event; each line is written with a single write call so a reader never sees half a line."""
        event = {"time": round(time.time(), 3), **event}
        self.path.mkdir(parents=True, exist_ok=True)
        with open(self.events, "a", encoding="utf-8") as f:
            f.write(json.dumps(event, default=float) + "\n")

    def read_events(self) -> list[dict]:
        return list(self.iter_events())

    def iter_events(self) -> Iterator[dict]:
        try:
            with open(self.events, encoding="utf-8") as f:
                for line in f:
                    # a line still being written by another process has no newline yet: skip it
                    if line.endswith("\n") and line.strip():
                        try:
                            yield json.loads(line)
                        except json.JSONDecodeError:
                            continue
        except FileNotFoundError:
            return

    def truncate_events_after(self, step: int) -> None:
        """On resume, drop events logged after the checkpoint we restart from (they will be logged again)."""
        kept = [e for e in self.iter_events() if e.get("step", 0) <= step or e.get("type") == "message"]
        atomic_write_text(self.events, "".join(json.dumps(e, default=float) + "\n" for e in kept))

    # checkpoints -------------------------------------------------------------------------------------------
    def list_checkpoints(self) -> list[Path]:
        """Complete checkpoints, oldest first. In-progress ones are named `*.tmp` and never listed."""
        if not self.checkpoints.is_dir():
            return []
        found = []
        for p in self.checkpoints.iterdir():
            if p.is_dir() and p.name.startswith("step-") and p.name[5:].isdigit() and (p / "trainer_state.json").exists():
                found.append((int(p.name[5:]), p))
        return [p for _, p in sorted(found)]

    def latest_checkpoint(self) -> Path | None:
        ckpts = self.list_checkpoints()
        return ckpts[-1] if ckpts else None

    def is_finished(self) -> bool:
        return self.read_status().get("state") == "done" and (self.model / "config.json").exists()


# which folders are runs --------------------------------------------------------------------------------------------

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


def read_config(run: RunDir) -> dict:
    """A run's config.yaml as a dict ({} when missing or unreadable)."""
    import yaml

    try:
        return yaml.safe_load(run.config.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError):
        return {}


# a run's best number ------------------------------------------------------------------------------------------------


class Best(NamedTuple):
    """The metric that picks a run's best model, its value and the step of the weights that give it."""

    metric: str | None
    value: float | None
    step: int | None = None
    final: bool = False  # metrics.json's: what the saved model delivers (multi-label: at its tuned thresholds)


def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def best_metric(run: RunDir, cfg: dict | None = None, status: dict | None = None,
                events: list[dict] | None = None) -> Best:
    """A run's one best number, the same in every listing, table, export and chart. Done: metrics.json's validation
    value of metric_for_best_model, measured on the saved (best) weights with whatever the head tuned on them, so a
    multi-label run gives its micro F1 at the tuned thresholds, not the 0.5-threshold evaluation that picked the
    step; runs written before metrics.json named its metric fall back to its top-level best_metric. Not done yet:
    the best of the evaluations so far, higher or lower as the run's head says (engine/tasks/heads)."""
    final = read_json(run.metrics, {}) or {}
    metric = final.get("metric_for_best_model")
    value = (final.get("validation") or {}).get(metric) if metric else None
    if metric and (_number(value) or _number(final.get("best_metric"))):
        return Best(metric, value if _number(value) else final["best_metric"], final.get("best_step"), True)
    return _best_so_far(run, read_config(run) if cfg is None else cfg,
                        run.read_status() if status is None else status, events)


def _best_so_far(run: RunDir, cfg: dict, status: dict, events: list[dict] | None) -> Best:
    from types import SimpleNamespace

    from engine.tasks.heads import HEADS

    problem = status.get("problem_type") or cfg.get("problem_type")
    if problem not in HEADS:  # 'auto' before training has looked at the labels: no head known yet
        chosen = str(cfg.get("metric_for_best_model") or "auto").removeprefix("eval_")
        return Best(None if chosen == "auto" else chosen, None)
    head = HEADS[problem]()
    metric = head.metric(SimpleNamespace(metric_for_best_model=cfg.get("metric_for_best_model")))
    evals = [e for e in (run.read_events() if events is None else events)
             if e.get("type") == "eval" and _number(e.get(f"eval_{metric}"))]
    if not evals:
        return Best(metric, None)
    pick = max if head.greater_is_better(metric) else min
    best = pick(evals, key=lambda e: e[f"eval_{metric}"])
    return Best(metric, best[f"eval_{metric}"], best.get("step"))
