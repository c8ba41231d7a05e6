"""The task registry: one module per pipeline tag, behind one dispatch.

    task = tasks.for_run(cfg, model_path)     # training: which task a config + its data + its model make
    task = tasks.for_model(model_dir)         # a saved model: which task its config.json describes
    task = tasks.get("image-classification")  # by pipeline tag

A task (engine/tasks/base.py) owns everything that differs between kinds of input: detecting itself, loading and
standardizing its data, building or loading the model, the collator, its pre-flight section, prediction inputs and
the model card's tag and usage snippet. What differs between kinds of output (single-label, multi-label,
regression: softmax / sigmoid / identity, loss, metrics, predictions) is the task's head (engine/tasks/heads/).
Task modules are imported on first use, so importing this package (and the web app) stays free of torch.
Tasks may import the core (engine/*.py, config/, hub/client.py) and each other's shared parts (base.py, heads/);
never serving/, hub/, training/, runs/, search/ or ui/, which call into them.
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path

from engine.errors import ModelError

# pipeline tag -> module; detection asks them in this order (the first to claim a run or a model wins)
REGISTRY = {
    "image-classification": "engine.tasks.image_classification",
    "text-classification": "engine.tasks.text_classification",
}
DEFAULT = "text-classification"
_loaded: dict = {}


def get(tag: str):
    """The task registered under pipeline tag `tag`."""
    if tag not in REGISTRY:
        raise ModelError(f"task: '{tag}' is not a task hubtune serves; it serves {', '.join(REGISTRY)}")
    if tag not in _loaded:
        _loaded[tag] = importlib.import_module(REGISTRY[tag]).TASK
    return _loaded[tag]


def all_tasks() -> list:
    return [get(tag) for tag in REGISTRY]


def for_run(cfg, model_path=None):
    """The task of a training run: the first that claims the config, its data source and its model."""
    return next((t for t in all_tasks() if t.claims_run(cfg, model_path)), get(DEFAULT))


def model_config(path: str | Path) -> dict:
    """A saved model's config.json as a dict, or a ModelError naming the folder."""
    try:
        return json.loads((Path(path) / "config.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise ModelError(f"model: cannot read '{path}/config.json' ({type(e).__name__})") from None


def for_model(path: str | Path):
    """The task of a saved model, from its config.json alone (no torch): the UI picks its input widgets with it."""
    return for_config(model_config(path), path)


def for_config(config: dict, name: str | Path):
    """The task that claims a model's config.json (a local folder's or a Hub repo's); `name` is for the error."""
    for task in all_tasks():
        if task.claims_model(config):
            return task
    archs = config.get("architectures") or []
    raise ModelError(f"model: '{name}' is not a classifier (architectures {archs or 'unknown'}); fine-tune it "
                     "first, e.g. python -m engine.train --dataset_name bundled:bbc_news --output_dir runs/bbc")


def for_data(dataset_name: str | None = None, train_file: str | None = None):
    """The task a run on this data would get, judged from the names alone (no download, no model): the web app
    shows the column pickers of the task that will read the data."""
    from types import SimpleNamespace

    probe = SimpleNamespace(dataset_name=dataset_name or None, train_file=train_file or None, validation_file=None,
                            test_file=None, model_name_or_path="")
    return for_run(probe, None)


def describe_file(path: str | Path) -> dict:
    """What an uploaded data file holds, read by the task that claims it: {"note": one Markdown line,
    "columns": {name: kind} for files whose columns the user maps, else None}. Bad files raise one line."""
    task = next((t for t in all_tasks() if t.claims_file(path)), get(DEFAULT))
    return task.describe_file(path)


def load_splits(cfg, model_path=None):
    """The standardized, label-encoded splits of `cfg`'s data, read by the task that would train on it."""
    return for_run(cfg, model_path).load_splits(cfg)
