"""Load test of the REST endpoint: many clients' single-text requests, batched together, against one at a time.

    python bench/serve_load.py --runs_dir runs --model bbc_news        # starts `python app.py` on a free port
    python bench/serve_load.py --url http://127.0.0.1:7860 --model bbc_news   # an app that is already running
    python bench/serve_load.py --runs_dir runs --model bbc_news --quick       # smoke test: 40 requests, 8 clients

The same --requests (200) short real texts (the opening ~100 characters of BBC News articles) go to
`POST /models/{model}` twice per round: one at a time from one client, then from --clients (20) threads at once;
--rounds (2) rounds, alternating the order, so a change in machine load hits both alike. Per side: requests/s,
p50 / p95 / max latency and the Predictor calls the server's micro-batcher made (`GET /info`'s batch counters; each call
is one or a few forward passes). Every answer's label is checked against `engine.serving.predictor.Predictor` in this
process at the precision the server reports (and against fp32). Prints the whole process's wall time too. Exit code 1
when an answer's label differs from the Predictor's or a request fails. Bounded: every request times out after 60 s and
the whole run stops after --max_seconds.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the runs are local; only 127.0.0.1 is ever asked
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
T0 = time.perf_counter()


def short_texts(n: int, chars: int = 100) -> list[str]:
    """`n` short real texts spread over all five topics: the opening of a BBC News article (its headline and the
    start of its first sentence), cut at a word boundary within `chars` characters (~20 tokens)."""
    from engine.data import BUNDLED

    texts = BUNDLED["bundled:bbc_news"][0]()["text"]
    step = max(1, len(texts) // n)
    return [t.strip()[:chars + 1].rsplit(" ", 1)[0] for t in texts[::step]][:n]


def start_app(runs_dir: Path, precision: str, timeout: float = 300) -> tuple[subprocess.Popen, str, float]:
    """`python app.py` on a free 127.0.0.1 port: (process, URL, seconds until /health answered)."""
    import httpx

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "HUBTUNE_RUNS_DIR": str(runs_dir), "GRADIO_SERVER_NAME": "127.0.0.1",
           "GRADIO_SERVER_PORT": str(port), "HF_HUB_OFFLINE": "1", "HUBTUNE_PRECISION": precision}
    env.pop("HUBTUNE_API_TOKEN", None)
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "app.py"], cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    while time.perf_counter() - t0 < timeout:
        if proc.poll() is not None:
            raise RuntimeError(f"app.py exited with {proc.returncode}: {proc.stderr.read()[-2000:]}")
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return proc, url, time.perf_counter() - t0
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    proc.kill()
    raise RuntimeError(f"app.py did not answer /health within {timeout:.0f} s")


def send(url: str, model: str, texts: list[str], clients: int, headers: dict) -> dict:
    """Every text as its own request from `clients` threads: {labels, latencies, seconds, failures}."""
    import httpx

    labels, latencies, failures = [None] * len(texts), [0.0] * len(texts), []
    local = threading.local()

    def one(i: int) -> None:
        if not hasattr(local, "client"):
            local.client = httpx.Client(base_url=url, timeout=60, headers=headers)  # keep-alive per client
        t0 = time.perf_counter()
        try:
            r = local.client.post(f"/models/{model}", json={"inputs": texts[i]})
            latencies[i] = time.perf_counter() - t0
            if r.status_code != 200:
                failures.append(f"{r.status_code} {r.text[:200]}")
                return
            labels[i] = r.json()[0][0]["label"]
        except httpx.HTTPError as e:
            latencies[i] = time.perf_counter() - t0
            failures.append(f"{type(e).__name__}: {e}")

    t0 = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(one, range(len(texts))))
    return {"labels": labels, "latencies": latencies, "seconds": time.perf_counter() - t0, "failures": failures}


def batches(url: str, model: str, headers: dict) -> dict:
    import httpx

    return httpx.get(f"{url}/info", params={"model": model}, headers=headers, timeout=60).json()


def reference(run: str, texts: list[str], precision: str, k: int) -> dict:
    """The Predictor in this process at the server's precision: each text's label alone (what `engine.predict`
    says for it), texts/s one a call and `k` a call, and the fp32 labels."""
    from engine.serving.predictor import Predictor

    predictor = Predictor(precision=precision)
    lm = predictor.load(run)
    predictor.probabilities(lm, texts[:k])  # warm-up
    t0 = time.perf_counter()
    alone = [lm.labels[int(predictor.probabilities(lm, [t])[0].argmax())] for t in texts]
    alone_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    for i in range(0, len(texts), k):
        predictor.probabilities(lm, texts[i:i + k])
    batched_s = time.perf_counter() - t0
    fp32 = [next(iter(o)) for o in Predictor(precision="fp32").predict(run, texts)]
    return {"alone": alone, "fp32": fp32, "k": k, "alone_tps": len(texts) / alone_s,
            "batched_tps": len(texts) / batched_s}


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs_dir", default=os.environ.get("HUBTUNE_RUNS_DIR", "runs"))
    p.add_argument("--model", required=True, help="a finished run's name in the runs folder (as in /models/NAME)")
    p.add_argument("--url", help="an app already running (default: start python app.py on a free port)")
    p.add_argument("--requests", type=int, default=200)
    p.add_argument("--clients", type=int, default=20)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--chars", type=int, default=100, help="length of each text: an article's opening, cut at a word")
    p.add_argument("--max_seconds", type=float, default=900)
    p.add_argument("--quick", action="store_true", help="smoke test: 40 requests, 8 clients, 1 round")
    p.add_argument("--precision", default="auto", choices=("auto", "fp32", "int8", "bf16"),
                   help="the started app's precision (HUBTUNE_PRECISION); fp32 answers every text identically in any "
                   "batch, int8 may not")
    p.add_argument("--json", help="also write the figures to this file")
    args = p.parse_args(argv)
    if args.quick:
        args.requests, args.clients, args.rounds = 40, 8, 1
    headers = {"Authorization": f"Bearer {os.environ['HUBTUNE_API_TOKEN']}"} if args.url and os.environ.get(
        "HUBTUNE_API_TOKEN") else {}
    texts = short_texts(args.requests, args.chars)
    proc, ready_s = None, 0.0
    try:
        if args.url:
            url = args.url.rstrip("/")
        else:
            proc, url, ready_s = start_app(Path(args.runs_dir), args.precision)
        t0 = time.perf_counter()
        warm = send(url, args.model, texts[:4], 1, headers)  # loads the model, settles 'auto' (untimed)
        if warm["failures"]:
            print(f"warm-up failed: {warm['failures'][0]}", file=sys.stderr)
            return 1
        warm_s = time.perf_counter() - t0
        sides = {"one at a time": 1, f"{args.clients} clients": args.clients}
        results = {name: [] for name in sides}
        order = list(sides)
        for r in range(args.rounds):
            for name in (order if r % 2 == 0 else order[::-1]):
                if time.perf_counter() - T0 > args.max_seconds:
                    break
                before = batches(url, args.model, headers)["batches"]
                out = send(url, args.model, texts, sides[name], headers)
                after = batches(url, args.model, headers)["batches"]
                out["calls"] = after["calls"] - before["calls"]
                results[name].append(out)
        info = batches(url, args.model, headers)
    finally:
        if proc is not None:
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()

    # the reference, computed after the timed part so it takes no CPU from the server
    batched = results[order[1]]
    k = max(1, round(len(texts) * len(batched) / max(1, sum(o["calls"] for o in batched))))  # texts a call, served
    ref = reference(str(Path(args.runs_dir) / args.model), texts, info["precision"], k)
    figures, bad = {}, 0
    for name, outs in results.items():
        if not outs:
            continue
        lat = [x for o in outs for x in o["latencies"]]
        got = [o["labels"] for o in outs]
        wrong = sum(a != b for g in got for a, b in zip(g, ref["alone"]))
        fails = sum(len(o["failures"]) for o in outs)
        # one at a time must be exactly the Predictor's; batched int8 may differ where rows share a quantization scale
        bad += fails + (wrong if sides[name] == 1 else 0)
        n = len(texts) * len(outs)
        figures[name] = {"requests": n, "requests_per_s": n / sum(o["seconds"] for o in outs),
                         "p50_s": statistics.median(lat), "p95_s": pct(lat, 0.95), "max_s": max(lat),
                         "predictor_calls": sum(o["calls"] for o in outs), "correct": n - wrong - fails,
                         "fp32_agreement": sum(a == b for g in got for a, b in zip(g, ref["fp32"])) / n,
                         "failures": [f for o in outs for f in o["failures"]][:3]}
    names = list(figures)
    ratio = (figures[names[1]]["requests_per_s"] / figures[names[0]]["requests_per_s"]) if len(names) == 2 else None
    print(f"model {args.model} ({info['precision']}, max_length {info['max_length']}), {len(texts)} short texts "
          f"(mean {statistics.mean(len(t) for t in texts):.0f} chars), {args.rounds} round(s); app ready in "
          f"{ready_s:.1f} s, warm-up {warm_s:.1f} s\n")
    print("| side | requests | requests/s | p50 ms | p95 ms | max ms | Predictor calls | same label as alone | "
          "same as fp32 |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, f in figures.items():
        print(f"| {name} | {f['requests']} | {f['requests_per_s']:.1f} | {f['p50_s'] * 1000:.0f} | "
              f"{f['p95_s'] * 1000:.0f} | {f['max_s'] * 1000:.0f} | {f['predictor_calls']} | "
              f"{f['correct']}/{f['requests']} | {f['fp32_agreement']:.1%} |")
        for failure in f["failures"]:
            print(f"  failed: {failure}")
    if ratio:
        print(f"\nthroughput {names[1]} / one at a time: {ratio:.2f}x")
    print(f"the Predictor alone in this process ({info['precision']}): one text a call {ref['alone_tps']:.1f} texts/s, "
          f"{ref['k']} a call {ref['batched_tps']:.1f} texts/s ({ref['batched_tps'] / ref['alone_tps']:.2f}x: what "
          "batching can gain on this machine before any HTTP)")
    wall = time.perf_counter() - T0
    print(f"whole process wall time: {wall:.1f} s")
    if args.json:
        Path(args.json).write_text(json.dumps({"figures": figures, "ratio": ratio, "wall_s": wall, "ready_s": ready_s,
                                               "precision": info["precision"], "predictor_alone": {
                                                   k: v for k, v in ref.items() if k.endswith(("tps", "k"))}},
                                              indent=2))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
