"""Multi-label, regression and class weights on real data (tests/pip_sets.py): each trained for a few real steps
from the command line, its metrics checked against scikit-learn / scipy, its saved model read back by hubtune's
Predictor and by transformers' own pipeline, and bad settings refused with one line."""

import json
from collections import Counter

import numpy as np
import pandas as pd
import pytest

import pip_sets
from conftest import whole_default_model
from engine.rundir import RunDir
from engine.training.run import main

QUICK = ["--max_seq_length", "48", "--per_device_train_batch_size", "16", "--per_device_eval_batch_size", "64",
         "--learning_rate", "2e-4", "--warmup_steps", "2", "--logging_steps", "4", "--eval_strategy", "steps",
         "--eval_steps", "8", "--save_steps", "100"]


def _rows(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("heads_data")
    # regression: 600 movie snippets with the mean of 20 people's ratings (-4 .. 4)
    pd.DataFrame(pip_sets.vader_movies()).sample(600, random_state=0).to_csv(d / "vader.csv", index=False)
    # multi-label: MEDLINE abstracts with their most frequent MeSH headings, as JSON lists and as "a|b" strings
    mesh = pip_sets.medline_mesh(labels=6)[:600]
    with open(d / "mesh.jsonl", "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in mesh)
    pd.DataFrame({"abstract": [r["text"] for r in mesh], "mesh": ["|".join(r["labels"]) for r in mesh]}).to_csv(
        d / "mesh.csv", index=False)
    # imbalanced single-label: every spam message of the first 1,300 SMS against the ham ones (about 12x)
    sms = pd.DataFrame(pip_sets.sms_spam())
    spam, ham = sms[sms.label == "spam"].head(50), sms[sms.label == "ham"].head(600)
    pd.concat([ham, spam]).sample(frac=1, random_state=0).to_csv(d / "sms.csv", index=False)
    return d


@pytest.fixture(scope="module")
def regression_run(data_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "vader"
    with whole_default_model():  # judged: its predictions must order the snippets by sentiment
        assert main(["--train_file", str(data_dir / "vader.csv"), "--label_column", "rating", "--max_steps", "24",
                     "--output_dir", str(out), *QUICK]) == 0
    return out


@pytest.fixture(scope="module")
def multi_label_run(data_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "mesh"
    with whole_default_model():  # judged: micro-F1 above predicting every label everywhere
        assert main(["--train_file", str(data_dir / "mesh.jsonl"), "--label_column", "labels", "--max_steps", "24",
                     "--class_weights", "balanced", "--output_dir", str(out), *QUICK]) == 0
    return out


def test_regression_trains_on_ratings_and_reports_reference_metrics(regression_run, data_dir):
    from scipy import stats
    from sklearn import metrics as sk

    run = RunDir(regression_run)
    m = json.loads(run.metrics.read_text())
    assert m["problem_type"] == "regression" and m["metric_for_best_model"] == "r2"
    rows = _rows(run.predictions)
    y, p = np.array([r["label"] for r in rows]), np.array([r["prediction"] for r in rows])
    val = m["validation"]
    assert val["num_samples"] == len(rows) == 60
    # eval_predictions rounds to 6 decimals; the metrics were computed on the unrounded outputs
    assert val["mse"] == pytest.approx(sk.mean_squared_error(y, p), abs=1e-4)
    assert val["rmse"] == pytest.approx(np.sqrt(sk.mean_squared_error(y, p)), abs=1e-4)
    assert val["mae"] == pytest.approx(sk.mean_absolute_error(y, p), abs=1e-4)
    assert val["r2"] == pytest.approx(sk.r2_score(y, p), abs=1e-4)
    assert val["pearson"] == pytest.approx(stats.pearsonr(y, p)[0], abs=1e-4)
    assert val["spearman"] == pytest.approx(stats.spearmanr(y, p)[0], abs=1e-4)
    assert val["spearman"] > 0.25, "24 steps order the snippets by sentiment better than chance"
    assert all(r["error"] == pytest.approx(r["prediction"] - r["label"], abs=1e-5) for r in rows)
    status = run.read_status()
    assert status["problem_type"] == "regression" and "r2" in status and "rmse" in status

    train = pd.read_csv(data_dir / "vader.csv")
    config = json.loads((run.model / "config.json").read_text())
    assert config["problem_type"] == "regression" and config["id2label"] == {"0": "rating"}
    lo, hi = config["label_range"]
    assert train.rating.min() <= lo < hi <= train.rating.max()  # the training split's range (90% of the file)


def test_regression_predictions_agree_between_predictor_pipeline_and_file(regression_run, data_dir, tmp_path):
    from transformers import pipeline

    from engine.serving.predictor import Predictor

    texts = ["A gorgeous, moving film with superb acting.", "Dull, tedious and far too long."]
    predictor = Predictor(precision="fp32")
    ours = [predictor.predict_text(str(regression_run), t)["rating"] for t in texts]
    theirs = pipeline("text-classification", model=str(regression_run / "model"))(texts)
    assert [o["label"] for o in theirs] == ["rating", "rating"]
    assert ours == pytest.approx([o["score"] for o in theirs], abs=1e-4)  # the raw number, no squashing
    assert ours[0] > ours[1]
    lm = predictor.load(str(regression_run))
    assert lm.head.predicted({"rating": ours[0]}) == {"prediction": ours[0]}
    assert "training range" in lm.head.cli_text({"rating": ours[0]}, 5)

    src = tmp_path / "few.csv"
    pd.read_csv(data_dir / "vader.csv").head(12).to_csv(src, index=False)
    res = predictor.predict_file(str(regression_run), str(src))
    out = pd.read_csv(res.output)
    assert list(out.columns) == ["text", "rating", "prediction"]  # the true rating kept beside the prediction
    assert out.prediction.notna().all()


def test_multi_label_trains_with_tuned_thresholds_and_reference_metrics(multi_label_run, data_dir):
    from sklearn import metrics as sk

    run = RunDir(multi_label_run)
    m = json.loads(run.metrics.read_text())
    val = m["validation"]
    names = val["labels"]
    assert m["problem_type"] == "multi_label_classification" and m["metric_for_best_model"] == "f1_micro"
    assert names == sorted(["Humans", "Animals", "Male", "Female", "Adult", "Middle Aged"])
    config = json.loads((run.model / "config.json").read_text())
    assert config["problem_type"] == "multi_label_classification"
    assert config["thresholds"] == val["thresholds"] and set(config["thresholds"]) == set(names)
    assert all(0.05 <= t <= 0.95 for t in config["thresholds"].values())

    rows = _rows(run.predictions)
    truth = np.array([[n in r["label"].split(", ") for n in names] for r in rows])
    pred = np.array([[n in r["prediction"].split(", ") for n in names] for r in rows])
    assert val["f1_micro"] == pytest.approx(sk.f1_score(truth, pred, average="micro", zero_division=0), abs=1e-9)
    assert val["f1"] == pytest.approx(sk.f1_score(truth, pred, average="macro", zero_division=0), abs=1e-9)
    assert val["subset_accuracy"] == pytest.approx(sk.accuracy_score(truth, pred), abs=1e-9)
    assert val["hamming_loss"] == pytest.approx(sk.hamming_loss(truth, pred), abs=1e-9)
    report = sk.classification_report(truth, pred, target_names=names, output_dict=True, zero_division=0)
    for n in names:
        assert val["per_class"][n]["support"] == report[n]["support"]
        assert val["per_class"][n]["f1-score"] == pytest.approx(report[n]["f1-score"], abs=1e-6)
    # better than the best constant answer (every label on each example, or the most frequent label set)
    everything = sk.f1_score(truth, np.ones_like(truth), average="micro")
    assert val["f1_micro"] > everything + 0.05, (val["f1_micro"], everything)

    # class_weights: balanced is BCE's pos_weight, negatives / positives per label in the training split
    train_labels = Counter(label for r in _rows(data_dir / "mesh.jsonl") for label in r["labels"])
    weights = m["class_weights"]
    assert weights["Humans"] < 1 < weights["Middle Aged"]  # Humans is on most abstracts, Middle Aged on few
    assert sorted(weights, key=weights.get) == sorted(names, key=lambda n: -train_labels[n])


def test_multi_label_model_serves_sigmoid_scores_and_thresholded_labels(multi_label_run):
    from transformers import pipeline

    from engine.serving.predictor import Predictor

    text = "Serum cholesterol was measured in 120 men and women aged 40 to 65 years attending the clinic."
    predictor = Predictor(precision="fp32")
    ours = predictor.predict_text(str(multi_label_run), text)
    theirs = pipeline("text-classification", model=str(multi_label_run / "model"), top_k=None)([text])[0]
    assert {o["label"]: o["score"] for o in theirs} == pytest.approx(ours, abs=1e-4)
    assert 1.5 < sum(ours.values()) < 5.5  # independent sigmoids: no sum-to-one
    lm = predictor.load(str(multi_label_run))
    said = lm.head.predicted(ours)
    thresholds = json.loads((multi_label_run / "model" / "config.json").read_text())["thresholds"]
    assert said["labels"] == [n for n in ours if ours[n] >= thresholds[n]]
    assert "Humans" in said["labels"]


def test_label_separator_reads_multi_label_strings(data_dir, tmp_path):
    from engine.config import TrainConfig
    from engine.tasks import load_splits

    cfg = TrainConfig.from_dict({"train_file": str(data_dir / "mesh.csv"), "text_column": "abstract",
                                 "label_column": "mesh", "label_separator": "|", "output_dir": str(tmp_path)})
    splits = load_splits(cfg)
    assert splits.head.problem_type == "multi_label_classification" and len(splits.label_names) == 6
    lists = load_splits(TrainConfig.from_dict({"train_file": str(data_dir / "mesh.jsonl"),
                                               "output_dir": str(tmp_path), "label_column": "labels"}))
    assert lists.label_names == splits.label_names
    pd.read_json(data_dir / "mesh.jsonl", lines=True).to_parquet(tmp_path / "mesh.parquet")
    parquet = load_splits(TrainConfig.from_dict({"train_file": str(tmp_path / "mesh.parquet"),
                                                 "output_dir": str(tmp_path), "label_column": "labels"}))
    assert parquet.label_names == splits.label_names and len(parquet.train) == len(lists.train)
    # abstracts without any of the six headings are examples with no labels, not missing data
    assert min(sum(v) for v in splits.train["label"]) == 0


def test_imbalanced_classes_get_a_hint_and_balanced_weights(data_dir, tmp_path):
    from engine.config import TrainConfig
    from engine.training.preflight import preflight

    base = {"train_file": str(data_dir / "sms.csv"), "output_dir": str(tmp_path / "sms"), "max_steps": 1,
            "max_seq_length": 32, "per_device_train_batch_size": 8}
    report = preflight(TrainConfig.from_dict(base), timed_steps=1)
    assert report["label_counts"]["ham"] > 10 * report["label_counts"]["spam"]
    assert any("class_weights: balanced" in w for w in report["warnings"]), report["warnings"]

    out = tmp_path / "weighted"
    assert main(["--train_file", str(data_dir / "sms.csv"), "--class_weights", "balanced", "--max_steps", "6",
                 "--output_dir", str(out), *QUICK]) == 0
    weights = json.loads((out / "metrics.json").read_text())["class_weights"]
    counts = json.loads((out / "status.json").read_text())
    n_train = counts["num_train_samples"]
    # scikit-learn's "balanced": n / (classes x count); spam, the rare class, weighs ~12x ham
    from sklearn.utils.class_weight import compute_class_weight

    from engine.tasks import load_splits

    labels = load_splits(TrainConfig.load(out / "config.yaml")).train["label"]
    assert len(labels) == n_train
    expected = compute_class_weight("balanced", classes=np.array([0, 1]), y=np.array(labels))
    assert [weights["ham"], weights["spam"]] == pytest.approx(list(expected), abs=1e-5)
    assert weights["spam"] > 10 * weights["ham"]
    assert TrainConfig.load(out / "config.yaml").class_weights == "balanced"  # recorded in config.yaml


BAD = [
    ("words as regression labels", ["--problem_type", "regression"], "sms.csv", [],
     "label_column: regression needs numbers"),
    ("class weights for regression", ["--class_weights", "balanced", "--label_column", "rating"], "vader.csv", [],
     "class_weights: only classification weighs"),
    ("a classification metric for regression", ["--metric_for_best_model", "accuracy", "--label_column", "rating"],
     "vader.csv", [], "metric_for_best_model: 'accuracy' is not a regression metric"),
    ("one weight for two classes", ["--class_weights", "3"], "sms.csv", [], "class_weights: 1 weights for 2"),
    ("a weight that is not a number", ["--class_weights", "1,heavy"], "sms.csv", [],
     "class_weights: '1,heavy' is not none, balanced"),
    ("a metric no head has", ["--metric_for_best_model", "bleu"], "sms.csv", [], "metric_for_best_model: unknown"),
    ("multi-label strings without a separator", ["--problem_type", "multi_label_classification",
                                                 "--text_column", "abstract", "--label_column", "mesh"],
     "mesh.csv", [], "set label_separator: '|'"),
    ("two weights for more labels", ["--class_weights", "1,5", "--text_column", "abstract", "--label_column", "mesh",
                                     "--label_separator", "|"], "mesh.csv", [], "class_weights: 2 weights for "),
]


@pytest.mark.parametrize("what,flags,file,_,fragment", BAD, ids=[b[0] for b in BAD])
def test_bad_head_settings_are_one_line_and_exit_2(data_dir, tmp_path, capsys, what, flags, file, _, fragment):
    out = tmp_path / "run"
    code = main(["--train_file", str(data_dir / file), "--output_dir", str(out), "--max_steps", "1", *flags])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2, err
    assert any(fragment in line for line in err), err
    assert not any(" labeles " in line for line in err)
    assert not out.exists(), "refused before a run folder is made"


def test_image_runs_refuse_other_heads(tmp_path, capsys):
    code = main(["--dataset_name", "bundled:digits", "--model_name_or_path", "mlp", "--problem_type", "regression",
                 "--output_dir", str(tmp_path / "digits"), "--max_steps", "1"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err[-1].startswith("hubtune: error: problem_type: image-classification runs are "
                                            "single_label_classification, not regression"), err


def test_onnx_backend_reads_multi_label_and_regression_outputs_like_torch(multi_label_run, regression_run, tmp_path):
    """Both heads exported (engine/serving/export.py) and served by onnxruntime: a sigmoid per label against the saved
    thresholds, the number itself, equal to the torch path on the runs' own validation texts."""
    import shutil

    from engine.serving.export import export
    from engine.serving.predictor import Predictor

    torch_p, onnx_p = Predictor(precision="fp32"), Predictor(backend="onnx")
    for source in (multi_label_run, regression_run):
        run = tmp_path / source.name  # a copy: the module's runs stay as the other tests read them
        shutil.copytree(source, run, ignore=shutil.ignore_patterns("checkpoints", "logs"))
        said = []
        result = export(str(run), samples=48, say=said.append)
        assert result.fp32.max_diff < 1e-4 and len(said) == 2, said
        texts = [r["text"] for r in _rows(run / "eval_predictions.jsonl")]
        ours, theirs = torch_p.predict(str(run), texts), onnx_p.predict(str(run), texts)
        head = torch_p.load(str(run)).head
        for o, t in zip(ours, theirs):
            assert set(o) == set(t) and max(abs(o[k] - t[k]) for k in o) < 1e-4
        if head.problem_type == "multi_label_classification":
            assert result.fp32.agree == 48  # label sets over the tuned thresholds
            assert [set(head.predicted(t)["labels"]) for t in theirs] == [set(head.predicted(o)["labels"])
                                                                          for o in ours]
        else:
            assert result.fp32.agree is None and len(ours[0]) == 1  # a number: no labels to agree on
