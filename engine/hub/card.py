"""The model card of a finished run: Hub metadata (model-index from metrics.json) and a body a reader can act on.

Pure text from the run directory; no network. engine.hub pushes it as README.md next to the plots it links.
"""

from __future__ import annotations

import platform
from pathlib import Path

import yaml

from engine.config import DEFAULT_MODEL
from engine.data import given_name
from engine.metrics import one_class_warning
from engine.modeling import is_path_like
from engine.rundir import RunDir, read_json

HYPERPARAMETERS = ("learning_rate", "num_train_epochs", "max_steps", "per_device_train_batch_size",
                   "gradient_accumulation_steps", "max_seq_length", "lr_scheduler_type", "warmup_steps",
                   "warmup_ratio", "weight_decay", "max_grad_norm", "mixed_precision", "group_by_length", "seed",
                   "eval_strategy", "metric_for_best_model", "max_train_samples", "max_eval_samples")
HEAD_SETTINGS = (("problem_type", "auto"), ("label_separator", None), ("class_weights", "none"))
SCATTER = "predictions_scatter.png"
# short evaluation-table column names (the card name otherwise)
EVAL_COLUMNS = {"accuracy": "accuracy", "f1": "macro F1", "f1_micro": "micro F1"}
LIBRARIES = ("torch", "transformers", "accelerate", "datasets", "tokenizers", "safetensors", "huggingface_hub")


def _is_hub_id(name: str | None) -> bool:
    return bool(name) and not name.startswith("bundled:") and not is_path_like(name) and not Path(name).exists()


def _dataset(cfg: dict) -> tuple[str, str, list[str] | None]:
    """(dataset_type, human name, Hub datasets metadata or None)."""
    name = cfg.get("dataset_name")
    if name and name.startswith("bundled:"):
        from engine.bundled import BUNDLED

        return name.split(":", 1)[1], (BUNDLED.get(name, (None, name))[1]), None
    if name:
        return name, name + (f" ({cfg['dataset_config_name']})" if cfg.get("dataset_config_name") else ""), [name]
    return "custom", f"local file {given_name(cfg.get('train_file') or 'data')}", None


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


def _head(run: RunDir, metrics: dict):
    """The head of the run's saved model (engine.tasks.heads, from its config.json: thresholds, label range);
    without a readable model config, the one metrics.json's problem_type names (thresholds from its validation)."""
    from engine.tasks import heads, model_config

    try:
        return heads.for_config(model_config(run.model))
    except Exception:  # noqa: BLE001 - no model config: rebuilt from what metrics.json recorded
        val = metrics.get("validation") or {}
        labels = val.get("labels") or []
        config = {"problem_type": metrics.get("problem_type"), "id2label": dict(enumerate(labels)),
                  "thresholds": val.get("thresholds")}
        return heads.for_config({k: v for k, v in config.items() if v})


def card_plots(run_dir) -> dict:
    """{file name in the repo: draw(run_dir, out_dir) -> PNG path} for the pictures the run's card links; engine.hub
    pushes exactly these, so a card never links a missing image."""
    from engine.hub import plots

    run = RunDir(run_dir)
    val = (read_json(run.metrics, default={}) or {}).get("validation") or {}
    out = {}
    if val.get("confusion_matrix") and val.get("labels"):
        out["confusion_matrix.png"] = plots.confusion_matrix_png
    if "rmse" in val and run.predictions.exists():  # regression: predicted against true values
        out[SCATTER] = plots.scatter_png
    out["loss_curve.png"] = plots.loss_curve_png
    return out


def _kind_of_model(kind, head) -> str:
    """'A text classifier', 'A multi-label text classifier', 'A text regression model', 'An image classifier'."""
    problem = getattr(head, "problem_type", "")
    words = {"regression": f"{kind.input_kind} regression model",
             "multi_label_classification": f"multi-label {kind.input_kind} classifier"}
    what = words.get(problem, f"{kind.input_kind} classifier")
    return f"{'An' if what[0] in 'aeiou' else 'A'} {what}"


def _summary(head, labels: list[str]) -> str:
    """What the model outputs, for the card's first paragraph."""
    problem = getattr(head, "problem_type", "")
    if problem == "regression":
        seen = getattr(head, "label_range", None)
        seen = f"; training labels ranged from {seen[0]:g} to {seen[1]:g}" if seen else ""
        return f"it predicts one number, `{labels[0] if labels else 'label'}`{seen}"
    listed = f"{len(labels)} labels: {', '.join(f'`{lab}`' for lab in labels)}"
    if problem == "multi_label_classification":
        return f"{listed}; an example may have any number of them, none included"
    return listed


def _onnx_section(kind, usage_id: str, head, record: dict | None) -> str:
    """How to run the pushed ONNX export (push --with-onnx): its files, how it was checked, an onnxruntime snippet."""
    if record is None:
        return ""
    files = record.get("files") or {}
    quantized = "model_quantized.onnx" in files
    names = " and ".join(f"`onnx/{f}`" + (" (dynamic int8)" if f == "model_quantized.onnx" else " (fp32)")
                         for f in files)
    checks = "; ".join(f"`{f}` max |Δlogit| {c['max_abs_logit_diff']:.2g}"
                       + (f", {c['agreement']:.1%} of predictions as PyTorch's" if "agreement" in c else "")
                       for f, c in files.items())
    inputs = ", ".join(f"`{n}`" for n in record.get("inputs") or [])
    axes = ", ".join(f"`{a}`" for a in record.get("dynamic_axes") or ["batch_size"])
    return f"""
## ONNX

{names}: this model exported with `python -m engine.export` (the layout Optimum and transformers.js read: inputs \
{inputs}, output `logits`, dynamic axes {axes}). Checked against the PyTorch model on \
{record.get("checked_on")}: {checks}. hubtune serves it with \
`python -m engine.predict --model {usage_id} --backend onnx`; without hubtune:

{kind.onnx_usage(usage_id, head, False)}
{"(For the int8 file, download `onnx/model_quantized.onnx` instead.)" if quantized else ""}
"""


def _per_label(head, val: dict) -> str:
    """The per-class section: single-label report + confusion matrix, multi-label report with each label's
    threshold, regression's predicted-vs-true scatter plot."""
    problem = getattr(head, "problem_type", "")
    if problem == "regression":
        return ("## Predictions\n\nPredicted against true values on the validation split (the dashed line is a "
                f"perfect model):\n\n![Predicted vs true]({SCATTER})")
    report = val.get("per_class") or {}
    if problem == "multi_label_classification":
        saved = dict(zip(head.names or [], head.thresholds or [])) or val.get("thresholds") or {}
        rows = [[lab, f"{float(saved.get(lab, 0.5)):.2f}", f"{r['precision']:.4f}", f"{r['recall']:.4f}",
                 f"{r['f1-score']:.4f}", r["support"]] for lab, r in report.items()]
        return ("## Per-label report\n\nA label is predicted when its sigmoid score reaches its threshold. Each "
                "threshold was tuned on the validation split for that label's best F1 and is saved in the model's "
                "`config.json` as `thresholds` (`model.config.thresholds`); the numbers below use them.\n\n"
                + _table(["label", "threshold", "precision", "recall", "f1", "support"], rows))
    rows = [[lab, f"{r['precision']:.4f}", f"{r['recall']:.4f}", f"{r['f1-score']:.4f}", r["support"]]
            for lab, r in report.items()]
    return ("## Per-class report\n\n" + _table(["label", "precision", "recall", "f1", "support"], rows)
            + "\n\n![Confusion matrix](confusion_matrix.png)")


def _class_weights(cfg: dict, metrics: dict) -> str:
    """The class_weights setting and the weight each label got, when set ('' otherwise)."""
    setting = cfg.get("class_weights")
    if str(setting or "none") == "none":
        return ""
    resolved = metrics.get("class_weights") or {}
    what = ("BCE `pos_weight` per label" if metrics.get("problem_type") == "multi_label_classification"
            else "cross-entropy weight per class")
    rows = [[lab, f"{float(w):.4g}"] for lab, w in resolved.items()]
    source = ", from the training split's counts" if setting == "balanced" else ""
    return (f"\n\nClass weights: `{setting}` ({what}{source}):\n\n"
            + _table(["label", "weight"], rows)) if rows else f"\n\nClass weights: `{setting}`."


def _caution(val: dict, split: str) -> str:
    """A warning paragraph for a model that gives (almost) every example one label, else ''. A reader of the card
    decides whether to use the model: a one-class predictor must say so before its numbers."""
    line = one_class_warning(val)
    if not line:
        return ""
    return (f"> ⚠️ **Warning: this model does not tell the classes apart.** {line[0].upper()}{line[1:]}. "
            f"Its accuracy is only the share of that class in the {split} split.\n\n")


def build_model_card(run_dir, repo_id: str | None = None, license: str | None = None, onnx: dict | None = None):
    """A `huggingface_hub.ModelCard` for the run: metadata (base_model, datasets, pipeline_tag, library_name,
    license, tags, model-index with the validation metrics) and a body with results, per-class report, curves,
    hyperparameters, the command to reproduce, hardware and library versions. `onnx`: the export record
    (onnx/export.json) of an ONNX export pushed with the model; the card then says how to run it."""
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
    head = _head(run, metrics)
    headline = list(head.card_metrics)
    results = [EvalResult(task_type=task, task_name=task.replace("-", " ").title(), dataset_type=ds_type,
                          dataset_name=ds_name, dataset_split=split, metric_type=key, metric_name=label,
                          metric_value=round(float(val[key]), 4))
               for key, label in headline if val.get(key) is not None]
    data = ModelCardData(
        base_model=base if _is_hub_id(base) else None, datasets=ds_meta, pipeline_tag=task,
        library_name="transformers", license=license or _base_license(base, cfg.get("model_revision")) or "other",
        tags=["hubtune", task, "generated_from_hubtune", *(["onnx"] if onnx else [])],
        metrics=[k for k, _ in headline],
        model_name=name, eval_results=results)

    labels = val.get("labels") or list(val.get("per_class", {}))
    names = dict(headline)
    columns = [EVAL_COLUMNS.get(k, names.get(k, k)) for k in head.headline]
    evals = [[e["step"], f"{e.get('eval_loss', float('nan')):.4f}",
              *(f"{e.get(f'eval_{k}', float('nan')):.4f}" for k in head.headline)]
             for e in run.iter_events() if e.get("type") == "eval"]
    hyper = [[k, f"`{cfg[k]}`"] for k in HYPERPARAMETERS if k in cfg and cfg[k] is not None]
    # the head's settings, where a run chose them (a default single-label card stays as it was)
    hyper += [[k, f"`{cfg[k]}`"] for k, default in HEAD_SETTINGS if cfg.get(k) not in (None, default)]
    if head.problem_type != "single_label_classification" and cfg.get("problem_type") in (None, "auto"):
        hyper.append(["problem_type", f"`auto` (resolved: `{head.problem_type}`)"])
    caution = _caution(val, split)
    world = int(status.get("world_size") or 1)
    launcher = ("python -m engine.train" if world == 1 else
                f"accelerate launch --multi_gpu --num_processes {world} -m engine.train")
    base_link = f"[{base}](https://huggingface.co/{base})" if _is_hub_id(base) else f"`{base}`"
    usage_id = repo_id or f"<user>/{name}"
    body = f"""
# {name}

{_kind_of_model(kind, head)} \
{"trained" if base in ("mlp", "vit-tiny") or ":" in base else "fine-tuned"} from {base_link} on {ds_name} with hubtune \
({_summary(head, labels)}).

## Results

{caution}On the {split} split ({val.get("num_samples", "?")} examples), best checkpoint at step \
{metrics.get("best_step")} of {metrics.get("steps")}:

{_table(["metric", "value"], [[label, f"{val[key]:.4f}"] for key, label in headline if key in val]
        + [["Loss", f"{val.get('loss', float('nan')):.4f}"]])}{_class_weights(cfg, metrics)}

## Usage

{kind.usage(usage_id, run, head)}
{_onnx_section(kind, usage_id, head, onnx)}

{_per_label(head, val)}

## Training curve

![Loss curve](loss_curve.png)

{_table(["step", "validation loss", *columns], evals) if evals else "(no evaluations logged)"}

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
