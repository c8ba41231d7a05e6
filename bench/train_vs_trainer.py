"""Training throughput: hubtune's loop against transformers.Trainer, side by side in one run.

    python bench/train_vs_trainer.py            # ~12 min on 2 CPU cores (~20 with --ddp)
    python bench/train_vs_trainer.py --quick    # smoke test (checks the script works, not the speed)
    python bench/train_vs_trainer.py --ddp      # also 2-process CPU DDP vs 1 process at the same global batch

Defaults (2,000 paragraphs, 1 epoch, learning rate 1e-4, 128 tokens, batch 32 = 63 steps) train far enough for
accuracy to settle near 0.91, so comparing accuracies means something: at 1,000 paragraphs and 5e-5 (32 steps) both
sides are under-trained and the batch order alone moved accuracy by 5 points (length-grouped 0.81, random 0.86).

Same model (the offline MiniLM), same real data (BBC News paragraphs: varied lengths), same epochs, batch size,
learning rate and seed. Each side runs in its own process so its peak RSS is its own. Sides:
  trainer        Trainer as its docs show for this job: DataCollatorWithPadding, default TrainingArguments
  hubtune        hubtune with its own defaults (length-grouped batches, mixed_precision auto)
  hubtune_equal  hubtune with Trainer's settings (random batches, fp32, attention dropout 0.1): the loop itself
                 adds no overhead
MFU is the runs' model FLOP/s (counted on real tokens) over the matmul peak this script measures (best of a burst
before and one after the runs), in the dtype each run trained in, times its number of processes.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def make_data(out: Path, n_train: int, n_eval: int, seed: int) -> None:
    """Stratified samples of real BBC News paragraphs written as train.csv / validation.csv."""
    import pandas as pd

    from engine.data import BUNDLED

    df = pd.DataFrame(BUNDLED["bundled:bbc_news_paragraphs"][0]()).sample(frac=1.0, random_state=seed)
    per_class_train, per_class_eval = n_train // 5, n_eval // 5
    train = df.groupby("label", group_keys=False).head(per_class_train)
    rest = df.drop(train.index)
    val = rest.groupby("label", group_keys=False).head(per_class_eval)
    train.sample(frac=1.0, random_state=seed).to_csv(out / "train.csv", index=False)
    val.to_csv(out / "validation.csv", index=False)


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_trainer(a) -> dict:
    import numpy as np
    from datasets import load_dataset
    from transformers import (AutoModelForSequenceClassification, AutoTokenizer, DataCollatorWithPadding, Trainer,
                              TrainingArguments)

    from engine.modeling import offline_default_path

    path = offline_default_path()
    data = load_dataset("csv", data_files={"train": str(a.data / "train.csv"),
                                           "validation": str(a.data / "validation.csv")})
    names = sorted(set(data["train"]["label"]))
    tok = AutoTokenizer.from_pretrained(path)

    def encode(batch):
        enc = tok(batch["text"], truncation=True, max_length=a.max_seq_length)
        enc["labels"] = [names.index(x) for x in batch["label"]]
        return enc

    data = data.map(encode, batched=True, remove_columns=["text", "label"])
    model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=len(names))
    args = TrainingArguments(output_dir=str(a.work / "trainer"), num_train_epochs=a.epochs,
                             per_device_train_batch_size=a.batch_size, per_device_eval_batch_size=64,
                             learning_rate=a.learning_rate, seed=a.seed, report_to="none", save_strategy="no",
                             eval_strategy="no", logging_steps=50, max_steps=a.max_steps or -1)
    collator = DataCollatorWithPadding(tok)
    trainer = Trainer(model=model, args=args, train_dataset=data["train"], eval_dataset=data["validation"],
                      data_collator=collator,
                      compute_metrics=lambda p: {"accuracy": float((np.argmax(p.predictions, -1) == p.label_ids)
                                                                   .mean())})
    t = time.perf_counter()
    out = trainer.train()
    wall = time.perf_counter() - t
    ev = trainer.evaluate()
    real = padded = 0  # padding waste of Trainer's batches (measured after the timed part)
    for batch in trainer.get_train_dataloader():
        real += int(batch["attention_mask"].sum())
        padded += batch["attention_mask"].numel()
    return {"samples_per_second": out.metrics["train_samples_per_second"], "train_seconds": out.metrics["train_runtime"],
            "wall_seconds": wall, "accuracy": ev["eval_accuracy"], "padding_waste": 1 - real / padded,
            "peak_rss_mb": peak_rss_mb(), "mfu": None}


def run_hubtune(a, equal: bool) -> dict:
    from engine.training.run import main

    out = a.work / ("hubtune_equal" if equal else "hubtune")
    argv = ["--train_file", str(a.data / "train.csv"), "--validation_file", str(a.data / "validation.csv"),
            "--output_dir", str(out), "--overwrite_output_dir", "true", "--num_train_epochs", str(a.epochs),
            "--per_device_train_batch_size", str(a.batch_size), "--per_device_eval_batch_size", "64",
            "--learning_rate", str(a.learning_rate), "--seed", str(a.seed), "--max_seq_length",
            str(a.max_seq_length), "--save_steps", "100000", "--logging_steps", "5", "--eval_strategy", "epoch"]
    if a.max_steps:
        argv += ["--max_steps", str(a.max_steps)]
    if equal:
        argv += ["--group_by_length", "false", "--mixed_precision", "no", "--attention_dropout", "0.1"]
    t = time.perf_counter()
    assert main(argv) == 0, "hubtune run failed"
    wall = time.perf_counter() - t
    return _hubtune_result(out, wall)


def _hubtune_result(out: Path, wall: float) -> dict:
    metrics = json.loads((out / "metrics.json").read_text())
    events = [json.loads(x) for x in (out / "events.jsonl").read_text().splitlines()]
    train = [e for e in events if e["type"] == "train"]
    return {"samples_per_second": metrics["train_samples_per_second"], "train_seconds": metrics["train_seconds"],
            "wall_seconds": wall, "accuracy": metrics["accuracy"],
            "padding_waste": sum(e["padding_waste"] for e in train) / len(train),
            "mfu": sum(e["mfu"] for e in train[1:] or train) / len(train[1:] or train),  # vs the run's own peak
            "flops_per_second": sum(e["flops_per_second"] for e in train[1:] or train) / len(train[1:] or train),
            "processes": next(e for e in events if e["type"] == "start").get("world_size", 1),
            "mixed_precision": next(e for e in events if e["type"] == "start")["mixed_precision"],
            "peak_rss_mb": peak_rss_mb()}


def run_ddp(a, processes: int, threads: int | None = None) -> dict:
    """hubtune at the same global batch with 1 or 2 CPU processes (accelerate launch, gloo).

    accelerate gives each of 2 processes one thread (cores / processes); `threads=1` holds 1 process to one core
    too, the baseline for per-core scaling.
    """
    out = a.work / f"ddp{processes}-{threads}"
    config = "cpu_ddp.yaml" if processes == 2 else "cpu.yaml"
    cmd = ["accelerate", "launch", "--config_file", str(ROOT / "accelerate_configs" / config), "-m", "engine.train",
           "--train_file", str(a.data / "train.csv"), "--validation_file", str(a.data / "validation.csv"),
           "--output_dir", str(out), "--overwrite_output_dir", "true", "--num_train_epochs", str(a.epochs),
           "--per_device_train_batch_size", str(a.batch_size // processes), "--learning_rate", str(a.learning_rate),
           "--seed", str(a.seed), "--max_seq_length", str(a.max_seq_length), "--save_steps", "100000",
           "--logging_steps", "5"] + (["--max_steps", str(a.max_steps)] if a.max_steps else [])
    t = time.perf_counter()
    env = {**os.environ, "ACCELERATE_USE_CPU": "1", "PYTHONPATH": str(ROOT)}
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    subprocess.run(cmd, cwd=ROOT, env=env, check=False, capture_output=True)
    result = _hubtune_result(out, time.perf_counter() - t)
    result["peak_rss_mb"] = None  # several processes: not comparable
    return result


def measure_peaks(seconds: float = 1.0) -> dict:
    from engine.config import cpu_supports_bf16
    from engine.training.perf import matmul_peak

    peaks = {"fp32_gflops": matmul_peak("cpu", "float32", seconds=seconds) / 1e9}
    if cpu_supports_bf16():
        peaks["bf16_gflops"] = matmul_peak("cpu", "bfloat16", seconds=seconds) / 1e9
    return peaks


def child(a) -> None:
    result = run_trainer(a) if a.side == "trainer" else run_hubtune(a, equal=a.side == "hubtune_equal")
    Path(a.result).write_text(json.dumps(result))


def fmt(v, spec):
    return "-" if v is None else format(v, spec)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="tiny sizes: a smoke test of the script")
    p.add_argument("--ddp", action="store_true", help="also measure 2-process CPU DDP against 1 process")
    p.add_argument("--train_samples", type=int, default=2000)
    p.add_argument("--eval_samples", type=int, default=500)
    p.add_argument("--epochs", type=float, default=1.0)
    p.add_argument("--batch_size", type=int, default=32)
    p.add_argument("--max_seq_length", type=int, default=128)
    p.add_argument("--learning_rate", type=float, default=1e-4)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--max_steps", type=int, default=0)
    p.add_argument("--json", type=Path, help="also write the results here")
    p.add_argument("--side", help=argparse.SUPPRESS)
    p.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--result", help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.side:
        return child(a)
    if a.quick:
        a.train_samples, a.eval_samples, a.max_steps, a.max_seq_length = 80, 40, 3, 64

    burst = 0.2 if a.quick else 1.0
    before = measure_peaks(burst)  # and again at the end: the best of both, so a busy moment on a shared host does not
    with tempfile.TemporaryDirectory() as tmp:  # lower the peak and inflate MFU
        work = Path(tmp)
        (work / "data").mkdir()
        make_data(work / "data", a.train_samples, a.eval_samples, a.seed)
        results = {}
        sides = ("trainer", "hubtune", "hubtune_equal")
        procs = {}
        for side in sides:
            cmd = [sys.executable, __file__, "--side", side, "--data", str(work / "data"), "--work", str(work),
                   "--result", str(work / f"{side}.json"), "--epochs", str(a.epochs), "--batch_size",
                   str(a.batch_size), "--max_seq_length", str(a.max_seq_length), "--learning_rate",
                   str(a.learning_rate), "--seed", str(a.seed), "--max_steps", str(a.max_steps)]
            print(f"running {side} ...", flush=True)
            # one at a time, so no side slows another; --quick compares nothing, so its sides run at once, one
            # thread each (three processes' thread pools on a few cores would spend most of their time spinning)
            env = {**os.environ, "OMP_NUM_THREADS": "1"} if a.quick else None
            with open(work / f"{side}.log", "w") as log:
                procs[side] = subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env=env)
            if not a.quick:
                procs[side].wait()
        for side, proc in procs.items():
            if proc.wait():
                sys.exit(f"{side} failed:\n{(work / f'{side}.log').read_text()[-3000:]}")
            results[side] = json.loads((work / f"{side}.json").read_text())
        if a.ddp:
            a.work, a.data = work, work / "data"
            for name, n, threads in (("ddp_1proc_1core", 1, 1), ("ddp_1proc", 1, None), ("ddp_2proc", 2, None)):
                print(f"running {name} ...", flush=True)
                results[name] = run_ddp(a, n, threads)
        peaks = {k: max(v, before[k]) for k, v in measure_peaks(burst).items()}
    for r in results.values():
        if r.get("flops_per_second"):
            peak = peaks.get("bf16_gflops" if r.get("mixed_precision") == "bf16" else "fp32_gflops")
            r["mfu"] = r["flops_per_second"] / (peak * 1e9 * r.get("processes", 1)) if peak else None

    base = results["trainer"]["samples_per_second"]
    print(f"\nMiniLM-L6, BBC News paragraphs: {a.train_samples} train / {a.eval_samples} eval, max_seq_length "
          f"{a.max_seq_length}, batch {a.batch_size}, {a.epochs} epoch(s), {os.cpu_count()} CPU cores")
    print("matmul peak (GFLOP/s): " + ", ".join(f"{k} {v:.0f}" for k, v in peaks.items()))
    header = f"{'side':<15}{'samples/s':>10}{'train s':>9}{'wall s':>8}{'peak RSS MB':>12}{'accuracy':>9}" \
             f"{'padding':>9}{'MFU':>7}{'vs Trainer':>11}"
    print(header + "\n" + "-" * len(header))
    for side, r in results.items():
        print(f"{side:<15}{r['samples_per_second']:>10.1f}{r['train_seconds']:>9.1f}{r['wall_seconds']:>8.1f}"
              f"{fmt(r['peak_rss_mb'], '.0f'):>12}{r['accuracy']:>9.4f}{r['padding_waste']:>9.1%}"
              f"{fmt(r['mfu'], '.1%'):>7}{r['samples_per_second'] / base:>10.2f}x")
    if a.ddp:
        two = results["ddp_2proc"]["samples_per_second"]
        print(f"DDP scaling, same global batch: 2 processes (1 core each) vs 1 process on 1 core: "
              f"{two / results['ddp_1proc_1core']['samples_per_second']:.2f}x; "
              f"vs 1 process using every core: {two / results['ddp_1proc']['samples_per_second']:.2f}x")
    if a.json:
        a.json.write_text(json.dumps({"results": results, "peaks": peaks, "args": {k: str(v) for k, v in
                                                                                  vars(a).items()}}, indent=2))


if __name__ == "__main__":
    main()
