"""Prediction precisions on the session's real BBC News run: int8 and its fp32 guard against the run's own validation
split, int8 from the command line and for files, and 'auto' measuring once, recording beside the model, reusing."""

import json
import shutil

import numpy as np
import pandas as pd
import pytest

from engine.serving.predictor import Predictor, main
from engine.tasks import heads
from engine.tasks.base import model_bytes
from engine.tasks.text_classification import auto_precision, inference

LABELS = {"business", "entertainment", "politics", "sports", "tech"}


@pytest.fixture(scope="module")
def validation(tiny_run):
    """Every validation text of the run (eval_predictions.jsonl: 120 real BBC News articles)."""
    return [json.loads(line)["text"] for line in (tiny_run / "eval_predictions.jsonl").read_text().splitlines()]


def _copy_run(tiny_run, dest):
    """A run folder of its own (the record is written into it) whose model/ is the session's run's, linked."""
    dest.mkdir()
    (dest / "model").symlink_to(tiny_run / "model", target_is_directory=True)
    for name in ("config.yaml", "status.json", "metrics.json", "eval_predictions.jsonl"):
        shutil.copy(tiny_run / name, dest / name)
    return dest


def test_int8_guard_keeps_fp32_labels_on_the_validation_split(tiny_run, validation):
    predictor = Predictor(precision="fp32")
    lm = predictor.load(str(tiny_run))
    fp32 = predictor.probabilities(lm, validation)
    before = lm.nbytes
    guarded = predictor.probabilities(lm, validation, precision="int8")
    unguarded = inference.scores(lm, validation, 32, "int8", guard=0.0)

    def agreement(rows):
        return float(np.mean([a.argmax() == b.argmax() for a, b in zip(rows, fp32)]))

    assert agreement(guarded) >= auto_precision.AGREEMENT, agreement(guarded)
    assert agreement(guarded) >= agreement(unguarded)
    # int8 really ran (its outputs differ from fp32) and the guard re-ran the close calls in fp32 exactly
    diffs = [np.abs(a - b).max() for a, b in zip(unguarded, fp32)]
    assert max(diffs) > 1e-3
    redone = [i for i, (g, u) in enumerate(zip(guarded, unguarded)) if np.abs(g - u).max() > 0]
    assert redone and all(np.abs(guarded[i] - fp32[i]).max() < 1e-4 for i in redone)
    # one quantized copy, counted in the bytes the cache is bounded by; embeddings stay shared, not duplicated
    assert lm.int8 is not None and 0 < lm.nbytes - before < model_bytes(lm.model) / 4
    emb = lm.model.get_input_embeddings().weight
    assert lm.int8.get_input_embeddings().weight is emb
    # fp32 stays the exact reference after int8 was used
    again = predictor.probabilities(lm, validation)
    assert all(np.array_equal(a, b) for a, b in zip(again, fp32))


def test_int8_from_the_command_line_and_for_files(tiny_run, validation, tmp_path, capsys):
    text = validation[0]
    assert main(["--model", str(tiny_run), "--text", text, "--precision", "int8", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    expected = Predictor(precision="int8").predict_text(str(tiny_run), text)
    assert out["label"] == next(iter(expected)) and out["label"] in LABELS
    src = tmp_path / "in.csv"
    pd.DataFrame({"body": validation[:40]}).to_csv(src, index=False)
    assert main(["--model", str(tiny_run), "--input", str(src), "--precision", "int8",
                 "--output", str(tmp_path / "out.csv")]) == 0
    got = pd.read_csv(tmp_path / "out.csv")["predicted_label"].tolist()
    fp32 = [next(iter(p)) for p in Predictor(precision="fp32").predict(str(tiny_run), validation[:40])]
    assert sum(a == b for a, b in zip(got, fp32)) >= 39  # the >= 99.5% rule, at 40 texts
    capsys.readouterr()  # the file run's progress lines
    assert main(["--model", str(tiny_run), "--text", "x", "--precision", "int4"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("hubtune: error: ") and "int8" in err and "\n" not in err


def test_auto_measures_once_records_beside_the_model_and_reuses(tiny_run, tmp_path, monkeypatch):
    run = _copy_run(tiny_run, tmp_path / "run")
    assert "measured on the first prediction" in auto_precision.describe(str(run))
    lm = Predictor().load(str(run))
    unmeasured = "bf16" if lm.bf16 else "fp32"
    Predictor().predict(str(run), ["Shares rose after the company reported record profits."])
    record = json.loads((run / "precision.json").read_text())
    assert record["texts"] == 120 and record["threshold"] == 0.995 and record["max_length"] == 32
    assert set(record["measured"]) >= {"fp32", "int8"} and record["chosen"] in record["measured"]
    chosen = record["measured"][record["chosen"]]
    assert chosen["agreement"] >= 0.995 and all(m["texts_per_s"] > 0 for m in record["measured"].values())
    assert auto_precision.describe(str(run)).startswith(f"precision: {record['chosen']} (")
    assert not (tiny_run / "model" / "precision.json").exists()  # never inside model/ (the Hub push sends it)

    def never(*a, **k):
        raise AssertionError("measured again")

    monkeypatch.setattr(auto_precision, "measure", never)
    second = Predictor()
    second.predict(str(run / "model"), ["The striker scored twice in the cup final."])
    assert second.load(str(run / "model")).auto == record["chosen"]  # read from the record, not measured

    # new weights (another stamp): measured again; the rule picks the fastest that reaches 99.5% agreement
    for int8, expected in (({"texts_per_s": 90.0, "agreement": 0.999}, "int8"),
                           ({"texts_per_s": 90.0, "agreement": 0.99}, "fp32")):
        fake = json.loads((run / "precision.json").read_text())
        fake["weights"] = [["model.safetensors", 1, 1]]
        (run / "precision.json").write_text(json.dumps(fake))
        measured = {"fp32": {"texts_per_s": 40.0, "agreement": 1.0}, "int8": int8}
        monkeypatch.setattr(auto_precision, "measure", lambda *a, _m=measured, **k: _m)
        fresh = Predictor()
        fresh.predict(str(run), ["Rates rise again."])
        assert fresh.load(str(run)).auto == expected
        assert json.loads((run / "precision.json").read_text())["chosen"] == expected
    assert "int8 agreed on 99.0% of 120 validation texts, under 99.5%" in auto_precision.describe(str(run))

    # no validation split (a bare model folder, like a Hub model): auto stays what it was, nothing recorded
    bare = tmp_path / "bare"
    bare.symlink_to(tiny_run / "model", target_is_directory=True)
    plain = Predictor()
    plain.predict(str(bare), ["Rates rise again."])
    assert plain.load(str(bare)).auto == unmeasured and auto_precision.describe(str(bare)) is None
    # a regression head has no labels to agree on: auto never measures it
    assert heads.Regression().decisions(np.zeros((0, 1))) is None
