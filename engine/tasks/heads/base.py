"""What every head shares: the metric that picks the best model, weights for imbalanced labels, and the checks of
a run's settings against the head its data called for."""

from __future__ import annotations

from engine.errors import ConfigError, DataError, PredictError

# metrics where lower is better (all others: higher is better)
LOWER_IS_BETTER = ("loss", "mse", "rmse", "mae", "hamming_loss")


class Head:
    problem_type = ""
    stratify = False
    default_metric = "loss"
    metrics_names: tuple = ("loss",)  # the flat numbers metrics.json repeats at its top level
    headline: tuple = ()  # what status.json and the done event carry
    card_metrics: tuple = ()  # metrics.json key -> model card name, in the order a card shows them
    weighted = False  # whether class_weights apply
    weight_unit = "class"  # what class_weights gives one number per, in messages

    def metric(self, cfg) -> str:
        """The run's metric_for_best_model ('auto': this head's default)."""
        name = (cfg.metric_for_best_model or "auto").removeprefix("eval_")
        return self.default_metric if name == "auto" else name

    @staticmethod
    def greater_is_better(metric: str) -> bool:
        return metric not in LOWER_IS_BETTER

    def check(self, cfg) -> None:
        """Refuse settings this head cannot honour, each naming the field and the choices."""
        problems = []
        metric = self.metric(cfg)
        if metric not in self.metrics_names:
            problems.append(f"metric_for_best_model: '{metric}' is not a {self.problem_type} metric; use auto or one "
                            f"of {', '.join(self.metrics_names)}")
        if not self.weighted and str(cfg.class_weights or "none") != "none":
            problems.append(f"class_weights: only classification weighs its labels; a {self.problem_type} run "
                            "takes class_weights: none")
        if problems:
            raise ConfigError(problems)

    def check_weights(self, cfg, names: list[str]) -> None:
        """Refuse class_weights that do not fit the labels (a list of the wrong length) once the labels are known."""
        if self.weighted:
            parse_weights(cfg, names, self.weight_unit)

    def weights(self, cfg, train_labels, names: list[str]) -> list[float] | None:
        """class_weights resolved to one number per label (None: unweighted)."""
        return None

    def loss_fn(self, cfg, train_labels, names: list[str], device):
        """A training loss (logits, labels) -> scalar to use instead of the model's own, or None."""
        return None

    def tuned(self, labels, scores, names: list[str]):
        """The head after training, with whatever it sets from the validation outputs (multi-label: thresholds)."""
        return self

    def saved_settings(self) -> dict:
        """Extra model-config attributes this head saves with the model (thresholds, label range)."""
        return {}

    def close_calls(self, logits, margin: float):
        """Rows where bf16 or int8 rounding could change the prediction (re-checked in fp32); none by default."""
        import torch

        return torch.zeros(0, dtype=torch.long)

    def decisions(self, scores) -> list | None:
        """What each score row decides (a label, a set of labels), to count how often a faster precision agrees
        with fp32; None where outputs are numbers with no decision to flip (regression): 'auto' then never trades
        exactness for speed by measurement (engine/tasks/text_classification/auto_precision.py)."""
        return None

    def data_warnings(self, report: dict, cfg) -> list[str]:
        return []

    # --- explanations (engine/serving/explain.py): what "toward a label" means for this head -----------------------
    def explain_index(self, names: list[str], label: str | None, row) -> int:
        """The output an explanation attributes: `label`'s, else the predicted one (the highest score of `row`)."""
        if label is None or not str(label).strip():
            return max(range(len(row)), key=lambda i: float(row[i]))
        if str(label) not in names:
            raise PredictError(f"explain_label: '{label}' is not a label of this model ({', '.join(names[:20])}); "
                               "pick one of them, or none for the predicted label")
        return names.index(str(label))

    def explained(self, logits, index: int):
        """The number per row that the attributions add up to (its change from the baseline): the label's logit,
        which for a sigmoid is the log-odds of its score."""
        return logits.float()[:, index]

    def explain_meaning(self, name: str) -> str:
        """What a positive attribution pushes the output toward, in words."""
        return f"toward '{name}' (its logit: the log-odds of its score)"


def parse_weights(cfg, names: list[str], what: str = "class") -> list[float] | str:
    """class_weights as 'none', 'balanced' or one positive number per label (in label order)."""
    value = cfg.class_weights
    if value in (None, "", "none", "balanced"):
        return value or "none"
    items = value if isinstance(value, (list, tuple)) else str(value).strip("[] ").split(",")
    try:
        weights = [float(v) for v in items]
    except (TypeError, ValueError):
        raise ConfigError(f"class_weights: '{value}' is not none, balanced or a list of numbers") from None
    if len(weights) != len(names):
        plural = "classes" if what == "class" else f"{what}s"
        raise ConfigError(f"class_weights: {len(weights)} weights for {len(names)} {plural} "
                          f"({', '.join(names[:10])}); give one per {what}, in that order")
    if any(not w > 0 for w in weights):
        raise ConfigError("class_weights: every weight must be a positive number")
    return weights


def refuse_unseen(seen: set, names: list[str], field: str) -> None:
    """A validation or test split may only hold labels the training split has."""
    unknown = sorted(seen - set(names))
    if unknown:
        raise DataError(f"label_column: {field} has labels not seen in training: {', '.join(unknown[:5])}; every "
                        "label needs training examples")
