"""Regression: one number per example. A one-output head trained with MSE (`config.problem_type = regression`,
as transformers' own loss and `pipeline` read it); MSE, RMSE, MAE, R², Pearson and Spearman; the label range seen
in training is saved in config.json so predictions can be shown against it."""

from __future__ import annotations

import numpy as np

from engine.errors import DataError, PredictError
from engine.tasks.heads.base import Head


def _ranks(x: np.ndarray) -> np.ndarray:
    """Ranks from 1, ties given their average rank (as Spearman's coefficient defines them)."""
    order = np.argsort(x, kind="mergesort")
    ranks = np.empty(len(x), dtype=float)
    ranks[order] = np.arange(1, len(x) + 1)
    _, inverse, counts = np.unique(x, return_inverse=True, return_counts=True)
    sums = np.bincount(inverse, weights=ranks)
    return (sums / counts)[inverse]


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a - a.mean(), b - b.mean()
    denom = np.sqrt((a * a).sum() * (b * b).sum())
    return float((a * b).sum() / denom) if denom > 0 else 0.0


def regression_metrics(labels, preds) -> dict:
    """MSE, RMSE, MAE, R² (1 - SS_res / SS_tot), Pearson's r and Spearman's rho (0 where undefined)."""
    y, p = np.asarray(labels, dtype=float).ravel(), np.asarray(preds, dtype=float).ravel()
    if not len(y):
        return {k: 0.0 for k in ("mse", "rmse", "mae", "r2", "pearson", "spearman")} | {"num_samples": 0}
    err = p - y
    mse = float((err ** 2).mean())
    ss_tot = float(((y - y.mean()) ** 2).sum())
    return {"mse": mse, "rmse": float(np.sqrt(mse)), "mae": float(np.abs(err).mean()),
            "r2": 1 - float((err ** 2).sum()) / ss_tot if ss_tot > 0 else 0.0,
            "pearson": _pearson(y, p), "spearman": _pearson(_ranks(y), _ranks(p)), "num_samples": int(len(y))}


class Regression(Head):
    """A number per example: the label column holds numbers (decimals, or whole numbers with problem_type:
    regression)."""

    problem_type = "regression"
    default_metric = "r2"
    metrics_names = ("r2", "rmse", "mae", "mse", "pearson", "spearman", "loss")
    headline = ("r2", "rmse")
    card_metrics = (("r2", "R²"), ("rmse", "RMSE"), ("mae", "MAE"), ("mse", "MSE"), ("pearson", "Pearson r"),
                    ("spearman", "Spearman rho"))

    def __init__(self, label_range: list[float] | None = None):
        self.label_range = label_range

    def encode(self, parts: dict, cfg, fields: dict, column: str = "label") -> tuple[dict, list[str]]:
        """Every split's labels as float32; the name of the one output is the label column's."""
        import datasets

        out = dict(parts)
        for split in ("train", "validation", "test"):
            ds = parts.get(split)
            if ds is None:
                continue
            bad = next((v for v in ds["label"] if not _is_number(v)), None)
            if bad is not None:
                raise DataError(f"label_column: regression needs numbers in column '{column}' of {fields[split]}, "
                                f"found {str(bad)[:40]!r}; choose a numeric column, or a classification "
                                "problem_type")
            out[split] = ds.cast_column("label", datasets.Value("float32"))
        values = np.asarray(parts["train"]["label"], dtype=float)  # before float32 rounds them
        if len(values) and values.min() == values.max():
            raise DataError(f"label_column: every training label is {values[0]:g}; regression needs varied values")
        self.label_range = [float(values.min()), float(values.max())] if len(values) else None
        return out, [column]

    def label_text(self, label, names: list[str]) -> str:
        return f"{float(label):g}"

    def data_report(self, labels, names: list[str], cfg) -> tuple[dict, list[str]]:
        """The labels' range, mean, spread and a 10-bin histogram."""
        y = np.asarray(list(labels), dtype=float)
        counts, edges = np.histogram(y, bins=10)
        # the histogram's bins stand where classes' counts do (the web app shows them as the same table)
        bins = {f"{edges[i]:.3g} to {edges[i + 1]:.3g}": int(c) for i, c in enumerate(counts)}
        stats = {"min": float(y.min()), "max": float(y.max()), "mean": round(float(y.mean()), 6),
                 "std": round(float(y.std()), 6), "median": float(np.median(y))}
        return {"label_counts": bins, "label_stats": stats,
                "label_summary": f"numeric labels from **{stats['min']:g}** to **{stats['max']:g}** (mean "
                                 f"{stats['mean']:.3g}, standard deviation {stats['std']:.3g})."}, []

    def configure(self, config, names: list[str]) -> None:
        config.num_labels = 1
        config.id2label = {0: names[0]}
        config.label2id = {names[0]: 0}
        config.problem_type = self.problem_type
        if self.label_range:
            config.label_range = self.label_range

    def saved_settings(self) -> dict:
        return {"label_range": self.label_range} if self.label_range else {}

    def explain_index(self, names: list[str], label: str | None, row) -> int:
        """The one output; an explanation of a number is toward higher values (negative: toward lower)."""
        if label is not None and str(label).strip() and str(label) != names[0]:
            raise PredictError(f"explain_label: '{label}' is not this model's output; a regression model has one "
                               f"({names[0]}) and explains toward higher values; give no label")
        return 0

    def explain_meaning(self, name: str) -> str:
        return f"toward higher {name} (negative: toward lower)"

    def losses(self, logits, labels):
        return (logits.float().view(-1) - labels.float().view(-1)) ** 2

    def scores(self, logits):
        return logits.float().view(-1, 1)

    def metrics(self, labels, scores, names: list[str]) -> dict:
        return regression_metrics(labels, np.asarray(scores).reshape(-1)) | {"labels": list(names)}

    def summary(self, metrics: dict) -> str:
        return (f"R² {metrics['r2']:.4f}, RMSE {metrics['rmse']:.4f}, MAE {metrics['mae']:.4f}, Spearman "
                f"{metrics['spearman']:.4f}")

    def extra_inputs(self, labels, scores) -> tuple:
        return np.asarray(scores, dtype=float).reshape(-1), np.asarray(labels, dtype=float).reshape(-1)

    def rows(self, texts, labels, scores, names: list[str]) -> list[dict]:
        """Each validation example with its label, the prediction and the error (prediction - label)."""
        out = []
        for text, y, row in zip(texts, labels, scores):
            pred = float(np.asarray(row).reshape(-1)[0])
            out.append({"text": text[:2000], "label": round(float(y), 6), "prediction": round(pred, 6),
                        "error": round(pred - float(y), 6)})
        return out

    def wrong(self, row: dict) -> bool:
        return True  # every row has an error; the UI lists the largest first

    def output(self, row, names: list[str], top_k: int | None = None) -> dict[str, float]:
        return {names[0]: float(np.asarray(row).reshape(-1)[0])}

    def predicted(self, output: dict) -> dict:
        return {"prediction": next(iter(output.values()))}

    def cli_text(self, output: dict, top_k: int) -> str:
        name, value = next(iter(output.items()))
        seen = f"  (training range {self.label_range[0]:g} to {self.label_range[1]:g})" if self.label_range else ""
        return f"{name} {value:.4f}{seen}"

    def file_columns(self, scores, names: list[str]) -> dict[str, list]:
        return {"prediction": [None if r is None else round(float(np.asarray(r).reshape(-1)[0]), 6) for r in scores]}


def _is_number(v) -> bool:
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool) and v == v
