"""A run folder served: recommendations (exact or FAISS), similar items, items added by title, conversations.

Retrieval: models that score by a dot product (every trained CF model) answer from an item index over their item
vectors (:mod:`lmrec.serve.index`): exact below :data:`~lmrec.serve.index.FAISS_THRESHOLD` items, FAISS above (or
as asked). "exact" goes through :meth:`lmrec.Run.recommend` (new users joined to the graph, intentions propagated
exactly) and scores added items with the same query vector. "faiss" searches the index with the user's vector
(for a new user, AlphaRec's vector on the graph with that user; the item vectors are those of the training graph).

Items added by title (AlphaRec models) are placed from their LM embedding alone (exact: a new item has no edge),
rankable at once, and kept in ``added-items.safetensors`` inside the run folder: written atomically under an
exclusive file lock after re-reading the file, so a restart keeps them and concurrent additions, from threads or
processes, lose none (a server process sees the items another process added when it next adds one, or restarts).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch

from lmrec.data.conversations import CRSSample
from lmrec.data.interactions import SplitData
from lmrec.data.titles import TitleIndex, TitleMatch
from lmrec.errors import LmrecError, UnknownIdError
from lmrec.models.base import Model
from lmrec.run import Recommendation, Run
from lmrec.serve.batching import Ask, MicroBatcher, ServeOptions, answer_batch, keep_kv_cache
from lmrec.serve.index import FAISS_THRESHOLD, ExactIndex, FaissIndex, build_index
from lmrec.tensorfile import load_tensors, save_tensors

ADDED = "added-items.safetensors"
ADDED_LOCK = ".added-items.lock"


class ServedRun:
    """One loaded run and what the service keeps for it (index, added items)."""

    def __init__(self, name: str, run: Run, retrieval: str = "auto", faiss_options: dict | None = None,
                 options: ServeOptions | None = None):
        self.name, self.run = name, run
        self.options = options = options or ServeOptions()
        # top-k requests answered by one product per batch (lmrec.serve.batching); None: one thread each
        self.batcher: MicroBatcher[Ask, tuple[np.ndarray, np.ndarray]] | None = None
        if options.max_batch > 1:
            self.batcher = MicroBatcher(lambda asks: answer_batch(self, asks), options.window_ms, options.max_batch,
                                        name=f"lmrec-batcher-{name}")
        keep_kv_cache(run.model, options)
        self.lock = threading.Lock()  # additions; and every use of a FAISS index (not thread-safe)
        self.model = run.model
        # readers take these without the lock: an addition assigns the new ids and titles before it grows the
        # index, so a row of the index always has its id
        self.added_ids: list[str] = []
        self.added_titles: list[str] = []
        self.index: ExactIndex | FaissIndex | None = None
        self._unit: np.ndarray | None = None  # the item vectors normalized, for similar items (cached)
        vectors = self.model.item_vectors()
        if vectors is not None:
            added = self._read_added()
            self.vectors = vectors.detach().cpu().numpy()  # the catalog's, then the added items'
            if added is not None:
                self.vectors = np.concatenate([self.vectors, added[2]])
                self.added_ids, self.added_titles = added[0], added[1]
            base = self.vectors
            kind = retrieval if retrieval != "auto" else ("faiss" if len(base) >= FAISS_THRESHOLD else "exact")
            self.index = build_index(base, kind, **(faiss_options or {}) if kind == "faiss" else {})
        self.features = self._features()
        # one matcher for search, titles in requests and added items (lmrec.data.titles)
        self.titles = TitleIndex(run.catalog.ids, run.catalog.titles, name)
        for item_id, title in zip(self.added_ids, self.added_titles, strict=True):
            self.titles.add(item_id, title)

    # -- what it serves --------------------------------------------------------------------------------------
    @property
    def task(self) -> str:
        return self.run.task

    @property
    def n_items(self) -> int:
        return len(self.run.catalog) + len(self.added_ids)

    @property
    def retrieval(self) -> str:
        return self.index.kind if self.index is not None else "exact"

    def _features(self) -> list[str]:
        """What this run answers (shown by /models and used by the page), from the model's contract: the queries it
        answers (:meth:`lmrec.models.base.Model.answers`), intentions, placing items from text, vectors."""
        answers = self.model.answers()
        kinds = {"conversations": "conversation", "known users": "user", "new users": "new_user"}
        out = [feature for kind, feature in kinds.items() if kind in answers]
        if self.model.takes_intent:
            out.append("intent")
        if type(self.model).new_item_vectors is not Model.new_item_vectors:
            out.append("add_item")
        if self.index is not None:
            out.append("similar")
        return out

    def item_id(self, index: int) -> str:
        n = len(self.run.catalog)
        return self.run.catalog.ids[index] if index < n else self.added_ids[index - n]

    def title(self, index: int) -> str:
        n = len(self.run.catalog)
        return self.run.catalog.titles[index] if index < n else self.added_titles[index - n]

    def index_of(self, item_id: str) -> int:
        if item_id in self.run.catalog:
            return self.run.catalog.index(item_id)
        try:
            return len(self.run.catalog) + self.added_ids.index(item_id)
        except ValueError:
            raise UnknownIdError(f"unknown item id {item_id!r}: not among the {self.n_items} items of "
                                 f"{self.name}") from None

    # -- recommendation ------------------------------------------------------------------------------------
    def recommend(self, user: str | None, items: list[str], titles: list[str], intent: str | None, alpha: float,
                  k: int, exclude: list[str], exclude_seen: bool, retrieval: str
                  ) -> tuple[list[Recommendation], str, list[TitleMatch]]:
        """(the top ``k``, the retrieval used, what each title was matched to)."""
        if "user" not in self.features and "new_user" not in self.features:
            raise LmrecError(f"{self.name} is a conversational run: open a session and post messages")
        if k > self.n_items:
            raise LmrecError(f"k={k}: the catalog of {self.name} has {self.n_items} items")
        matched = [self.titles.match(title) for title in titles]
        items = [*items, *(m.item_id for m in matched)]
        added = next((i for i in items if i not in self.run.catalog and i in self.added_ids), None)
        if added is not None:
            raise LmrecError(f"item {added!r} was added through the service: it has no interactions to learn a "
                             "taste from, so it cannot stand for a user's history (ask for items of the catalog)")
        u, history, seen = self.run.who(user, items)
        left_out = [self.index_of(i) for i in exclude]
        use_index = retrieval == "faiss" or (retrieval == "auto" and self.retrieval == "faiss")
        if use_index and self.index is None:
            raise LmrecError(f"{self.model.name} does not score by a dot product: only exact retrieval serves it")
        with torch.no_grad():
            if not use_index:
                return self._exact(user, u, history, intent, alpha, k, left_out, exclude_seen), "exact", matched
            query = self._query(u, history, intent, alpha)
            exclude = [*left_out, *(seen if exclude_seen else [])]
            if self.batcher is not None:
                top, scores = self.batcher(Ask(None, query, k, exclude))
            else:
                with self.lock if isinstance(self.index, FaissIndex) else _nothing():
                    top, scores = self.index.search(query, k, exclude)
        return self._recommendations(top, scores), self.index.kind, matched

    def converse(self, sample: CRSSample, k: int) -> list[Recommendation]:
        """The top ``k`` (at most the catalog) for a conversation turn, its mentioned items left out, as
        ``Run.recommend(conversation=sample)`` answers; batched with concurrent ones."""
        k = min(k, len(self.run.catalog))
        if self.batcher is None:
            return self.run.recommend(conversation=sample, k=k)
        return self._recommendations(*self.batcher(Ask(None, None, k, list(sample.mentioned), sample)))

    def _query(self, user: int | None, history: list[int], intent: str | None, alpha: float) -> np.ndarray:
        """The query vector of a known user (dense index) or of a new user's items (see :meth:`Run.who`)."""
        if user is not None:
            return self.model.user_vector(user, intent, alpha).cpu().numpy()
        return self.model.new_user_vector(history, intent, alpha).cpu().numpy()

    def _exact(self, user: str | None, u: int | None, history: list[int], intent: str | None, alpha: float, k: int,
               left_out: list[int], exclude_seen: bool) -> list[Recommendation]:
        n = len(self.run.catalog)
        exclude = [self.run.catalog.ids[i] for i in left_out if i < n]
        items = [self.run.catalog.ids[i] for i in history]
        if self.batcher is not None and u is not None and intent is None:  # Run.recommend's ranking, batched
            left = [i for i in left_out if i < n] + (self.run.data.user_items(u).tolist() if exclude_seen else [])
            top = self._recommendations(*self.batcher(Ask(u, None, min(k, n), left)))
        else:
            top = self.run.recommend(user, items=items, intent=intent, alpha=alpha, k=min(k, n), exclude=exclude,
                                     exclude_seen=exclude_seen)
        ids, titles = self.added_ids, self.added_titles
        if not ids:
            return top
        query = self._query(u, history, intent, alpha)
        added = self.vectors[n : n + len(ids)] @ query  # new items are isolated nodes: these scores are exact
        extra = [Recommendation(0, ids[j], titles[j], float(s)) for j, s in enumerate(added) if n + j not in left_out]
        merged = sorted([*top, *extra], key=lambda r: -r.score)[:k]
        return [Recommendation(rank, r.item_id, r.title, r.score) for rank, r in enumerate(merged, start=1)]

    def _recommendations(self, top: np.ndarray, scores: np.ndarray) -> list[Recommendation]:
        return [Recommendation(rank, self.item_id(int(i)), self.title(int(i)), float(s))
                for rank, (i, s) in enumerate(zip(top, scores, strict=True), start=1)]

    def similar(self, item_id: str, k: int) -> list[Recommendation]:
        """The ``k`` items whose vectors have the highest cosine with the item's (exact)."""
        if self.index is None:
            raise LmrecError(f"{self.model.name} has no item vectors: similar items need a trained CF model")
        if k >= self.n_items:
            raise LmrecError(f"k={k}: the catalog of {self.name} has {self.n_items} items (the item itself excluded)")
        i = self.index_of(item_id)
        unit = self._unit
        if unit is None or len(unit) != len(self.vectors):
            vectors = self.vectors
            unit = self._unit = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
        return self._recommendations(*ExactIndex(unit).search(unit[i], k, [i]))

    # -- items added by title ----------------------------------------------------------------------------
    def add_item(self, title: str, item_id: str | None) -> tuple[str, str]:
        """Place a new item from its title (AlphaRec models) and keep it in the run folder; returns (id, title)."""
        title = " ".join(title.split())
        if not title:
            raise LmrecError("the title is empty")
        item_id = item_id or "added:" + hashlib.sha256(title.encode()).hexdigest()[:12]
        vector = self.model.new_item_vectors([title]).cpu().numpy()  # refuses models that cannot
        with self.lock, self._file_lock():
            on_disk = self._read_added()
            ids, titles, vectors = on_disk if on_disk is not None else ([], [], np.zeros((0, vector.shape[1]),
                                                                                         np.float32))
            if item_id in self.run.catalog or item_id in ids:
                raise LmrecError(f"item id {item_id!r} exists already in {self.name}")
            ids, titles = [*ids, item_id], [*titles, title]
            vectors = np.concatenate([vectors, vector]).astype(np.float32)
            if self.run.folder is not None:
                try:
                    save_tensors(self.run.folder / ADDED, {"vectors": torch.from_numpy(vectors)},
                                 {"ids": ids, "titles": titles})
                except OSError as exc:
                    raise LmrecError(f"cannot keep the new item in {self.run.folder}: {exc.strerror or exc}") from None
            new = len(ids) - len(self.added_ids)  # others may have added items meanwhile: take theirs too
            for other_id, other_title in zip(ids[-new:], titles[-new:], strict=True):
                self.titles.add(other_id, other_title)
            self.added_ids, self.added_titles = ids, titles  # ids first: no reader sees a row without its id
            self.vectors = np.concatenate([self.vectors, vectors[-new:]])
            self.index.add(vectors[-new:])
        return item_id, title

    def _read_added(self) -> tuple[list[str], list[str], np.ndarray] | None:
        path = self.run.folder / ADDED if self.run.folder is not None else None
        if path is None or not path.exists():
            return None
        tensors, meta = load_tensors(path)
        return list(meta["ids"]), list(meta["titles"]), tensors["vectors"].numpy()

    @contextmanager
    def _file_lock(self) -> Iterator[None]:
        if self.run.folder is None:
            yield
            return
        with open(Path(self.run.folder) / ADDED_LOCK, "a+") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    # -- browsing ----------------------------------------------------------------------------------------
    def search_titles(self, query: str, limit: int) -> list[tuple[str, str]]:
        """(id, title) of the items a search for ``query`` shows, best first (:meth:`TitleIndex.search`: the same
        matcher as titles in requests, added items included)."""
        return [(self.titles.ids[i], self.titles.titles[i]) for i in self.titles.search(query, limit)]

    def users(self, limit: int, offset: int) -> tuple[list[str], int]:
        data = self.run.data
        if not isinstance(data, SplitData):  # conversational data: no users
            return [], 0
        active = np.flatnonzero(np.diff(data.train.indptr) > 0)
        return [data.user_ids[u] for u in active[offset : offset + limit]], len(active)


def _nothing() -> contextlib.AbstractContextManager:
    return contextlib.nullcontext()
