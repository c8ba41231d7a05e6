"""The Prediction tab through gradio_client against the launched app, like any Space: predict, file, compare,
the run's own examples, every bad input (each a clear error, the server keeps serving), 20 concurrent
predictions, fast import."""

import json

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError

from _app_fixtures import app_runs_dir, client, launched_app  # noqa: F401 - fixtures
from conftest import ROOT
from engine.data import BUNDLED
from engine.serving.predictor import shared_predictor

LABELS = {"business", "entertainment", "politics", "sports", "tech"}


@pytest.fixture(scope="module")
def model(app_runs_dir):
    return str(app_runs_dir / "tiny")


@pytest.fixture(scope="module")
def bbc():
    return BUNDLED["bundled:bbc_news"][0]()["text"][5::111]  # 20 real articles, all five topics


def _label(value):
    return {c["label"]: c["confidence"] for c in value["confidences"]}


def test_predict_matches_the_engine(client, model, bbc):
    value, note = client.predict(bbc[0], model, "main", api_name="/predict")
    got = _label(value)
    assert set(got) == LABELS and abs(sum(got.values()) - 1) < 1e-4
    expected = shared_predictor().predict_text(model, bbc[0])
    assert value["label"] == next(iter(expected)) and got == pytest.approx(expected, abs=1e-5)
    assert "text truncated" in note and "32 tokens" in note


def test_precision_picked_in_the_tab(client, model, bbc, tmp_path):
    """The Precision picker: int8 and fp32 answer as the engine does in that precision, the note says which ran;
    an unknown precision is one clear error and the server keeps serving."""
    predictor = shared_predictor()
    for precision in ("int8", "fp32"):
        value, note = client.predict(bbc[1], model, "main", precision, api_name="/predict")
        expected = predictor.predict_text(model, bbc[1], precision=precision)
        assert value["label"] == next(iter(expected)) and _label(value) == pytest.approx(expected, abs=1e-5)
        assert note.endswith(", int8 (close calls re-run in fp32)" if precision == "int8" else ", fp32"), note
    _, note = client.predict(bbc[1], model, "main", "auto", api_name="/predict")
    auto = predictor.load(model).auto
    assert f", {auto} (auto: " in note and "of 120 validation texts" in note.replace("on 120", "of 120"), note
    assert note.endswith("; close calls re-run in fp32)" if auto == "int8" else ")"), note
    src = tmp_path / "in.csv"
    pd.DataFrame({"text": bbc}).to_csv(src, index=False)
    out_path, _, _ = client.predict(handle_file(str(src)), model, "main", "", "int8", api_name="/predict_file")
    got = pd.read_csv(out_path)["predicted_label"].tolist()
    assert got == [next(iter(p)) for p in predictor.predict(model, bbc, precision="int8")]
    with pytest.raises(AppError, match="int4"):
        client.predict(bbc[1], model, "main", "int4", api_name="/predict")
    assert client.predict(bbc[1], model, "main", api_name="/predict")[0]["label"] in LABELS


def test_model_list_info_and_empty_state(client, model, tmp_path):
    update, empty = client.predict(model, api_name="/list_models")
    assert [c[1] for c in update["choices"]] == [model] and update["value"] == model
    assert update["choices"][0][0].startswith("tiny · accuracy ") and empty["visible"] is False
    assert client.predict(model, "main", api_name="/model_info").startswith("text-classification: business, ")
    # a path that is not there is a missing folder, as predicting it says; a Hub id is asked of the Hub (offline)
    missing = client.predict(str(ROOT / "runs-that-are-not-here" / "x"), "main", api_name="/model_info")
    assert missing.startswith("⚠️ model: '") and "is not a local folder" in missing, missing
    assert "HF_HUB_OFFLINE" in client.predict("someone/some-model", "main", api_name="/model_info")

    import app  # a fresh machine: no run yet -> the tab says how to train one; predicting says it too

    demo = app.build_app(runs_dir=tmp_path / "runs")
    blocks = demo.config["components"]
    empty_md = next(c for c in blocks if c.get("props", {}).get("elem_id") == "predict-empty")["props"]
    assert empty_md["visible"] is True and "No finished run yet" in empty_md["value"]
    assert "python -m engine.train" in empty_md["value"]
    # the quick command, with the time measured for it (a user had waited 11 minutes for "a few")
    assert "--max_train_samples 800" in empty_md["value"] and "--max_seq_length 64" in empty_md["value"]
    assert "a few minutes" not in empty_md["value"] and "35 seconds" in empty_md["value"]
    import shlex

    from engine.config import parse_args
    from ui.predict_tab import QUICK_TRAIN

    # the flags exist and pass validation (timed by hand: 33-35 s on 2 cores, accuracy 0.975)
    cfg = parse_args([*shlex.split(QUICK_TRAIN), "--output_dir", str(tmp_path / "runs" / "bbc")]).validate()
    assert (cfg.max_train_samples, cfg.max_seq_length, cfg.max_steps) == (800, 64, 50)
    with pytest.raises(AppError, match="none chosen.*train one"):
        client.predict("some text", None, "main", api_name="/predict")


def test_file_in_file_out(client, model, bbc, tmp_path):
    src = tmp_path / "reviews.csv"
    pd.DataFrame({"id": range(len(bbc)), "review": bbc}).to_csv(src, index=False)
    out_path, preview, note = client.predict(handle_file(str(src)), model, "main", "review",
                                             api_name="/predict_file")
    out = pd.read_csv(out_path)
    assert out_path.endswith("reviews.predictions.csv") and list(out.columns) == ["id", "review", "predicted_label",
                                                                                   "score"]
    expected = [next(iter(p)) for p in shared_predictor().predict(model, bbc)]
    assert out["predicted_label"].tolist() == expected and out["score"].between(0.2, 1).all()
    # the preview pins the answers first (the file above keeps the input's order)
    assert preview["headers"] == ["predicted_label", "score", "id", "review"] and len(preview["data"]) == 20
    assert [row[0] for row in preview["data"]] == expected
    assert note.startswith("20 rows classified from column `review`")


def test_examples_are_the_runs_own_validation_texts(client, model, tiny_run):
    rows = [json.loads(line) for line in (tiny_run / "eval_predictions.jsonl").read_text().splitlines()]
    texts, hint, images, image_hint = client.predict(model, api_name="/model_examples")
    samples = texts["samples"]
    assert texts["visible"] is True and 5 <= len(samples) <= 6 and hint["visible"] is False
    assert images["samples"] == [] and images["visible"] is False
    for text, label in samples:
        assert len(text) <= 300
        source = next(r for r in rows if " ".join(r["text"].split()).startswith(text.rstrip("…")))
        assert source["label"] == label == source["prediction"]  # correctly predicted validation texts
    correct = {r["label"] for r in rows if r["label"] == r["prediction"]}
    assert {label for _, label in samples[:len(correct)]} == correct  # one per label first
    # clicking an example (its index) puts its text in the text box
    assert client.predict(2, api_name="/pick_text_example") == samples[2][0]

    texts, hint, images, image_hint = client.predict("someone/some-model", api_name="/model_examples")
    assert texts["samples"] == [] and texts["visible"] is False
    assert hint["visible"] is True and "No examples" in hint["value"] and "Hub id" in hint["value"]


def test_compare_side_by_side(client, model, app_runs_dir):
    a, b, note = client.predict("The champions won the cup final", model, "main", str(app_runs_dir / "tiny" / "model"),
                                "main", api_name="/compare")
    assert a == b and a["label"] in LABELS and "agree" in note


def _pickle_only(tmp_path, model):
    d = tmp_path / "pickle_only"
    d.mkdir()
    (d / "config.json").write_text((Path(model) / "model" / "config.json").read_text())
    (d / "pytorch_model.bin").write_bytes(b"\x80\x04not really a pickle")
    return d


def test_every_bad_input_is_a_clear_error_and_the_server_keeps_serving(client, model, bbc, tmp_path):
    text_cases = [("", model, "text: empty"), ("  \n ", model, "text: empty"),
                  ("hello", "nobody/no-such-model-xyz", "no-such-model-xyz"),
                  ("hello", str(tmp_path), "is not a model directory"),
                  ("hello", str(_pickle_only(tmp_path, model)), "only pickle weights"),
                  ("hello", str(tmp_path / "missing"), "not found")]
    for text, m, expected in text_cases:
        with pytest.raises(AppError, match=expected) as e:
            client.predict(text, m, "main", api_name="/predict")
        assert "Traceback" not in str(e.value)
    with pytest.raises(AppError, match="only pickle weights"):
        client.predict("hello", model, "main", str(tmp_path / "pickle_only"), "main", api_name="/compare")

    (tmp_path / "notes.txt").write_text("text\nhello\n")
    (tmp_path / "empty.csv").write_text("")
    pd.DataFrame({"title": bbc[:3]}).to_csv(tmp_path / "cols.csv", index=False)
    file_cases = [("notes.txt", "", "Invalid file type|unsupported file type"), ("empty.csv", "", "is empty"),
                  ("cols.csv", "review", r"'review' is not a column of 'cols.csv' \(columns: title\)")]
    for name, column, expected in file_cases:
        with pytest.raises(AppError, match=expected):
            client.predict(handle_file(str(tmp_path / name)), model, "main", column, api_name="/predict_file")
    with pytest.raises(AppError, match="none uploaded"):
        client.predict(None, model, "main", "", api_name="/predict_file")

    huge = " ".join(bbc) * 30  # a 1 MB+ paste: truncated, not crashed
    assert len(huge) > 1_000_000
    value, note = client.predict(huge, model, "main", api_name="/predict")
    assert value["label"] in LABELS and "text truncated" in note
    value, _ = client.predict(bbc[1], model, "main", api_name="/predict")  # still serving
    assert value["label"] == next(iter(shared_predictor().predict_text(model, bbc[1])))


def test_twenty_concurrent_predictions_from_several_clients(launched_app, model, bbc):
    expected = [next(iter(p)) for p in shared_predictor().predict(model, bbc)]
    clients = [Client(launched_app, verbose=False) for _ in range(4)]
    jobs = [(i, clients[i % 4].submit(bbc[i], model, "main", api_name="/predict")) for i in range(20)]
    got = {i: job.result(timeout=180)[0]["label"] for i, job in jobs}
    assert [got[i] for i in range(20)] == expected


def test_import_is_fast_and_without_torch():
    code = ("import os, sys; import app, ui.predict_tab; assert 'torch' not in sys.modules, 'torch imported'; "
            "assert 'transformers' not in sys.modules; print(os.environ['GRADIO_ANALYTICS_ENABLED'])")
    env = {k: v for k, v in os.environ.items() if k != "GRADIO_ANALYTICS_ENABLED"}
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip() == "False", proc.stderr[-2000:]
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env={**env, "GRADIO_ANALYTICS_ENABLED": "True"},
                          capture_output=True, text=True, timeout=120)
    assert proc.stdout.strip() == "True"  # the user may turn analytics on


def test_launch_address_from_environment(monkeypatch):
    import app

    for key in ("GRADIO_SERVER_NAME", "GRADIO_SERVER_PORT", "SPACE_ID"):
        monkeypatch.delenv(key, raising=False)
    assert app.launch_options() == {"server_name": "127.0.0.1", "server_port": 7860}
    monkeypatch.setenv("SPACE_ID", "user/space")
    assert app.launch_options()["server_name"] == "0.0.0.0"
    monkeypatch.setenv("GRADIO_SERVER_NAME", "10.1.2.3")
    monkeypatch.setenv("GRADIO_SERVER_PORT", "8123")
    assert app.launch_options() == {"server_name": "10.1.2.3", "server_port": 8123}
