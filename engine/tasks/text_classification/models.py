"""Text models: a pretrained transformer with a sequence-classification head, for training and for prediction.

Loading is safetensors-only and never runs remote code (engine/modeling.py resolves and checks the folder).
"""

from __future__ import annotations

import logging
from pathlib import Path

from engine.modeling import from_pretrained, load_config, load_tokenizer
from engine.tasks import heads

log = logging.getLogger("hubtune")

ATTENTION_DROPOUT_KEYS = ("attention_probs_dropout_prob", "attention_dropout")  # BERT family / DistilBERT, BART...


def load_for_training(path: Path, label_names: list[str], attention_dropout: float | None = None, head=None):
    """A sequence-classification model with a head sized to `label_names` (re-headed when it differs) and the
    problem type of `head` (engine/tasks/heads/; single-label when not given).

    `attention_dropout` (None: the model's own) is set on the attention layers only; the config keeps the base
    model's value, so the saved model is the base's architecture with new weights.
    """
    from transformers import AutoModelForSequenceClassification

    config = load_config(path)
    old = getattr(config, "id2label", None) or {}
    has_head = any(a.endswith("ForSequenceClassification") for a in (getattr(config, "architectures", None) or []))
    relabel = has_head and [old.get(i) for i in range(len(old))] != label_names
    if relabel:
        log.warning("base model has a %d-label head %s; replacing it with a new %d-label head for %s",
                    len(old), list(old.values())[:10], len(label_names), label_names[:10])
    (head or heads.SINGLE_LABEL).configure(config, label_names)
    original = {k: getattr(config, k) for k in ATTENTION_DROPOUT_KEYS if isinstance(getattr(config, k, None), float)}
    if attention_dropout is not None:
        for key in original:  # read by the attention layers when they are built
            setattr(config, key, attention_dropout)
    model = from_pretrained(AutoModelForSequenceClassification, path, config=config, use_safetensors=True,
                            trust_remote_code=False, ignore_mismatched_sizes=relabel, attn_implementation="sdpa")
    for key, value in original.items():
        setattr(model.config, key, value)
    return model


def load_for_inference(path: Path):
    """(model, tokenizer) in eval mode, for prediction."""
    from transformers import AutoModelForSequenceClassification

    config = load_config(path)
    model = from_pretrained(AutoModelForSequenceClassification, path, config=config, use_safetensors=True,
                            trust_remote_code=False, attn_implementation="sdpa")
    return model.eval(), load_tokenizer(path)
