"""Real run directories for the run-view tests, made once per session in one runs folder the job runner lists.

- `one-eval`: 3 real steps of the offline MiniLM on BBC News at a learning rate far too high, evaluated once (at
  the end, as every run shorter than an epoch): its validation curve has one point, and the model collapsed to
  predicting one topic, so the one-class warning applies.
- `digits`: the `mlp` on scikit-learn's real 8x8 digits for 3 steps: an image run with samples/ (misclassified
  validation images) and a 10-class confusion matrix.
- `one-topic`: a real failed run: the job runner launches training on a CSV of real BBC sports articles only, and
  the trainer stops with its one-line error before the first step.

Under pytest-xdist the workers share the folder: the first to ask makes it, the others wait on the lock.
"""

from __future__ import annotations

import csv
import json
import os
import time
from pathlib import Path

import pytest

ONE_EVAL_ARGS = ["--dataset_name", "bundled:bbc_news", "--max_train_samples", "96", "--max_eval_samples", "60",
                 "--max_seq_length", "32", "--per_device_train_batch_size", "16", "--max_steps", "3",
                 "--warmup_steps", "0", "--learning_rate", "0.1", "--logging_steps", "1", "--seed", "7"]
DIGITS_ARGS = ["--dataset_name", "bundled:digits", "--model_name_or_path", "mlp", "--max_steps", "3",
               "--logging_steps", "1", "--seed", "7"]


def _record(run_dir: Path) -> None:
    """The job runner lists run folders with its record; a run trained by engine.train directly needs one."""
    (run_dir / "job.json").write_text(json.dumps({"command": "python -m engine.train (test)",
                                                  "created_at": time.time(), "accelerate_config": "cpu.yaml"}))


def _one_topic_csv(path: Path) -> Path:
    from engine.data import BUNDLED

    data = BUNDLED["bundled:bbc_news"][0]()
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["text", "label"])
        for text, label in zip(data["text"], data["label"]):
            if label == "sports":
                w.writerow([text[:400], label])
    return path


def _make(runs: Path) -> None:
    from conftest import wait_final

    from engine.runs.jobs import JobManager
    from engine.training.run import main

    for name, args in (("one-eval", ONE_EVAL_ARGS), ("digits", DIGITS_ARGS)):
        assert main([*args, "--output_dir", str(runs / name), "--overwrite_output_dir", "true"]) == 0
        _record(runs / name)
    mgr = JobManager(runs)
    data = _one_topic_csv(runs / "sports_only.csv")
    mgr.submit({"train_file": str(data), "max_steps": 3, "max_seq_length": 32}, name="one-topic")
    assert wait_final(mgr, "one-topic")["state"] == "failed"
    (runs / "ready").write_text("ok")


@pytest.fixture(scope="session")
def view_runs(tmp_path_factory) -> Path:
    """The runs folder holding `one-eval`, `digits` and `one-topic` (see the module docstring)."""
    from filelock import FileLock

    base = tmp_path_factory.getbasetemp()
    shared = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base
    runs = shared / "run_view_runs"
    with FileLock(str(shared / "run_view_runs.lock")):
        if not (runs / "ready").exists():
            runs.mkdir(exist_ok=True)
            _make(runs)
    return runs
