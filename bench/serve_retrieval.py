"""FAISS (IVF, inner product) against exact top-k on a synthetic catalog of a million items: recall@10 and
latency per query, by ``nprobe``. Run alone; the thread count is printed and recorded.

The catalog imitates a trained AlphaRec: 64-d unit item vectors around 1,000 cluster directions (so neighbours
exist and the index has structure to exploit), queries are unit user vectors near a random cluster mix. Exact
top-k is one (1M × 64) matrix-vector product per query plus an argpartition.

    python bench/serve_retrieval.py [--items 1000000] [--queries 500] [--threads 2]
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np

from lmrec.environment import cpu_name
from lmrec.eval.report import text_table
from lmrec.io import atomic_write, write_json
from lmrec.serve.index import ExactIndex, FaissIndex

RESULTS = Path(__file__).resolve().parent / "results"


def catalog(n_items: int, dim: int, n_clusters: int, rng: np.random.Generator) -> np.ndarray:
    centres = rng.normal(size=(n_clusters, dim)).astype(np.float32)
    vectors = centres[rng.integers(0, n_clusters, n_items)] + 0.6 * rng.normal(size=(n_items, dim)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def queries(items: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """Users as the mean of a few random items plus noise (what a user vector is, roughly)."""
    picks = items[rng.integers(0, len(items), (n, 5))].mean(axis=1) + 0.2 * rng.normal(size=(n, items.shape[1]))
    return (picks / np.linalg.norm(picks, axis=1, keepdims=True)).astype(np.float32)


def timed_search(index, qs: np.ndarray, k: int) -> tuple[list[np.ndarray], np.ndarray]:
    results, seconds = [], []
    for q in qs:
        start = time.perf_counter()
        top, _ = index.search(q, k)
        seconds.append(time.perf_counter() - start)
        results.append(top)
    return results, np.array(seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--items", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--queries", type=int, default=500)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--nprobe", default="4,8,16,32,64")
    args = parser.parse_args()
    import faiss
    import torch

    faiss.omp_set_num_threads(args.threads)
    torch.set_num_threads(args.threads)
    os.environ["OMP_NUM_THREADS"] = str(args.threads)
    rng = np.random.default_rng(0)
    items = catalog(args.items, args.dim, 1000, rng)
    qs = queries(items, args.queries, rng)
    exact = ExactIndex(items)
    truth, exact_s = timed_search(exact, qs, args.k)
    start = time.perf_counter()
    index = FaissIndex(items)
    build_s = time.perf_counter() - start
    rows = [{"retrieval": "exact", "nprobe": "-", "recall@10": 1.0, "p50 ms": 1000 * np.median(exact_s),
             "p99 ms": 1000 * np.quantile(exact_s, 0.99), "queries/s": len(qs) / exact_s.sum()}]
    for nprobe in [int(x) for x in args.nprobe.split(",")]:
        index.index.nprobe = nprobe
        found, secs = timed_search(index, qs, args.k)
        recall = np.mean([len(set(f.tolist()) & set(t.tolist())) / args.k for f, t in zip(found, truth, strict=True)])
        rows.append({"retrieval": f"faiss IVF{index.nlist}", "nprobe": nprobe, "recall@10": recall,
                     "p50 ms": 1000 * np.median(secs), "p99 ms": 1000 * np.quantile(secs, 0.99),
                     "queries/s": len(qs) / secs.sum()})
    table = text_table([{k: (f"{v:.3f}" if isinstance(v, float) else v) for k, v in r.items()} for r in rows],
                       list(rows[0]))
    head = (f"{args.items:,} items x {args.dim}-d, {args.queries} queries, top-{args.k}, {cpu_name()}, "
            f"{args.threads} threads (faiss and torch), load average {os.getloadavg()[0]:.2f}; FAISS IVF build "
            f"(k-means training on 100k vectors + adding all) {build_s:.1f} s")
    print(head)
    print(table)
    RESULTS.mkdir(exist_ok=True)
    write_json(RESULTS / "serve_retrieval.json", {"setting": head, "rows": rows, "build_seconds": build_s})
    atomic_write(RESULTS / "serve_retrieval.md", lambda f: f.write(
        f"# FAISS vs exact retrieval (`python bench/serve_retrieval.py`)\n\n{head}.\n\n```\n{table}\n```\n\n"
        "recall@10 = |FAISS top-10 ∩ exact top-10| / 10, mean over queries; latency per single query "
        "(batch 1), the index search only.\n"))


if __name__ == "__main__":
    main()
