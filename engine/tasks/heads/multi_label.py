"""Multi-label classification: any number of labels per example (none included). One sigmoid per label, the
model's own BCE-with-logits loss (`config.problem_type = multi_label_classification`, optional per-label
`pos_weight`), a decision threshold per label tuned on the validation split and saved in config.json, micro and
macro F1, subset accuracy and Hamming loss."""

from __future__ import annotations

import itertools
from collections import Counter

import numpy as np

from engine.errors import DataError
from engine.tasks.heads.base import Head, parse_weights, refuse_unseen

DEFAULT_THRESHOLD = 0.5
# candidate thresholds tuned per label: the validation F1 of each is computed, the best kept
GRID = np.round(np.arange(0.05, 0.951, 0.05), 2)
MAX_POS_WEIGHT = 100.0  # a label seen once in 10,000 examples would otherwise dominate the loss


def _is_list_feature(feature) -> bool:
    import datasets

    return isinstance(feature, (datasets.Sequence, getattr(datasets, "List", datasets.Sequence), list))


def split_labels(value, separator: str | None) -> list[str]:
    """One example's labels as strings: a list as it is, a string split by `separator` (blanks dropped)."""
    if value is None:
        return []
    if isinstance(value, (list, tuple)):
        return [str(v).strip() for v in value if v is not None and str(v).strip()]
    if separator:
        return [part.strip() for part in str(value).split(separator) if part.strip()]
    return [str(value).strip()] if str(value).strip() else []


def label_sets(ds, cfg) -> list[list[str]]:
    return [split_labels(v, cfg.label_separator) for v in ds["label"]]


def f1_table(truth, pred) -> dict:
    """Micro / macro precision, recall and F1 and per-label counts for 0/1 matrices (examples x labels)."""
    tp = (truth & pred).sum(0).astype(float)
    fp, fn = (pred & ~truth).sum(0).astype(float), (truth & ~pred).sum(0).astype(float)
    precision = np.divide(tp, tp + fp, out=np.zeros_like(tp), where=tp + fp > 0)
    recall = np.divide(tp, tp + fn, out=np.zeros_like(tp), where=tp + fn > 0)
    f1 = np.divide(2 * precision * recall, precision + recall, out=np.zeros_like(tp), where=precision + recall > 0)
    TP, FP, FN = tp.sum(), fp.sum(), fn.sum()
    p_micro = TP / (TP + FP) if TP + FP else 0.0
    r_micro = TP / (TP + FN) if TP + FN else 0.0
    f_micro = 2 * p_micro * r_micro / (p_micro + r_micro) if p_micro + r_micro else 0.0
    return {"precision": precision, "recall": recall, "f1": f1, "support": truth.sum(0),
            "micro": (float(p_micro), float(r_micro), float(f_micro))}


def _check_separator(ds, cfg, column: str, field: str) -> None:
    """Text cells without label_separator would make each whole cell one label: refuse when they look like
    several labels joined by a common separator, naming it."""
    if cfg.label_separator or _is_list_feature(ds.features["label"]):
        return
    cells = [v for v in ds["label"][:1000] if isinstance(v, str)]
    for sep in ("|", ";", ","):
        if sum(sep in v for v in cells) > len(cells) / 10:
            raise DataError(f"label_column: cells of '{column}' in {field} look like several labels joined by "
                            f"'{sep}' (e.g. {next(v for v in cells if sep in v)[:60]!r}); set label_separator: "
                            f"'{sep}'")


class MultiLabel(Head):
    """Any number of labels per example: the label column holds lists, or strings split by label_separator."""

    problem_type = "multi_label_classification"
    stratify = False  # a random split: stratifying label sets would leave rare combinations out
    default_metric = "f1_micro"
    metrics_names = ("f1_micro", "f1", "precision_micro", "recall_micro", "precision", "recall",
                     "subset_accuracy", "hamming_loss", "loss")
    headline = ("f1_micro", "f1")
    card_metrics = (("f1_micro", "F1 (micro)"), ("f1", "F1 (macro)"), ("subset_accuracy", "Subset accuracy"),
                    ("hamming_loss", "Hamming loss"), ("precision_micro", "Precision (micro)"),
                    ("recall_micro", "Recall (micro)"))
    weighted = True  # class_weights are BCE's pos_weight per label
    weight_unit = "label"

    def __init__(self, thresholds: list[float] | None = None, names: list[str] | None = None):
        self.thresholds, self.names = thresholds, names  # one threshold per label, in label order

    # --- data -----------------------------------------------------------------------------------------------
    def encode(self, parts: dict, cfg, fields: dict, column: str = "label") -> tuple[dict, list[str]]:
        """Label names from the training split (sorted), every split's labels as a 0/1 vector over them."""
        import datasets

        _check_separator(parts["train"], cfg, column, fields["train"])
        train_sets = label_sets(parts["train"], cfg)
        names = sorted({label for labels in train_sets for label in labels})
        if len(names) < 2:
            sep = f" split by '{cfg.label_separator}'" if cfg.label_separator else ""
            raise DataError(f"label_column: column '{column}' of {fields['train']}{sep} has "
                            f"{len(names)} label(s); multi-label needs at least two (set label_separator if one "
                            "cell holds several labels, e.g. ',' or '|')")
        index = {n: i for i, n in enumerate(names)}
        out = dict(parts)
        for split in ("train", "validation", "test"):
            ds = parts.get(split)
            if ds is None:
                continue
            sets = train_sets if split == "train" else label_sets(ds, cfg)
            refuse_unseen({label for labels in sets for label in labels}, names, fields[split])
            vectors = []
            for labels in sets:
                row = [0.0] * len(names)
                for label in labels:
                    row[index[label]] = 1.0
                vectors.append(row)
            ds = ds.remove_columns("label").add_column("label", vectors)
            out[split] = ds.cast_column("label", datasets.Sequence(datasets.Value("float32"), length=len(names)))
        return out, names

    def label_text(self, label, names: list[str]) -> str:
        return ", ".join(n for n, v in zip(names, label) if v) or "(none)"

    def data_report(self, labels, names: list[str], cfg) -> tuple[dict, list[str]]:
        """Examples per label, labels per example and the most frequent label pairs."""
        matrix = np.asarray(list(labels), dtype=bool)
        counts = {n: int(c) for n, c in zip(names, matrix.sum(0))}
        per_example = Counter(int(k) for k in matrix.sum(1))
        pairs = Counter()
        for row in matrix:
            pairs.update(itertools.combinations([names[i] for i in np.flatnonzero(row)], 2))
        report = {"label_counts": counts,
                  "labels_per_example": {str(k): per_example[k] for k in sorted(per_example)},
                  "top_label_pairs": [{"labels": list(p), "count": c} for p, c in pairs.most_common(5)]}
        mean = float(matrix.sum(1).mean()) if len(matrix) else 0.0
        top = ", ".join(f"{a} + {b} ({c})" for (a, b), c in pairs.most_common(3))
        report["label_summary"] = (f"**{len(names)}** labels, {mean:.2f} per example on average "
                                   f"({per_example[0]} examples with none); most frequent pairs: {top or 'none'}.")
        warnings = []
        rare = [n for n, c in counts.items() if c < 5]
        if rare:
            warnings.append(f"{len(rare)} label(s) have fewer than 5 training examples ({', '.join(rare[:5])}); "
                            "their thresholds and scores will be unreliable")
        if counts and max(counts.values()) > 10 * max(1, min(counts.values())) and cfg.class_weights != "balanced":
            warnings.append("labels are imbalanced (the most frequent has over 10x the examples of the rarest); "
                            "consider class_weights: balanced (a pos_weight per label)")
        return report, warnings

    # --- model ----------------------------------------------------------------------------------------------
    def configure(self, config, names: list[str]) -> None:
        config.num_labels = len(names)
        config.id2label = dict(enumerate(names))
        config.label2id = {n: i for i, n in enumerate(names)}
        config.problem_type = self.problem_type

    def weights(self, cfg, labels, names: list[str]) -> list[float] | None:
        """BCE pos_weight per label: None, 'balanced' (negatives / positives in training, capped) or the list."""
        weights = parse_weights(cfg, names, self.weight_unit)
        if weights == "none":
            return None
        if weights == "balanced":
            matrix = np.asarray(list(labels), dtype=bool)
            pos = matrix.sum(0)
            return [round(min(MAX_POS_WEIGHT, (len(matrix) - p) / max(p, 1)), 6) for p in pos]
        return weights

    def loss_fn(self, cfg, train_labels, names: list[str], device):
        import torch
        import torch.nn.functional as F

        weights = self.weights(cfg, train_labels, names)
        if weights is None:
            return None  # the model's own BCEWithLogitsLoss
        w = torch.tensor(weights, dtype=torch.float32, device=device)
        return lambda logits, labels: F.binary_cross_entropy_with_logits(logits.float(), labels.float(), pos_weight=w)

    # --- outputs --------------------------------------------------------------------------------------------
    def _thresholds(self, k: int) -> np.ndarray:
        return np.asarray(self.thresholds if self.thresholds else [DEFAULT_THRESHOLD] * k, dtype=float)

    def losses(self, logits, labels):
        import torch.nn.functional as F

        return F.binary_cross_entropy_with_logits(logits.float(), labels.float(), reduction="none").mean(-1)

    def scores(self, logits):
        return logits.float().sigmoid()

    def close_calls(self, logits, margin: float):
        """Rows with a logit within `margin` of its label's threshold (in logit space)."""
        import torch

        t = torch.as_tensor(self._thresholds(logits.shape[-1]), dtype=torch.float32).clamp(1e-6, 1 - 1e-6)
        edge = torch.log(t / (1 - t))
        return ((logits.float() - edge).abs() < margin).any(-1).nonzero().flatten()

    def decisions(self, scores) -> list:
        """The set of labels over their thresholds, per row."""
        scores = np.asarray(scores)
        over = scores >= self._thresholds(scores.shape[-1])
        return [tuple(np.flatnonzero(row)) for row in over]

    def metrics(self, labels, scores, names: list[str]) -> dict:
        truth = np.asarray(labels) > 0.5
        pred = np.asarray(scores) >= self._thresholds(len(names))
        table = f1_table(truth, pred)
        p_micro, r_micro, f_micro = table["micro"]
        n = len(truth)
        return {
            "f1_micro": f_micro, "precision_micro": p_micro, "recall_micro": r_micro,
            "f1": float(table["f1"].mean()), "precision": float(table["precision"].mean()),
            "recall": float(table["recall"].mean()),
            "subset_accuracy": float((truth == pred).all(1).mean()) if n else 0.0,
            "hamming_loss": float((truth != pred).mean()) if n else 0.0,
            "num_samples": int(n),
            "per_class": {name: {"precision": round(float(table["precision"][i]), 6),
                                 "recall": round(float(table["recall"][i]), 6),
                                 "f1-score": round(float(table["f1"][i]), 6), "support": int(table["support"][i])}
                          for i, name in enumerate(names)},
            "thresholds": {name: float(t) for name, t in zip(names, self._thresholds(len(names)))},
            "labels": list(names),
        }

    def tuned(self, labels, scores, names: list[str]) -> "MultiLabel":
        """Each label's threshold: the grid value with the best validation F1 for that label (ties: nearest 0.5);
        a label without validation examples keeps 0.5."""
        truth, scores = np.asarray(labels) > 0.5, np.asarray(scores)
        out = []
        for j in range(len(names)):
            if not truth[:, j].any():
                out.append(DEFAULT_THRESHOLD)
                continue
            f1 = [f1_table(truth[:, [j]], scores[:, [j]] >= t)["f1"][0] for t in GRID]
            best = max(range(len(GRID)), key=lambda i: (round(f1[i], 9), -abs(GRID[i] - DEFAULT_THRESHOLD)))
            out.append(float(GRID[best]))
        return MultiLabel(out, list(names))

    def saved_settings(self) -> dict:
        return {"thresholds": dict(zip(self.names, self.thresholds))} if self.thresholds else {}

    def summary(self, metrics: dict) -> str:
        return (f"micro F1 {metrics['f1_micro']:.4f}, macro F1 {metrics['f1']:.4f}, subset accuracy "
                f"{metrics['subset_accuracy']:.4f}, loss {metrics.get('loss', 0):.4f}")

    def extra_inputs(self, labels, scores) -> tuple:
        """(predictions, references) for `evaluate` metrics: flattened 0/1 decisions per (example, label)."""
        pred = np.asarray(scores) >= self._thresholds(np.asarray(scores).shape[-1])
        return pred.astype(int).ravel(), (np.asarray(labels) > 0.5).astype(int).ravel()

    def chosen(self, row, names: list[str]) -> list[str]:
        """The labels over their thresholds, highest score first."""
        t = self._thresholds(len(names))
        return [names[i] for i in np.argsort(-np.asarray(row)) if row[i] >= t[i]]

    def rows(self, texts, labels, scores, names: list[str]) -> list[dict]:
        out = []
        for text, y, row in zip(texts, labels, scores):
            picked = self.chosen(row, names)
            out.append({"text": text[:2000], "label": self.label_text(y, names), "prediction": ", ".join(picked)
                        or "(none)", "score": round(float(max(row)), 6) if len(row) else 0.0})
        return out

    def wrong(self, row: dict) -> bool:
        return set(row.get("label", "").split(", ")) != set(row.get("prediction", "").split(", "))

    def output(self, row, names: list[str], top_k: int | None = None) -> dict[str, float]:
        """{label: probability}, highest first (top_k of them); `predicted` says which are over their thresholds."""
        pairs = sorted(zip(names, map(float, row)), key=lambda p: -p[1])
        return dict(pairs[:top_k] if top_k else pairs)

    def predicted(self, output: dict) -> dict:
        t = dict(zip(self.names, self.thresholds)) if self.thresholds and self.names else {}
        labels = [n for n in output if output[n] >= t.get(n, DEFAULT_THRESHOLD)]
        return {"labels": labels, "scores": output}

    def cli_text(self, output: dict, top_k: int) -> str:
        picked = self.predicted(output)["labels"]
        top = "  ".join(f"{label} {p:.4f}" for label, p in list(output.items())[:top_k])
        return f"labels: {', '.join(picked) or '(none)'}  |  {top}"

    def file_columns(self, scores, names: list[str]) -> dict[str, list]:
        """predicted_labels (those over their thresholds, '|'-joined, best first; not `labels`, which is what a
        file of examples usually calls its true labels) and each label's score."""
        cols = {"predicted_labels": [None if r is None else "|".join(self.chosen(r, names)) for r in scores]}
        for j, name in enumerate(names):
            cols[f"score_{name}"] = [None if r is None else round(float(r[j]), 6) for r in scores]
        return cols
