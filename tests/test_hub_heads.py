"""Multi-label and regression runs on the Hub: tiny real runs (MEDLINE MeSH headings, VADER movie ratings; the
session's tests/_head_runs.py) pushed to the local Hub-protocol server; their cards, the pictures they link, and the
models pulled back."""

from __future__ import annotations

import json
import re

import pytest
import yaml
from conftest import train_args  # noqa: F401 - at import: conftest sets HF_HUB_OFFLINE=1, the hub fixture undoes it

from _head_runs import head_runs  # noqa: F401 - the runs, shared with tests/test_browser_heads.py
from hub_fixtures import hub  # noqa: F401


@pytest.fixture(scope="module")
def mesh_run(head_runs):  # noqa: F811
    """Multi-label: MEDLINE abstracts with their 6 most frequent MeSH headings (a list per row), balanced weights."""
    return head_runs / "mesh"


@pytest.fixture(scope="module")
def vader_run(head_runs):  # noqa: F811
    """Regression: VADER movie snippets with their mean human rating (-4 .. 4)."""
    return head_runs / "vader"


def _card_yaml(readme: str) -> dict:
    return yaml.safe_load(readme.split("---\n")[1])


def _model_index(meta: dict) -> dict[str, tuple[str, float]]:
    metrics = meta["model-index"][0]["results"][0]["metrics"]
    return {m["type"]: (m["name"], m["value"]) for m in metrics}


def _texts(run, n=16):
    return [json.loads(line)["text"] for line in (run / "eval_predictions.jsonl").read_text().splitlines()[:n]]


def _usage(readme: str) -> str:
    usage = readme[readme.index("## Usage"):]
    return re.search(r"```python\n(.*?)```", usage, re.S).group(1)


def _push_and_pull(run, repo, tmp_path):
    from engine.hub.client import pull
    from engine.hub.push import push_run

    push_run(run, repo)
    return pull(repo, cache_dir=tmp_path / "cache")


def _same_model_files(run, local):
    for name in ("model.safetensors", "config.json"):
        assert (local / name).read_bytes() == (run / "model" / name).read_bytes()


def test_multi_label_card_push_and_pull(mesh_run, hub, tmp_path):  # noqa: F811
    import numpy as np
    from transformers import pipeline

    from engine.serving.predictor import Predictor
    from engine.tasks.heads import for_config

    run = mesh_run
    metrics = json.loads((run / "metrics.json").read_text())
    val = metrics["validation"]
    assert metrics["problem_type"] == "multi_label_classification" and "confusion_matrix" not in val
    local = _push_and_pull(run, "alice/mesh", tmp_path)
    pushed = hub.files("model", "alice/mesh")
    assert "confusion_matrix.png" not in pushed and "predictions_scatter.png" not in pushed
    assert pushed["loss_curve.png"][:8] == b"\x89PNG\r\n\x1a\n"
    readme = pushed["README.md"].decode()
    for image in re.findall(r"!\[[^]]*\]\(([^)]+)\)", readme):
        assert image in pushed  # every picture the card links is in the repo

    meta = _card_yaml(readme)
    index = _model_index(meta)
    assert list(index) == ["f1_micro", "f1", "subset_accuracy", "hamming_loss", "precision_micro", "recall_micro"]
    assert index["f1_micro"] == ("F1 (micro)", round(val["f1_micro"], 4))
    assert index["hamming_loss"] == ("Hamming loss", round(val["hamming_loss"], 4))
    assert index["subset_accuracy"][0] == "Subset accuracy" and "accuracy" not in index
    assert meta["metrics"] == list(index)
    # the per-label table: every label with the threshold saved in config.json
    saved = json.loads((run / "model" / "config.json").read_text())["thresholds"]
    assert saved == val["thresholds"] and set(saved) == set(val["labels"])
    assert "## Per-label report" in readme and "| label | threshold | precision | recall | f1 | support |" in readme
    for label, t in saved.items():
        assert re.search(rf"\| {re.escape(label)} \| {t:.2f} \| [\d.]+ \| [\d.]+ \| [\d.]+ \| \d+ \|", readme)
    # class weights: the setting and each label's resolved pos_weight
    assert "Class weights: `balanced` (BCE `pos_weight` per label, from the training split's counts):" in readme
    assert "A multi-label text classifier fine-tuned from" in readme
    for label, w in metrics["class_weights"].items():
        assert f"| {label} | {float(w):.4g} |" in readme
    assert "| class_weights | `balanced` |" in readme
    assert "| step | validation loss | micro F1 | macro F1 |" in readme
    assert "Confusion matrix" not in readme and "## Per-class report" not in readme

    # pulled back: same files, same head, same scores as the run's own model
    _same_model_files(run, local)
    head = for_config(json.loads((local / "config.json").read_text()))
    assert head.problem_type == "multi_label_classification" and dict(zip(head.names, head.thresholds)) == saved
    texts = _texts(run)
    predictor = Predictor(precision="fp32")
    ours = predictor.predict(str(run / "model"), texts, max_length=64)
    theirs = predictor.predict("alice/mesh", texts, max_length=64)
    assert theirs == ours
    assert predictor.load("alice/mesh").head.thresholds == head.thresholds
    # transformers' own pipeline: a sigmoid per label, equal to the run's scores
    pipe = pipeline("text-classification", model=str(local), top_k=None, truncation=True, max_length=64)
    for text, row in zip(texts[:4], ours[:4]):
        (result,) = pipe(text)  # top_k=None: one list of every label per text
        got = {d["label"]: d["score"] for d in result}
        assert set(got) == set(row)
        assert np.allclose([got[k] for k in row], list(row.values()), atol=1e-4)
    # the card's usage snippet itself, pointed at the pulled copy
    code = _usage(readme).replace('"alice/mesh"', repr(str(local)))
    scope: dict = {}
    exec(compile(code, "usage", "exec"), scope)  # noqa: S102 - the card's own code
    picked = [s["label"] for s in scope["scores"] if s["score"] >= saved[s["label"]]]
    assert scope["labels"] == picked and len(scope["scores"]) == len(saved)
    assert all(0 <= s["score"] <= 1 for s in scope["scores"])


def test_regression_card_push_and_pull(vader_run, hub, tmp_path):  # noqa: F811
    from transformers import pipeline

    from engine.serving.predictor import Predictor
    from engine.tasks.heads import for_config

    run = vader_run
    metrics = json.loads((run / "metrics.json").read_text())
    val = metrics["validation"]
    assert metrics["problem_type"] == "regression"
    local = _push_and_pull(run, "alice/vader", tmp_path)
    pushed = hub.files("model", "alice/vader")
    assert pushed["predictions_scatter.png"][:8] == b"\x89PNG\r\n\x1a\n"
    assert "confusion_matrix.png" not in pushed
    readme = pushed["README.md"].decode()
    images = re.findall(r"!\[[^]]*\]\(([^)]+)\)", readme)
    assert "predictions_scatter.png" in images and all(i in pushed for i in images)
    assert "Confusion matrix" not in readme and "Per-class" not in readme

    index = _model_index(_card_yaml(readme))
    assert list(index) == ["r2", "rmse", "mae", "mse", "pearson", "spearman"]
    assert index["r2"] == ("R²", round(val["r2"], 4)) and index["rmse"] == ("RMSE", round(val["rmse"], 4))
    assert index["pearson"][0] == "Pearson r" and index["spearman"][0] == "Spearman rho"
    assert "| step | validation loss | R² | RMSE |" in readme
    low, high = json.loads((run / "model" / "config.json").read_text())["label_range"]
    assert -4 <= low < high <= 4
    assert "A text regression model fine-tuned from" in readme
    assert f"it predicts one number, `rating`; training labels ranged from {low:g} to {high:g}" in readme
    assert "Class weights" not in readme

    _same_model_files(run, local)
    head = for_config(json.loads((local / "config.json").read_text()))
    assert head.problem_type == "regression" and head.label_range == [low, high]
    texts = _texts(run)
    predictor = Predictor(precision="fp32")
    ours = predictor.predict(str(run / "model"), texts, max_length=64)
    assert predictor.predict("alice/vader", texts, max_length=64) == ours
    assert predictor.load("alice/vader").head.label_range == [low, high]
    # the run's validation predictions (written by training) agree with the pulled model
    rows = [json.loads(line) for line in (run / "eval_predictions.jsonl").read_text().splitlines()[:len(texts)]]
    assert [round(o["rating"], 3) for o in ours] == pytest.approx([round(r["prediction"], 3) for r in rows],
                                                                    abs=2e-3)
    # transformers' pipeline: the score is the raw predicted number (no function applied for regression)
    pipe = pipeline("text-classification", model=str(local), truncation=True, max_length=64)
    for text, out in zip(texts[:4], ours[:4]):
        (got,) = pipe(text)
        assert got["label"] == "rating" and got["score"] == pytest.approx(out["rating"], abs=1e-4)
    code = _usage(readme).replace('"alice/vader"', repr(str(local)))
    scope: dict = {}
    exec(compile(code, "usage", "exec"), scope)  # noqa: S102 - the card's own code
    text = "Shares rose after the company reported record profits."
    (expected,) = predictor.predict(str(run / "model"), [text], max_length=64)
    assert scope["prediction"] == pytest.approx(expected["rating"], abs=1e-4)
