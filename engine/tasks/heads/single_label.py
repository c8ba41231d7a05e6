"""Single-label classification: one class per example; softmax, (optionally weighted) cross-entropy, accuracy and
macro F1, a confusion matrix."""

from __future__ import annotations

from engine.errors import DataError
from engine.tasks.heads.base import Head, parse_weights, refuse_unseen

# the largest class outnumbering the smallest by more than WATCH_RATIO earns a warning, by more than IMBALANCE_RATIO
# a class_weights hint too
WATCH_RATIO, IMBALANCE_RATIO = 3.0, 10.0


# a label column with this many distinct values, more than one per two rows, holds ids or texts, not classes
MAX_DISTINCT_SHARE, MIN_DISTINCT_FLAGGED = 0.5, 20


def _label_key(v):
    return (0, v, "") if isinstance(v, (int, float)) else (1, 0, str(v))


def _check_classes(values: list, column: str, field: str) -> None:
    """Refuse a label column that does not hold classes: decimal numbers, or (nearly) one value per row."""
    decimals = [v for v in values if isinstance(v, float) and v == v and not v.is_integer()]
    if decimals:
        raise DataError(f"label_column: column '{column}' of {field} holds decimal numbers (e.g. {decimals[0]:g}), "
                        "not classes; a classifier needs class names or whole numbers (for a number to predict, "
                        "set problem_type: regression)")
    distinct = len(set(values))
    if distinct >= MIN_DISTINCT_FLAGGED and distinct > MAX_DISTINCT_SHARE * len(values):
        raise DataError(f"label_column: column '{column}' of {field} has {distinct:,} different values in "
                        f"{len(values):,} rows, so it holds ids or texts rather than classes; choose the column "
                        "with the classes (for a number to predict, set problem_type: regression)")


class SingleLabel(Head):
    """One class per example (the label column holds class names or whole numbers)."""

    problem_type = "single_label_classification"
    stratify = True  # the validation split keeps each class's share
    default_metric = "accuracy"
    weighted = True
    metrics_names = ("accuracy", "f1", "precision", "recall", "loss")
    headline = ("accuracy", "f1")  # what status.json and the done event carry
    # metrics.json key -> model card name, in the order a card shows them
    card_metrics = (("accuracy", "Accuracy"), ("f1", "F1 (macro)"), ("precision", "Precision (macro)"),
                    ("recall", "Recall (macro)"))

    # --- data -----------------------------------------------------------------------------------------------
    def encode(self, parts: dict, cfg, fields: dict, column: str = "label") -> tuple[dict, list[str]]:
        """Class names from the training split (a ClassLabel's own, else sorted values), every split's labels as
        a ClassLabel over them; labels unseen in training, decimal numbers and id-like columns are refused
        (`column`: the user's name for the label column, for the messages)."""
        import datasets

        train = parts["train"]
        feature = train.features["label"]
        if isinstance(feature, datasets.ClassLabel):
            names = list(feature.names)
        else:
            values = [v for v in train["label"] if v is not None]
            _check_classes(values, column, fields["train"])
            names = [str(v) for v in sorted(set(values), key=_label_key)]
        if len(names) < 2:
            raise DataError(f"label_column: only one class ({names[0] if names else 'none'}) in {fields['train']}; "
                            "a classifier needs at least two")
        class_label = datasets.ClassLabel(names=names)
        index = {n: i for i, n in enumerate(names)}
        out = dict(parts)
        for split in ("train", "validation", "test"):
            ds = parts.get(split)
            if ds is None:
                continue
            if isinstance(ds.features["label"], datasets.ClassLabel):
                if list(ds.features["label"].names) != names:
                    raise DataError(f"label_column: {split} labels {ds.features['label'].names} differ from "
                                    f"training labels {names}")
                continue
            refuse_unseen({str(v) for v in ds["label"]}, names, fields[split])
            ds = ds.map(lambda b: {"label": [str(v) for v in b["label"]]}, batched=True)
            features = ds.features.copy()
            features["label"] = datasets.Value("string")
            ds = ds.cast(features).map(lambda b: {"label": [index[v] for v in b["label"]]}, batched=True)
            out[split] = ds.cast_column("label", class_label)
        return out, names

    def label_text(self, label, names: list[str]) -> str:
        """An encoded label as people read it."""
        return names[int(label)]

    def counts(self, labels, names: list[str]) -> dict[str, int]:
        """Examples per label in an encoded split (for the pre-flight report)."""
        counts = {n: 0 for n in names}
        for i in list(labels):
            counts[names[i]] += 1
        return counts

    def data_report(self, labels, names: list[str], cfg) -> tuple[dict, list[str]]:
        """(the pre-flight report's label section, its warnings) for the encoded training labels."""
        counts = self.counts(labels, names)
        smallest, largest = min(counts.values()), max(counts.values())
        warnings = []
        if smallest == 0 or largest / smallest > WATCH_RATIO:
            line = (f"labels are imbalanced: largest class {largest} vs smallest {smallest} examples; watch macro F1, "
                    "not just accuracy")
            if (smallest == 0 or largest / smallest > IMBALANCE_RATIO) and cfg.class_weights == "none":
                line += "; consider class_weights: balanced (weighs each class by its rarity)"
            warnings.append(line)
        return {"label_counts": counts, "label_summary": f"**{len(names)}** labels."}, warnings

    def weights(self, cfg, labels, names: list[str]) -> list[float] | None:
        """Cross-entropy weights per class: None (unweighted), 'balanced' from the training counts (n / (k x count),
        scikit-learn's definition) or the config's own list."""
        weights = parse_weights(cfg, names)
        if weights == "none":
            return None
        if weights == "balanced":
            counts = list(self.counts(labels, names).values())
            return [round(len(labels) / (len(names) * max(c, 1)), 6) for c in counts]
        return weights

    def loss_fn(self, cfg, train_labels, names: list[str], device):
        import torch
        import torch.nn.functional as F

        weights = self.weights(cfg, train_labels, names)
        if weights is None:
            return None
        w = torch.tensor(weights, dtype=torch.float32, device=device)
        return lambda logits, labels: F.cross_entropy(logits.float(), labels, weight=w)

    def configure(self, config, names: list[str]) -> None:
        """Set a model config's head: label names, problem type."""
        config.num_labels = len(names)
        config.id2label = dict(enumerate(names))
        config.label2id = {n: i for i, n in enumerate(names)}
        config.problem_type = self.problem_type

    # --- outputs --------------------------------------------------------------------------------------------
    def close_calls(self, logits, margin: float):
        """Rows whose top-2 logit margin is below `margin`: where bf16 or int8 rounding could flip the label."""
        import torch

        if logits.shape[-1] < 2:
            return torch.zeros(0, dtype=torch.long)
        top2 = logits.topk(2, dim=-1).values
        return (top2[:, 0] - top2[:, 1] < margin).nonzero().flatten()

    def explained(self, logits, index: int):
        """The label's log-odds against the other labels together (log p / (1 - p) of its softmax probability; for
        two labels, the logit difference): positive attributions make the label more likely, not just its logit
        larger while the others grow too."""
        logits = logits.float()
        others = [j for j in range(logits.shape[-1]) if j != index]
        return logits[:, index] - logits[:, others].logsumexp(-1)

    def explain_meaning(self, name: str) -> str:
        return f"toward '{name}' (its log-odds against the other labels)"

    def decisions(self, scores) -> list:
        """The predicted class of each row."""
        import numpy as np

        return [int(i) for i in np.asarray(scores).argmax(-1)]

    def losses(self, logits, labels):
        """Per-example loss, as the model computes it in training (averaged that is `model(**batch).loss`)."""
        import torch.nn.functional as F

        return F.cross_entropy(logits.float(), labels, reduction="none")

    def scores(self, logits):
        """Probabilities per class."""
        return logits.float().softmax(-1)

    def metrics(self, labels, scores, names: list[str]) -> dict:
        """accuracy, macro precision / recall / F1, per-class report, confusion matrix."""
        from engine.metrics import classification_metrics

        return classification_metrics(labels, scores.argmax(-1), names)

    def summary(self, metrics: dict) -> str:
        """The metrics in a log line."""
        return f"accuracy {metrics['accuracy']:.4f}, macro F1 {metrics['f1']:.4f}, loss {metrics.get('loss', 0):.4f}"

    def extra_inputs(self, labels, scores) -> tuple:
        """(predictions, references) for `evaluate` metrics."""
        return scores.argmax(-1), labels

    def rows(self, texts, labels, scores, names: list[str]) -> list[dict]:
        """eval_predictions.jsonl: each validation example with its label, prediction and score."""
        out = []
        for text, y, row in zip(texts, labels, scores):
            pred = int(row.argmax())
            out.append({"text": text[:2000], "label": names[int(y)], "prediction": names[pred],
                        "score": round(float(row[pred]), 6)})
        return out

    def wrong(self, row: dict) -> bool:
        """Whether an eval_predictions row is a mistake (the UI lists them)."""
        return row.get("label") != row.get("prediction")

    def output(self, row, names: list[str], top_k: int | None = None) -> dict[str, float]:
        """One prediction as people read it: {label: probability}, best first (top_k of them)."""
        pairs = sorted(zip(names, map(float, row)), key=lambda p: -p[1])
        return dict(pairs[:top_k] if top_k else pairs)

    def file_columns(self, scores, names: list[str]) -> dict[str, list]:
        """The columns a predicted file gets: predicted_label and score (None for rows without text)."""
        best = [None if r is None else int(r.argmax()) for r in scores]
        return {"predicted_label": [None if b is None else names[b] for b in best],
                "score": [None if b is None else round(float(r[b]), 6) for b, r in zip(best, scores)]}

    def predicted(self, output: dict) -> dict:
        """What a prediction says, for --json and the REST API: the label and the scores."""
        return {"label": next(iter(output)), "scores": output}

    def cli_text(self, output: dict, top_k: int) -> str:
        return "  ".join(f"{label} {p:.4f}" for label, p in list(output.items())[:top_k])
