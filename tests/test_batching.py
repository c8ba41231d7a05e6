"""engine/serving/batcher.py: concurrent requests for one model share Predictor calls and forward passes (counted with a
forward hook on the session's real BBC News model) with the results each would get alone; a failing request fails
only itself; the wait is bounded and only for requests announced as on their way."""

import threading
import time

import numpy as np
import pytest

from engine.data import BUNDLED
from engine.serving import batcher
from engine.serving.batcher import MicroBatcher
from engine.serving.predictor import Predictor


@pytest.fixture(scope="module")
def predictor():
    return Predictor(precision="fp32")  # the exact reference: batched and alone must agree


@pytest.fixture(scope="module")
def headlines():
    # short real texts, all five topics: the opening of BBC articles (headline and lead), ~20 tokens
    return [t[:101].rsplit(" ", 1)[0] for t in BUNDLED["bundled:bbc_news"][0]()["text"][3::90]]


def _doubler(calls):
    def run(items):
        calls.append(list(items))
        if "boom" in items:
            raise ValueError("boom is not a number")
        return [2 * x if isinstance(x, int) else x for x in items]
    return run


def test_announced_requests_go_in_one_call():
    b, calls = MicroBatcher(max_wait_ms=2000, max_items=64), []
    arrivals = [b.arriving() for _ in range(10)]
    futures = [b.submit("k", [i, i + 100], _doubler(calls), arrival=a) for i, a in enumerate(arrivals)]
    assert [f.result(timeout=10) for f in futures] == [[2 * i, 2 * i + 200] for i in range(10)]
    assert len(calls) == 1 and b.calls == 1 and b.requests == 10 and b.items == 20


def test_the_wait_is_bounded_and_only_for_announced_requests():
    b, calls = MicroBatcher(max_wait_ms=300), []
    t0 = time.monotonic()
    assert b.submit("k", [1], _doubler(calls)).result(timeout=5) == [2]
    assert time.monotonic() - t0 < 0.25  # nobody announced: no wait
    b.arriving()  # announced, never sent: the oldest request waits max_wait_ms, not for ever
    t0 = time.monotonic()
    assert b.submit("k", [3], _doubler(calls)).result(timeout=5) == [6]
    assert 0.25 < time.monotonic() - t0 < 3


def test_keys_are_kept_apart_and_calls_capped():
    b, calls = MicroBatcher(max_wait_ms=1000, max_items=5), []
    arrivals = [b.arriving() for _ in range(6)]
    futures = [b.submit(("model", i % 2), [i, i], _doubler(calls), arrival=a) for i, a in enumerate(arrivals)]
    assert [f.result(timeout=10) for f in futures] == [[2 * i, 2 * i] for i in range(6)]
    assert all(len(c) <= 5 for c in calls) and len(calls) == 4  # 3 requests of 2 per key, at most 2 per call
    assert all(len({x % 2 for x in c}) == 1 for c in calls)  # never two keys in one call
    big = b.submit("big", list(range(12)), _doubler(calls)).result(timeout=10)  # over the cap: runs whole, alone
    assert big == [2 * x for x in range(12)]


def test_a_failing_request_fails_alone():
    b, calls = MicroBatcher(max_wait_ms=1000), []
    arrivals = [b.arriving() for _ in range(3)]
    good1 = b.submit("k", [1], _doubler(calls), arrival=arrivals[0])
    bad = b.submit("k", ["boom"], _doubler(calls), arrival=arrivals[1])
    good2 = b.submit("k", [2, 3], _doubler(calls), arrival=arrivals[2])
    assert good1.result(timeout=10) == [2] and good2.result(timeout=10) == [4, 6]
    with pytest.raises(ValueError, match="boom"):
        bad.result(timeout=10)
    assert calls[0] == [1, "boom", 2, 3] and len(calls) == 4  # together, then each alone
    assert b.submit("k", [5], _doubler(calls)).result(timeout=10) == [10]  # the worker lives on


def test_concurrent_requests_share_forward_passes_with_identical_results(predictor, tiny_run, headlines):
    lm = predictor.load(str(tiny_run))
    texts = headlines[:24]
    alone = [predictor.probabilities(lm, [t])[0] for t in texts]  # one forward pass each
    passes = []
    hook = lm.model.register_forward_hook(lambda *a: passes.append(1))
    try:
        b = batcher.for_predictor(predictor)
        # a wait long enough that starting 24 threads on a loaded 2-core machine cannot outlast it
        before, b.max_wait = b.calls, 0.5
        # 24 clients, as the REST endpoint sends them: each announced, then submitted from its own thread
        arrivals = [b.arriving() for _ in texts]
        results = [None] * len(texts)

        def client(i):
            results[i] = batcher.scores(lm, [texts[i]], predictor=predictor, arrival=arrivals[i]).result(60)[0]

        threads = [threading.Thread(target=client, args=(i,)) for i in range(len(texts))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
    finally:
        hook.remove()
        b.max_wait = batcher.MAX_WAIT_MS / 1000
    assert 1 <= len(passes) <= 4 < len(texts), f"{len(passes)} forward passes for {len(texts)} requests"
    assert b.calls - before == len(passes)  # 24 short texts fit one token-budget batch: a call is a pass
    for got, want in zip(results, alone):
        assert got.argmax() == want.argmax() and np.abs(got - want).max() < 1e-4


def test_logits_keep_the_head_and_the_cached_model(predictor, tiny_run, headlines):
    lm = predictor.load(str(tiny_run))
    probs = batcher.scores(lm, headlines[:5], predictor=predictor).result(60)
    logits = batcher.scores(lm, headlines[:5], logits=True, predictor=predictor).result(60)
    for p, z in zip(probs, logits):
        e = np.exp(z - z.max())
        assert abs(z.sum() - 1) > 1e-3 and np.abs(e / e.sum() - p).max() < 1e-5  # raw logits, softmax gives p
    assert batcher._WithLogits(lm).head.decisions(np.stack(logits)) == lm.head.decisions(np.stack(probs))
    assert predictor.load(str(tiny_run)) is lm and type(lm.head).__name__ == "SingleLabel"  # the cached model's own


def test_predict_text_hook_matches_the_predictor(predictor, tiny_run, headlines):
    got = batcher.predict_text(str(tiny_run), headlines[0], predictor=predictor)
    want = predictor.predict_text(str(tiny_run), headlines[0])
    assert list(got) == list(want) and got == pytest.approx(want, abs=1e-5)
