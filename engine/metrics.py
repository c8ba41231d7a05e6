"""Classification metrics with scikit-learn; extra `evaluate` metrics by name or local path."""

from __future__ import annotations

import numpy as np

from engine.config import ConfigError


def classification_metrics(labels, preds, label_names: list[str]) -> dict:
    """accuracy, macro precision/recall/F1, a per-class report and the confusion matrix (rows = true labels)."""
    from sklearn.metrics import accuracy_score, classification_report, confusion_matrix, precision_recall_fscore_support

    labels, preds = np.asarray(labels), np.asarray(preds)
    ids = list(range(len(label_names)))
    p, r, f, _ = precision_recall_fscore_support(labels, preds, labels=ids, average="macro", zero_division=0)
    report = classification_report(labels, preds, labels=ids, target_names=label_names, output_dict=True,
                                   zero_division=0)
    per_class = {name: {k: (int(v) if k == "support" else round(float(v), 6)) for k, v in report[name].items()}
                 for name in label_names}
    return {
        "accuracy": float(accuracy_score(labels, preds)) if len(labels) else 0.0,
        "f1": float(f),
        "precision": float(p),
        "recall": float(r),
        "num_samples": int(len(labels)),
        "per_class": per_class,
        "confusion_matrix": confusion_matrix(labels, preds, labels=ids).tolist(),
        "labels": list(label_names),
    }


def scalar_metrics(metrics: dict, prefix: str = "eval_") -> dict:
    """The numeric top-level entries, prefixed (for events and TensorBoard)."""
    return {prefix + k: v for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


def extra_metrics(names: list[str], labels, preds) -> dict:
    """Compute `evaluate` metrics (Hub names need network; a local metric module path works offline)."""
    out = {}
    for name in names:
        import evaluate

        try:
            metric = evaluate.load(name)
        except Exception as e:  # noqa: BLE001 - evaluate raises many types for "cannot load"
            raise ConfigError(f"extra_metrics: could not load metric '{name}' ({type(e).__name__}); offline, give "
                              "the path of a local metric module") from None
        result = metric.compute(predictions=list(map(int, preds)), references=list(map(int, labels)))
        for key, value in (result or {}).items():
            if isinstance(value, (int, float, np.floating, np.integer)):
                out[key if key not in out else f"{name}_{key}"] = float(value)
    return out
