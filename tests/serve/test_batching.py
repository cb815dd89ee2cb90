"""Micro-batching (lmrec.serve.batching): requests gathered into one product answer what they answer alone."""

from __future__ import annotations

import concurrent.futures
import threading

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient

from helpers import single_thread  # noqa: F401
from lmrec.errors import LmrecError
from lmrec.serve import create_app
from lmrec.serve.batching import Ask, MicroBatcher, ServeOptions, model_top_k
from lmrec.serve.index import ExactIndex, FaissIndex
from lmrec.serve.service import ServedRun


def test_waiting_requests_are_answered_together_each_with_its_own_result():
    gate, sizes = threading.Event(), []

    def answer(requests):
        sizes.append(len(requests))
        gate.wait(5)  # the first batch holds the worker while the others queue up
        return [ValueError(f"bad {r}") if r == 7 else r * 10 for r in requests]

    batcher = MicroBatcher(answer, window_ms=0, max_batch=32)
    with concurrent.futures.ThreadPoolExecutor(12) as pool:
        first = pool.submit(batcher, 0)
        while not sizes:
            threading.Event().wait(0.001)
        rest = {r: pool.submit(batcher, r) for r in range(1, 12)}
        while batcher._queue.qsize() < 11:
            threading.Event().wait(0.001)
        gate.set()
        assert first.result() == 0
        for r, future in rest.items():
            if r == 7:
                with pytest.raises(ValueError, match="bad 7"):  # its own error, in its own caller only
                    future.result()
            else:
                assert future.result() == r * 10
    assert sizes == [1, 11] and (batcher.batches, batcher.requests) == (2, 12)


def test_max_batch_and_errors_of_the_whole_batch():
    sizes: list[int] = []
    gate = threading.Event()

    def answer(requests):
        sizes.append(len(requests))
        gate.wait(5)
        if -1 in requests:
            raise RuntimeError("broken model")
        return list(requests)

    batcher = MicroBatcher(answer, window_ms=0, max_batch=4)
    with concurrent.futures.ThreadPoolExecutor(10) as pool:
        futures = [pool.submit(batcher, 1)]
        while not sizes:
            threading.Event().wait(0.001)
        futures += [pool.submit(batcher, r) for r in range(2, 10)]
        while batcher._queue.qsize() < 8:
            threading.Event().wait(0.001)
        gate.set()
        assert [f.result() for f in futures] == list(range(1, 10))
    assert sizes == [1, 4, 4]
    with pytest.raises(RuntimeError, match="broken model"):
        batcher(-1)


def test_the_worker_ends_when_idle_and_starts_again():
    batcher = MicroBatcher(lambda requests: list(requests), idle_s=0.05)
    assert batcher(3) == 3
    worker = batcher._worker
    assert worker is not None
    worker.join(5)
    assert batcher._worker is None and batcher(4) == 4


def test_options_are_checked():
    for bad in ({"max_batch": 0}, {"window_ms": -1}, {"kv_cache_mb": -1}, {"kv_sessions": 0}, {"kv_tokens": 0}):
        with pytest.raises(LmrecError):
            ServeOptions(**bad)


@pytest.mark.parametrize("name", ["alpharec", "pop"])
def test_a_batch_ranks_as_run_recommend_does(name, app_runs, tmp_path):
    """Every user of the planted data, with exclusions and several k, in one batch: the same items as
    Run.recommend one at a time (Pop: ties everywhere), the same scores to rounding; and each row what the request
    gets alone: the same items, the same scores to the last bits (MKL on an AMD EPYC rounds a row differently in a
    product with another number of rows; on a Xeon they are equal to the bit)."""
    run = app_runs(name, tmp_path)
    data = run.data
    users = [u for u in range(data.n_users) if len(data.train_items(u))]
    rng = np.random.default_rng(0)
    asks = [Ask(u, None, int(rng.integers(1, 12)), [*rng.choice(40, 3, replace=False).tolist(),
                                                    *data.user_items(u).tolist()]) for u in users]
    asks.append(Ask(users[0], None, 40, list(range(38))))  # fewer items left than asked for
    with torch.no_grad():
        batch = model_top_k(run.model, asks)
        alone = [model_top_k(run.model, [a])[0] for a in asks[:5]]
    for a, (items, scores), single in zip(asks, batch, alone + [None] * len(asks), strict=False):
        exclude = [run.catalog.ids[i] for i in a.exclude]
        direct = run.recommend(data.user_ids[a.user], k=a.k, exclude=exclude, exclude_seen=False)
        assert [run.catalog.ids[i] for i in items] == [r.item_id for r in direct]
        np.testing.assert_allclose(scores, [r.score for r in direct], rtol=1e-5, atol=1e-6)
        if single is not None:
            assert np.array_equal(items, single[0])
            np.testing.assert_allclose(scores, single[1], rtol=1e-6, atol=0)
    assert len(batch[-1][0]) == 2


def test_faiss_batch_equals_one_search_per_query():
    rng = np.random.default_rng(1)
    vectors = rng.standard_normal((3000, 16)).astype(np.float32)
    queries = rng.standard_normal((25, 16)).astype(np.float32)
    ks = rng.integers(1, 30, len(queries)).tolist()
    excludes = [rng.choice(3000, int(rng.integers(0, 40)), replace=False).tolist() for _ in queries]
    for index in (FaissIndex(vectors, nlist=16, nprobe=2), ExactIndex(vectors)):
        together = index.search_batch(queries, ks, excludes)
        for q, k, ex, (items, scores) in zip(queries, ks, excludes, together, strict=True):
            one_items, one_scores = index.search(q, k, ex)
            assert np.array_equal(items, one_items) and len(items) == k
            np.testing.assert_allclose(scores, one_scores, rtol=1e-6)


def test_concurrent_requests_to_the_service_answer_as_unbatched(app_runs, tmp_path):
    """Many clients at once against a batching app and an unbatched one (max_batch 1), each served exactly and with
    FAISS: the same answers."""
    run = app_runs("alpharec", tmp_path)
    users = [u for u in run.data.user_ids if len(run.data.train_items(run.data.user_index(u)))]
    faiss = {"nlist": 4, "nprobe": 2}
    for retrieval in ("exact", "faiss"):
        bodies = [{"user": u, "k": 3 + i % 5, "exclude": ["i1", "i2"][: i % 3], "retrieval": retrieval}
                  for i, u in enumerate(users)]
        bodies += [{"items": ["i4", "i5"], "k": 4}, {"user": users[0], "intent": None, "k": 40, "exclude_seen": False}]
        served = ServedRun("a", run, retrieval, faiss, options=ServeOptions(window_ms=20, max_batch=8))
        batched = create_app({"a": served})
        plain = create_app({"a": run}, retrieval=retrieval, faiss_options=faiss, options=ServeOptions(max_batch=1))
        with TestClient(batched) as fast, TestClient(plain) as slow:
            with concurrent.futures.ThreadPoolExecutor(16) as pool:
                answers = list(pool.map(lambda b: fast.post("/models/a/recommend", json=b), bodies))
            for body, answer in zip(bodies, answers, strict=True):
                expected = slow.post("/models/a/recommend", json=body)
                assert answer.status_code == expected.status_code == 200, answer.json()
                got, want = answer.json()["recommendations"], expected.json()["recommendations"]
                assert [r["item_id"] for r in got] == [r["item_id"] for r in want], body
                assert [r["because"] for r in got] == [r["because"] for r in want], body
                np.testing.assert_allclose([r["score"] for r in got], [r["score"] for r in want], rtol=1e-5,
                                           atol=1e-6)
        # exact: the known users batched (a new user's items go through Run.recommend); FAISS: every search
        assert served.batcher is not None
        assert served.batcher.requests == len(users) + (1 if retrieval == "exact" else 2)


def test_a_bad_request_in_a_batch_fails_alone(app_runs, tmp_path):
    run = app_runs("alpharec", tmp_path)
    client = TestClient(create_app({"a": run}, options=ServeOptions(window_ms=20, max_batch=8)))
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        codes = list(pool.map(lambda u: client.post("/models/a/recommend", json={"user": u, "k": 3}).status_code,
                              ["u1", "nobody", "u2", "u3", "u4", "nobody", "u5", "u6"]))
    assert codes == [200, 404, 200, 200, 200, 404, 200, 200]


@pytest.mark.parametrize("name", ["fism", "crs-pop"])
def test_a_batch_of_conversations_ranks_as_run_recommend_does(name, app_runs, tmp_path):
    run = app_runs(name, tmp_path)
    texts = ["User: I like Heat (1995) and Alien (1979)", "User: hi", "User: Jaws (1975) please\nSystem: Up (2009)?",
             "User: The Matrix (1999), Toy Story (1995), Fargo (1996), Ronin (1998), Titanic (1997)"]
    samples = [run.conversation_sample(t) for t in texts]
    asks = [Ask(None, None, k, list(s.mentioned), s) for s, k in zip(samples, [3, 10, 5, 10], strict=True)]
    with torch.no_grad():
        batch = model_top_k(run.model, asks)
    for a, (items, scores) in zip(asks, batch, strict=True):
        direct = run.recommend(conversation=a.sample, k=a.k)
        assert [run.catalog.ids[i] for i in items] == [r.item_id for r in direct]
        np.testing.assert_allclose(scores, [r.score for r in direct], rtol=1e-5, atol=1e-6)
    assert len(batch[3][0]) == 5  # ten movies, five mentioned


def test_concurrent_messages_answer_as_unbatched(app_runs, tmp_path):
    run = app_runs("fism", tmp_path)
    served = ServedRun("c", run, options=ServeOptions(window_ms=20, max_batch=8))
    texts = [f"I like {m}" for m in ("Heat (1995)", "Alien (1979)", "Jaws (1975)", "Up (2009)", "Fargo (1996)")] * 3
    with TestClient(create_app({"c": served})) as fast, \
            TestClient(create_app({"c": run}, options=ServeOptions(max_batch=1))) as slow:
        def talk(client, text):
            sid = client.post("/models/c/sessions").json()["session_id"]
            return client.post(f"/models/c/sessions/{sid}/messages", json={"text": text, "k": 4}).json()

        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(lambda t: talk(fast, t), texts))
        for text, answer in zip(texts, answers, strict=True):
            expected = talk(slow, text)
            got, want = answer["recommendations"], expected["recommendations"]
            assert [r["item_id"] for r in got] == [r["item_id"] for r in want] and answer["mentioned"] == \
                expected["mentioned"]
            np.testing.assert_allclose([r["score"] for r in got], [r["score"] for r in want], rtol=1e-5, atol=1e-6)
    assert served.batcher is not None and served.batcher.requests == len(texts)
