"""Predictor vs `transformers.pipeline("text-classification", batch_size=32)`, same model, same texts, one run.

    python bench/predict_vs_pipeline.py --model runs/bbc            # 1,000 BBC News paragraphs, max_length 256
    python bench/predict_vs_pipeline.py --model runs/bbc --quick    # CI smoke test: 48 texts, no start-up timing

Texts: real BBC News paragraphs of varied length (engine.data BUNDLED['bundled:bbc_news_paragraphs']; or whole
articles with --dataset bbc_news) in a fixed shuffled order, truncated by both sides at the same max_length. Both sides run block by block, alternating, so a change in machine load hits
both alike. Reports texts/s of each, the speed-up, and label agreement (the Predictor's default precision must
give the pipeline's labels exactly). Unless --quick or --no-startup: time-to-ready of `python app.py` against
`python -c "import gradio"` (median of --startup_runs). Exit code 1 when the labels differ.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

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
    from engine.runs import list_runs

    root = Path(os.environ.get("HUBTUNE_RUNS_DIR", ROOT / "runs"))
    runs = list_runs(root, finished=True)  # newest first; the job runner's lock and uploads/ are not runs
    if not runs:
        sys.exit(f"no finished run in {root}; train one (python -m engine.train --dataset_name bundled:bbc_news "
                 "--output_dir runs/bbc) or pass --model")
    return str(runs[0].path)


def compare(model: str, texts: list[str], max_length: int, batch_size: int, blocks: int) -> dict:
    """Time both sides on the same texts, alternating block by block; return the figures."""
    import torch
    from transformers import pipeline

    from engine.modeling import resolve_model
    from engine.predict import Predictor

    path = resolve_model(model, field="model")
    pipe = pipeline("text-classification", model=str(path), tokenizer=str(path), device=-1, batch_size=batch_size)
    predictor = Predictor(batch_size=batch_size)
    lm = predictor.load(str(path))
    warm = texts[:8]
    pipe(warm, truncation=True, max_length=max_length)
    predictor.probabilities(lm, warm, max_length=max_length)

    size = -(-len(texts) // blocks)
    t_pipe = t_pred = 0.0
    pipe_labels, pred_labels, fp32_labels = [], [], []
    for start in range(0, len(texts), size):
        block = texts[start:start + size]
        t0 = time.perf_counter()
        out = pipe(block, truncation=True, max_length=max_length)
        t_pipe += time.perf_counter() - t0
        pipe_labels += [o["label"] for o in out]
        t0 = time.perf_counter()
        probs = predictor.probabilities(lm, block, max_length=max_length)
        t_pred += time.perf_counter() - t0
        pred_labels += [lm.labels[int(p.argmax())] for p in probs]
        if lm.bf16:  # the exact reference, untimed, to show what bf16 autocast does to the labels
            fp32_labels += [lm.labels[int(p.argmax())] for p in
                            predictor.probabilities(lm, block, max_length=max_length, precision="fp32")]
    same = sum(a == b for a, b in zip(pipe_labels, pred_labels))
    return {"texts": len(texts), "max_length": max_length, "batch_size": batch_size, "threads": torch.get_num_threads(),
            "bf16": lm.bf16, "pipeline_tps": len(texts) / t_pipe, "predictor_tps": len(texts) / t_pred,
            "speedup": t_pipe / t_pred, "same_labels": same,
            "fp32_same": sum(a == b for a, b in zip(fp32_labels, pred_labels)) if fp32_labels else None}


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
    """Run the benchmark and print a table; returns 1 when the labels differ."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", help="run dir, model dir or Hub id (default: newest finished run in runs/)")
    p.add_argument("--n", type=int, default=1000, help="number of BBC News texts")
    p.add_argument("--dataset", choices=["bbc_news_paragraphs", "bbc_news"], default="bbc_news_paragraphs",
                   help="paragraphs: varied lengths (the common case); bbc_news: whole, mostly truncated articles")
    p.add_argument("--max_length", type=int, default=256, help="both sides truncate at this many tokens")
    p.add_argument("--batch_size", type=int, default=32)
    p.add_argument("--blocks", type=int, default=4, help="alternate the two sides over this many blocks")
    p.add_argument("--startup_runs", type=int, default=3)
    p.add_argument("--no-startup", action="store_true", help="skip the time-to-ready measurement")
    p.add_argument("--quick", action="store_true", help="smoke test: 48 texts, max_length 64, no start-up timing")
    p.add_argument("--json", help="also write the figures to this JSON file")
    args = p.parse_args(argv)
    if args.quick:
        args.n, args.max_length, args.blocks, args.no_startup = 48, 64, 2, True
    fig = compare(args.model or default_model(), bbc_texts(args.n, dataset=args.dataset), args.max_length, args.batch_size, args.blocks)
    if not args.no_startup:
        fig.update(time_to_ready(args.startup_runs))
    rows = [("texts (BBC News, truncated at max_length)", f"{fig['texts']} (max_length {fig['max_length']})"),
            ("pipeline(batch_size=32) texts/s", f"{fig['pipeline_tps']:.1f}"),
            ("Predictor texts/s", f"{fig['predictor_tps']:.1f}"),
            ("speed-up (target >= 2.5x)", f"{fig['speedup']:.2f}x"),
            ("identical labels", f"{fig['same_labels']}/{fig['texts']}"),
            ("bf16 autocast used", "yes" if fig["bf16"] else "no (no native bf16 on this machine)")]
    if fig["fp32_same"] is not None:
        rows.append(("labels equal to the fp32 reference", f"{fig['fp32_same']}/{fig['texts']}"))
    if "app_ready_s" in fig:
        rows += [('python -c "import gradio" s', f"{fig['import_gradio_s']:.2f}"),
                 ("python app.py time-to-ready s", f"{fig['app_ready_s']:.2f}"),
                 ("ratio (target <= 1.5x)", f"{fig['startup_ratio']:.2f}x")]
    width = max(len(r[0]) for r in rows)
    print(f"| {'measure':<{width}} | value |\n|{'-' * (width + 2)}|-------|")
    for name, value in rows:
        print(f"| {name:<{width}} | {value} |")
    if args.json:
        Path(args.json).write_text(json.dumps(fig, indent=2) + "\n")
    return 0 if fig["same_labels"] == fig["texts"] else 1


if __name__ == "__main__":
    sys.exit(main())
