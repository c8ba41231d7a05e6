"""What a run's head (engine/tasks/heads) means for the web app: the one place the UI tells single-label,
multi-label and regression apart.

A finished run says its head in metrics.json's `problem_type` (a running one in status.json; older runs have none:
single-label); a loaded model has `lm.head`. Everything shown per head is looked up here: the headline metrics, the
curves, the per-label table, the mistakes list and its figure (confusion matrix or predicted-vs-true scatter), and
the words of a prediction. No torch; gradio only for the prediction label component.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import gradio as gr
import pandas as pd
from gradio.components.label import LabelConfidence, LabelData

from engine.rundir import RunDir, read_json

SINGLE = "single_label_classification"


@dataclass(frozen=True)
class HeadView:
    """How the run view shows one head's results."""

    headline: tuple  # (metrics key, title) in the order the metrics table lists them
    curves: tuple  # (eval metric key, legend) drawn in the validation-metric chart
    curve_range: tuple | None  # the chart's y range (None: fitted to the values)
    curve_format: str  # percent | plain
    figure: str  # confusion | scatter | '' (none): the picture of the validation predictions
    mistakes: str  # the mistakes table's title
    mistake_columns: tuple  # its columns, short ones first
    per_class: bool  # whether a per-label table exists (precision, recall, F1, support)
    thresholds: bool  # whether each label has its own tuned threshold
    # what the finished run's values have that the evaluations during training lack (multi-label: thresholds tuned
    # after training); the curves are then labelled with `untuned` and the finished value is drawn and marked apart
    tuned: str = ""
    untuned: str = ""
    # the mistakes table's column widths: a regression run's numbers need more room than a label and a score
    mistake_widths: tuple = ("19%", "19%", "9%", "53%")

    @property
    def curve_title(self) -> str:
        return "validation " + " and ".join(legend for _, legend in self.curves)

    def curve_legend(self, legend: str) -> str:
        """A curve's legend: the metric, and at what settings its evaluations ran when the final value differs."""
        return f"{legend} {self.untuned}" if self.untuned else legend


_CLASSIFICATION = ("misclassified validation examples", ("label", "prediction", "score", "text"))
VIEWS = {
    SINGLE: HeadView(
        headline=(("accuracy", "accuracy"), ("f1", "macro F1"), ("precision", "macro precision"),
                  ("recall", "macro recall")),
        curves=(("accuracy", "accuracy"), ("f1", "macro F1")), curve_range=(0, 1), curve_format="percent",
        figure="confusion", mistakes=_CLASSIFICATION[0], mistake_columns=_CLASSIFICATION[1], per_class=True,
        thresholds=False),
    "multi_label_classification": HeadView(
        headline=(("f1_micro", "micro F1"), ("f1", "macro F1"), ("precision_micro", "micro precision"),
                  ("recall_micro", "micro recall"), ("precision", "macro precision"), ("recall", "macro recall"),
                  ("subset_accuracy", "subset accuracy (every label right)"), ("hamming_loss", "Hamming loss")),
        curves=(("f1_micro", "micro F1"), ("f1", "macro F1")), curve_range=(0, 1), curve_format="percent",
        figure="", mistakes="validation examples with a wrong label set",
        mistake_columns=("label", "prediction", "score", "text"), per_class=True, thresholds=True,
        tuned="tuned thresholds", untuned="at 0.5 thresholds"),
    "regression": HeadView(
        headline=(("r2", "R²"), ("rmse", "RMSE"), ("mae", "MAE"), ("mse", "MSE"), ("pearson", "Pearson r"),
                  ("spearman", "Spearman rho")),
        curves=(("r2", "R²"), ("rmse", "RMSE")), curve_range=None, curve_format="plain", figure="scatter",
        mistakes="largest errors", mistake_columns=("label", "prediction", "error", "text"), per_class=False,
        mistake_widths=("13%", "13%", "13%", "61%"),
        thresholds=False),
}


def problem_type(record: dict | None) -> str:
    """The head named in metrics.json or status.json (single-label when it names none or an unknown one)."""
    name = (record or {}).get("problem_type")
    return name if name in VIEWS else SINGLE


def run_problem_type(run_dir: Path | None) -> str:
    """A run's head: metrics.json once finished, else status.json (written at the start of training)."""
    if run_dir is None:
        return SINGLE
    run = RunDir(run_dir)
    return problem_type(read_json(run.metrics, {}) or read_json(run.status, {}))


def view(problem: str | dict | None) -> HeadView:
    """The HeadView of a problem_type, or of a metrics.json / status.json dict."""
    return VIEWS[problem if isinstance(problem, str) and problem in VIEWS else problem_type(
        problem if isinstance(problem, dict) else None)]


def headline_text(metrics: dict | None, validation: dict | None = None, count: int = 2) -> str:
    """'accuracy 0.912' / 'micro F1 0.527 · macro F1 0.501' / 'R² 0.012 · RMSE 1.95': the head's first metrics
    (values from `validation`, else metrics.json's own top level); '' when none is there."""
    metrics = metrics or {}
    values = validation if validation is not None else metrics.get("validation") or metrics
    parts = [f"{title} {values[key]:.3f}" for key, title in view(metrics).headline[:count]
             if isinstance(values.get(key), (int, float))]
    return " · ".join(parts)


def tuned_note(metrics: dict | None) -> str:
    """' (tuned thresholds)' where a finished run's values differ from its evaluations during training (what its
    curves show), else ''."""
    tuned = view(metrics or {}).tuned
    return f" ({tuned})" if tuned else ""


def per_class_table(validation: dict, v: HeadView) -> pd.DataFrame:
    """Per label: precision, recall, F1, support (and the tuned threshold for multi-label)."""
    columns = ["label", "precision", "recall", "f1", "support"] + (["threshold"] if v.thresholds else [])
    thresholds = validation.get("thresholds") or {}
    rows = [[k, r.get("precision"), r.get("recall"), r.get("f1-score"), r.get("support"),
             *([thresholds.get(k)] if v.thresholds else [])]
            for k, r in (validation.get("per_class") or {}).items()] if v.per_class else []
    return pd.DataFrame(rows, columns=columns).round(4)


def metric_style(problem_types, metrics) -> str:
    """The tick style of a chart of several runs' validation metrics: their head's (percent for accuracy and F1)
    when every run has the same head and each metric drawn is one of that head's curves, else plain."""
    kinds = {view(p) for p in problem_types}
    v = next(iter(kinds)) if len(kinds) == 1 else None
    return v.curve_format if v is not None and set(metrics) <= {key for key, _ in v.curves} else "plain"


PER_LABEL = (("f1-score", "F1"), ("precision", "precision"), ("recall", "recall"))


def side_by_side(metrics_by_run: dict[str, dict]) -> pd.DataFrame:
    """Finished runs' validation results next to each other: for runs of one classification head, a row per class
    (single-label) or label (multi-label) with each run's F1, precision and recall (and tuned thresholds), a
    metric's columns together; for regression, or runs of different heads, a row per headline metric."""
    views = {name: view(m) for name, m in metrics_by_run.items()}
    values = {name: (m.get("validation") or {}) for name, m in metrics_by_run.items()}
    kinds = set(views.values())
    if len(kinds) == 1 and (v := next(iter(kinds))).per_class:
        labels = list(dict.fromkeys(k for val in values.values() for k in (val.get("per_class") or {})))
        columns = [(f"{title} · {name}", name, key) for key, title in PER_LABEL for name in values]
        if v.thresholds:
            columns += [(f"threshold · {name}", name, "threshold") for name in values]

        def cell(name, label, key):
            if key == "threshold":
                return (values[name].get("thresholds") or {}).get(label)
            return ((values[name].get("per_class") or {}).get(label) or {}).get(key)

        rows = [[label, *(cell(name, label, key) for _, name, key in columns)] for label in labels]
        return pd.DataFrame(rows, columns=["label", *(c[0] for c in columns)]).round(4)
    headline = list(dict.fromkeys(pair for hv in views.values() for pair in hv.headline))
    rows = [[title, *(values[name].get(key) for name in values)] for key, title in headline
            if any(isinstance(values[name].get(key), (int, float)) for name in values)]
    return pd.DataFrame(rows, columns=["metric", *values]).round(4)


def _clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[:width - 1].rstrip() + "…"


def _label_set(value) -> frozenset:
    return frozenset(p.strip() for p in str(value).split(",") if p.strip() and p.strip() != "(none)")


def mistakes(run_dir: Path, v: HeadView, limit: int = 500) -> tuple[pd.DataFrame, int]:
    """(validation examples the model got wrong, worst first; how many were evaluated). Classification: most
    confident first, label sets compared for multi-label; regression: every example, largest |error| first."""
    wrong, total = [], 0
    try:
        for line in RunDir(run_dir).predictions.read_text(encoding="utf-8").splitlines():
            row = json.loads(line)
            total += 1
            same = (_label_set(row["label"]) == _label_set(row["prediction"]) if v.thresholds else
                    row["label"] == row["prediction"])
            if "error" in v.mistake_columns:  # 4 significant digits: a cell holds the number on one line
                wrong.append([float(f"{row['label']:.4g}"), float(f"{row['prediction']:.4g}"),
                              float(f"{row['error']:.4g}"), _clip(row["text"], 240)])
            elif not same:
                wrong.append([row["label"], row["prediction"], round(row["score"], 3), _clip(row["text"], 240)])
    except (OSError, json.JSONDecodeError, KeyError, TypeError):
        pass
    wrong.sort(key=lambda r: -abs(r[2]))
    return pd.DataFrame(wrong[:limit], columns=list(v.mistake_columns)), total


CONFUSION_CACHE = "plots/confusion_matrix-v2.png"  # -v2: drawn by the class-count-aware plot, not older caches
SCATTER_CACHE = "plots/predictions_scatter.png"


def figure_png(run_dir: Path, v: HeadView | None = None) -> str | None:
    """The picture of a finished run's validation predictions (confusion matrix, or predicted vs true for
    regression), drawn once and cached in the run directory."""
    from engine.hub import plots

    v = v or view(run_problem_type(run_dir))
    if not v.figure:  # multi-label: no one confusion matrix; the per-label table says it
        return None
    cached = Path(run_dir) / (SCATTER_CACHE if v.figure == "scatter" else CONFUSION_CACHE)
    metrics = RunDir(run_dir).metrics
    if cached.exists() and metrics.exists() and cached.stat().st_mtime >= metrics.stat().st_mtime:
        return str(cached)
    try:
        if v.figure == "scatter":
            return str(plots.scatter_png(run_dir, cached.parent, cached.name))
        return str(plots.confusion_matrix_png(run_dir, cached.parent, cached.name))
    except (FileNotFoundError, ValueError, KeyError):
        return None


# ------------------------------------------------------------------------------------------------------------
# predictions: what `head.predicted(output)` says, in words and for the Label component


def prediction_label(**kwargs) -> gr.Label:
    """A gr.Label that also takes {"label": headline, "confidences": {label: p} or None}: the headline need not
    be the top score (multi-label: every label over its threshold; regression: the number). Patched on the instance,
    not subclassed: gradio writes a .pyi beside any module that defines a component class."""
    label = gr.Label(**kwargs)
    plain = label.postprocess

    def postprocess(value):
        if isinstance(value, dict) and "label" in value and isinstance(value.get("confidences"), (dict, type(None))):
            pairs = sorted((value.get("confidences") or {}).items(), key=lambda p: -p[1])
            return LabelData(label=str(value["label"]), confidences=[LabelConfidence(label=k, confidence=c)
                                                                     for k, c in pairs] or None)
        return plain(value)

    label.postprocess = postprocess
    return label


def _number(x: float) -> str:
    return f"{x:.4g}" if abs(x) < 1e4 else f"{x:,.0f}"


def prediction(head, output: dict) -> tuple[object, str]:
    """(the Label component's value, one Markdown line) for a model output: single-label keeps the plain
    {label: probability} dict; multi-label names every label over its threshold and keeps all scores;
    regression gives the number beside the label range seen in training."""
    picked = head.predicted(output)
    if "labels" in picked:
        names = ", ".join(picked["labels"]) or "(none over its threshold)"
        return ({"label": names, "confidences": dict(output)},
                f"**Predicted labels: {names}** (each label over its own tuned threshold; the scores are "
                "independent probabilities)")
    if "prediction" in picked:
        value, (name, _) = float(picked["prediction"]), next(iter(output.items()))
        span = getattr(head, "label_range", None)
        seen = f"training range {_number(span[0])} to {_number(span[1])}" if span else "training range unknown"
        return ({"label": f"{_number(value)}  ({seen})", "confidences": None},
                f"**Predicted {name}: {_number(value)}** ({seen})")
    return output, ""


def decision(head, output: dict):
    """What two models' outputs are compared by: the label, the label set, or the number."""
    picked = head.predicted(output)
    if "labels" in picked:
        return tuple(sorted(picked["labels"]))
    if "prediction" in picked:
        return round(float(picked["prediction"]), 2)
    return picked["label"]


def describe(config: dict) -> str:
    """The head of a saved model's config.json in a few words (the Prediction tab's model info)."""
    from engine.tasks.heads import for_config

    head = for_config(config)
    names = [str(config.get("id2label", {})[k]) for k in sorted(config.get("id2label") or {}, key=int)]
    if head.problem_type == "regression":
        span = head.label_range
        return (f"regression of `{names[0] if names else 'value'}`" +
                (f" (training range {_number(span[0])} to {_number(span[1])})" if span else ""))
    shown = f"{', '.join(names[:12])}{' …' if len(names) > 12 else ''}"
    if head.problem_type == "multi_label_classification":
        return f"multi-label ({len(names)} labels, each with its own threshold): {shown}"
    return shown
