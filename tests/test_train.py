"""Real training on real data: the fine-tune itself and bad input (kill and exact resume, 1 and 2 processes:
tests/test_crash_resume.py; 2-process DDP runs: tests/test_ddp_repeat.py)."""

import json
import os
import subprocess
import sys
from collections import Counter

import pytest
import torch

from conftest import ROOT, train_args
from engine.rundir import RunDir
from engine.training.run import main

CHILD_ENV = {**os.environ, "PYTHONPATH": str(ROOT)}


def test_tiny_finetune_learns_and_reloads(tiny_run):
    run = RunDir(tiny_run)
    assert run.read_status()["state"] == "done"
    train = [e for e in run.read_events() if e["type"] == "train"]
    for key in ("step", "epoch", "loss", "learning_rate", "samples_per_second", "eta_seconds", "padding_waste"):
        assert key in train[0], key
    assert train[-1]["loss"] < train[0]["loss"] - 0.3, "loss should fall"
    evals = [e for e in run.read_events() if e["type"] == "eval"]
    assert [e["step"] for e in evals] == [15, 30]

    metrics = json.loads(run.metrics.read_text())
    val = metrics["validation"]
    labels = [json.loads(line)["label"] for line in run.predictions.read_text().splitlines()]
    majority = Counter(labels).most_common(1)[0][1] / len(labels)
    assert len(labels) == val["num_samples"] == 120
    assert val["accuracy"] > majority + 0.2, (val["accuracy"], majority)
    assert sum(map(sum, val["confusion_matrix"])) == 120
    assert list((tiny_run / "logs").rglob("events.out.tfevents.*")), "TensorBoard logs written (report_to)"
    assert set(val["per_class"]) == {"business", "entertainment", "politics", "sports", "tech"}

    from transformers import AutoModelForSequenceClassification, pipeline

    model = AutoModelForSequenceClassification.from_pretrained(run.model)
    assert model.config.id2label[3] == "sports"
    assert not list(run.model.glob("*.bin")) and list(run.model.glob("*.safetensors"))
    clf = pipeline("text-classification", model=str(run.model))
    out = clf("The striker scored twice as the champions won the cup final at Wembley.")
    assert out[0]["label"] in model.config.id2label.values()
    # the run's own config reproduces it
    from engine.config import TrainConfig

    assert TrainConfig.load(run.config).max_steps == 30


def _write_file(tmp_path, name, content: bytes):
    path = tmp_path / name
    path.write_bytes(content)
    return str(path)


BAD_CLI = [
    ("negative lr", ["--learning_rate", "-1"], "learning_rate: must be >= "),
    ("zero batch", ["--per_device_train_batch_size", "0"], "per_device_train_batch_size"),
    ("fp16 on cpu", ["--mixed_precision", "fp16"], "fp16 needs a CUDA GPU"),
    ("unknown flag", ["--lerning_rate", "1e-4"], "did you mean '--learning_rate'"),
    ("missing file", ["--dataset_name", "", "--train_file", "nope.csv"], "train_file: file 'nope.csv' not found"),
    ("bad extension", ["--dataset_name", "", "--train_file", "data.xlsx"], "unsupported extension '.xlsx'"),
    ("unknown model offline", ["--model_name_or_path", "nobody/no-such-model"], "no-such-model"),
    ("not a model dir", ["--model_name_or_path", "{tmp}"], "is not a model directory"),
    ("seq too long", ["--max_seq_length", "4096"], "beyond the model's limit of 512"),
    ("unknown column", ["--text_column", "body"], "text_column: column 'body' not in"),
]


@pytest.mark.parametrize("what,args,fragment", BAD_CLI, ids=[b[0] for b in BAD_CLI])
def test_bad_input_is_one_line_and_exit_2(tmp_path, capsys, what, args, fragment):
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    out = tmp_path / "out"
    rc = main(train_args(out, *args))
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("hubtune: error:")]
    assert rc == 2
    assert len(err) >= 1 and fragment in "\n".join(err), err
    assert not out.exists(), "nothing may be written before the input is known to be good"


def test_existing_output_dir_is_not_touched(tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    assert main(train_args(out)) == 2
    assert "already holds a run" in capsys.readouterr().err
    assert [p.name for p in out.iterdir()] == ["notes.txt"] and (out / "notes.txt").read_text() == "keep me"


def test_cli_subprocess_exit_code_and_single_line(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "engine.train", "--dataset_name", "bundled:bbc_news",
                           "--output_dir", str(tmp_path / "o"), "--num_train_epochs", "0"],
                          cwd=ROOT, env=CHILD_ENV, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == ["hubtune: error: num_train_epochs: must be >= 0.01, got 0.0"]


def test_extra_metric_from_local_module():
    from engine.metrics import classification_metrics, extra_metrics

    labels, preds = [0, 0, 0, 1, 1, 2], [0, 0, 1, 1, 1, 0]
    extra = extra_metrics([str(ROOT / "tests" / "fixtures" / "balanced_accuracy")], labels, preds)
    assert extra["balanced_accuracy"] == pytest.approx((2 / 3 + 1 + 0) / 3)
    base = classification_metrics(labels, preds, ["a", "b", "c"])
    assert base["accuracy"] == pytest.approx(4 / 6) and base["confusion_matrix"][0] == [2, 1, 0]


def test_classification_metrics_match_scikit_learn():
    import numpy as np
    from sklearn.metrics import classification_report, confusion_matrix, precision_recall_fscore_support

    from engine.metrics import classification_metrics

    rng = np.random.default_rng(0)
    names = ["a", "b", "c", "d"]  # "d" never occurs as a label, "c" is never predicted: the zero-division cases
    labels = rng.integers(0, 3, 200)
    preds = np.where(rng.random(200) < 0.6, labels, rng.choice([0, 1, 3], 200))
    ours = classification_metrics(labels, preds, names)
    ids = list(range(len(names)))
    p, r, f, _ = precision_recall_fscore_support(labels, preds, labels=ids, average="macro", zero_division=0)
    assert (ours["precision"], ours["recall"], ours["f1"]) == pytest.approx((p, r, f))
    assert ours["confusion_matrix"] == confusion_matrix(labels, preds, labels=ids).tolist()
    report = classification_report(labels, preds, labels=ids, target_names=names, output_dict=True, zero_division=0)
    for name in names:
        assert ours["per_class"][name] == pytest.approx(report[name], abs=1e-6)
    assert classification_metrics([], [], names)["accuracy"] == 0.0


def test_attention_dropout_is_set_on_the_layers_and_the_saved_config_keeps_the_base_value():
    from engine.modeling import offline_default_path
    from engine.tasks.text_classification.models import load_for_training

    base = offline_default_path()
    for value in (0.0, 0.3):
        model = load_for_training(base, ["a", "b", "c"], attention_dropout=value)
        drops = {m.p for n, m in model.named_modules() if isinstance(m, torch.nn.Dropout) and n.endswith("self.dropout")}
        assert drops == {value}  # every attention layer
        assert model.config.attention_probs_dropout_prob == 0.1  # what save_pretrained writes: the base's value
    model = load_for_training(base, ["a", "b"])
    assert {m.p for n, m in model.named_modules() if n.endswith("self.dropout")} == {0.1}  # None: the model's own


def test_length_grouped_batches_cover_every_example_and_keep_ranks_of_a_step_alike():
    """Real BBC paragraph lengths (words, capped like max_seq_length): each epoch uses every example once, little
    padding, and under 2-process DDP the two batches of a step (Accelerate deals batch k to rank k % 2) have
    similar lengths, so neither rank waits long at the all-reduce."""
    from statistics import mean

    from engine.data import BUNDLED, LengthGroupedBatchSampler

    lengths = [min(len(t.split()), 128) for t in BUNDLED["bundled:bbc_news_paragraphs"][0]()["text"][:2000]]

    def waste(batches):
        return 1 - sum(lengths[i] for b in batches for i in b) / sum(len(b) * max(lengths[i] for i in b)
                                                                      for b in batches)

    def rank_imbalance(batches):  # slowest rank's longest example over the step's mean, per 2-batch step
        tops = [max(lengths[i] for i in b) for b in batches]
        return mean(max(p) / mean(p) for p in zip(tops[0::2], tops[1::2]))

    single, ddp = LengthGroupedBatchSampler(lengths, 32, seed=42), LengthGroupedBatchSampler(lengths, 16, 42, world=2)
    for sampler in (single, ddp):
        batches = list(sampler)
        assert len(batches) == len(sampler) and sorted(i for b in batches for i in b) == list(range(len(lengths)))
    assert list(single) == list(LengthGroupedBatchSampler(lengths, 32, seed=42))  # reproducible: exact resume
    single.set_epoch(1)
    assert list(single) != list(LengthGroupedBatchSampler(lengths, 32, seed=42))
    plain = list(LengthGroupedBatchSampler(lengths, 32, 42, group=False))
    assert waste(list(LengthGroupedBatchSampler(lengths, 32, 42))) < 0.1 < 0.3 < waste(plain)
    paired, unpaired = rank_imbalance(list(ddp)), rank_imbalance(list(LengthGroupedBatchSampler(lengths, 16, 42)))
    assert paired < 1.1 < 1.2 < unpaired, (paired, unpaired)


def test_runs_in_one_process_may_change_mixed_precision(tmp_path):
    """Accelerate keeps its first state process-wide; a notebook's second run with another precision must still
    train (this failed on a bf16-capable CPU once 'auto' had picked bf16 for an earlier run)."""
    tiny = ["--max_train_samples", "16", "--max_eval_samples", "8", "--max_seq_length", "16",
            "--per_device_train_batch_size", "8", "--max_steps", "1", "--eval_steps", "1", "--save_steps", "1"]
    from engine.hardware import bf16_available

    if not bf16_available():  # a CPU without bf16 (no avx512_bf16 / AMX): refused in one line, then "no" trains
        assert main(train_args(tmp_path / "bf16", *tiny, "--mixed_precision", "bf16")) == 2
    for precision in ("bf16", "no") if bf16_available() else ("no",):
        out = tmp_path / precision
        assert main(train_args(out, *tiny, "--mixed_precision", precision)) == 0
        assert RunDir(out).read_status()["mixed_precision"] == precision


def test_the_matmul_peak_is_measured_once_per_machine(tmp_path, monkeypatch):
    """MFU's peak: measured on first use and then read from HUBTUNE_CACHE_DIR (every run paid a 0.5 s burst of all
    cores before); a broken cache file is measured over, and another thread count is another key."""
    from engine.training import perf

    monkeypatch.setenv("HUBTUNE_CACHE_DIR", str(tmp_path))
    calls = []
    real = perf.matmul_peak
    monkeypatch.setattr(perf, "matmul_peak", lambda *a, **k: calls.append(a) or real(*a, **{**k, "seconds": 0.05}))
    first = perf.machine_peak("cpu", "float32")
    assert first > 1e9 and len(calls) == 1
    assert perf.machine_peak("cpu", "float32") == first and len(calls) == 1  # read back, not measured
    (key,) = json.loads((tmp_path / "matmul_peak.json").read_text())
    assert "float32" in key and f"{torch.get_num_threads()} threads" in key
    (tmp_path / "matmul_peak.json").write_text("{not json")
    assert perf.machine_peak("cpu", "float32") > 1e9 and len(calls) == 2
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        perf.machine_peak("cpu", "float32")
    finally:
        torch.set_num_threads(threads)
    assert len(calls) == 3 and len(json.loads((tmp_path / "matmul_peak.json").read_text())) == 2


def test_tokenizing_in_memory_splits_skips_hashing_the_tokenizer_and_names_what_it_read():
    """`map` fingerprints its function by pickling it, tokenizer and all (~0.7 s of every run's start); a split in
    memory gets a fingerprint from what the tokenization read instead: the same inputs give the same fingerprint,
    another tokenizer setting another one, and the tokens are the same either way."""
    import datasets

    from engine.data import BUNDLED, Splits
    from engine.modeling import load_tokenizer, offline_default_path
    from engine.tasks.text_classification.data import tokenize_splits

    texts = BUNDLED["bundled:bbc_news"][0]()["text"][:40:4]
    ds = datasets.Dataset.from_dict({"text": texts, "label": [0] * len(texts)})
    tokenizer = load_tokenizer(offline_default_path())
    splits = Splits(train=ds, validation=None, test=None, label_names=["a"])
    a, b, c = (tokenize_splits(splits, tokenizer, n)["train"] for n in (32, 32, 16))
    assert a._fingerprint == b._fingerprint != c._fingerprint != ds._fingerprint
    assert a["input_ids"][:] == tokenizer(texts, truncation=True, max_length=32)["input_ids"]
    assert max(c["length"][:]) == 16


def test_the_commands_start_up_runs_without_the_garbage_collector_and_training_with_it(tmp_path):
    """engine/train.py turns the cyclic collector off for the start-up (a fifth of its CPU); the run turns it back
    on once set up, so the steps run with it. A caller that did not pause it (a notebook) keeps its own setting."""
    import gc

    tiny = ["--max_train_samples", "16", "--max_eval_samples", "8", "--max_seq_length", "16",
            "--per_device_train_batch_size", "8", "--max_steps", "1", "--eval_steps", "1", "--save_steps", "1"]
    seen = []
    from engine.training import run as training_run

    real_fit = training_run._fit
    try:
        training_run._fit = lambda cfg, loop: (seen.append(gc.isenabled()), real_fit(cfg, loop))
        gc.disable()
        assert main(train_args(tmp_path / "paused", *tiny), paused_gc=True) == 0
        assert seen == [True] and gc.isenabled()
        gc.disable()
        assert main(train_args(tmp_path / "kept", *tiny)) == 0
        assert seen == [True, False] and not gc.isenabled()
    finally:
        training_run._fit = real_fit
        gc.enable()
    source = (ROOT / "engine" / "train.py").read_text()
    assert source.index("gc.disable()") < source.index("from engine.training.run import")
