"""The multi-label and regression runs several test files read (tests/test_browser_heads.py, tests/test_hub_heads.py):
real data from tests/pip_sets.py, trained once per session in the first process that asks (pytest-xdist workers
wait on the lock and reuse them; tests only read them, or copy them to change them).

- `vader`: regression on VADER's movie-review snippets (the mean human rating, -4..4);
- `mesh`: multi-label on MEDLINE abstracts (their 6 most frequent MeSH headings), with balanced class weights.

Both are 6 steps of the session's default model at 64 tokens on 200 examples, evaluated at steps 3 and 6.
"""

from __future__ import annotations

import csv
import json
import random
from pathlib import Path

import pytest

import pip_sets
from _run_view_fixtures import _record
from conftest import _shared_dir

TINY = ["--max_steps", "6", "--max_seq_length", "64", "--max_train_samples", "200", "--max_eval_samples", "80",
        "--per_device_train_batch_size", "8", "--learning_rate", "2e-4", "--seed", "7", "--eval_strategy", "steps",
        "--eval_steps", "3", "--logging_steps", "3"]
EXTRA = {"vader": ["--label_column", "rating"], "mesh": ["--label_column", "labels", "--class_weights", "balanced"]}


def _data(folder: Path) -> dict[str, Path]:
    rng = random.Random(0)
    vader = pip_sets.vader_movies()
    rng.shuffle(vader)
    with open(folder / "vader.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, ["text", "rating"])
        w.writeheader()
        w.writerows(vader[:300])
    mesh = [r for r in pip_sets.medline_mesh(labels=6) if r["labels"]]
    rng.shuffle(mesh)
    with open(folder / "medline.jsonl", "w", encoding="utf-8") as f:
        f.writelines(json.dumps(r) + "\n" for r in mesh[:300])
    return {"vader": folder / "vader.csv", "mesh": folder / "medline.jsonl"}


@pytest.fixture(scope="session")
def head_runs(tmp_path_factory) -> Path:
    """A runs folder with the finished `vader` (regression) and `mesh` (multi-label) runs."""
    from filelock import FileLock

    from engine.training.run import main

    shared = _shared_dir(tmp_path_factory)
    runs = shared / "head_runs"
    with FileLock(str(shared / "head_runs.lock")):
        if not all((runs / n / "metrics.json").exists() for n in EXTRA):
            runs.mkdir(exist_ok=True)
            files = _data(runs.parent)
            for n, data in files.items():  # in this process: a second one would spend most of its time importing
                assert main(["--train_file", str(data), *EXTRA[n], *TINY, "--output_dir", str(runs / n),
                             "--overwrite_output_dir", "true"]) == 0
                _record(runs / n)
    return runs
