"""A fitted model with its data and results (:class:`Run`): it opens a run folder (:meth:`Run.load`), evaluates,
and answers :meth:`Run.recommend` for a known user, a new user (item ids or titles), a stated intention, or a
conversation, through the one model contract (:meth:`lmrec.models.base.Model.score` and its typed queries)."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lmrec.data.conversations import CRSData, CRSSample, MentionFinder, Turn, conversation_sample, parse_conversation
from lmrec.data.interactions import SplitData
from lmrec.data.registry import DataRef
from lmrec.data.snapshot import has_snapshot, read_snapshot, write_snapshot
from lmrec.data.titles import TitleIndex, TitleMatch
from lmrec.errors import Argument, ArgumentError, LmrecError
from lmrec.eval.model import test_metrics
from lmrec.eval.ranking import RankingResult
from lmrec.inputs import ModelInputs
from lmrec.io import write_json
from lmrec.models.base import Model, get_model
from lmrec.models.queries import Conversations, KnownUsers, NewUser, Query
from lmrec.run.folder import (
    MANIFEST,
    METRICS,
    TRIAL_ENDS,
    WEIGHTS,
    _read_json,
    _write_per_user,
    claim_folder,
    read_manifest,
)
from lmrec.run.reasons import Because, nearest, reason
from lmrec.settings import SettingsError, build
from lmrec.tensorfile import load_tensors, save_tensors, tensor_dict, with_prefix
from lmrec.train.trainer import (
    CHECKPOINT_FILE,
    TrainLog,
    resolve_device,
    with_legacy,
)


@dataclass(frozen=True)
class Recommendation:
    """One recommended item: its external id, title, score and rank (1 = best), and why (:mod:`lmrec.run.reasons`):
    ``because``, the history items nearest to it in the model's item space (up to 3); ``intent``, the stated
    intention where it brought the item in; ``reason``, a sentence saying so."""

    rank: int
    item_id: str
    title: str
    score: float
    because: tuple[Because, ...] = ()
    intent: str | None = None
    reason: str = ""


class Recommendations(list):
    """The recommendations of one request, best first (a list of :class:`Recommendation`), and ``matched``: what
    each title of the request was matched to (:class:`lmrec.data.titles.TitleMatch`; empty without titles)."""

    def __init__(self, items: Sequence[Recommendation] = (), matched: Sequence[TitleMatch] = ()):
        super().__init__(items)
        self.matched = list(matched)


class Run:
    """A fitted model, the data it was fitted on, its settings and metrics, and (once saved) its folder."""

    def __init__(self, model: Model, data: SplitData | CRSData, manifest: dict[str, Any],
                 metrics: dict[str, Any] | None = None, folder: Path | None = None, log: TrainLog | None = None):
        self.model, self.data, self.manifest = model, data, manifest
        self.metrics = metrics or {}
        self.test_result: RankingResult | None = None  # the test evaluation per user (CF) once fit evaluated it
        self.folder = folder
        self.log = log
        self._finder: MentionFinder | None = None  # built on the first conversation
        self._titles: TitleIndex | None = None  # built on the first title

    @property
    def task(self) -> str:
        return self.model.task

    @property
    def catalog(self):
        return self.data.catalog

    def __repr__(self) -> str:
        where = f" at {self.folder}" if self.folder else ""
        return f"Run({self.model.name} on {self.data.name}{where})"

    # -- saving and loading ------------------------------------------------------------------------------
    def save(self, folder: str | Path, overwrite: bool = False) -> Path:
        """Write the run folder (see the module docstring); an existing run there needs ``overwrite``."""
        folder = Path(folder)
        if self.folder is None or folder.resolve() != Path(self.folder).resolve():
            claim_folder(folder, overwrite=overwrite, resume=False)
        self._write(folder)
        return folder

    def _write(self, folder: Path) -> None:
        tensors = tensor_dict(self.model.state(), "state.")
        tensors.update(tensor_dict(self.model.artifacts(), "artifacts."))
        save_tensors(folder / WEIGHTS, tensors, {"model": self.model.name, "task": self.task})
        write_snapshot(folder, self.data)
        write_json(folder / METRICS, self.metrics, allow_nan=False)
        if self.test_result is not None:
            _write_per_user(folder, self.test_result)
        manifest = dict(self.manifest)
        features = manifest.get("features_abs")
        if features is None and manifest.get("features") and self.folder is not None:  # a loaded run saved elsewhere
            features = str((Path(self.folder) / manifest["features"]).resolve())
        if features:
            manifest["features"] = os.path.relpath(features, folder.resolve())
        manifest.pop("features_abs", None)
        manifest["status"] = "complete"
        write_json(folder / MANIFEST, manifest)  # last: a folder with a complete manifest is a complete run
        (folder / CHECKPOINT_FILE).unlink(missing_ok=True)
        self.manifest, self.folder = manifest, folder

    @classmethod
    def load(cls, folder: str | Path, data: SplitData | CRSData | None = None, device: str = "cpu") -> Run:
        """Open a complete run folder on ``device``: the model is rebuilt through the registry on the data the folder
        keeps (:mod:`lmrec.data.snapshot`: it needs no dataset on disk), or on ``data`` when given (to evaluate
        again on the dataset, which must have the recorded checksum). A conversational run takes its dataset where
        it still loads with the recorded checksum (its evaluation needs the conversations; its snapshot keeps the
        catalog), else its snapshot. A folder from before snapshots loads the dataset its manifest names."""
        folder = Path(folder)
        manifest = read_manifest(folder)
        status = manifest.get("status")
        if status in TRIAL_ENDS:
            raise LmrecError(f"{folder}: a trial of `lmrec tune` that {TRIAL_ENDS[status]}: it has no final model")
        if status != "complete":
            raise LmrecError(f"{folder}: the run is incomplete (training stopped before it finished); continue it "
                             "with `lmrec train ... --resume` or start again with --overwrite")
        if not (folder / WEIGHTS).exists():
            raise LmrecError(f"{folder}: a record of a finished run (its numbers, no {WEIGHTS}): the model itself "
                             "is not there; train it again with the recorded settings "
                             "(lmrec.experiments.records.train_again)")
        model = _make(get_model(manifest["model"], manifest["task"]), manifest["model_config"])
        if data is None and manifest["task"] == "crs":  # its conversations, where they are still found: the
            data = _recorded_data(manifest)           # prepared turns it is evaluated on need them
        if data is None and has_snapshot(folder):
            data = read_snapshot(folder)
            checksum = manifest["data_checksum"] if isinstance(data, CRSData) else data.checksum()  # CRS: catalog
        else:
            data = DataRef(**manifest["data"]).load() if data is None else data
            checksum = data.checksum()
        if manifest["data_checksum"] != checksum:
            raise LmrecError(f"{folder}: the model was trained on data with checksum {manifest['data_checksum']}, "
                             f"but {data.name!r} has checksum {checksum} (different data or split)")
        tensors, _ = load_tensors(folder / WEIGHTS)
        state, artifacts = with_prefix(tensors, "state."), with_prefix(tensors, "artifacts.")
        model.device = resolve_device(device)
        if manifest.get("train_config"):  # the precision it was trained in (runs from before the setting: fp32)
            model.precision = with_legacy(manifest["train_config"])["precision"]
        inputs = ModelInputs(item_features=artifacts["features"].numpy() if "features" in artifacts else None,
                             context=_context(manifest, folder, data, device) if manifest.get("llm") else None)
        model.restore(state, inputs, data)
        metrics = _read_json(folder / METRICS) if (folder / METRICS).exists() else {}
        return cls(model, data, manifest, metrics, folder)

    # -- evaluation --------------------------------------------------------------------------------------
    def evaluate(self, split: str = "test", ks: Sequence[int] | None = None, batch_size: int = 1024,
                 metrics: Sequence[str] | None = None) -> Any:
        """Full-catalog evaluation of ``split`` with the run's seed. CF: a :class:`RankingResult` (``metrics``,
        default recall, NDCG, HR, MRR, @ ``ks``; train (+ valid) items masked; users without training interactions
        left out and counted; ``ild`` over the model's LM item features, else the titles encoded with the default
        text encoder through the embedding cache). CRS: ``{"all": CRSResult, "new": CRSResult}`` over the turns the
        run was evaluated on (HR / NDCG / MRR @ ``ks``, expected ties; ``metrics`` does not apply)."""
        from lmrec.eval.model import evaluate_model

        return evaluate_model(self.model, self.data, split, ks, metrics, batch_size, self.manifest.get("eval_seed", 0))

    def add_test(self) -> None:
        """Evaluate the test split of a CF run fitted with ``test=False`` and write it into its folder (metrics,
        values per user, manifest); a run that has its test metrics already is left as it is."""
        if "test" in self.metrics or not isinstance(self.data, SplitData):
            return
        result = self.evaluate("test", metrics=test_metrics(self.data))
        self.metrics = {**self.metrics, "test": result.to_dict()}
        self.test_result = result
        notes = self.manifest["evaluation"]
        notes.get("not_evaluated", {}).pop("test", None)
        if not notes.get("not_evaluated"):
            notes.pop("not_evaluated", None)
        if result.protocol.get("excluded_cold_users"):
            notes.setdefault("excluded_cold_users", {})["test"] = result.protocol["excluded_cold_users"]
        if self.folder is not None:
            write_json(self.folder / METRICS, self.metrics, allow_nan=False)
            _write_per_user(self.folder, result)
            write_json(self.folder / MANIFEST, self.manifest)

    # -- recommendation ----------------------------------------------------------------------------------
    def recommend(
        self,
        user: str | int | None = None,
        *,
        items: Sequence[str | int] | None = None,
        titles: Sequence[str] | None = None,
        intent: str | None = None,
        alpha: float | None = None,
        conversation: str | Sequence[str] | Sequence[Turn] | CRSSample | None = None,
        k: int = 10,
        exclude: Sequence[str | int] = (),
        exclude_seen: bool = True,
    ) -> list[Recommendation]:
        """Top-``k`` items, best first, for one of:

        - ``user``: a known user (external id); their items in the dataset are left out (``exclude_seen``);
        - ``items`` (external item ids) and / or ``titles`` (matched to the catalog): a user the model was not
          trained on, scored without retraining (AlphaRec, linear mapping, MultVAE, Pop); those items left out;
        - ``intent`` (AlphaRec family, with ``user`` or ``items``): a sentence mixed into the user's layer-0
          embedding with weight ``alpha`` ∈ [0, 1] (default 0.5; ``alpha`` without ``intent`` is an error);
        - ``conversation`` (CRS runs): the text so far (lines ``User: ...`` / ``System: ...``, or turns); the movies
          it mentions are left out.

        ``exclude``: more external item ids to leave out. The list returned also says what each title was matched to
        (``.matched``); a title that names no item, or several, is an error listing the closest ones
        (:mod:`lmrec.data.titles`). Each recommendation says why (``because``, ``intent``, ``reason``:
        :mod:`lmrec.run.reasons`); with an intention the request is ranked a second time without it, to tell which
        items it brought in.
        """
        if alpha is not None and intent is None:
            raise ArgumentError(Argument("alpha", alpha), " weighs a stated intention: pass ", Argument("intent"),
                                " with it, or leave alpha out")
        alpha = 0.5 if alpha is None else alpha
        matched = self.resolve_titles(titles or [])
        items = [*(items or []), *(m.item_id for m in matched)]
        query, seen = self.query(user, items, intent, alpha, conversation)
        n_items = len(self.catalog)
        if not 1 <= int(k) <= n_items:
            raise SettingsError(Argument("k", k), f": expected an integer between 1 and the catalog size {n_items}")
        left_out = [self.catalog.index(i) for i in exclude] + (list(seen) if exclude_seen else [])
        top, values = self._top(query, left_out, int(k))
        brought: set[int] = set()
        if intent is not None:
            plain, _ = self.query(user, items, None, alpha, conversation)
            brought = set(top) - set(self._top(plain, left_out, int(k))[0])
        why = self.reasons(self.history(query), top, intent, brought, conversation is not None)
        return Recommendations([Recommendation(r, self.catalog.ids[i], self.catalog.titles[i], s, *why[r - 1])
                                for r, (i, s) in enumerate(zip(top, values, strict=True), start=1)], matched)

    def _top(self, query: Query, left_out: Sequence[int], k: int) -> tuple[list[int], list[float]]:
        """(indices, scores) of the ``k`` best items for one query, ``left_out`` left out, best first."""
        with torch.no_grad():
            scores = self.model.score(query)[0].detach().to("cpu", torch.float32).clone()
        if left_out:
            scores[torch.as_tensor(list(left_out), dtype=torch.long)] = -torch.inf
        top = torch.topk(scores, min(k, int(torch.isfinite(scores).sum())))
        return top.indices.tolist(), top.values.tolist()

    def history(self, query: Query) -> list[int]:
        """The items a query's user is known by (dense indices): a known user's training items, a new user's items,
        a conversation's mentioned items. Reasons name the nearest of them."""
        if isinstance(query, KnownUsers):
            return self.data.train_items(int(query.users[0])).tolist()  # type: ignore[union-attr]
        if isinstance(query, NewUser):
            return list(query.items)
        return list(query.samples[0].mentioned)

    def reasons(self, history: Sequence[int], items: Sequence[int], intent: str | None = None,
                brought: set[int] | frozenset[int] = frozenset(), conversation: bool = False,
                space: np.ndarray | None = None) -> list[tuple[tuple[Because, ...], str | None, str]]:
        """(because, intent, reason) of each of ``items`` (dense indices; :mod:`lmrec.run.reasons`): ``brought``,
        those the intention brought in; ``space``: the item space to use (default: the model's
        :meth:`~lmrec.models.base.Model.item_space`; the service passes its item vectors, with the items it added).
        History items are catalog items."""
        if space is None:
            vectors = self.model.item_space()
            space = vectors.detach().to("cpu", torch.float32).numpy() if vectors is not None else None
        ids, titles = self.catalog.ids, self.catalog.titles
        near = nearest(space, history, items) if space is not None else [[] for _ in items]
        out = []
        for item, pairs in zip(items, near, strict=True):
            because = tuple(Because(ids[j], titles[j], round(c, 4)) for j, c in pairs)
            said = intent if item in brought else None
            out.append((because, said, reason(because, said, has_space=space is not None, model=self.model.name,
                                              conversation=conversation)))
        return out

    def recommend_many(self, users: Sequence[str | int] | None = None, k: int = 10, exclude_seen: bool = True,
                       batch_size: int = 1024) -> Any:
        """Every given user's top ``k`` (default: every user with training items) as a pandas data frame with the
        columns user, rank, item, title, score (one row per recommendation, best first per user); what a user
        already has is left out (``exclude_seen``), as :meth:`recommend` does. CF runs."""
        import pandas as pd

        if not isinstance(self.data, SplitData):
            raise LmrecError(f"{self.model.name} recommends for conversations: one conversation at a time")
        data: SplitData = self.data
        if not 1 <= int(k) <= data.n_items:
            raise SettingsError(Argument("k", k), f": expected an integer between 1 and the catalog size "
                                f"{data.n_items}")
        if users is None:
            rows = np.flatnonzero(np.diff(data.train.indptr) > 0)
        else:
            rows = np.array([data.user_index(u) for u in users], dtype=np.int64)
            for u in rows:
                data.train_items(int(u))  # a user without training items: an error naming them
        seen = (data.train + data.valid + data.test).tocsr() if exclude_seen else None
        top_items, top_scores = [np.zeros((0, k), np.int64)], [np.zeros((0, k), np.float32)]
        with torch.no_grad():
            for start in range(0, len(rows), batch_size):
                batch = rows[start : start + batch_size]
                scores = self.model.score(KnownUsers(batch)).detach().to("cpu", torch.float32).clone()
                if seen is not None:
                    mask = seen[batch].tocoo()
                    scores[torch.from_numpy(mask.row).long(), torch.from_numpy(mask.col).long()] = -torch.inf
                top = torch.topk(scores, int(k), dim=1)
                top_items.append(top.indices.numpy())
                top_scores.append(top.values.numpy())
        items, values = np.concatenate(top_items).ravel(), np.concatenate(top_scores).ravel()
        keep = np.isfinite(values)  # fewer than k items left for a user: no row past them
        users = np.asarray(data.user_ids, dtype=object)[np.repeat(rows, k)]
        return pd.DataFrame({"user": users, "rank": np.tile(np.arange(1, k + 1), len(rows)),
                             "item": np.asarray(self.catalog.ids, dtype=object)[items],
                             "title": np.asarray(self.catalog.titles, dtype=object)[items], "score": values})[keep] \
            .reset_index(drop=True)

    def export_vectors(self, folder: str | Path, format: str = "parquet") -> list[Path]:
        """Write the user and item vectors with their ids, for a vector database: the score of (u, i) is the dot
        product of their vectors (AlphaRec's are unit vectors: the dot product is its cosine). ``parquet``:
        ``users.parquet`` (user, vector) and ``items.parquet`` (item, title, vector); ``npy``: ``users.npy``,
        ``items.npy`` and the ids in ``users.json`` / ``items.json`` (row order). Returns the files written."""
        from lmrec.io import atomic_write

        if format not in ("parquet", "npy"):
            raise SettingsError(Argument("format", format), ": expected 'parquet' or 'npy'")
        model = self.model
        items = model.item_vectors()
        if items is None:
            raise LmrecError(f"{model.name} does not score by a dot product of user and item vectors: nothing to "
                             "export (models that do: every trained CF model)")
        users = model.user_vectors()
        data: SplitData = self.data  # type: ignore[assignment]
        out, written = Path(folder), []
        out.mkdir(parents=True, exist_ok=True)
        tables = {"users": (data.user_ids, users.detach().cpu().numpy().astype(np.float32), {}),
                  "items": (self.catalog.ids, items.detach().cpu().numpy().astype(np.float32),
                            {"title": self.catalog.titles})}
        for name, (ids, vectors, extra) in tables.items():
            if format == "npy":
                atomic_write(out / f"{name}.npy", lambda f, v=vectors: np.save(f, v), binary=True)
                write_json(out / f"{name}.json", list(ids))
                written += [out / f"{name}.npy", out / f"{name}.json"]
                continue
            import pyarrow as pa
            import pyarrow.parquet as pq

            column = pa.FixedSizeListArray.from_arrays(pa.array(vectors.ravel()), vectors.shape[1])
            table = pa.table({name[:-1]: pa.array(list(ids), pa.string()), **{k: pa.array(v, pa.string())
                              for k, v in extra.items()}, "vector": column})
            atomic_write(out / f"{name}.parquet", lambda f, t=table: pq.write_table(t, f), binary=True)
            written.append(out / f"{name}.parquet")
        return written

    def conversation_sample(self, conversation: str | Sequence[str] | Sequence[Turn], conv_id: str = "user"
                            ) -> CRSSample:
        """The turn to recommend for, after ``conversation``: its context and the catalog items it mentions;
        ``conv_id`` names the conversation (a service's session: the LLM's KV cache is kept per conversation)."""
        if isinstance(conversation, str):
            conversation = conversation.splitlines()
        turns = [t for t in conversation if isinstance(t, Turn)]
        if len(turns) != len(conversation):
            turns = parse_conversation([str(line) for line in conversation])
        if self._finder is None:
            self._finder = MentionFinder(self.catalog.titles)
        return conversation_sample(turns, self._finder, conv_id)

    def ambiguous_mentions(self, text: str) -> list[tuple[str, list[str]]]:
        """(what was written, the catalog titles it could be) for each title in ``text`` that names several items,
        which :meth:`conversation_sample` therefore does not take as a mention (the year tells them apart)."""
        if self._finder is None:
            self._finder = MentionFinder(self.catalog.titles)
        return [(written, [self.catalog.titles[i] for i in items]) for written, items in self._finder.ambiguous(text)]

    def mentions(self, text: str) -> list[tuple[int, int, int]]:
        """(start, end, item index) of each catalog item ``text`` names, as conversations find them
        (:class:`lmrec.data.conversations.MentionFinder`): character offsets into ``text``."""
        if self._finder is None:
            self._finder = MentionFinder(self.catalog.titles)
        return self._finder.spans(text)

    @property
    def titles(self) -> TitleIndex:
        """The catalog's titles for matching and search (:class:`lmrec.data.titles.TitleIndex`)."""
        if self._titles is None:
            self._titles = TitleIndex(self.catalog.ids, self.catalog.titles, f"the {self.data.name} catalog")
        return self._titles

    def resolve_titles(self, titles: Sequence[str]) -> list[TitleMatch]:
        """What each free-text title names (:meth:`TitleIndex.match`): an error for a title that names no item or
        several, listing the closest."""
        return [self.titles.match(title) for title in titles]

    def who(self, user: str | int | None, items: Sequence[str | int] = ()) -> tuple[int | None, list[int], list[int]]:
        """(the dense index of a known ``user`` or None, a new user's item indices from ``items``, the items to leave
        out as seen). Exactly one of the two is given; a known user without training interactions is an error naming
        them (the model knows nothing of them)."""
        data: SplitData = self.data  # type: ignore[assignment]
        history = [self.catalog.index(i) for i in items]
        if user is not None and history:
            raise ArgumentError("pass either ", Argument("user"), " (a known user) or ", Argument("items"), " / ",
                                Argument("titles"), " (a new user), not both")
        if user is not None:
            u = data.user_index(user)
            data.train_items(u)
            return u, [], data.user_items(u).tolist()
        if not history:
            raise ArgumentError("nothing to recommend for: pass ", Argument("user"), ", ", Argument("items"), " or ",
                                Argument("titles"))
        return None, history, history

    def query(self, user: str | int | None = None, items: Sequence[str | int] = (), intent: str | None = None,
              alpha: float = 0.5, conversation: Any = None) -> tuple[Query, list[int]]:
        """(the typed query of a request, the items to leave out as seen): a known ``user``, a new user from
        ``items``, or a ``conversation`` (see :meth:`recommend`); whether the model answers it is the model's
        (:meth:`lmrec.models.base.Model.score`)."""
        if not 0.0 <= float(alpha) <= 1.0:
            raise SettingsError(Argument("alpha", alpha), ": expected a number between 0 and 1")
        if intent is not None and not intent.strip():
            raise SettingsError("intent is empty: write a sentence, or leave it out")
        if conversation is not None:
            if user is not None or items:
                raise ArgumentError("pass either ", Argument("conversation"), " or ", Argument("user"), " / ",
                                    Argument("items"), ", not both")
            if intent is not None:
                raise LmrecError(f"{self.model.name} takes no intent with a conversation: say it in the conversation")
            sample = conversation if isinstance(conversation, CRSSample) else self.conversation_sample(conversation)
            return Conversations((sample,)), list(sample.mentioned)
        if not isinstance(self.data, SplitData):  # conversational data has no users to name
            raise ArgumentError(f"{self.model.name} recommends for conversations: pass ", Argument("conversation"))
        u, history, seen = self.who(user, items)
        if u is not None:
            return KnownUsers(np.array([u]), intent, alpha), seen
        return NewUser(tuple(history), intent, alpha), seen


def _make(cls: type[Model], settings: dict[str, Any]) -> Model:
    """A model from its settings (through its config, so no setting is taken for a constructor argument)."""
    return cls(build(cls.Config, settings, what=f"{cls.name} setting"))


# -- fitting ---------------------------------------------------------------------------------------------------


def _recorded_data(manifest: Mapping[str, Any]) -> SplitData | CRSData | None:
    """The dataset a run's manifest names, when it still loads with the recorded checksum; else None."""
    try:
        data = DataRef(**manifest["data"]).load()
    except (LmrecError, OSError, ValueError):
        return None
    return data if data.checksum() == manifest.get("data_checksum") else None


def _context(manifest: dict[str, Any], folder: Path, data: CRSData, device: str) -> Any:
    """The LLM context features of a CRS run: its prepared folder when it is still where the manifest says
    (relative to the run folder) and ``data`` has the conversations it was prepared from, else the LLM alone (through
    the embedding cache), run on ``device``."""
    from lmrec.inputs.config import prepare_config
    from lmrec.inputs.lookup import context_features
    from lmrec.inputs.store import load_features

    # prepare_config drops settings older versions recorded that no longer exist (title_year moved to the run)
    config = prepare_config({**manifest["llm"], "device": device})
    features = None
    has_turns = any(data.split(s) for s in ("train", "valid", "test"))  # a run's snapshot keeps its catalog only
    if manifest.get("features") and has_turns:
        path = (folder / manifest["features"]).resolve()
        if (path / "prepare.json").exists():
            features = load_features(path, data)
    return context_features(features, config)
