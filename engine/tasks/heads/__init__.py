"""Heads: what a model's outputs mean, whatever its input — the labels' encoding, the loss, the scores, the
metrics, the best-model metric and the predictions people read. The name is transformers' `config.problem_type`,
saved with the model, so a saved model comes back with its head (and `transformers.pipeline` agrees).

    single_label_classification   one class per example: softmax, cross-entropy, accuracy / macro F1
    multi_label_classification    any labels per example: sigmoid per label, BCE, tuned thresholds, micro F1
    regression                    a number per example: identity, MSE, R² / RMSE / MAE / Pearson / Spearman

A head is an object per run (it carries class weights, thresholds or the label range); none imports torch at
import time. Heads sit with the core (config's checks name every head's metrics): they import only
engine.errors and engine.metrics.
"""

from __future__ import annotations

from engine.tasks.heads.multi_label import MultiLabel, _is_list_feature
from engine.tasks.heads.regression import Regression
from engine.tasks.heads.single_label import SingleLabel

HEADS = {h.problem_type: h for h in (SingleLabel, MultiLabel, Regression)}
PROBLEM_TYPES = ("auto", *HEADS)
SINGLE_LABEL = SingleLabel()


def for_data(cfg, train):
    """The head a run's config and standardized training split call for: problem_type when set, else multi-label
    for a column of lists (or with label_separator), regression for decimal numbers, else single-label."""
    problem = getattr(cfg, "problem_type", "auto") or "auto"
    if problem != "auto":
        return HEADS[problem]()
    if _is_list_feature(train.features["label"]) or getattr(cfg, "label_separator", None):
        return MultiLabel()
    if str(getattr(train.features["label"], "dtype", "")).startswith("float"):
        values = [v for v in train["label"] if v is not None]
        if any(v == v and not float(v).is_integer() for v in values):
            return Regression()
    return SingleLabel()


def for_config(config):
    """The head of a saved model (its config's problem_type, single-label when it has none), with the thresholds
    or label range saved beside it."""
    get = config.get if isinstance(config, dict) else (lambda k, d=None: getattr(config, k, d))
    problem = get("problem_type") or SingleLabel.problem_type
    if problem == MultiLabel.problem_type:
        id2label = get("id2label") or {}
        names = [id2label[k] for k in sorted(id2label, key=int)]
        saved = get("thresholds") or {}
        return MultiLabel([float(saved.get(n, 0.5)) for n in names] if saved else None, names)
    if problem == Regression.problem_type:
        return Regression(get("label_range"))
    return SingleLabel()
