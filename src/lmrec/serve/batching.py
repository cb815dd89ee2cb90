"""Micro-batching of concurrent requests to one served model, and the service's options (:class:`ServeOptions`).

A top-k request that the service can answer from one product (a known user's exact scores through the model, a
conversation's scores, or a query vector searched in the item index) is handed to the run's :class:`MicroBatcher`:
one worker thread takes
the first waiting request, gathers the others that are waiting (and, while requests arrive together, those that
come within ``window_ms``) up to ``max_batch``, and answers them at once with :func:`answer_batch`: one score
product (or one FAISS search) for the batch, then each request's own exclusions and top k, and resolves each
caller's future. A request's threads do the rest (parsing, validation, the response) as before; the model work of
the batchable requests runs in the one worker thread instead of one thread per request.

Results are those of the requests answered one at a time: every product has at least two rows (a lone request is
paired with itself: BLAS multiplies one row through another kernel), and each row's top k is ``torch.topk`` of that
row with the request's own k, as :meth:`lmrec.Run.recommend` takes it (tested, ties included). A row's scores agree
with the same request's alone, and with ``Run.recommend``'s, to float rounding: on a Xeon they are equal to the bit,
but MKL on an AMD EPYC sums a row in another order for another number of rows (last-bit differences), so items
whose scores differ by less than that could swap places. A FAISS batch equals single searches but for exact ties
(one search asks for the batch's largest k; FAISS's coarse step for 20+ queries goes through BLAS). Conversations
read through an LLM without the KV cache are encoded in one padded batch, whose q agree with one-at-a-time ones to
float rounding.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

import numpy as np
import torch

from lmrec.data.conversations import CRSSample
from lmrec.errors import LmrecError
from lmrec.models.queries import Conversations, KnownUsers

T = TypeVar("T")
R = TypeVar("R")


@dataclass(frozen=True)
class ServeOptions:
    """How ``lmrec serve`` answers under load.

    ``max_batch``: requests answered by one product (1: no batching, each request computed in its own thread as
    before); ``window_ms``: how long the worker waits for more once requests arrive together (0: it takes only those
    already waiting); ``kv_cache_mb`` / ``kv_sessions`` / ``kv_tokens``: the LLM's KV cache kept per conversation
    session (:class:`lmrec.llm.kv_sessions.KVSessions`; 0 MB: none, every message reads the whole conversation)."""

    window_ms: float = 2.0
    max_batch: int = 32
    kv_cache_mb: float = 512.0
    kv_sessions: int = 256
    kv_tokens: int | None = None

    def __post_init__(self) -> None:
        if not self.window_ms >= 0:
            raise LmrecError(f"batch window {self.window_ms} ms: expected 0 or more")
        if int(self.max_batch) != self.max_batch or self.max_batch < 1:
            raise LmrecError(f"max batch {self.max_batch}: expected a whole number of 1 or more (1: no batching)")
        if not self.kv_cache_mb >= 0 or self.kv_sessions < 1:
            raise LmrecError(f"KV cache of {self.kv_cache_mb} MB over {self.kv_sessions} sessions: expected 0 MB or "
                             "more and at least one session")
        if self.kv_tokens is not None and self.kv_tokens < 1:
            raise LmrecError(f"KV cache cap of {self.kv_tokens} tokens per session: expected 1 or more")


class MicroBatcher(Generic[T, R]):
    """Calls of ``answer`` gathered from many threads: ``batcher(request)`` blocks until the worker thread has
    answered the batch it joined. ``answer(requests)`` returns one result per request, or an exception for a request
    that failed (raised in its caller); an exception ``answer`` raises goes to every caller of the batch.

    The worker waits for more (at most ``window_ms`` after the batch's first request) only while requests arrive
    together: several are already waiting, or the last batch held more than one; a lone client is never delayed. The
    worker thread starts on the first request and ends after ``idle_s`` seconds without one."""

    def __init__(self, answer: Callable[[list[T]], Sequence[R | BaseException]], window_ms: float = 2.0,
                 max_batch: int = 32, name: str = "batcher", idle_s: float = 10.0):
        if max_batch < 1:
            raise LmrecError(f"max_batch={max_batch}: expected 1 or more")
        self.answer, self.window, self.max_batch = answer, window_ms / 1000, int(max_batch)
        self.name, self.idle_s = name, idle_s
        self.batches = self.requests = 0  # answered so far (their ratio: the mean batch)
        self._queue: queue.SimpleQueue[tuple[T, Future]] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._worker: threading.Thread | None = None
        self._last = 1  # size of the last batch

    def __call__(self, request: T) -> R:
        future: Future = Future()
        self._queue.put((request, future))
        with self._lock:
            if self._worker is None:
                self._worker = threading.Thread(target=self._work, name=self.name, daemon=True)
                self._worker.start()
        return future.result()

    def _work(self) -> None:
        while True:
            try:
                first = self._queue.get(timeout=self.idle_s)
            except queue.Empty:
                with self._lock:  # a caller puts before it looks for the worker: nothing is left behind
                    if self._queue.empty():
                        self._worker = None
                        return
                continue
            batch = self._gather(first)
            self._answer(batch)

    def _gather(self, first: tuple[T, Future]) -> list[tuple[T, Future]]:
        batch = [first]
        deadline = time.monotonic() + self.window
        wait = self.window > 0 and (self._last > 1 or not self._queue.empty())
        while len(batch) < self.max_batch:
            try:
                batch.append(self._queue.get_nowait())
                continue
            except queue.Empty:
                pass
            left = deadline - time.monotonic()
            if not wait or left <= 0:
                break
            try:
                batch.append(self._queue.get(timeout=left))
            except queue.Empty:
                break
        self._last = len(batch)
        return batch

    def _answer(self, batch: list[tuple[T, Future]]) -> None:
        try:
            results: Sequence[Any] = self.answer([request for request, _ in batch])
            if len(results) != len(batch):
                raise RuntimeError(f"{self.name}: {len(results)} answers to {len(batch)} requests")
        except BaseException as exc:  # noqa: BLE001 - given to every caller of the batch
            results = [exc] * len(batch)
        self.batches += 1
        self.requests += len(batch)
        for (_, future), result in zip(batch, results, strict=True):
            if isinstance(result, BaseException):
                future.set_exception(result)
            else:
                future.set_result(result)


# -- what a batch of top-k requests computes ------------------------------------------------------------------


@dataclass(frozen=True)
class Ask:
    """One top-k request in a batch: a known ``user`` (dense index) or a conversation turn (``sample``) whose exact
    scores the model gives, or a ``query`` vector searched in the run's item index; ``exclude``: item indices left
    out."""

    user: int | None
    query: np.ndarray | None
    k: int
    exclude: Sequence[int] = ()
    sample: CRSSample | None = None


class Served(Protocol):
    """What :func:`answer_batch` reads of a served run (:class:`lmrec.serve.service.ServedRun`)."""

    model: Any
    index: Any
    lock: Any


Top = tuple[np.ndarray, np.ndarray]  # (item indices, scores), best first


def answer_batch(served: Served, asks: Sequence[Ask]) -> list[Top | BaseException]:
    """The top k of each request: those with a user, or a conversation, from one ``model.score`` over the batch's
    users (conversations), as :meth:`lmrec.Run.recommend` ranks them; those with a query vector from one search of
    ``served.index``."""
    out: list[Top | BaseException] = [LmrecError("not answered")] * len(asks)
    by_user = [i for i, a in enumerate(asks) if a.user is not None]
    by_sample = [i for i, a in enumerate(asks) if a.sample is not None]
    by_query = [i for i, a in enumerate(asks) if a.query is not None]
    for group in (by_user, by_sample):
        if group:
            with torch.no_grad():  # grad mode is per thread
                tops = model_top_k(served.model, [asks[i] for i in group])
            for i, top in zip(group, tops, strict=True):
                out[i] = top
    if by_query:
        queries = np.stack([np.asarray(asks[i].query, dtype=np.float32) for i in by_query])
        with served.lock:  # an addition grows the index meanwhile; a FAISS index is not thread-safe
            tops = served.index.search_batch(queries, [asks[i].k for i in by_query],
                                             [asks[i].exclude for i in by_query])
        for i, top in zip(by_query, tops, strict=True):
            out[i] = top
    return out


def model_top_k(model: Any, asks: Sequence[Ask]) -> list[Top]:
    """Each request's top ``k`` of ``model.score`` (all known users, or all conversations), ``exclude`` left out and
    fewer when fewer items are left: one (at least two-row) product, then ``torch.topk`` per row with its own k."""
    rows_of = list(asks) * (2 if len(asks) == 1 else 1)
    if all(a.user is not None for a in asks):
        query: Any = KnownUsers(np.array([a.user for a in rows_of], dtype=np.int64))
    elif all(a.sample is not None for a in asks):
        query = Conversations(tuple(a.sample for a in rows_of))
    else:
        raise LmrecError("a batch scores known users or conversations, not both")
    scores = model.score(query).detach().to("cpu", torch.float32).clone()  # (rows, n_items)
    rows = np.repeat(np.arange(len(asks)), [len(a.exclude) for a in asks])
    if len(rows):
        cols = np.concatenate([np.asarray(a.exclude, dtype=np.int64) for a in asks])
        scores[torch.from_numpy(rows), torch.from_numpy(cols)] = -torch.inf
    finite = torch.isfinite(scores[: len(asks)]).sum(1).tolist()
    ks = [min(int(a.k), int(f)) for a, f in zip(asks, finite, strict=True)]
    out: list[Top] = [(np.zeros(0, np.int64), np.zeros(0, np.float32))] * len(asks)
    for k in set(ks) - {0}:
        group = [i for i, ki in enumerate(ks) if ki == k]
        top = torch.topk(scores[group], k, dim=1)
        for r, i in enumerate(group):
            out[i] = (top.indices[r].numpy(), top.values[r].numpy())
    return out


def keep_kv_cache(model: Any, options: ServeOptions) -> None:
    """Keep the LLM's KV cache per conversation session for a model that reads conversations through an LLM
    (its ``context``: :meth:`lmrec.inputs.lookup.ContextFeatures.keep_kv`), bounded by ``options``; 0 MB: none."""
    context = getattr(model, "context", None)
    if context is None or not hasattr(context, "keep_kv"):
        return
    if options.kv_cache_mb > 0:
        context.keep_kv(max_mb=options.kv_cache_mb, max_sessions=options.kv_sessions, max_tokens=options.kv_tokens)
    else:
        context.kv = None
