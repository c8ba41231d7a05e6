"""TrainConfig.validate()'s checks: every problem of a config at once, each line naming its field and the fix.
Checks that need the data (labels, the head's metrics) come later, from engine/tasks/heads."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from engine import hardware
from engine.data import DATA_EXTENSIONS


def problems(cfg, check_paths: bool) -> list[str]:
    """Every problem of a TrainConfig, one line each naming its field and the fix."""
    out: list[str] = []
    for f in dataclasses.fields(cfg):
        value, lo, hi = getattr(cfg, f.name), f.metadata.get("minimum"), f.metadata.get("maximum")
        if isinstance(value, (int, float)) and not isinstance(value, bool) and value is not None:
            if value != value:  # NaN
                out.append(f"{f.name}: must be a number, got NaN")
            elif lo is not None and value < lo:
                out.append(f"{f.name}: must be >= {lo}, got {value}")
            elif hi is not None and value > hi:
                out.append(f"{f.name}: must be <= {hi}, got {value}")
    for name in ("max_train_samples", "max_eval_samples"):
        v = getattr(cfg, name)
        if v is not None and v <= 0:
            out.append(f"{name}: must be a positive number of examples, got {v}")
    if cfg.max_steps == 0:
        out.append("max_steps: must be > 0, or -1 to train for num_train_epochs")

    # data source: exactly one of dataset_name / train_file
    if not cfg.dataset_name and not cfg.train_file:
        out.append("dataset_name/train_file: no training data; set dataset_name (e.g. bundled:bbc_news) or train_file")
    if cfg.dataset_name and cfg.train_file:
        out.append("dataset_name/train_file: both are set; use one data source")
    if cfg.dataset_name and cfg.dataset_name.startswith("bundled:"):
        from engine.bundled import BUNDLED

        if cfg.dataset_name not in BUNDLED:
            out.append(f"dataset_name: unknown bundled dataset '{cfg.dataset_name}'; choose one of "
                       f"{', '.join(sorted(BUNDLED))}")
    for name in ("train_file", "validation_file", "test_file"):
        value = getattr(cfg, name)
        if not value:
            continue
        ext = Path(value).suffix.lower()
        if ext == ".zip" or Path(value).expanduser().is_dir():  # an imagefolder (engine/tasks/image_classification)
            if check_paths and not Path(value).expanduser().exists():
                out.append(f"{name}: '{value}' not found; check the path")
            continue
        if ext not in DATA_EXTENSIONS:
            out.append(f"{name}: unsupported extension '{ext or '(none)'}' of '{value}'; use "
                       f"{', '.join(DATA_EXTENSIONS)}, or a folder / .zip of class folders for images")
        elif check_paths and not Path(value).is_file():
            out.append(f"{name}: file '{value}' not found; check the path")
    if cfg.text_pair_column and cfg.text_pair_column == cfg.text_column:
        out.append("text_pair_column: must differ from text_column")

    if cfg.warmup_steps and cfg.warmup_ratio:
        out.append("warmup_steps/warmup_ratio: set only one of them")
    out += _head_problems(cfg)

    if cfg.mixed_precision == "fp16" and not hardware.cuda_available():
        out.append("mixed_precision: fp16 needs a CUDA GPU and none is visible; use bf16 (supported on recent "
                   "CPUs) or no")
    if cfg.mixed_precision == "bf16" and not hardware.bf16_available():
        out.append("mixed_precision: bf16 is not supported on this hardware; use no")

    if cfg.push_to_hub and not cfg.hub_model_id:
        out.append("hub_model_id: push_to_hub is on but no repo is named; set hub_model_id to user/name")
    elif cfg.hub_model_id and not _valid_repo_id(cfg.hub_model_id):
        out.append(f"hub_model_id: '{cfg.hub_model_id}' is not a valid repo name; use user/name or org/name")

    if not str(cfg.output_dir).strip():
        out.append("output_dir: must not be empty")
    elif check_paths:
        out += _output_dir_problems(cfg)
    return out


def _head_problems(cfg) -> list[str]:
    """metric_for_best_model and class_weights as any head could take them (engine/tasks/heads checks them against
    the head the data calls for)."""
    from engine.tasks.heads import HEADS

    known = sorted({m for h in HEADS.values() for m in h.metrics_names})
    out = []
    if cfg.metric_for_best_model.removeprefix("eval_") not in ("auto", *known):
        out.append(f"metric_for_best_model: unknown metric '{cfg.metric_for_best_model}'; use auto or one of "
                   f"{', '.join(known)}")
    weights = str(cfg.class_weights).strip()
    if weights not in ("none", "balanced") and not all(_is_number(w) for w in weights.strip("[]").split(",")):
        out.append(f"class_weights: '{weights}' is not none, balanced or numbers separated by commas (e.g. 1,5)")
    return out


def _is_number(text: str) -> bool:
    try:
        return float(text) > 0
    except ValueError:
        return False


def _output_dir_problems(cfg) -> list[str]:
    out_dir = Path(cfg.output_dir)
    if out_dir.exists() and not out_dir.is_dir():
        return [f"output_dir: '{out_dir}' exists and is not a directory; choose another output_dir"]
    if cfg.resume_from_checkpoint:
        if cfg.resume_from_checkpoint != "latest" and not Path(cfg.resume_from_checkpoint).is_dir():
            return [f"resume_from_checkpoint: '{cfg.resume_from_checkpoint}' is not a checkpoint directory; use "
                    "a path under output_dir/checkpoints or 'latest'"]
        return []
    # the job runner writes these before it launches the trainer: such a folder has never trained, nothing to lose
    prelaunch = {"config.yaml", "job.json", "train.log", "status.json"}
    if out_dir.is_dir() and {p.name for p in out_dir.iterdir()} - prelaunch and not cfg.overwrite_output_dir:
        return [f"output_dir: '{out_dir}' already holds a run; pick a new output_dir, set overwrite_output_dir: "
                "true, or resume_from_checkpoint: latest"]
    return []


def _valid_repo_id(repo_id: str) -> bool:
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(repo_id)
    except HFValidationError:
        return False
    return repo_id.count("/") <= 1 and not repo_id.endswith((".git", "/"))
