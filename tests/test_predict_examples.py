"""ui/examples.py on real run directories: which validation texts and images the Prediction tab offers as
examples, how they are cut, and what it refuses to read (no app, no browser: the tab's tests cover those)."""

import json
import os
import shutil

from conftest import ROOT
from ui import examples


def _rows(run):
    return [json.loads(line) for line in (run / "eval_predictions.jsonl").read_text().splitlines()]


def test_text_examples_are_correct_validation_texts_one_per_label_first(tiny_run):
    rows = _rows(tiny_run)
    picked = examples.text_examples(tiny_run)
    labels = json.loads((tiny_run / "metrics.json").read_text())["validation"]["labels"]
    assert len(picked) == examples.TEXT_LIMIT
    assert [e["label"] for e in picked[:len(labels)]] == labels  # one per label, in the model's label order
    for e in picked:
        assert e["label"] == e["prediction"] and len(e["text"]) <= examples.TEXT_CHARS
        source = next(r for r in rows if " ".join(r["text"].split()).startswith(e["text"].rstrip("…")))
        assert source["label"] == e["label"] and source["score"] == e["score"]
    # most confident first: no correct text of that label scored higher than the one shown
    first = picked[0]
    assert first["score"] == max(r["score"] for r in rows if r["label"] == r["prediction"] == first["label"])
    assert examples.run_dir(str(tiny_run / "model")) == tiny_run  # the run around its model/ folder
    assert examples.run_dir("someone/some-model") is None and examples.run_dir("") is None


def test_a_rewritten_predictions_file_is_read_again_and_mistakes_fill_labels_never_right(tiny_run, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    for name in ("status.json", "metrics.json", "eval_predictions.jsonl"):
        shutil.copy(tiny_run / name, run / name)
    before = examples.text_examples(run)
    rows = _rows(tiny_run)
    # the run again, now getting every sports text wrong (a resumed run rewrites the file)
    wrong = [{**r, "prediction": "business"} if r["label"] == "sports" else r for r in rows]
    (run / "eval_predictions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in wrong))
    os.utime(run / "eval_predictions.jsonl", ns=(1, 1))  # a different mtime even within one clock tick
    after = examples.text_examples(run)
    assert after != before
    sports = [e for e in after if e["label"] == "sports"]
    assert len(sports) == 1 and sports[0]["prediction"] == "business"  # one mistake shows what it confuses
    assert all(e["label"] == e["prediction"] for e in after if e["label"] != "sports")


def test_trim_cuts_at_a_word_and_keeps_line_breaks():
    text = "Headline here\n\n  Body   text " + "word " * 100
    cut = examples.trim(text, 60)
    assert cut.startswith("Headline here\nBody text word") and cut.endswith("…") and len(cut) <= 60
    assert not cut[:-1].endswith(" ") and examples.trim("short text") == "short text"


def test_image_examples_skip_missing_files_and_paths_outside_samples(tiny_run, tmp_path):
    run = tmp_path / "image_run"
    (run / "samples" / "examples").mkdir(parents=True)
    shutil.copy(tiny_run / "status.json", run / "status.json")
    digits = ROOT / "ui" / "assets" / "digits"
    shutil.copy(digits / "mnist_7.png", run / "samples" / "examples" / "000.png")
    shutil.copy(digits / "mnist_2.png", run / "samples" / "examples" / "001.png")
    lines = [{"kind": "example", "path": "examples/000.png", "label": "7", "prediction": "7", "score": 0.9},
             {"kind": "example", "path": "examples/001.png", "label": "2", "prediction": "2", "score": 0.8},
             {"kind": "example", "path": "../status.json", "label": "3", "prediction": "3", "score": 0.9},
             {"kind": "example", "path": "examples/404.png", "label": "4", "prediction": "4", "score": 0.9},
             {"kind": "misclassified", "path": "examples/000.png", "label": "1", "prediction": "7", "score": 0.6}]
    (run / "samples" / "index.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines) + "{not json\n")
    found = examples.image_examples(run)
    assert [e["label"] for e in found] == ["7", "2"]  # no label order in metrics.json: the file's order
    assert found[0]["path"] == str((run / "samples" / "examples" / "000.png").resolve())
    shown = examples.for_model(str(run), "image")
    assert shown.images == found and not shown.hint
    shutil.rmtree(run / "samples")  # a run from before samples/ were saved
    shown = examples.for_model(str(run), "image")
    assert not shown.images and "No example images" in shown.hint
