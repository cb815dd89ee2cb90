"""User-item interaction logs and their train / valid / test CSR splits."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp

from lmrec.data.catalog import ItemCatalog
from lmrec.errors import EmptyUserError, UnknownIdError


@dataclass
class Interactions:
    """An implicit-feedback log: row ``k`` says user ``users[k]`` interacted with item ``items[k]``.

    ``users``/``items`` are dense indices into ``user_ids`` and ``catalog``. ``ratings`` and ``timestamps``
    are kept when the source has them (splits and filters may use them). Order of rows is the source's order.
    """

    users: np.ndarray  # (n,) int64
    items: np.ndarray  # (n,) int64
    user_ids: list[str]
    catalog: ItemCatalog
    ratings: np.ndarray | None = None  # (n,) float32
    timestamps: np.ndarray | None = None  # (n,) int64
    name: str = "dataset"

    def __post_init__(self) -> None:
        self.users = np.asarray(self.users, dtype=np.int64)
        self.items = np.asarray(self.items, dtype=np.int64)
        n = len(self.users)
        for label, column in (("items", self.items), ("ratings", self.ratings), ("timestamps", self.timestamps)):
            if column is not None and len(column) != n:
                raise ValueError(f"interactions: {label} has {len(column)} rows, users has {n}")
        if n and (self.users.min() < 0 or self.users.max() >= len(self.user_ids)):
            raise ValueError("interactions: user index out of range of user_ids")
        if n and (self.items.min() < 0 or self.items.max() >= len(self.catalog)):
            raise ValueError("interactions: item index out of range of the catalog")

    def __len__(self) -> int:
        return len(self.users)

    @property
    def n_users(self) -> int:
        return len(self.user_ids)

    @property
    def n_items(self) -> int:
        return len(self.catalog)

    def select(self, mask: np.ndarray) -> Interactions:
        """The rows where ``mask`` is true (same user and item index spaces)."""
        pick = lambda column: None if column is None else column[mask]  # noqa: E731
        return Interactions(
            self.users[mask], self.items[mask], self.user_ids, self.catalog,
            pick(self.ratings), pick(self.timestamps), self.name,
        )

    def compact(self) -> Interactions:
        """Drop users and items that no longer occur, re-indexing both densely (order kept)."""
        keep_users = np.unique(self.users)
        keep_items = np.unique(self.items)
        user_map = np.full(self.n_users, -1, dtype=np.int64)
        user_map[keep_users] = np.arange(len(keep_users))
        item_map = np.full(self.n_items, -1, dtype=np.int64)
        item_map[keep_items] = np.arange(len(keep_items))
        return Interactions(
            user_map[self.users], item_map[self.items], [self.user_ids[u] for u in keep_users],
            self.catalog.subset(keep_items.tolist()), self.ratings, self.timestamps, self.name,
        )

    def checksum(self) -> str:
        """sha256 over the user ids, the catalog and every row (user, item, rating, timestamp)."""
        digest = hashlib.sha256(self.catalog.checksum().encode())
        digest.update("\n".join(self.user_ids).encode())
        for column in (self.users, self.items, self.ratings, self.timestamps):
            digest.update(b"-" if column is None else np.ascontiguousarray(column).tobytes())
        return digest.hexdigest()[:16]

    def to_csr(self) -> sp.csr_matrix:
        """Binary (n_users, n_items) matrix; repeated pairs count once."""
        return to_csr(self.users, self.items, self.n_users, self.n_items)


def to_csr(users: np.ndarray, items: np.ndarray, n_users: int, n_items: int) -> sp.csr_matrix:
    """Binary CSR matrix with a 1 at every (user, item) pair; duplicates collapse, indices sorted."""
    data = np.ones(len(users), dtype=np.float32)
    matrix = sp.csr_matrix((data, (users, items)), shape=(n_users, n_items))
    matrix.sum_duplicates()
    matrix.data[:] = 1.0
    return matrix


@dataclass
class SplitData:
    """A dataset ready for training and evaluation: three disjoint binary user-item CSR matrices.

    Users and items share one index space across splits. ``train`` is the only split a model may fit
    on (graphs, popularity and user profiles come from it); ``valid`` selects models and epochs;
    ``test`` is reported. ``protocol`` describes how the split was made.
    """

    name: str
    user_ids: list[str]
    catalog: ItemCatalog
    train: sp.csr_matrix
    valid: sp.csr_matrix
    test: sp.csr_matrix
    protocol: str = ""
    _user_index: dict[str, int] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        shape = (len(self.user_ids), len(self.catalog))
        for label in ("train", "valid", "test"):
            matrix = sp.csr_matrix(getattr(self, label), dtype=np.float32)
            if matrix.shape != shape:
                raise ValueError(f"{self.name}: {label} has shape {matrix.shape}, expected {shape}")
            matrix.sort_indices()
            setattr(self, label, matrix)
        self._user_index = {u: i for i, u in enumerate(self.user_ids)}

    @property
    def n_users(self) -> int:
        return len(self.user_ids)

    @property
    def n_items(self) -> int:
        return len(self.catalog)

    def split(self, name: str) -> sp.csr_matrix:
        if name not in ("train", "valid", "test"):
            raise ValueError(f"unknown split {name!r}: expected train, valid or test")
        return getattr(self, name)

    def user_index(self, user_id: str | int) -> int:
        """Dense index of an external user id, or :class:`UnknownIdError` naming it."""
        try:
            return self._user_index[str(user_id)]
        except KeyError:
            raise UnknownIdError(
                f"unknown user id {user_id!r} in dataset {self.name!r} ({self.n_users} users)"
            ) from None

    def train_items(self, user: int) -> np.ndarray:
        """Training items of a dense user index; :class:`EmptyUserError` when there are none."""
        row = self.train.indices[self.train.indptr[user] : self.train.indptr[user + 1]]
        if len(row) == 0:
            raise EmptyUserError(f"user {self.user_ids[user]!r} of {self.name!r} has no training interactions")
        return row

    def user_items(self, user: int, splits: tuple[str, ...] = ("train", "valid", "test")) -> np.ndarray:
        """The items of a dense user index in ``splits`` (default: everything the user has)."""
        return np.concatenate([self.split(s).indices[self.split(s).indptr[user] : self.split(s).indptr[user + 1]]
                               for s in splits]).astype(np.int64)

    def item_popularity(self) -> np.ndarray:
        """(n_items,) number of training users per item (training data only)."""
        return np.asarray(self.train.sum(axis=0)).ravel()

    def stats(self) -> dict[str, float | int | str]:
        n_train, n_valid, n_test = self.train.nnz, self.valid.nnz, self.test.nnz
        total = n_train + n_valid + n_test
        return {
            "name": self.name,
            "users": self.n_users,
            "items": self.n_items,
            "interactions": total,
            "train": n_train,
            "valid": n_valid,
            "test": n_test,
            "density": total / max(1, self.n_users * self.n_items),
            "users_with_test": int((np.diff(self.test.indptr) > 0).sum()),
            "protocol": self.protocol,
        }

    def checksum(self) -> str:
        """sha256 over the three splits and the catalog: recorded with every run."""
        digest = hashlib.sha256(self.catalog.checksum().encode())
        digest.update("\n".join(self.user_ids).encode())
        for matrix in (self.train, self.valid, self.test):
            digest.update(matrix.indptr.tobytes())
            digest.update(matrix.indices.astype(np.int64).tobytes())
        return digest.hexdigest()[:16]
