"""Runs for the leaderboard tests (tests/test_leaderboard.py, tests/test_browser_runs.py): the session's tiny run
beside two more real BBC News fine-tunes that differ only in their learning rate, and a runs folder of links to them.

The two runs (20 steps at max_seq_length 32, evaluated at steps 10 and 20) are trained once per session; under
pytest-xdist the first worker to ask trains them and the others wait on the lock and reuse them. Tests link them into
their own runs folder and never change them (deleting a linked run removes the link only; tests check that).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from conftest import train_args

LEARNING_RATES = {"lr-5e-5": "5e-5", "lr-5e-4": "5e-4"}
# a real run through the job runner that is still starting or training while deleting it is tried (then cancelled)
BUSY = {"dataset_name": "bundled:bbc_news", "max_train_samples": 96, "max_eval_samples": 48, "max_seq_length": 32,
        "per_device_train_batch_size": 16, "max_steps": 400, "learning_rate": 2e-4, "seed": 7}


@pytest.fixture(scope="session")
def lr_runs(tmp_path_factory) -> dict[str, Path]:
    """{name: finished run folder} of the two learning-rate runs."""
    from filelock import FileLock

    from engine.training.run import main

    base = tmp_path_factory.getbasetemp()
    shared = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base
    runs = {name: shared / "lr_runs" / name for name in LEARNING_RATES}
    with FileLock(str(shared / "lr_runs.lock")):
        for name, out in runs.items():
            if not (out / "metrics.json").exists():  # written last by a finished run
                assert main(train_args(out, "--max_steps", "20", "--learning_rate", LEARNING_RATES[name],
                                       "--eval_steps", "10", "--save_steps", "20", "--overwrite_output_dir",
                                       "true")) == 0
    return runs


def copy_run(src: Path, dest: Path) -> Path:
    """A real folder copy of a finished run without its weights and checkpoints (a run to delete for real)."""
    shutil.copytree(src, dest, ignore=shutil.ignore_patterns("model", "checkpoints", "logs"))
    return dest


def runs_folder(root: Path, lr_runs: dict[str, Path], tiny_run: Path) -> Path:
    """root/runs: the learning-rate runs and `tiny` as links, one of them again as the trial of a search
    (`search/trial-1`), and a real copy `old-run`."""
    runs = root / "runs"
    (runs / "search").mkdir(parents=True)
    for name, path in lr_runs.items():
        (runs / name).symlink_to(path, target_is_directory=True)
    (runs / "tiny").symlink_to(tiny_run, target_is_directory=True)
    (runs / "search" / "trial-1").symlink_to(lr_runs["lr-5e-4"], target_is_directory=True)
    copy_run(lr_runs["lr-5e-5"], runs / "old-run")
    return runs
