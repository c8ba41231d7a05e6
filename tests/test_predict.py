"""engine.predict on the session's real BBC News model: batching, cache, files, CLI, bad input, the benchmark."""

import json
import subprocess
import sys
import threading
import time

import pandas as pd
import pytest

from conftest import ROOT
from engine.config import ConfigError
from engine.data import BUNDLED
from engine.serving.files import predict_file
from engine.serving.predictor import ModelCache, PredictError, Predictor, main

LABELS = {"business", "entertainment", "politics", "sports", "tech"}


@pytest.fixture(scope="module")
def predictor():
    return Predictor(precision="fp32")


@pytest.fixture(scope="module")
def bbc():
    return BUNDLED["bundled:bbc_news"][0]()["text"][::37]  # 61 real articles across all five topics


def test_reproduces_the_runs_own_validation_predictions(predictor, tiny_run):
    rows = [json.loads(line) for line in (tiny_run / "eval_predictions.jsonl").read_text().splitlines()]
    got = predictor.predict(str(tiny_run), [r["text"] for r in rows])
    same = sum(next(iter(g)) == r["prediction"] for g, r in zip(got, rows))
    assert same >= len(rows) - 1, f"{same}/{len(rows)} labels as recorded by evaluation"
    diffs = [abs(max(g.values()) - r["score"]) for g, r in zip(got, rows) if next(iter(g)) == r["prediction"]]
    assert max(diffs) < 0.02


def test_sorted_dynamic_batches_match_one_by_one(predictor, tiny_run, bbc):
    lm = predictor.load(str(tiny_run))
    assert lm.labels == ["business", "entertainment", "politics", "sports", "tech"] and lm.max_length == 32
    texts = [t[: 40 + 23 * i] for i, t in enumerate(bbc[:24])] + ["", "   ", None]  # varied lengths + blanks
    batched = predictor.probabilities(lm, texts, max_length=128)
    single = [predictor.probabilities(lm, [t], max_length=128)[0] for t in texts[:24]]
    for b, s in zip(batched, single):
        assert abs(b - s).max() < 1e-4 and abs(b.sum() - 1) < 1e-5
    assert batched[24:] == [None, None, None]
    out = predictor.predict(str(tiny_run), texts[:3])
    assert all(set(o) == LABELS and list(o.values()) == sorted(o.values(), reverse=True) for o in out)


def test_auto_precision_keeps_fp32_labels(tiny_run, bbc):
    fp32, auto = Predictor(precision="fp32"), Predictor(precision="auto")
    a = [next(iter(p)) for p in fp32.predict(str(tiny_run), bbc)]
    b = [next(iter(p)) for p in auto.predict(str(tiny_run), bbc)]
    assert a == b


def test_huge_paste_is_truncated_not_crashed(predictor, tiny_run, bbc):
    text = " ".join(bbc) * 20  # ~1.5 MB of real words
    assert len(text) > 1_000_000
    t0 = time.perf_counter()
    probs = predictor.predict_text(str(tiny_run), text)
    assert time.perf_counter() - t0 < 10 and set(probs) == LABELS
    assert probs == predictor.predict_text(str(tiny_run), text[:5000])  # only the first 32 tokens count
    lm = predictor.load(str(tiny_run))
    assert predictor.tokens_used(lm, text) == (32, True)
    assert predictor.tokens_used(lm, "short text") == (4, False)


def test_cache_loads_once_for_concurrent_callers_and_evicts_lru():
    cache, started = ModelCache(max_bytes=10 << 20, max_models=2), threading.Event()

    class Fake:
        def __init__(self, name, nbytes=1 << 20):
            self.name, self.nbytes = name, nbytes

    def slow(name):
        def load():
            started.set()
            time.sleep(0.3)
            return Fake(name)
        return load

    results = []
    threads = [threading.Thread(target=lambda: results.append(cache.get(("k", "a"), slow("a")))) for _ in range(8)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert cache.loads == 1 and len(results) == 8 and all(r is results[0] for r in results)
    cache.get(("k", "b"), slow("b"))
    cache.get(("k", "a"), slow("a"))  # a becomes most recent
    cache.get(("k", "c"), slow("c"))  # over 2 models: b (least recent) goes
    assert cache.keys() == [("k", "a"), ("k", "c")] and cache.loads == 3
    cache.get(("k", "big"), lambda: Fake("big", 20 << 20))  # over the byte budget: all but the newest go
    assert cache.keys() == [("k", "big")]

    def broken():
        raise PredictError("model: broken")
    for _ in range(2):  # a failed load is not cached: the next call tries again and fails the same way
        with pytest.raises(PredictError, match="broken"):
            cache.get(("k", "x"), broken)


def _pickle_only(tmp_path, tiny_run):
    d = tmp_path / "pickle_only"
    d.mkdir()
    (d / "config.json").write_text((tiny_run / "model" / "config.json").read_text())
    (d / "pytorch_model.bin").write_bytes(b"\x80\x04not really a pickle")
    return d


def test_bad_models_and_text_raise_one_line(predictor, tiny_run, tmp_path):
    from engine.modeling import offline_default_path

    cases = {
        "": "none chosen", str(tmp_path): "not a model directory", str(tmp_path / "nope"): "not found",
        str(_pickle_only(tmp_path, tiny_run)): "pickle", "nobody/no-such-model-xyz": "no-such-model-xyz",
        str(offline_default_path()): "not a classifier",
    }
    for model, expected in cases.items():
        with pytest.raises(ConfigError, match=expected) as e:
            predictor.predict_text(model, "some text")
        assert "\n" not in str(e.value)
    for text in ("", "  \n\t ", None):
        with pytest.raises(PredictError, match="text: empty"):
            predictor.predict_text(str(tiny_run), text)


def test_files_stream_in_chunks_in_every_format(predictor, tiny_run, bbc, tmp_path):
    df = pd.DataFrame({"id": range(len(bbc)), "review": bbc, "note": ["NA"] * len(bbc)})
    df.loc[5, "review"] = ""
    expected = [next(iter(p)) if p else None for p in predictor.predict(str(tiny_run), df["review"].tolist())]
    for ext, write in ((".csv", lambda p: df.to_csv(p, index=False)), (".parquet", df.to_parquet),
                       (".jsonl", lambda p: df.to_json(p, orient="records", lines=True))):
        src, seen = tmp_path / f"in{ext}", []
        write(src)
        res = predict_file(predictor, str(tiny_run), src, text_column="review", chunk_rows=10,
                           progress=lambda f, d: seen.append(f))
        out = {".csv": lambda p: pd.read_csv(p, keep_default_na=False), ".parquet": pd.read_parquet,
               ".jsonl": lambda p: pd.read_json(p, lines=True)}[ext](res.output)
        assert res.output == tmp_path / f"in.predictions{ext}" and res.rows == len(df) == len(out)
        assert list(out.columns) == ["id", "review", "note", "predicted_label", "score"]
        labels = [None if pd.isna(v) or v == "" else v for v in out["predicted_label"]]
        assert labels == expected, ext
        assert str(out["note"][0]) == "NA" and len(res.preview) == 20
        assert len(seen) == 7 and seen == sorted(seen) and seen[-1] == pytest.approx(1.0)


def test_bad_files_are_refused_before_loading(tmp_path):
    never = Predictor()
    never.load = lambda *a, **k: pytest.fail("the model must not load for a bad file")
    (tmp_path / "a.txt").write_text("text\nhello\n")
    (tmp_path / "empty.csv").write_text("")
    (tmp_path / "header.csv").write_text("text,label\n")
    (tmp_path / "cols.csv").write_text("title,body\nx,y\n")
    (tmp_path / "bad.jsonl").write_text('{"text": "ok"}\nnot json\n')
    (tmp_path / "bad.parquet").write_bytes(b"PAR1 garbage")
    (tmp_path / "latin1.csv").write_bytes("text\ncaf\xe9 cr\xe8me\n".encode("latin-1"))
    cases = {"a.txt": "unsupported file type '.txt'", "empty.csv": "is empty", "header.csv": "has no rows",
             "bad.jsonl": "line 2", "bad.parquet": "not a readable parquet", "latin1.csv": "not UTF-8",
             "missing.csv": "not found"}
    for name, expected in cases.items():
        with pytest.raises(PredictError, match=expected):
            predict_file(never, "any", tmp_path / name)
    with pytest.raises(PredictError, match=r"'review' is not a column of 'cols.csv' \(columns: title, body\)"):
        predict_file(never, "any", tmp_path / "cols.csv", text_column="review")


def test_cli_text_file_and_errors(tiny_run, tmp_path, capsys):
    assert main(["--model", str(tiny_run / "model"), "--text", "Shares fell sharply", "--top_k", "2", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["label"] in LABELS and len(out["scores"]) == 2
    src = tmp_path / "in.csv"
    pd.DataFrame({"review": ["The film won an award", "Rates rise again"]}).to_csv(src, index=False)
    assert main(["--model", str(tiny_run), "--input", str(src), "--text_column", "review",
                 "--output", str(tmp_path / "out.jsonl")]) == 0
    assert "wrote 2 predictions to " in capsys.readouterr().err
    assert [json.loads(x)["predicted_label"] in LABELS for x in (tmp_path / "out.jsonl").read_text().splitlines()] \
        == [True, True]
    for argv, expected in ((["--model", str(tiny_run), "--text", " "], "text: empty"),
                           (["--model", str(tmp_path), "--text", "x"], "not a model directory"),
                           (["--model", str(tiny_run), "--input", str(tmp_path / "in.txt")], "unsupported file type"),
                           (["--model", str(tiny_run), "--input", str(src), "--text_column", "nope"], "'nope'")):
        assert main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("hubtune: error: ") and expected in err and "\n" not in err, err


def test_cli_as_a_process_exits_2_with_one_line(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "engine.predict", "--model", str(tmp_path), "--text", "hi"],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and proc.stderr.strip().count("\n") == 0
    assert proc.stderr.startswith("hubtune: error: model: ") and "Traceback" not in proc.stderr
    proc = subprocess.run([sys.executable, "-m", "engine.predict", "--text", "hi"], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 2 and proc.stderr.strip() == "hubtune: error: the following arguments are required: " \
        "--model"


def test_benchmark_quick_mode(tiny_run, tmp_path, capsys):
    sys.path.insert(0, str(ROOT / "bench"))
    import predict_vs_pipeline

    assert predict_vs_pipeline.main(["--model", str(tiny_run), "--quick", "--json", str(tmp_path / "b.json")]) == 0
    fig = json.loads((tmp_path / "b.json").read_text())
    assert set(fig["datasets"]) == {"paragraphs", "articles"}
    for d in fig["datasets"].values():
        n, sides = d["texts"], d["sides"]
        assert n in (48, 8) and d["max_length"] == 64
        assert {"pipeline", "Predictor fp32", "Predictor int8 (+ fp32 guard)", "Predictor ONNX fp32 (onnxruntime)",
                "Predictor ONNX int8 (onnxruntime)"} <= set(sides)
        assert sides["Predictor fp32"]["same_as_pipeline"] == n  # the exact path: every label the pipeline's
        assert sides["Predictor ONNX fp32 (onnxruntime)"]["same_as_fp32"] >= n - 1  # logits within ~1e-6
        assert all(r["texts_per_s"] > 0 and r["wall_s"] >= r["setup_s"] > 0 for r in sides.values())
        int8 = sides["Predictor int8 (+ fp32 guard)"]
        assert 0 <= int8["recomputed"] <= n and int8["unguarded_same_as_fp32"] <= n
    assert fig["onnx_export_s"] > 0 and fig["process_wall_s"] > fig["onnx_export_s"]
    assert not (tiny_run / "model" / "onnx").exists()  # the bench exports into a folder of its own
    out = capsys.readouterr().out
    assert "| 48 paragraphs @ 64 | Predictor ONNX int8 (onnxruntime) |" in out and "whole bench process" in out


def test_a_path_like_model_that_is_not_there_is_a_missing_folder(tmp_path, monkeypatch, capsys):
    """`--model runs/nope` while runs/ is a folder here names a missing run, not a Hub repo: one line saying the
    folder is not there (never "cannot download 'runs/nope'"), worded as engine.export words it; a plain `user/model`
    still goes to the Hub. An unknown flag is named before the arguments it leaves missing."""
    from engine.serving.export import main as export_main

    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs").mkdir()
    for name in ("runs/nope", "runs/group/nope", "./nope", "../nope", "nope/", "~/no-such-hubtune-folder"):
        assert main(["--model", name, "--text", "hi"]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith(f"hubtune: error: model: '{name}' is not a local folder") and "\n" not in err, err
        assert "not found; check the path" in err and "HF_HUB_OFFLINE" not in err and "download" not in err, err
        assert export_main(["--model", name]) == 2
        assert capsys.readouterr().err.strip() == err  # one function words it for both commands
    assert main(["--model", "runs/nope", "--text", "hi"]) == 2 and "('runs/' is a folder here, so this is a path, " \
        "not a Hub id)" in capsys.readouterr().err
    assert main(["--model", "someone/no-such-model", "--text", "hi"]) == 2
    assert "cannot download 'someone/no-such-model': HF_HUB_OFFLINE is set" in capsys.readouterr().err
    assert main(["--model", "runs/nope", "--txt", "hi"]) == 2
    assert capsys.readouterr().err.strip() == \
        "hubtune: error: command line: unknown option '--txt' (did you mean '--text'?)"
