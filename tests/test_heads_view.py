"""ui/heads_view.py: the web app's one lookup of what a run's head shows, on run folders written in the shapes
engine/tasks/heads writes (metrics.json, eval_predictions.jsonl), and on the heads' own prediction outputs."""

import json

import pytest

from engine.tasks.heads import for_config
from test_browser_heads import head_runs  # noqa: F401 - the real regression and multi-label runs
from ui import heads_view, run_view


def _run(tmp_path, problem, validation, rows):
    (tmp_path / "metrics.json").write_text(json.dumps({"problem_type": problem, "validation": validation,
                                                       "best_step": 6, "steps": 6, **validation}))
    (tmp_path / "eval_predictions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return tmp_path


REGRESSION = {"r2": 0.41, "rmse": 1.2, "mae": 0.9, "mse": 1.44, "pearson": 0.7, "spearman": 0.68, "loss": 1.44,
              "num_samples": 3, "labels": ["rating"]}
MULTI = {"f1_micro": 0.6, "f1": 0.5, "precision_micro": 0.7, "recall_micro": 0.5, "precision": 0.6, "recall": 0.4,
         "subset_accuracy": 0.3, "hamming_loss": 0.2, "loss": 0.5, "num_samples": 3, "labels": ["a", "b"],
         "thresholds": {"a": 0.35, "b": 0.6},
         "per_class": {"a": {"precision": 0.5, "recall": 1.0, "f1-score": 0.667, "support": 2},
                       "b": {"precision": 1.0, "recall": 0.5, "f1-score": 0.667, "support": 2}}}


def test_regression_run_shows_its_metrics_and_largest_errors(tmp_path):
    rows = [{"text": "fine", "label": 1.0, "prediction": 1.5, "error": 0.5},
            {"text": "awful", "label": -3.0, "prediction": 0.0, "error": 3.0},
            {"text": "great", "label": 3.0, "prediction": 1.0, "error": -2.0}]
    run = _run(tmp_path, "regression", REGRESSION, rows)
    res = run_view.results(run)
    table = dict(zip(res["headline"]["metric"], res["headline"]["value"]))
    assert table["R²"] == "0.4100" and table["RMSE"] == "1.2000" and "accuracy" not in table
    assert list(res["misclassified"].columns) == ["label", "prediction", "error", "text"]
    assert res["misclassified"]["text"].tolist() == ["awful", "great", "fine"]  # largest |error| first
    assert res["per_class"].empty and res["view"].figure == "scatter" and res["warning"] is None
    assert heads_view.headline_text(json.loads((run / "metrics.json").read_text())) == "R² 0.410 · RMSE 1.200"
    png = run_view.confusion_png(run)
    assert png.endswith("predictions_scatter.png") and run_view.confusion_png(run) == png  # drawn once, cached
    assert [s["label"] for s in run_view.curve_series(run)["metrics"]] == ["R²", "RMSE"]


def test_multi_label_run_compares_label_sets_and_lists_thresholds(tmp_path):
    rows = [{"text": "x", "label": "a, b", "prediction": "b, a", "score": 0.9},  # the same set: right
            {"text": "y", "label": "a", "prediction": "(none)", "score": 0.3},
            {"text": "z", "label": "(none)", "prediction": "b", "score": 0.8}]
    run = _run(tmp_path, "multi_label_classification", MULTI, rows)
    res = run_view.results(run)
    assert res["misclassified"]["text"].tolist() == ["z", "y"] and res["total"] == 3
    assert list(res["per_class"].columns) == ["label", "precision", "recall", "f1", "support", "threshold"]
    assert res["per_class"]["threshold"].tolist() == [0.35, 0.6]
    assert res["headline"]["metric"].tolist()[:2] == ["micro F1", "macro F1"]
    assert run_view.confusion_png(run) is None  # no confusion matrix for label sets
    assert "micro F1" in run_view.progress_html({"state": "done", "name": "m", "dir": str(run), "step": 6,
                                                 "total_steps": 6})


def test_old_runs_without_problem_type_are_single_label(tmp_path):
    (tmp_path / "metrics.json").write_text(json.dumps({"validation": {"accuracy": 0.9}}))
    assert heads_view.run_problem_type(tmp_path) == heads_view.SINGLE
    assert heads_view.headline_text({"validation": {"accuracy": 0.9}}, count=1) == "accuracy 0.900"
    assert heads_view.run_problem_type(None) == heads_view.SINGLE


def test_prediction_words_per_head():
    single = for_config({"id2label": {"0": "ham", "1": "spam"}})
    probs = {"spam": 0.8, "ham": 0.2}
    assert heads_view.prediction(single, probs) == (probs, "")  # single-label output unchanged

    multi = for_config({"problem_type": "multi_label_classification", "id2label": {"0": "a", "1": "b", "2": "c"},
                        "thresholds": {"a": 0.3, "b": 0.6, "c": 0.5}})
    value, line = heads_view.prediction(multi, {"b": 0.55, "a": 0.4, "c": 0.1})
    assert value == {"label": "a", "confidences": {"b": 0.55, "a": 0.4, "c": 0.1}}  # b is under its 0.6
    assert "Predicted labels: a" in line
    assert heads_view.decision(multi, {"b": 0.55, "a": 0.4, "c": 0.1}) == ("a",)

    reg = for_config({"problem_type": "regression", "id2label": {"0": "rating"}, "label_range": [-3.5, 3.25]})
    value, line = heads_view.prediction(reg, {"rating": 1.23456})
    assert value == {"label": "1.235  (training range -3.5 to 3.25)", "confidences": None}
    assert line == "**Predicted rating: 1.235** (training range -3.5 to 3.25)"
    assert "training range -3.5 to 3.25" in heads_view.describe({"problem_type": "regression",
                                                                  "id2label": {"0": "rating"},
                                                                  "label_range": [-3.5, 3.25]})


def test_prediction_label_shows_a_headline_that_is_not_the_top_score():
    label = heads_view.prediction_label(num_top_classes=2)
    out = label.postprocess({"label": "a, c", "confidences": {"a": 0.4, "b": 0.3, "c": 0.9}})
    assert out.label == "a, c" and [c.label for c in out.confidences] == ["c", "a", "b"]  # every score
    assert label.postprocess({"x": 0.7, "y": 0.3}).label == "x"  # a plain dict: gr.Label's own behaviour
    assert label.postprocess({"label": "0.5 (training range 0 to 1)", "confidences": None}).confidences is None


@pytest.mark.parametrize("warnings,shown", [
    (["labels are imbalanced: largest class 300 vs smallest 20 examples; watch macro F1, not just accuracy; "
      "consider class_weights: balanced (weighs each class by its rarity)"], True),
    (["labels are imbalanced: largest class 30 vs smallest 20"], False), ([], False)])
def test_hint_under_a_field_shows_only_advice_for_it(warnings, shown):
    from ui.forms import hint_update

    update = hint_update("class_weights", warnings)
    assert update["visible"] is shown and (("class_weights: balanced" in update["value"]) is shown)


def test_latest_values_of_a_multi_label_run_are_written_apart(head_runs):  # noqa: F811
    """The metric chart writes each curve's latest value beside its last point; the real multi-label run's micro
    and macro F1 (and the tuned value) lie close together near the bottom: no two labels may overlap."""
    import itertools

    from matplotlib.backends.backend_agg import FigureCanvasAgg

    chart = run_view.curves(head_runs / "mesh")["metrics"]
    canvas = FigureCanvasAgg(chart)
    canvas.draw()
    renderer = canvas.get_renderer()
    labels = [t for t in chart.axes[0].texts if t.get_text().endswith("%")]
    assert len(labels) >= 2, [t.get_text() for t in chart.axes[0].texts]
    boxes = [t.get_window_extent(renderer) for t in labels]
    overlapping = [(a.get_text(), b.get_text()) for (a, p), (b, q) in itertools.combinations(zip(labels, boxes), 2)
                   if p.overlaps(q)]
    assert overlapping == []
