"""Pre-flight report: what a run will see and cost, measured before any compute is committed.

First rows, label counts (with an imbalance warning), the task's own section (text: token-length percentiles and
the padding the chosen max_seq_length and batching imply; images: sizes, modes and what the model reads), the
number of optimizer steps, and the time of the whole run from a few real training steps and one evaluation batch
on real data (the first step is warm-up and not timed). It runs the trainer's own checks, data loading, model and
batching through the run's task (engine/tasks/), so the numbers describe the real run.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Callable

# a launched run's start before its first step (launcher, imports, model and data): ~12-18 s measured on 2 CPU cores
STARTUP_SECONDS = 15
LONG_RUN_SECONDS = 600  # a whole run longer than this earns a warning before Start
QUICK_TRY_SECONDS = 120  # what the warning's suggested max_steps costs


def _noop(fraction: float, desc: str = "") -> None:
    pass


@dataclass
class Checked:
    """What `check_run` loaded: the run's task and its prepared model source and data."""

    task: object
    prepared: object

    @property
    def splits(self):
        return self.prepared.splits


def check_run(cfg) -> Checked:
    """Every check the web app makes before it starts a run, and the trainer before it writes anything: the model
    resolves (safetensors, no remote code) and fits the data, the data loads with usable columns and labels.
    Check and Start both call this, so they refuse the same things with the same lines. The web app never
    imports a user's pkg.mod:Class here (a run directory that needs one included)."""
    from engine import modeling, tasks
    from engine.tasks.image_classification.models import is_from_scratch, refuse_in_web_app

    refuse_in_web_app(cfg.model_name_or_path)
    model_path = None if is_from_scratch(cfg.model_name_or_path) else \
        modeling.resolve_model(cfg.model_name_or_path, cfg.model_revision)
    task = tasks.for_run(cfg, model_path)
    return Checked(task, task.prepare(cfg, model_path))


def preflight(cfg, world_size: int = 1, timed_steps: int = 2, progress: Callable[[float, str], None] = _noop,
              checked: Checked | None = None) -> dict:
    """Inspect the data and time a few real steps; raises ConfigError (DataError/ModelError) on bad input.
    `checked`: what `check_run(cfg)` already loaded (the web app checks first, then measures)."""
    import torch

    progress(0.05, "loading model and data")
    checked = checked or check_run(cfg)
    task, prepared = checked.task, checked.prepared
    splits = prepared.splits
    labels, warnings = splits.head.data_report(splits.train["label"], splits.label_names, cfg)
    steps_per_epoch, total_steps = _steps(cfg, len(splits.train), world_size)
    report = {"task": task.tag, "problem_type": splits.head.problem_type, **labels, "num_train": len(splits.train),
              "num_validation": len(splits.validation), "steps_per_epoch": steps_per_epoch, "total_steps": total_steps,
              "world_size": world_size, "warnings": warnings}
    progress(0.25, "reading the data")
    section = task.preflight(cfg, prepared)
    report["warnings"] += section.pop("task_warnings")
    progress(0.45, "timing a few real training steps")
    torch.manual_seed(cfg.seed)
    model, next_batch, eval_batch = task.timing(cfg, prepared, section)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.learning_rate)
    report.update(section)
    _estimate(cfg, report, *_measure(cfg, model, opt, next_batch, timed_steps, progress, eval_batch))
    progress(1.0, "done")
    return report


def _steps(cfg, num_train: int, world_size: int) -> tuple[int, int]:
    """(optimizer steps per epoch, total optimizer steps) as the training loop counts them."""
    batches = math.ceil(num_train / cfg.per_device_train_batch_size)
    steps_per_epoch = max(1, math.ceil(math.ceil(batches / world_size) / cfg.gradient_accumulation_steps))
    total_steps = cfg.max_steps if cfg.max_steps > 0 else math.ceil(cfg.num_train_epochs * steps_per_epoch)
    return steps_per_epoch, total_steps


def _measure(cfg, model, opt, next_batch, timed_steps, progress, eval_batch) -> tuple[float, float]:
    """(mean seconds of `timed_steps` optimizer steps — forward, backward, AdamW, batch preparation included —,
    seconds of one evaluation forward pass over `eval_batch`)."""
    import torch

    from engine.config import resolve_mixed_precision

    precision = resolve_mixed_precision(cfg)

    def autocast():
        return torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16")

    times = []
    for i in range(1 + timed_steps):  # step 0 warms up (allocations, kernel selection): not timed
        t = time.perf_counter()
        for _ in range(cfg.gradient_accumulation_steps):
            batch = next_batch(i)
            with autocast():
                loss = model(**batch).loss
            loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if i:
            times.append(time.perf_counter() - t)
        progress(0.45 + 0.45 * (i + 1) / (1 + timed_steps), f"timing step {i + 1}/{1 + timed_steps}")
    progress(0.92, "timing an evaluation batch")
    model.eval()
    eval_times = []
    with torch.inference_mode(), autocast():
        for _ in range(2):  # the first pass at the evaluation batch's shape warms up
            t = time.perf_counter()
            model(**eval_batch)
            eval_times.append(time.perf_counter() - t)
    return float(sum(times) / len(times)), eval_times[-1]


def _estimate(cfg, report: dict, step_seconds: float, eval_batch_seconds: float) -> None:
    """The time of the whole run as a user waits for it: start-up, the training steps, every evaluation pass
    (the loop's and the final one on the best model), with a warning when it is long for a first try."""
    steps, per_epoch, world = report["total_steps"], report["steps_per_epoch"], report["world_size"]
    evals = (steps // cfg.eval_steps if cfg.eval_strategy == "steps" else math.ceil(steps / per_epoch)) or 1
    evals += 1  # the final evaluation of the best weights
    batches = math.ceil(report["num_validation"] / (cfg.per_device_eval_batch_size * world))
    report.update(seconds_per_step=step_seconds, eta_seconds=step_seconds * steps,
                  eval_passes=evals, eval_seconds=evals * batches * eval_batch_seconds, startup_seconds=STARTUP_SECONDS)
    report["whole_run_seconds"] = report["eta_seconds"] + report["eval_seconds"] + STARTUP_SECONDS
    if report["whole_run_seconds"] > LONG_RUN_SECONDS:
        quick = max(1, int((QUICK_TRY_SECONDS - STARTUP_SECONDS) / max(step_seconds, 1e-6)))
        report["warnings"].append(
            f"the whole run takes about {_duration(report['whole_run_seconds'])} on this machine; for a first try "
            f"set max_steps to {quick} (about {_duration(QUICK_TRY_SECONDS)}) or lower num_train_epochs")


def report_markdown(r: dict) -> str:
    """The report as Markdown for the UI: the counts, the task's own lines, steps, the whole run's time, warnings."""
    lines = [f"**{r['num_train']}** training and **{r['num_validation']}** validation {r['noun']}, "
             f"{r['label_summary']}", *r["lines"]]
    return _with_steps_and_eta(lines, r, r["step_format"])


def _with_steps_and_eta(lines: list[str], r: dict, step_format: str) -> str:
    """The report's lines, then steps, the measured ETA and any warnings, as Markdown paragraphs."""
    lines = [*lines,
             f"**Steps**: {r['total_steps']} optimizer steps ({r['steps_per_epoch']} per epoch, "
             f"{r['world_size']} process{'es' if r['world_size'] > 1 else ''}).",
             f"**ETA**: about {_duration(r['whole_run_seconds'])} for the whole run on this machine: "
             f"{_duration(r['eta_seconds'])} of training ({r['seconds_per_step']:{step_format}} s per step, measured "
             f"on real batches), {r['eval_passes']} evaluation pass{'es' if r['eval_passes'] > 1 else ''} "
             f"({_duration(r['eval_seconds'])}) and ~{r['startup_seconds']} s of start-up.",
             *(f"⚠️ {w}" for w in r["warnings"])]
    return "\n\n".join(lines)


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 90:
        return f"{seconds} s"
    if seconds < 5400:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"
