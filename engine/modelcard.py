"""The model card of a finished run: Hub metadata (model-index from metrics.json) and a body a reader can act on.

Pure text from the run directory; no network. engine.hub pushes it as README.md next to the plots it links.
"""

from __future__ import annotations

import platform
from pathlib import Path

import yaml

from engine.config import DEFAULT_MODEL
from engine.events import RunDir, read_json
from engine.metrics import one_class_warning

HYPERPARAMETERS = ("learning_rate", "num_train_epochs", "max_steps", "per_device_train_batch_size",
                   "gradient_accumulation_steps", "max_seq_length", "lr_scheduler_type", "warmup_steps",
                   "warmup_ratio", "weight_decay", "max_grad_norm", "mixed_precision", "group_by_length", "seed",
                   "eval_strategy", "metric_for_best_model", "max_train_samples", "max_eval_samples")
LIBRARIES = ("torch", "transformers", "accelerate", "datasets", "tokenizers", "safetensors", "huggingface_hub")


def _is_hub_id(name: str | None) -> bool:
    return bool(name) and not name.startswith((".", "/", "~", "bundled:")) and name.count("/") <= 1 \
        and not Path(name).exists()


def _dataset(cfg: dict) -> tuple[str, str, list[str] | None]:
    """(dataset_type, human name, Hub datasets metadata or None)."""
    name = cfg.get("dataset_name")
    if name and name.startswith("bundled:"):
        from engine.bundled import BUNDLED

        return name.split(":", 1)[1], (BUNDLED.get(name, (None, name))[1]), None
    if name:
        return name, name + (f" ({cfg['dataset_config_name']})" if cfg.get("dataset_config_name") else ""), [name]
    return "custom", f"local file {Path(cfg.get('train_file') or 'data').name}", None


def _base_license(base: str, revision: str | None) -> str | None:
    """The base model's license, read from a local copy of its card only (never a download)."""
    from huggingface_hub import ModelCard, try_to_load_from_cache

    from engine.modeling import offline_default_path

    candidates = []
    if Path(base).is_dir():
        candidates.append(Path(base) / "README.md")
    elif base == DEFAULT_MODEL and offline_default_path():
        candidates.append(offline_default_path() / "README.md")
    elif _is_hub_id(base):
        cached = try_to_load_from_cache(base, "README.md", revision=revision or "main")
        if isinstance(cached, str):
            candidates.append(Path(cached))
    for path in candidates:
        try:
            return ModelCard.load(path, ignore_metadata_errors=True).data.license
        except (OSError, ValueError):
            continue
    return None


def _versions() -> list[str]:
    from importlib.metadata import PackageNotFoundError, version

    out = [f"Python {platform.python_version()}"]
    for lib in LIBRARIES:
        try:
            out.append(f"{lib} {version(lib.replace('_', '-'))}")
        except PackageNotFoundError:
            continue
    return out


def _table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _task(run: RunDir):
    """The task of the run's model (engine.tasks, from its config.json): its tag and usage snippet."""
    from engine import tasks

    try:
        return tasks.for_model(run.model)
    except Exception:  # noqa: BLE001 - no readable model config: the card describes a text classifier
        return tasks.get(tasks.DEFAULT)


def _caution(val: dict, split: str) -> str:
    """A warning paragraph for a model that gives (almost) every example one label, else ''. A reader of the card
    decides whether to use the model: a one-class predictor must say so before its numbers."""
    line = one_class_warning(val)
    if not line:
        return ""
    return (f"> ⚠️ **Warning: this model does not tell the classes apart.** {line[0].upper()}{line[1:]}. "
            f"Its accuracy is only the share of that class in the {split} split.\n\n")


def build_model_card(run_dir, repo_id: str | None = None, license: str | None = None):
    """A `huggingface_hub.ModelCard` for the run: metadata (base_model, datasets, pipeline_tag, library_name,
    license, tags, model-index with the validation metrics) and a body with results, per-class report, curves,
    hyperparameters, the command to reproduce, hardware and library versions."""
    from huggingface_hub import EvalResult, ModelCard, ModelCardData

    run = RunDir(run_dir)
    cfg = yaml.safe_load(run.config.read_text(encoding="utf-8")) or {}
    metrics = read_json(run.metrics, default=None)
    if not metrics or "validation" not in metrics:
        raise FileNotFoundError(f"{run.metrics}: missing; the run has not finished")
    status = run.read_status()
    val = metrics["validation"]
    name = (repo_id or run.path.name).split("/")[-1]
    base = cfg.get("model_name_or_path") or DEFAULT_MODEL
    ds_type, ds_name, ds_meta = _dataset(cfg)
    split = "validation"
    kind = _task(run)
    task = kind.tag
    headline = [("accuracy", "Accuracy"), ("f1", "F1 (macro)"), ("precision", "Precision (macro)"),
                ("recall", "Recall (macro)")]
    results = [EvalResult(task_type=task, task_name=task.replace("-", " ").title(), dataset_type=ds_type,
                          dataset_name=ds_name, dataset_split=split, metric_type=key, metric_name=label,
                          metric_value=round(float(val[key]), 4))
               for key, label in headline if val.get(key) is not None]
    data = ModelCardData(
        base_model=base if _is_hub_id(base) else None, datasets=ds_meta, pipeline_tag=task,
        library_name="transformers", license=license or _base_license(base, cfg.get("model_revision")) or "other",
        tags=["hubtune", task, "generated_from_hubtune"], metrics=[k for k, _ in headline],
        model_name=name, eval_results=results)

    labels = val.get("labels") or list(val.get("per_class", {}))
    per_class = [[lab, f"{r['precision']:.4f}", f"{r['recall']:.4f}", f"{r['f1-score']:.4f}", r["support"]]
                 for lab, r in (val.get("per_class") or {}).items()]
    evals = [[e["step"], f"{e.get('eval_loss', float('nan')):.4f}", f"{e.get('eval_accuracy', float('nan')):.4f}",
              f"{e.get('eval_f1', float('nan')):.4f}"] for e in run.iter_events() if e.get("type") == "eval"]
    hyper = [[k, f"`{cfg[k]}`"] for k in HYPERPARAMETERS if k in cfg and cfg[k] is not None]
    caution = _caution(val, split)
    world = int(status.get("world_size") or 1)
    launcher = ("python -m engine.train" if world == 1 else
                f"accelerate launch --multi_gpu --num_processes {world} -m engine.train")
    base_link = f"[{base}](https://huggingface.co/{base})" if _is_hub_id(base) else f"`{base}`"
    usage_id = repo_id or f"<user>/{name}"
    body = f"""
# {name}

{"An" if kind.input_kind[0] in "aeiou" else "A"} {kind.input_kind} classifier \
{"trained" if base in ("mlp", "vit-tiny") or ":" in base else "fine-tuned"} from {base_link} on {ds_name} with hubtune \
({len(labels)} labels: {", ".join(f"`{lab}`" for lab in labels)}).

## Results

{caution}On the {split} split ({val.get("num_samples", "?")} examples), best checkpoint at step \
{metrics.get("best_step")} of {metrics.get("steps")}:

{_table(["metric", "value"], [[label, f"{val[key]:.4f}"] for key, label in headline if key in val]
        + [["Loss", f"{val.get('loss', float('nan')):.4f}"]])}

## Usage

{kind.usage(usage_id, run)}

## Per-class report

{_table(["label", "precision", "recall", "f1", "support"], per_class)}

![Confusion matrix](confusion_matrix.png)

## Training curve

![Loss curve](loss_curve.png)

{_table(["step", "validation loss", "accuracy", "macro F1"], evals) if evals else "(no evaluations logged)"}

## Hyperparameters

{_table(["name", "value"], hyper)}

The full configuration is in [`config.yaml`](config.yaml) and the final metrics in [`metrics.json`](metrics.json).

## Reproduce

```bash
hf download {usage_id} config.yaml --local-dir .
{launcher} --config config.yaml
```

## Hardware and software

- Device: {status.get("device", "unknown")}, {world} process(es), mixed precision: \
{status.get("mixed_precision", cfg.get("mixed_precision"))}
- Training time: {metrics.get("train_seconds", "?")} s for {metrics.get("steps")} optimizer steps \
({metrics.get("train_samples_per_second", "?")} samples/s)
- Machine: {platform.platform(terse=True)}, {platform.machine()}
- Libraries: {", ".join(_versions())}
"""
    return ModelCard(f"---\n{data.to_yaml()}\n---\n{body}")
