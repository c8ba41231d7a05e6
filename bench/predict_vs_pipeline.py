"""Predictor vs `transformers.pipeline("text-classification", batch_size=32)`, same model, same texts, one run.

    python bench/predict_vs_pipeline.py --model runs/bbc            # 1,000 paragraphs at 256 + 200 articles at 512
    python bench/predict_vs_pipeline.py --model runs/bbc --quick    # CI smoke test: 48 + 8 texts, no start-up timing

Texts: real BBC News (engine.bundled), in a fixed shuffled order, truncated by every side at the same max_length:
1,000 paragraphs of varied length (the common case) and whole articles (mostly over 512 tokens). Sides (SIDES):
the pipeline, then the Predictor in fp32 (the exact reference), bf16 with its fp32 guard (only where bf16 is
native), int8 (dynamic int8 Linear layers, close calls re-run in fp32), and the ONNX export (engine.export, into a
folder of the bench's own) run by onnxruntime in fp32 and int8 behind the same batching. Every side runs block by
block, in turn, so a change in machine load hits all alike. Per side and data set: texts/s, the ratio to the pipeline, label
agreement with the pipeline and with Predictor fp32, and wall seconds (set-up: loading, quantizing, plus the
predictions); for int8 also its agreement before the guard and the share of rows the guard recomputed. Unless
--quick or --no-startup: time-to-ready of `python app.py` against `python -c "import gradio"` (median of
--startup_runs). Exit code 1 when Predictor fp32's labels differ from the pipeline's.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def bbc_texts(n: int, seed: int = 0, dataset: str = "bbc_news_paragraphs") -> list[str]:
    """`n` real BBC News texts in a fixed random order: paragraphs (a few to ~500 words) or whole articles."""
    from engine.data import BUNDLED

    texts = BUNDLED[f"bundled:{dataset}"][0]()["text"]
    random.Random(seed).shuffle(texts)
    return texts[:n]


def default_model() -> str:
    """The newest finished run under HUBTUNE_RUNS_DIR (default runs/)."""
    from engine.rundir import list_runs

    root = Path(os.environ.get("HUBTUNE_RUNS_DIR", ROOT / "runs"))
    runs = list_runs(root, finished=True)  # newest first; the job runner's lock and uploads/ are not runs
    if not runs:
        sys.exit(f"no finished run in {root}; train one (python -m engine.train --dataset_name bundled:bbc_news "
                 "--output_dir runs/bbc) or pass --model")
    return str(runs[0].path)


@dataclass
class Side:
    """One way to predict: `make(bench)` -> (predict(texts) -> labels, set-up seconds), or None where it cannot run
    on this machine. `untimed(bench, texts)`: extra figures from an untimed pass (int8 without its guard)."""

    name: str
    make: Callable
    untimed: Callable | None = None


@dataclass
class Bench:
    """What every side shares: the model, the Predictor that loaded it once, the settings."""

    path: str
    max_length: int
    batch_size: int
    predictor: object = None
    lm: object = None
    load_s: float = 0.0
    onnx: dict = None  # the ONNX sides' export, made once per bench run: {"dir": Path, "export_s": seconds}


def _labels(lm, rows) -> list[str]:
    return [lm.labels[int(r.argmax())] for r in rows]


def _pipeline(b: Bench):
    from transformers import pipeline

    t0 = time.perf_counter()
    pipe = pipeline("text-classification", model=b.path, tokenizer=b.path, device=-1, batch_size=b.batch_size)
    pipe(["warm-up"], truncation=True, max_length=b.max_length)
    return (lambda texts: [o["label"] for o in pipe(texts, truncation=True, max_length=b.max_length)],
            time.perf_counter() - t0)


def _predictor(precision: str) -> Callable:
    """A Predictor side: its text path (inference.scores, what Predictor.probabilities runs) in `precision`, with the
    fp32 guard that precision has under 'auto'."""

    def make(b: Bench):
        from engine.tasks.text_classification import inference

        guard = inference.BF16_GUARD if precision == "bf16" else None  # int8's default is its guard
        if precision == "bf16" and not b.lm.bf16:
            return None  # emulated bf16 is slower than fp32: not a side worth timing
        t0 = time.perf_counter()
        inference.scores(b.lm, ["warm-up"], b.batch_size, precision, guard=guard)  # int8: quantizes, once
        setup = b.load_s + time.perf_counter() - t0

        def predict(texts):
            return _labels(b.lm, inference.scores(b.lm, texts, b.batch_size, precision, b.max_length, guard))
        return predict, setup
    return make


def _int8_unguarded(b: Bench, texts: list[str]) -> dict:
    """int8 labels without the guard, and how many rows the guard would recompute (int8 margin under its band)."""
    import numpy as np

    from engine.tasks.text_classification import inference

    rows = np.stack(inference.scores(b.lm, texts, b.batch_size, "int8", b.max_length, guard=0.0))
    top2 = np.sort(np.log(np.clip(rows, 1e-30, 1)), axis=1)[:, -2:]  # log-softmax margins are logit margins
    return {"labels": _labels(b.lm, rows), "recomputed": int((top2[:, 1] - top2[:, 0] < inference.INT8_GUARD).sum())}


def _onnx(file: str) -> Callable:
    """An ONNX side: the model exported by engine.export (fp32, and int8 quantized by onnxruntime) into a folder of
    the bench's own (the model folder stays as it was), run by onnxruntime behind the same text batching."""

    def make(b: Bench):
        import tempfile

        from engine.errors import ModelError
        from engine.serving import export, onnx_backend
        from engine.tasks.text_classification import inference

        try:
            onnx_backend.check_runtime()
        except ModelError as e:
            print(f"no ONNX sides: {e}", file=sys.stderr)
            return None
        if "dir" not in b.onnx:  # one export (with its int8 file) for both ONNX sides and every data set
            folder = Path(tempfile.mkdtemp(prefix="bench-onnx-"))
            t0 = time.perf_counter()
            export.export(b.path, output=str(folder), quantize="int8", say=lambda line: None)
            b.onnx.update(dir=folder, export_s=round(time.perf_counter() - t0, 1))
        t0 = time.perf_counter()
        lm = onnx_backend.attach(b.lm, b.onnx["dir"] / file)
        inference.scores(lm, ["warm-up"], b.batch_size, "fp32")
        setup = b.load_s + time.perf_counter() - t0

        def predict(texts):
            return _labels(lm, inference.scores(lm, texts, b.batch_size, "fp32", b.max_length))
        return predict, setup
    return make


# The Predictor's sides, in table order.
SIDES: list[Side] = [
    Side("Predictor fp32", _predictor("fp32")),
    Side("Predictor bf16 (+ fp32 guard)", _predictor("bf16")),
    Side("Predictor int8 (+ fp32 guard)", _predictor("int8"), untimed=_int8_unguarded),
    Side("Predictor ONNX fp32 (onnxruntime)", _onnx("model.onnx")),
    Side("Predictor ONNX int8 (onnxruntime)", _onnx("model_quantized.onnx")),
]


def compare(model: str, datasets: list[tuple[str, list[str], int]], batch_size: int, blocks: int) -> dict:
    """Time the pipeline and every side on each data set (name, texts, max_length), block by block in turn."""
    import torch

    # imported before any set-up is timed, so the first side does not pay every side's imports
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, pipeline  # noqa: F401

    from engine.modeling import resolve_model

    path = str(resolve_model(model, field="model"))
    fig = {"model": model, "batch_size": batch_size, "threads": torch.get_num_threads(), "datasets": {}}
    onnx: dict = {}
    try:
        for name, texts, max_length in datasets:
            fig["datasets"][name] = _one_dataset(Bench(path, max_length, batch_size, onnx=onnx), texts, blocks)
            fig["bf16"] = fig["datasets"][name].pop("bf16")
    finally:
        if "dir" in onnx:
            fig["onnx_export_s"] = onnx["export_s"]
            shutil.rmtree(onnx["dir"], ignore_errors=True)
    return fig


def _one_dataset(b: Bench, texts: list[str], blocks: int) -> dict:
    """Every side on one data set, block by block in turn: {texts, max_length, bf16, sides: {side: figures}}."""
    from engine.serving.predictor import Predictor

    t0 = time.perf_counter()
    b.predictor = Predictor(batch_size=b.batch_size, precision="fp32")
    b.lm = b.predictor.load(b.path)
    b.load_s = time.perf_counter() - t0
    sides = [("pipeline", *_pipeline(b))]
    sides += [(s.name, *made) for s in SIDES if (made := s.make(b)) is not None]
    seconds = {n: 0.0 for n, _, _ in sides}
    labels: dict = {n: [] for n, _, _ in sides}
    size = -(-len(texts) // blocks)
    for start in range(0, len(texts), size):
        block = texts[start:start + size]
        for side, predict, _ in sides:
            t0 = time.perf_counter()
            labels[side] += predict(block)
            seconds[side] += time.perf_counter() - t0
    ref, exact = labels["pipeline"], labels["Predictor fp32"]
    rows = {}
    for side, _, setup in sides:
        same = labels[side]
        rows[side] = {"texts_per_s": len(texts) / seconds[side], "vs_pipeline": seconds["pipeline"] / seconds[side],
                      "same_as_pipeline": sum(a == c for a, c in zip(same, ref)),
                      "same_as_fp32": sum(a == c for a, c in zip(same, exact)),
                      "setup_s": setup, "wall_s": setup + seconds[side]}
    for s in SIDES:
        if s.untimed and s.name in rows:
            extra = s.untimed(b, texts)
            rows[s.name]["unguarded_same_as_fp32"] = sum(a == c for a, c in zip(extra.pop("labels"), exact))
            rows[s.name].update(extra)
    return {"texts": len(texts), "max_length": b.max_length, "bf16": b.lm.bf16, "sides": rows}


def _table(fig: dict) -> str:
    """Markdown tables: one row per side and data set, then the start-up figures."""
    head = ("| texts | side | texts/s | vs pipeline | labels = pipeline | labels = fp32 | int8 before guard | "
            "recomputed in fp32 | set-up s | wall s |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for name, d in fig["datasets"].items():
        n = d["texts"]
        for side, r in d["sides"].items():
            before = f"{r['unguarded_same_as_fp32'] / n:.1%}" if "unguarded_same_as_fp32" in r else ""
            again = f"{r['recomputed'] / n:.1%}" if "recomputed" in r else ""
            lines.append(f"| {n} {name} @ {d['max_length']} | {side} | {r['texts_per_s']:.1f} | "
                         f"{r['vs_pipeline']:.2f}x | {r['same_as_pipeline']}/{n} | {r['same_as_fp32'] / n:.1%} | "
                         f"{before} | {again} | {r['setup_s']:.1f} | {r['wall_s']:.1f} |")
    lines.append("")
    lines.append(f"bf16 autocast: {'native here' if fig['bf16'] else 'not native here (no bf16 side)'}; "
                 f"{fig['threads']} threads; whole bench process {fig['process_wall_s']:.0f} s"
                 + (f" (ONNX export with its int8 file and checks: {fig['onnx_export_s']:.0f} s, once)"
                    if "onnx_export_s" in fig else ""))
    if "app_ready_s" in fig:
        lines += ["", "| start-up | seconds |", "|---|---|",
                  f'| python -c "import gradio" | {fig["import_gradio_s"]:.2f} |',
                  f"| python app.py time-to-ready | {fig['app_ready_s']:.2f} ({fig['startup_ratio']:.2f}x; "
                  "target <= 1.5x) |"]
    return "\n".join(lines)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def time_to_ready(runs: int) -> dict:
    """Median seconds until `python app.py` answers HTTP, and until `python -c "import gradio"` exits."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    imports, apps = [], []
    for _ in range(runs):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-c", "import gradio"], check=True, env=env)
        imports.append(time.perf_counter() - t0)
        port = _free_port()
        t0 = time.perf_counter()
        proc = subprocess.Popen([sys.executable, "app.py"], cwd=ROOT, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, env={**env, "GRADIO_SERVER_PORT": str(port),
                                                                "GRADIO_SERVER_NAME": "127.0.0.1"})
        try:
            while True:
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=1) as r:
                        if r.status == 200:
                            break
                except OSError:
                    if proc.poll() is not None:
                        raise RuntimeError(f"app.py exited with {proc.returncode}") from None
                    time.sleep(0.05)
            apps.append(time.perf_counter() - t0)
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    return {"import_gradio_s": statistics.median(imports), "app_ready_s": statistics.median(apps),
            "startup_ratio": statistics.median(apps) / statistics.median(imports)}


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print the tables; returns 1 when Predictor fp32's labels differ from the pipeline's."""
    t_start = time.perf_counter()
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", help="run dir, model dir or Hub id (default: newest finished run in runs/)")
    p.add_argument("--n", type=int, default=1000, help="BBC News paragraphs (varied length)")
    p.add_argument("--max_length", type=int, default=256, help="every side truncates paragraphs at this many tokens")
    p.add_argument("--articles", type=int, default=200, help="whole BBC News articles (0: none)")
    p.add_argument("--articles_max_length", type=int, default=512)
    p.add_argument("--batch_size", type=int, default=32)
    p.add_argument("--blocks", type=int, default=4, help="alternate the sides over this many blocks")
    p.add_argument("--startup_runs", type=int, default=3)
    p.add_argument("--no-startup", action="store_true", help="skip the time-to-ready measurement")
    p.add_argument("--quick", action="store_true", help="smoke test: 48 paragraphs + 8 articles at 64 tokens, no "
                   "start-up timing")
    p.add_argument("--json", help="also write the figures to this JSON file")
    args = p.parse_args(argv)
    if args.quick:
        args.n, args.articles, args.max_length, args.articles_max_length = 48, 8, 64, 64
        args.blocks, args.no_startup = 2, True
    datasets = [("paragraphs", bbc_texts(args.n), args.max_length)]
    if args.articles:
        datasets.append(("articles", bbc_texts(args.articles, dataset="bbc_news"), args.articles_max_length))
    fig = compare(args.model or default_model(), datasets, args.batch_size, args.blocks)
    if not args.no_startup:
        fig.update(time_to_ready(args.startup_runs))
    fig["process_wall_s"] = time.perf_counter() - t_start
    print(_table(fig))
    if args.json:
        Path(args.json).write_text(json.dumps(fig, indent=2) + "\n")
    exact = all(d["sides"]["Predictor fp32"]["same_as_pipeline"] == d["texts"] for d in fig["datasets"].values())
    return 0 if exact else 1


if __name__ == "__main__":
    sys.exit(main())
