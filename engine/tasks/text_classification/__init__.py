"""Text classification: a pretrained transformer (AutoModelForSequenceClassification) fine-tuned on texts, or on
pairs of texts, with `datasets` + `DataCollatorWithPadding`; what the outputs mean is the head's (engine/tasks/
heads/: single-label, multi-label or regression).

This task claims every run the image task does not: text is the default.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

from engine.errors import DataError
from engine.tasks.base import Prepared, Task, Training
from engine.tasks.text_classification import data as text_data


class TextClassification(Task):
    tag = "text-classification"
    input_kind = "text"
    maps_columns = True
    problem_types = ("single_label_classification", "multi_label_classification", "regression")
    first_choice_columns = {"text_column": "text", "label_column": "label"}  # data.TEXT_NAMES[0], LABEL_NAMES[0]

    # --- detection ------------------------------------------------------------------------------------------
    def claims_run(self, cfg, model_path) -> bool:
        return True

    def claims_model(self, config: dict) -> bool:
        return any(str(a).endswith("ForSequenceClassification") for a in config.get("architectures") or [])

    # --- data -----------------------------------------------------------------------------------------------
    def claims_file(self, path) -> bool:
        from engine.data import DATA_EXTENSIONS

        return Path(path).suffix.lower() in DATA_EXTENSIONS

    def describe_file(self, path) -> dict:
        from engine.data import columns

        kinds = columns(str(path))
        note = f"Uploaded `{Path(path).name}` with columns: {', '.join(kinds)}"
        if "text" not in kinds.values():
            note += ". ⚠️ No column holds text; a text classifier needs one"
        return {"note": note, "columns": kinds}

    def load_raw(self, cfg) -> dict:
        from engine import data

        if data.is_bundled(cfg.dataset_name):
            return data.load_bundled_text(cfg)
        return data.load_hub(cfg) if cfg.dataset_name else data.load_files(cfg)

    def standardize(self, ds, cfg, field: str):
        return text_data.standardize(ds, cfg, field)

    def label_column(self, cfg, ds) -> str | None:
        return text_data.label_column(cfg, ds)

    def prepare(self, cfg, model_path, main_process_first=contextlib.nullcontext, for_training: bool = False
                ) -> Prepared:
        """Check the model against the data and load every split; `for_training`: tokenize them too (no padding;
        evaluation splits sorted by length), which a pre-flight check does not need."""
        from engine import data, modeling

        modeling.check_max_length(modeling.load_config(model_path), cfg.max_seq_length)
        tokenizer = modeling.load_tokenizer(model_path)
        # Hub datasets are cached on disk: rank 0 builds the cache first; in-memory data loads on every rank at once
        with main_process_first() if data.cached_on_disk(cfg) else contextlib.nullcontext():
            splits = self.load_splits(cfg)
            parts = text_data.tokenize_splits(splits, tokenizer, cfg.max_seq_length) if for_training else None
        return Prepared(model_path, tokenizer, splits, parts)

    # --- training -------------------------------------------------------------------------------------------
    def training(self, cfg, prepared: Prepared, device_type: str) -> Training:
        from transformers import DataCollatorWithPadding

        from engine.tasks.text_classification.models import load_for_training

        model = load_for_training(prepared.source, prepared.splits.label_names, cfg.attention_dropout,
                                  prepared.splits.head)
        # tensor cores like multiples of 8; on CPU the extra padding is only waste
        collator = DataCollatorWithPadding(prepared.processor, pad_to_multiple_of=8 if device_type == "cuda" else None)
        views = {name: text_data.model_view(ds) for name, ds in prepared.parts.items()}

        def tokens(batch):
            mask = batch["attention_mask"]
            return mask.sum(), mask.numel()

        return Training(model, collator, views, prepared.parts["train"]["length"], cfg.group_by_length, tokens)

    def after_training(self, run, prepared: Prepared, labels, scores) -> None:
        """Nothing beyond eval_predictions.jsonl: the texts themselves are the examples."""

    # --- prediction -----------------------------------------------------------------------------------------
    def load_for_inference(self, name, revision, path, device, allow_user_code, bf16):
        from engine.tasks.text_classification import inference

        return inference.load(name, revision, path, device, bf16)

    def scores(self, lm, texts: list, batch_size: int, precision: str, max_length: int | None = None) -> list:
        from engine.tasks.text_classification import auto_precision, inference

        guard = None
        if precision == "auto":  # the fastest precision that agrees with fp32 on the run's validation texts
            precision, guard = auto_precision.resolve(lm, batch_size)
        return inference.scores(lm, texts, batch_size, precision, max_length, guard)

    def explain(self, lm, value, label, steps):
        """Layer Integrated Gradients on the input embeddings, word by word (explain.py)."""
        from engine.tasks.text_classification.explain import explain

        return explain(lm, value, label, steps)

    def check_input(self, lm, value):
        if not isinstance(value, str):
            raise DataError(f"model: '{lm.name}' reads text; give it text (--text, the Text box)")
        return value

    # --- pre-flight and model card --------------------------------------------------------------------------
    def preflight(self, cfg, prepared: Prepared) -> dict:
        from engine.tasks.text_classification.preflight import section

        return section(cfg, prepared)

    def timing(self, cfg, prepared: Prepared, section: dict):
        from engine.tasks.text_classification.preflight import timing

        return timing(cfg, prepared, section.pop("lengths"))

    def usage(self, usage_id: str, run, head=None) -> str:
        """The card's snippet for `transformers.pipeline`, as the model's head reads its outputs: softmax scores
        (single-label), a sigmoid per label compared with the thresholds saved in config.json (multi-label), the
        raw output, which is the predicted number (regression: the pipeline applies no function for that
        problem_type; function_to_apply="none" says so)."""
        problem = getattr(head, "problem_type", None)
        text = "Shares rose after the company reported record profits."
        if problem == "multi_label_classification":
            return f"""```python
from transformers import pipeline

classifier = pipeline("text-classification", model="{usage_id}", top_k=None, truncation=True)
thresholds = classifier.model.config.thresholds  # {{label: threshold}}, tuned on the validation split
# one list per text: every label with its sigmoid score, highest first
scores = classifier(["{text}"])[0]
labels = [s["label"] for s in scores if s["score"] >= thresholds[s["label"]]]
print(labels, scores)
```"""
        if problem == "regression":
            return f"""```python
from transformers import pipeline

regressor = pipeline("text-classification", model="{usage_id}", function_to_apply="none", truncation=True)
# the score is the predicted number itself (no sigmoid, no softmax)
prediction = regressor("{text}")[0]["score"]
print(prediction, "training labels ranged over", getattr(regressor.model.config, "label_range", None))
```"""
        return f"""```python
from transformers import pipeline

classifier = pipeline("text-classification", model="{usage_id}")
print(classifier("{text}"))
```"""


TASK = TextClassification()
