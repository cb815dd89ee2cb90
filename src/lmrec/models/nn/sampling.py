"""Training samples drawn from the TRAINING matrix only."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from lmrec.errors import LmrecError

BITSET_LIMIT = 2**33  # (user, item) pairs a bitset covers (1 GiB); beyond, membership is a sorted-key search


class Sampler:
    """Draws (user, positive) pairs and negatives from a binary training matrix.

    Membership ("is item i a training item of user u?") is one bit of a (n_users · n_items)-bit set, an O(1) lookup,
    when that set is at most 1 GiB; else a binary search of the sorted keys u·n_items + i."""

    def __init__(self, train: sp.csr_matrix):
        self.train = train
        self.n_users, self.n_items = train.shape
        self.counts = np.diff(train.indptr)
        self.active = np.flatnonzero(self.counts)
        if len(self.active) == 0:
            raise LmrecError("the training split is empty: nothing to sample")
        rows = np.repeat(np.arange(self.n_users, dtype=np.int64), self.counts)
        self._keys = np.sort(rows * self.n_items + train.indices)
        self._bits: np.ndarray | None = None
        if self.n_users * self.n_items <= BITSET_LIMIT:
            self._bits = np.zeros((self.n_users * self.n_items + 7) // 8, dtype=np.uint8)
            np.bitwise_or.at(self._bits, self._keys >> 3, (1 << (self._keys & 7)).astype(np.uint8))

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
            raise LmrecError(
                f"cannot sample unseen items for users {stuck[:5].tolist()}: they have (almost) every item"
            )
        return negatives

    def seen(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        """True where ``items[r, ...]`` is a training item of ``users[r]`` (same shape as ``items``)."""
        queries = users.reshape(-1, *([1] * (items.ndim - 1))) * self.n_items + items
        if self._bits is not None:
            return ((self._bits[queries >> 3] >> (queries & 7).astype(np.uint8)) & 1).astype(bool)
        pos = np.minimum(np.searchsorted(self._keys, queries), len(self._keys) - 1)
        return self._keys[pos] == queries
