"""Micro-batching: concurrent prediction requests for the same model share forward passes.

Run one by one, twenty users' single texts cost twenty forward passes of batch 1, each paying the per-call overhead
(tokenizer call, Python dispatch of every layer) that one pass of twenty pays once (bench/README.md has what that
gains on a 2-core CPU). `MicroBatcher` gathers the requests that share a key (model, what to
return, max_length) into one call of the Predictor, whose length-sorted token-budget batches then cut them into as
few forward passes as padding allows, and hands each request its own rows.

When it waits: requests that arrive while a call runs queue up and go together in the next call, so under load the
batches grow by themselves. Before a call starts it also waits, at most `max_wait_ms` (HUBTUNE_BATCH_WAIT_MS, 5)
from the moment the worker is free, for requests announced as on their way (`arriving()`: the REST endpoint announces
a request while it parses it and looks its model up), and never for requests that may or may not come: a lone client
sending one request after another is not slowed down by the wait. A call takes at most `max_items` texts
(HUBTUNE_BATCH_MAX, 64); a larger request runs whole, alone.

A request that fails fails alone: when a gathered call raises, each of its requests runs again by itself. Training
runs are separate processes (engine/runs/jobs.py) and share no lock with prediction: a training run in progress never
blocks this (it only competes for the CPU). One worker thread per batcher: forward passes already use every core.

`shared()` is the batcher over `engine.serving.predictor.shared_predictor()` (one model cache for every user);
`scores(lm, texts)` and `predict_text(model, text)` go through it (the REST endpoint, engine/serving/rest.py; the
Prediction tab). Importing this module does not import torch.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import weakref
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Callable, Hashable

log = logging.getLogger("hubtune")

MAX_WAIT_MS = float(os.environ.get("HUBTUNE_BATCH_WAIT_MS", "5"))
MAX_ITEMS = int(os.environ.get("HUBTUNE_BATCH_MAX", "64"))


@dataclass
class _Request:
    key: Hashable
    items: list
    run: Callable[[list], list]
    future: Future
    arrived: float = field(default_factory=time.monotonic)


class Arrival:
    """A request on its way to `submit` (see MicroBatcher.arriving); `done()` takes it off the count, once."""

    def __init__(self, batcher: "MicroBatcher"):
        self._batcher, self._counted = batcher, True

    def done(self) -> None:
        with self._batcher._cond:
            if self._counted:
                self._counted = False
                self._batcher._arriving -= 1
                self._batcher._cond.notify_all()

    def __enter__(self) -> "Arrival":
        return self

    def __exit__(self, *exc) -> None:
        self.done()


class MicroBatcher:
    """Gathers concurrent `submit(key, items, run)` calls that share `key` into one `run(all_items)` call.

    `run` must return one result per item, in order; requests with equal keys must mean the same `run`
    (the oldest request's runs the call). Counters: `calls` (runs that succeeded), `requests`, `items`.
    """

    def __init__(self, max_wait_ms: float = MAX_WAIT_MS, max_items: int = MAX_ITEMS, name: str = "hubtune-batcher"):
        self.max_wait, self.max_items, self.name = max_wait_ms / 1000, max(1, max_items), name
        self._cond = threading.Condition()
        self._pending: list[_Request] = []
        self._arriving = 0
        self._thread: threading.Thread | None = None
        self.calls = self.requests = self.items = 0

    def arriving(self) -> Arrival:
        """Announce a request that will be submitted soon (`with batcher.arriving() as a: ...; submit(..., arrival=a)`):
        a call about to start waits for it, at most max_wait_ms."""
        with self._cond:
            self._arriving += 1
        return Arrival(self)

    def submit(self, key: Hashable, items: list, run: Callable[[list], list],
               arrival: Arrival | None = None) -> Future:
        """A Future of `run`'s results for `items`, computed in one call with other requests for `key`."""
        future: Future = Future()
        if not items:
            future.set_result([])
            if arrival:
                arrival.done()
            return future
        with self._cond:
            self._pending.append(_Request(key, list(items), run, future))
            if arrival and arrival._counted:  # in the same locked step: the worker never sees it twice or never
                arrival._counted = False
                self._arriving -= 1
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._loop, name=self.name, daemon=True)
                self._thread.start()
            self._cond.notify_all()
        return future

    # --- the worker ----------------------------------------------------------------------------------------------
    def _loop(self) -> None:
        while True:
            batch = self._next()
            try:
                self._run(batch)
            except BaseException as e:  # never leave a caller waiting, never let the worker die
                log.exception("batcher: unexpected failure")
                for r in batch:
                    if not r.future.done():
                        r.future.set_exception(e)

    def _next(self) -> list[_Request]:
        """The next call's requests: the oldest request and those with its key, once nothing more is worth waiting
        for (enough texts, nobody announced, or max_wait gone by since the worker was free)."""
        with self._cond:
            while not self._pending:
                self._cond.wait()
            first = self._pending[0]
            # from now, not from the oldest's arrival: requests queued during the last call would otherwise never
            # wait for the ones announced just behind them
            deadline = time.monotonic() + self.max_wait
            while True:
                same = [r for r in self._pending if r.key == first.key]
                left = deadline - time.monotonic()
                if sum(len(r.items) for r in same) >= self.max_items or self._arriving <= 0 or left <= 0:
                    break
                self._cond.wait(left)
            take, n = [], 0
            for r in same:
                if take and n + len(r.items) > self.max_items:
                    break  # keeps arrival order: the rest go first in the next call
                take.append(r)
                n += len(r.items)
            for r in take:
                self._pending.remove(r)
        # a caller that gave up (a closed connection cancels its future) costs no forward pass
        return [r for r in take if r.future.set_running_or_notify_cancel()]

    def _run(self, batch: list[_Request]) -> None:
        if not batch:
            return
        items = [x for r in batch for x in r.items]
        try:
            results = batch[0].run(items)
            if len(results) != len(items):
                raise RuntimeError(f"batcher: {len(results)} results for {len(items)} items")
        except BaseException as e:
            if len(batch) == 1:
                batch[0].future.set_exception(e)
                return
            for r in batch:  # each alone: only the request that fails gets the error
                self._run_alone(r)
            return
        with self._cond:
            self.calls += 1
            self.requests += len(batch)
            self.items += len(items)
        start = 0
        for r in batch:
            r.future.set_result(results[start:start + len(r.items)])
            start += len(r.items)

    def _run_alone(self, r: _Request) -> None:
        try:
            results = r.run(r.items)
        except BaseException as e:
            r.future.set_exception(e)
            return
        with self._cond:
            self.calls += 1
            self.requests += 1
            self.items += len(r.items)
        r.future.set_result(results)


# ------------------------------------------------------------------------------------------------------------
# prediction through a batcher


class _LogitsHead:
    """A model's head whose scores are the logits themselves (the REST endpoint's function_to_apply); its close
    calls and decisions stay the head's, so the precision guard and 'auto''s measurement mean what they always do."""

    def __init__(self, head):
        self._head = head

    def scores(self, logits):
        return logits.float()

    def decisions(self, scores):
        import numpy as np
        import torch

        return self._head.decisions(self._head.scores(torch.as_tensor(np.asarray(scores))).numpy())

    def __getattr__(self, name):
        return getattr(self._head, name)


class _WithLogits:
    """A cached LoadedModel seen through _LogitsHead. Everything else is the model's own, written through too (the
    int8 copy, what 'auto' resolved): a proxy, not a copy, so nothing is made twice."""

    __slots__ = ("_lm", "head")

    def __init__(self, lm):
        object.__setattr__(self, "_lm", lm)
        object.__setattr__(self, "head", _LogitsHead(lm.head))

    def __getattr__(self, name):
        return getattr(self._lm, name)

    def __setattr__(self, name, value):
        setattr(self._lm, name, value)


_batchers: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()
_batchers_lock = threading.Lock()


def for_predictor(predictor) -> MicroBatcher:
    """The batcher of one Predictor (made on first use; goes with the Predictor)."""
    with _batchers_lock:
        if predictor not in _batchers:
            _batchers[predictor] = MicroBatcher()
        return _batchers[predictor]


def shared() -> MicroBatcher:
    """The batcher of the process-wide Predictor (engine.predict.shared_predictor)."""
    from engine.serving.predictor import shared_predictor

    return for_predictor(shared_predictor())


def scores(lm, texts: list[str], *, logits: bool = False, max_length: int | None = None, precision: str | None = None,
           predictor=None, arrival: Arrival | None = None) -> Future:
    """A Future of one score row (numpy) per text of a loaded text model (`predictor.load(...)`), computed together
    with other callers' texts for the same model and precision (default: the Predictor's). `logits`: the raw logits
    instead of the head's scores."""
    from engine.serving.predictor import shared_predictor

    p = predictor or shared_predictor()
    target = _WithLogits(lm) if logits else lm
    # id(lm): a request holds its model, so no other model can take that id while the request waits
    key = (id(lm), logits, max_length, precision)
    return for_predictor(p).submit(
        key, texts, lambda items: p.probabilities(target, items, max_length=max_length, precision=precision),
        arrival=arrival)


def predict_text(model: str, text: str, revision: str | None = "main", *, predictor=None,
                 max_length: int | None = None, precision: str | None = None) -> dict[str, float]:
    """Like Predictor.predict_text ({label: probability}, best first), with concurrent callers' texts in the same
    forward passes (the Prediction tab's hook)."""
    from engine.serving.predictor import check_text, shared_predictor

    p = predictor or shared_predictor()
    text = check_text(text)
    lm = p.load(model, revision, precision=precision)
    row = scores(lm, [text], max_length=max_length, precision=precision, predictor=p).result()[0]
    return lm.head.output(row, lm.labels)
