"""A run folder served: recommendations (exact or FAISS), similar items, items added by title, conversations.

Retrieval: models that score by a dot product (every trained CF model) answer from an item index over their item
vectors (:mod:`lmrec.serve.index`): exact below :data:`~lmrec.serve.index.FAISS_THRESHOLD` items, FAISS above (or
as asked). "exact" goes through :meth:`lmrec.Run.recommend` (new users joined to the graph, intentions propagated
exactly; known users' plain requests are micro-batched into one product, :mod:`lmrec.serve.batching`) and scores
added items with the same query vector. "faiss" searches the index with the user's vector
(for a new user, AlphaRec's vector on the graph with that user; the item vectors are those of the training graph).

Every recommendation says why (:mod:`lmrec.run.reasons`, the same as :meth:`lmrec.Run.recommend`; here over the
item vectors, added items included). A request the run cannot serve as asked is an error naming it: "faiss" on a
run served exactly, ``alpha`` without an intention.

Items added by title (AlphaRec models) are placed from their LM embedding alone (exact: a new item has no edge),
rankable at once, and kept in ``added-items.safetensors`` inside the run folder: written atomically under an
exclusive file lock after re-reading the file, so a restart keeps them and concurrent additions, from threads or
processes, lose none (a server process sees the items another process added when it next adds one, or restarts).
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import hashlib
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch

from lmrec.data.conversations import CRSSample, training_mentions
from lmrec.data.interactions import SplitData
from lmrec.data.titles import TitleIndex, TitleMatch
from lmrec.errors import Argument, ArgumentError, LmrecError, UnknownIdError
from lmrec.models.base import Model
from lmrec.run import Recommendation, Run
from lmrec.serve.batching import Ask, MicroBatcher, ServeOptions, answer_batch, keep_kv_cache
from lmrec.serve.index import FAISS_THRESHOLD, ExactIndex, FaissIndex, build_index
from lmrec.tensorfile import load_tensors, save_tensors

ADDED = "added-items.safetensors"
ADDED_LOCK = ".added-items.lock"


class WriteRefused(LmrecError):
    """A write the server does not allow (the service answers 403)."""


class ServedRun:
    """One loaded run and what the service keeps for it (index, added items: at most ``max_added_items`` of them
    in its folder; ``options``: batching and the conversations' KV cache)."""

    def __init__(self, name: str, run: Run, retrieval: str = "auto", faiss_options: dict | None = None,
                 max_added_items: int = 1000, options: ServeOptions | None = None):
        self.name, self.run, self.max_added_items = name, run, max_added_items
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
        self._active: list[str] | None = None  # ids of the users with training items (cached)
        self._counts: tuple[np.ndarray | None, str] | None = None  # popularity per item and what it counts
        self.vectors: np.ndarray | None = None  # the catalog's item vectors, then the added items' (dot models)
        vectors = self.model.item_vectors()
        if vectors is not None:
            added = self._read_added()
            self.vectors = vectors.detach().cpu().numpy()
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
    def recommend(self, user: str | int | None, items: list[str], titles: list[str], intent: str | None,
                  alpha: float | None, k: int, exclude: list[str], exclude_seen: bool, retrieval: str
                  ) -> tuple[list[Recommendation], str, list[TitleMatch]]:
        """(the top ``k`` with their reasons, the retrieval used, what each title was matched to); ``alpha``: the
        intention's weight (default 0.5), an error without ``intent``; "faiss" on a run served exactly, an error."""
        if "user" not in self.features and "new_user" not in self.features:
            raise LmrecError(f"{self.name} is a conversational run: open a session and post messages")
        if k > self.n_items:
            raise LmrecError(f"k={k}: the catalog of {self.name} has {self.n_items} items")
        if alpha is not None and intent is None:
            raise ArgumentError(Argument("alpha", alpha), " weighs a stated intention: pass ", Argument("intent"),
                                " with it, or leave alpha out")
        if retrieval == "faiss" and self.index is not None and self.retrieval != "faiss":
            raise ArgumentError(Argument("retrieval", "faiss"), f": {self.name} is served with exact retrieval "
                                f"({self.n_items} items, below {FAISS_THRESHOLD:,} or `lmrec serve --retrieval exact`)"
                                "; ask for exact or auto, or serve it with --retrieval faiss")
        user = str(user) if user is not None else None
        items, exclude = [str(i) for i in items], [str(i) for i in exclude]
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
            leave = [*left_out, *(seen if exclude_seen else [])]
            top, scores = self._search(self._query(u, history, intent, 0.5 if alpha is None else alpha), k, leave)
            brought: set[int] = set()
            if intent is not None:  # which items the intention brought in: ranked again without it
                plain = self._search(self._query(u, history, None, 0.5), k, leave)[0]
                brought = set(top.tolist()) - set(plain.tolist())
        recommendations = self._recommendations(top, scores)
        return self._explained(recommendations, u, history, intent, brought), self.index.kind, matched

    def _search(self, query: np.ndarray, k: int, leave: list[int]) -> tuple[np.ndarray, np.ndarray]:
        """The top ``k`` of ``query`` in the item index, ``leave`` left out; batched with concurrent searches."""
        if self.batcher is not None:
            return self.batcher(Ask(None, query, k, leave))
        with self.lock if isinstance(self.index, FaissIndex) else _nothing():
            return self.index.search(query, k, leave)

    def _explained(self, top: list[Recommendation], u: int | None, history: list[int], intent: str | None,
                   brought: set[int]) -> list[Recommendation]:
        """``top`` with the reasons of :meth:`lmrec.Run.reasons` over the served item vectors (added items too)."""
        if u is not None:
            history = self.run.data.train_items(u).tolist()
        indices = [self.index_of(r.item_id) for r in top]
        return _with_reasons(top, self.run.reasons(history, indices, intent, brought, space=self.vectors))

    def converse(self, sample: CRSSample, k: int) -> list[Recommendation]:
        """The top ``k`` (at most the catalog) for a conversation turn, its mentioned items left out, as
        ``Run.recommend(conversation=sample)`` answers; batched with concurrent ones."""
        k = min(k, len(self.run.catalog))
        if self.batcher is None:
            return self.run.recommend(conversation=sample, k=k)
        top = self._recommendations(*self.batcher(Ask(None, None, k, list(sample.mentioned), sample)))
        why = self.run.reasons(list(sample.mentioned), [self.index_of(r.item_id) for r in top], conversation=True)
        return _with_reasons(top, why)

    def _query(self, user: int | None, history: list[int], intent: str | None, alpha: float) -> np.ndarray:
        """The query vector of a known user (dense index) or of a new user's items (see :meth:`Run.who`)."""
        if user is not None:
            return self.model.user_vector(user, intent, alpha).cpu().numpy()
        return self.model.new_user_vector(history, intent, alpha).cpu().numpy()

    def _exact(self, user: str | None, u: int | None, history: list[int], intent: str | None, alpha: float | None,
               k: int, left_out: list[int], exclude_seen: bool) -> list[Recommendation]:
        """:meth:`lmrec.Run.recommend` (its reasons), merged with the added items scored by the same query; with
        added items, the reasons are given again over the merged list."""
        top = self._merged(user, u, history, intent, alpha, k, left_out, exclude_seen)
        if not self.added_ids:
            return top
        brought: set[int] = set()
        if intent is not None:
            plain = self._merged(user, u, history, None, None, k, left_out, exclude_seen)
            brought = {self.index_of(r.item_id) for r in top} - {self.index_of(r.item_id) for r in plain}
        return self._explained(top, u, history, intent, brought)

    def _merged(self, user: str | None, u: int | None, history: list[int], intent: str | None, alpha: float | None,
                k: int, left_out: list[int], exclude_seen: bool) -> list[Recommendation]:
        n = len(self.run.catalog)
        exclude = [self.run.catalog.ids[i] for i in left_out if i < n]
        items = [self.run.catalog.ids[i] for i in history]
        ids, titles = self.added_ids, self.added_titles
        if self.batcher is not None and u is not None and intent is None:  # Run.recommend's ranking, batched
            left = [i for i in left_out if i < n] + (self.run.data.user_items(u).tolist() if exclude_seen else [])
            top = self._recommendations(*self.batcher(Ask(u, None, min(k, n), left)))
            if not ids:  # with added items, _exact gives the reasons over the merged list
                top = self._explained(top, u, history, None, set())
        else:
            top = self.run.recommend(user, items=items, intent=intent, alpha=alpha, k=min(k, n), exclude=exclude,
                                     exclude_seen=exclude_seen)
        if not ids:
            return top
        query = self._query(u, history, intent, 0.5 if alpha is None else alpha)
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
        vectors = self.vectors  # read once: an addition gives the new item its id before its vector
        unit = self._unit
        if unit is None or len(unit) != len(vectors):
            unit = self._unit = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
        if i >= len(unit):
            raise LmrecError(f"item {item_id!r} is being added to {self.name}: ask again in a moment")
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
            if len(ids) >= self.max_added_items:
                raise WriteRefused(f"{self.name} has {len(ids)} added items, the most this server allows "
                                   f"(lmrec serve --max-added-items {self.max_added_items})")
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

    def users(self, limit: int, offset: int, q: str = "") -> tuple[list[str], int]:
        """(the ids of users with training items whose id contains ``q`` (any case), from ``offset``, at most
        ``limit``; how many there are)."""
        data = self.run.data
        if not isinstance(data, SplitData):  # conversational data: no users
            return [], 0
        if self._active is None:
            self._active = [data.user_ids[u] for u in np.flatnonzero(np.diff(data.train.indptr) > 0)]
        found = [u for u in self._active if q.casefold() in u.casefold()] if q else self._active
        return found[offset : offset + limit], len(found)

    def history(self, user_id: str, limit: int) -> tuple[list[int], int, int]:
        """(a known user's first ``limit`` training items, as dense indices; how many they have; how many more the
        run's valid and test splits hold back from the model)."""
        data = self.run.data
        if not isinstance(data, SplitData):
            raise LmrecError(f"{self.name} is a conversational run: it has no users")
        u = data.user_index(user_id)
        train = data.user_items(u, ("train",))
        return train[:limit].tolist(), len(train), len(data.user_items(u, ("valid", "test")))

    def details(self, item_id: str) -> dict[str, object]:
        """What the service knows of an item: id, title, its other text fields, popularity (``popularity_of`` says
        what is counted; None where nothing is), whether it was added through the service."""
        i, n = self.index_of(item_id), len(self.run.catalog)
        fields = {name: str(values[i]) for name, values in self.run.catalog.fields.items() if i < n and values[i]}
        counts, what = self._popularity()
        return {"item_id": self.item_id(i), "title": self.title(i), "fields": fields, "added": i >= n,
                "popularity": int(counts[i]) if counts is not None and i < n else None, "popularity_of": what}

    def _popularity(self) -> tuple[np.ndarray | None, str]:
        if self._counts is None:
            data = self.run.data
            if isinstance(data, SplitData):
                self._counts = (data.item_popularity(), "training users who have the item")
            elif data.train:
                self._counts = (training_mentions(data.train, len(data.catalog)),
                                "training conversation turns that mention the item")
            else:  # a CRS run served from its snapshot: the catalog without the conversations
                self._counts = (None, "not known: the run was served without its training conversations")
        return self._counts


def _nothing() -> contextlib.AbstractContextManager:
    return contextlib.nullcontext()


def _with_reasons(top: list[Recommendation], why: list[tuple]) -> list[Recommendation]:
    """``top`` with the (because, intent, reason) of :meth:`lmrec.Run.reasons`, one per recommendation."""
    return [dataclasses.replace(r, because=b, intent=i, reason=s) for r, (b, i, s) in zip(top, why, strict=True)]
