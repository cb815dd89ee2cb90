"""Training samples drawn from the TRAINING matrix only."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from lmrec.errors import LmrecError


class Sampler:
    """Draws (user, positive) pairs and negatives from a binary training matrix (keys precomputed once)."""

    def __init__(self, train: sp.csr_matrix):
        self.train = train
        self.n_users, self.n_items = train.shape
        self.counts = np.diff(train.indptr)
        self.active = np.flatnonzero(self.counts)
        if len(self.active) == 0:
            raise LmrecError("the training split is empty: nothing to sample")
        rows = np.repeat(np.arange(self.n_users, dtype=np.int64), self.counts)
        self._keys = np.sort(rows * self.n_items + train.indices)

    def user_positive(self, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """``n`` pairs: users uniform over those with training items, positive uniform among theirs.

        LightGCN's and AlphaRec's sampler: every user equally often, not every interaction.
        """
        users = self.active[rng.integers(0, len(self.active), n)]
        offsets = (rng.random(n) * self.counts[users]).astype(np.int64)
        return users, self.train.indices[self.train.indptr[users] + offsets].astype(np.int64)

    def negatives(self, users: np.ndarray, n_neg: int, rng: np.random.Generator, max_rounds: int = 100) -> np.ndarray:
        """(len(users), n_neg) items uniform with replacement among items NOT in each user's training set."""
        negatives = rng.integers(0, self.n_items, (len(users), n_neg))
        bad = self.seen(users, negatives)
        for _ in range(max_rounds):
            if not bad.any():
                return negatives
            negatives[bad] = rng.integers(0, self.n_items, int(bad.sum()))
            bad = self.seen(users, negatives)
        if bad.any():
            stuck = np.unique(users[bad.any(axis=1)])
            raise LmrecError(f"cannot sample unseen items for users {stuck[:5].tolist()}: they have (almost) every item")
        return negatives

    def seen(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        """True where ``items[r, ...]`` is a training item of ``users[r]`` (same shape as ``items``)."""
        queries = users.reshape(-1, *([1] * (items.ndim - 1))) * self.n_items + items
        pos = np.minimum(np.searchsorted(self._keys, queries), len(self._keys) - 1)
        return self._keys[pos] == queries
