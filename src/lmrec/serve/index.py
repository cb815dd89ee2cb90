"""Top-k retrieval by inner product: exact (one matrix product) or a FAISS IVF index for large catalogs.

``ExactIndex`` scores every item (``q·vᵢ``) and is the reference. ``FaissIndex`` is ``faiss.IndexIVFFlat`` with the
inner-product metric: the vectors are clustered into ``nlist`` lists (k-means on a sample, trained once) and a query
scans the ``nprobe`` lists nearest to it, so a search costs about ``nprobe / nlist`` of the exact one; its recall
against exact ranking is measured by ``bench/serve_retrieval.py``. Excluded items (the user's own, the request's)
are removed after the search, which therefore asks for ``k`` plus their number.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

FAISS_THRESHOLD = 200_000  # "auto" retrieval uses FAISS from this many items on


class ExactIndex:
    """Inner-product top-k over all items, exact."""

    kind = "exact"

    def __init__(self, vectors: np.ndarray):
        self.vectors = np.ascontiguousarray(vectors, dtype=np.float32)

    def __len__(self) -> int:
        return len(self.vectors)

    def add(self, vectors: np.ndarray) -> None:
        self.vectors = np.concatenate([self.vectors, np.asarray(vectors, dtype=np.float32)])

    def search(self, query: np.ndarray, k: int, exclude: Sequence[int] = ()) -> tuple[np.ndarray, np.ndarray]:
        """(indices, scores) of the ``k`` best items for one query vector, best first, ``exclude`` left out."""
        scores = self.vectors @ np.asarray(query, dtype=np.float32)
        if len(exclude):
            scores[np.asarray(exclude, dtype=np.int64)] = -np.inf
        k = min(k, int(np.isfinite(scores).sum()))
        top = np.argpartition(-scores, k - 1)[:k] if k else np.zeros(0, np.int64)
        top = top[np.argsort(-scores[top], kind="stable")]
        return top, scores[top]

    def search_batch(self, queries: np.ndarray, ks: Sequence[int], excludes: Sequence[Sequence[int]]
                     ) -> list[tuple[np.ndarray, np.ndarray]]:
        """:meth:`search` of each row of ``queries`` (one at a time: the reference)."""
        return [self.search(q, k, ex) for q, k, ex in zip(queries, ks, excludes, strict=True)]


class FaissIndex:
    """``faiss.IndexIVFFlat`` (inner product): ``nlist`` k-means lists (default ≈ 4·√n), ``nprobe`` searched."""

    kind = "faiss"

    def __init__(self, vectors: np.ndarray, nlist: int | None = None, nprobe: int = 64, seed: int = 0,
                 train_size: int = 100_000):
        import faiss

        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        n, dim = vectors.shape
        self.nlist = nlist or max(1, min(int(4 * np.sqrt(n)), n // 39 or 1))
        quantizer = faiss.IndexFlatIP(dim)
        self.index = faiss.IndexIVFFlat(quantizer, dim, self.nlist, faiss.METRIC_INNER_PRODUCT)
        rng = np.random.default_rng(seed)
        sample = vectors[rng.choice(n, min(n, max(train_size, 39 * self.nlist)), replace=False)]
        self.index.cp.seed = seed
        self.index.train(sample)
        self.index.add(vectors)
        self.index.nprobe = min(nprobe, self.nlist)
        self.quantizer = quantizer  # the IVF index keeps a pointer to it

    def __len__(self) -> int:
        return int(self.index.ntotal)

    def add(self, vectors: np.ndarray) -> None:
        self.index.add(np.ascontiguousarray(vectors, dtype=np.float32))

    def search(self, query: np.ndarray, k: int, exclude: Sequence[int] = ()) -> tuple[np.ndarray, np.ndarray]:
        excluded = set(int(i) for i in exclude)
        query = np.asarray(query, dtype=np.float32).reshape(1, -1)
        want, nprobe = min(k + len(excluded), len(self)), self.index.nprobe
        while True:
            scores, indices = self.index.search(query, want)
            keep = [(int(i), float(s)) for i, s in zip(indices[0], scores[0], strict=True)
                    if i >= 0 and int(i) not in excluded][:k]
            if len(keep) == k or self.index.nprobe >= self.nlist:  # every list searched: nothing more to find
                break
            # the probed lists held fewer than k allowed items: look in more lists
            self.index.nprobe = min(self.nlist, 2 * self.index.nprobe)
        self.index.nprobe = nprobe
        return np.array([i for i, _ in keep], dtype=np.int64), np.array([s for _, s in keep], dtype=np.float32)

    def search_batch(self, queries: np.ndarray, ks: Sequence[int], excludes: Sequence[Sequence[int]]
                     ) -> list[tuple[np.ndarray, np.ndarray]]:
        """:meth:`search` of each row of ``queries`` (``ks[i]``, ``excludes[i]``) through one FAISS search for the
        batch's largest ``k`` + exclusions; a row whose probed lists held too few allowed items is searched again
        alone (as :meth:`search` does, probing more lists). The same answers as one search per row, but for items
        whose scores tie exactly."""
        excluded = [set(int(i) for i in ex) for ex in excludes]
        want = min(max(k + len(ex) for k, ex in zip(ks, excluded, strict=True)), len(self))
        scores, indices = self.index.search(np.ascontiguousarray(queries, dtype=np.float32), want)
        out = []
        for row, (k, ex) in enumerate(zip(ks, excluded, strict=True)):
            keep = [(int(i), float(s)) for i, s in zip(indices[row], scores[row], strict=True)
                    if i >= 0 and int(i) not in ex][:k]
            if len(keep) < k and self.index.nprobe < self.nlist:
                out.append(self.search(queries[row], k, ex))
                continue
            out.append((np.array([i for i, _ in keep], dtype=np.int64),
                        np.array([s for _, s in keep], dtype=np.float32)))
        return out


def build_index(vectors: np.ndarray, kind: str = "auto", **options) -> ExactIndex | FaissIndex:
    """``kind``: "exact", "faiss", or "auto" (FAISS from :data:`FAISS_THRESHOLD` items on)."""
    if kind == "faiss" or (kind == "auto" and len(vectors) >= FAISS_THRESHOLD):
        return FaissIndex(vectors, **options)
    return ExactIndex(vectors)
