"""Classification metrics; extra `evaluate` metrics by name or local path."""

from __future__ import annotations

import numpy as np

from engine.errors import ConfigError


def classification_metrics(labels, preds, label_names: list[str]) -> dict:
    """accuracy, macro precision/recall/F1, a per-class report and the confusion matrix (rows = true labels).

    Plain numpy (scikit-learn's definitions, a class with no predictions or no samples scores 0): importing
    sklearn.metrics would add ~0.6 s to every training process's start-up.
    """
    labels, preds = np.asarray(labels, dtype=np.int64), np.asarray(preds, dtype=np.int64)
    k = len(label_names)
    cm = np.bincount(labels * k + preds, minlength=k * k).reshape(k, k) if len(labels) else np.zeros((k, k), int)
    hits, support, predicted = np.diag(cm), cm.sum(1), cm.sum(0)
    precision = np.divide(hits, predicted, out=np.zeros(k), where=predicted > 0)
    recall = np.divide(hits, support, out=np.zeros(k), where=support > 0)
    f1 = np.divide(2 * precision * recall, precision + recall, out=np.zeros(k), where=precision + recall > 0)
    per_class = {name: {"precision": round(float(precision[i]), 6), "recall": round(float(recall[i]), 6),
                        "f1-score": round(float(f1[i]), 6), "support": int(support[i])}
                 for i, name in enumerate(label_names)}
    return {
        "accuracy": float(hits.sum() / len(labels)) if len(labels) else 0.0,
        "f1": float(f1.mean()) if k else 0.0,
        "precision": float(precision.mean()) if k else 0.0,
        "recall": float(recall.mean()) if k else 0.0,
        "num_samples": int(len(labels)),
        "per_class": per_class,
        "confusion_matrix": cm.tolist(),
        "labels": list(label_names),
    }


def one_class_warning(metrics: dict) -> str | None:
    """A line for a classifier that gave (almost) every validation example the same label: it has not learned
    to tell the classes apart, whatever its accuracy (which is then the share of that class). None otherwise."""
    matrix, labels = metrics.get("confusion_matrix"), metrics.get("labels")
    if not matrix or not labels or len(labels) < 2:
        return None
    predicted = [sum(col) for col in zip(*matrix)]
    total = sum(predicted)
    top = max(range(len(predicted)), key=predicted.__getitem__)
    if total == 0 or predicted[top] < total * 0.98:
        return None
    return (f"the model predicts '{labels[top]}' for {predicted[top]} of {total} validation examples: it has not "
            "learned to tell the classes apart; train longer (more steps or epochs), or try another learning rate "
            "(too low learns nothing yet, too high can collapse onto one class)")


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
