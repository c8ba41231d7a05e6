"""What every task provides, and the bundles that travel between the task and the loop or the Predictor.

A task is one object (`TASK` in its module) with the methods below; engine/training/run.py, engine/serving/predictor.py,
engine/training/preflight.py, engine/hub/card.py and the web app call them and hold no task-type branches of their own.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path

from engine.errors import DataError, ModelError, PredictError


@dataclass
class Training:
    """What the training loop needs from a task, ready to prepare with Accelerate.

    views: split name -> a torch map-style dataset of model inputs (train, validation, [test]).
    lengths: per training example, what batching groups by (tokens for text; 1 where length means nothing).
    tokens: batch -> (real tokens, padded tokens) the model processed, for throughput and MFU.
    on_epoch: called with the batch sampler once it exists (image augmentation seeds itself by the epoch).
    """

    model: object
    collator: object
    views: dict
    lengths: list
    group_by_length: bool
    tokens: object
    on_epoch: object = None


@dataclass
class Prepared:
    """A run's model source and data, checked and ready, before anything is written (engine/training/run.py's set-up).

    source: the resolved model folder, or the name of a model built from scratch (mlp, vit-tiny, pkg.mod:Class).
    processor: the tokenizer (text) or image processor (images) the model reads through.
    parts: split name -> the dataset the model's views are made from, in evaluation order (text: tokenized and
        sorted by length); each keeps a `text` column (the text, or a name for an image) for eval_predictions.
    """

    source: object
    processor: object
    splits: object
    parts: dict


@dataclass
class Explanation:
    """One explained prediction, as each task's explain module makes it (engine/serving/explain.py runs them).

    pieces: the whole input text in order, as (text, score): a word with its attribution, the gaps between words
        and any part cut off by truncation with None (what gr.HighlightedText shows). Empty for images.
    output / baseline_output: the explained number (the head's, e.g. a log-odds) at the input and the baseline;
        `total` (the attributions' sum) approximates their difference, `delta` is the rest.
    image: image models only: the saliency overlay (H x W x 3 uint8, the input image's size).
    """

    label: str
    meaning: str
    steps: int
    delta: float
    seconds: float
    output: float
    baseline_output: float
    total: float
    pieces: list = field(default_factory=list)
    tokens: int = 0
    truncated: bool = False
    image: object = field(default=None, repr=False)

    @property
    def words(self) -> list[tuple[str, float]]:
        """(word, attribution) for every word explained, in text order."""
        return [(w, s) for w, s in self.pieces if s is not None]


def check_text(text) -> str:
    """The text to explain, or a PredictError when there is none."""
    if not isinstance(text, str) or not text.strip():
        raise PredictError("text: empty; type or paste some text to explain")
    return text



@dataclass
class LoadedModel:
    """A model ready for prediction, as the Predictor keeps it in its cache."""

    name: str
    revision: str | None
    path: Path
    model: object
    processor: object  # a tokenizer (text) or an image processor (images)
    labels: list[str]  # class index -> name, exactly the model config's id2label
    max_length: int  # text: default truncation (the run's max_seq_length, else the model's limit); images: 0
    limit: int  # text: the most tokens the model accepts
    task: str  # the pipeline tag of the engine.tasks task that loaded it
    device: str
    bf16: bool
    nbytes: int
    # the Rust tokenizer re-applies truncation settings on every call and refuses concurrent mutation
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    user_code: str | None = None  # the pkg.mod:Class an image model was rebuilt from (refused unless allowed)
    head: object = None  # engine.tasks.heads: what the outputs mean (from the model config's problem_type)
    # precision 'int8': a quantized copy made on first use (engine/tasks/text_classification/quantization.py; its bytes
    # join `nbytes`, which the Predictor's cache is bounded by) and what 'auto' resolved to for this model
    # (auto_precision.py)
    int8: object = field(default=None, repr=False)
    auto: str | None = None
    prep_lock: threading.RLock = field(default_factory=threading.RLock, repr=False)  # makes both once
    backend: str = "torch"  # or "onnx:<file>": an onnxruntime session in `model` (engine/serving/onnx_backend.py)

    @property
    def kind(self):
        """The task object (engine.tasks) behind this model."""
        from engine import tasks

        return tasks.get(self.task)

    @property
    def tokenizer(self):  # the name text code has always used
        return self.processor


def model_bytes(model) -> int:
    """Bytes of a model's parameters and buffers (the Predictor's cache is bounded by these)."""
    return sum(t.numel() * t.element_size() for t in (*model.parameters(), *model.buffers()))


class Task:
    """The parts every task shares; subclasses fill in the rest (see engine/tasks/text_classification and
    image_classification)."""

    tag = ""  # the pipeline tag: text-classification, image-classification
    input_kind = ""  # what a user gives it to predict: "text" or "image"
    maps_columns = False  # whether a user maps data columns (text, label) or the task finds them itself
    # config key -> the column an empty setting reads when the data has it (the first name the task looks for)
    first_choice_columns: dict = {}
    problem_types: tuple = ("single_label_classification",)  # the heads (engine/tasks/heads) it trains

    # --- detection ------------------------------------------------------------------------------------------
    def claims_run(self, cfg, model_path) -> bool:
        raise NotImplementedError

    def claims_model(self, config: dict) -> bool:
        raise NotImplementedError

    # --- data -----------------------------------------------------------------------------------------------
    def claims_file(self, path) -> bool:
        """Whether an uploaded data file is this task's kind of data."""
        return False

    def describe_file(self, path) -> dict:
        """{"note": what the file holds, in one Markdown line, "columns": {name: kind} or None}."""
        raise NotImplementedError

    def load_raw(self, cfg) -> dict:
        """{'train', 'validation', 'test'} datasets (None where absent) with the user's own columns."""
        raise NotImplementedError

    def standardize(self, ds, cfg, field: str):
        """The dataset with this task's standard columns (and only those)."""
        raise NotImplementedError

    def load_splits(self, cfg):
        """Load, standardize, encode labels and split according to `cfg` (engine.data.make_splits)."""
        from engine.data import make_splits, split_fields
        from engine.tasks import heads

        raw = self.load_raw(cfg)
        fields = split_fields(cfg)
        column = self.label_column(cfg, raw["train"]) or "label"
        parts = {k: self.standardize(v, cfg, fields[k]) if v is not None else None for k, v in raw.items()}
        head = heads.for_data(cfg, parts["train"])
        if head.problem_type not in self.problem_types:
            raise DataError(f"problem_type: {self.tag} runs are {' or '.join(self.problem_types)}, not "
                            f"{head.problem_type}; use problem_type: auto")
        head.check(cfg)
        splits = make_splits(cfg, parts, fields, head, column)
        # before any run folder exists: Check and Start refuse a weight list of the wrong length alike
        head.check_weights(cfg, splits.label_names)
        return splits

    def label_column(self, cfg, ds) -> str | None:
        """The user's label column in a raw split (for messages)."""
        return cfg.label_column

    @staticmethod
    def refuse(problem: str) -> None:
        raise DataError(problem)

    # --- ONNX export (engine/serving/export.py) and its model card snippet: the task package's `export` module ---
    def _export(self):
        import importlib

        return importlib.import_module(f"{type(self).__module__}.export")

    def export_samples(self, model_dir, limit: int) -> tuple[list, str]:
        """(real inputs to verify an export on: the run's validation examples where there are some, where they
        come from)."""
        from pathlib import Path

        return self._export().samples(Path(model_dir), limit)

    def export_inputs(self, lm, samples: list) -> tuple[dict, dict]:
        """({name: tensor} of one batch of `samples` as the model reads it, {name: {axis: dim name}}: its dynamic
        axes, named as Optimum names them)."""
        return self._export().inputs(lm, samples)

    def onnx_usage(self, usage_id: str, head, quantized: bool = False) -> str:
        """The model card's snippet running onnx/model.onnx (or model_quantized.onnx) with onnxruntime."""
        return self._export().usage(usage_id, head, quantized)

    # --- explanations (engine/serving/explain.py) ---------------------------------------------------------------------
    def explain(self, lm, value, label: str | None, steps: int):
        """An Explanation (above) of `lm`'s prediction for `value` toward `label` (None: the predicted
        one): Integrated Gradients with `steps` steps, as this task's inputs allow (its `explain` module)."""
        raise ModelError(f"explain: {self.tag} models have no explanations; explain a text or image classifier")


def onnx_snippet(usage_id: str, quantized: bool, preprocessor: str, run: str) -> str:
    """A model card's onnxruntime snippet: download the export and config from the repo, load the `preprocessor`
    class (AutoTokenizer, AutoImageProcessor), then `run` (the task's lines from inputs to printed labels)."""
    file = "model_quantized.onnx" if quantized else "model.onnx"
    pil = "from PIL import Image\n" if preprocessor == "AutoImageProcessor" else ""
    return f"""```python
import json

import numpy as np
import onnxruntime as ort
from huggingface_hub import hf_hub_download
{pil}from transformers import {preprocessor}

repo = "{usage_id}"
session = ort.InferenceSession(hf_hub_download(repo, "onnx/{file}"), providers=["CPUExecutionProvider"])
preprocess = {preprocessor}.from_pretrained(repo)
config = json.load(open(hf_hub_download(repo, "config.json")))
{run}
```"""
