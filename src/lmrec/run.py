"""A trained model with its data and results: :func:`fit` makes one, :meth:`Run.load` opens a run folder, and a
run answers :meth:`Run.recommend` for a known user, a new user (item ids or titles), a stated intention, or a
conversation.

One run-folder format for every model (CF and CRS)::

    manifest.json            format / version, status ("training" until the run is complete), task and model name,
                             model settings, training settings, the data reference and checksum, LLM settings and the
                             prepared-features folder (CRS; a path relative to the run folder), fit summary, versions
    model.safetensors        the learned state ("state.*") and saved inputs ("artifacts.*", e.g. LM item features)
    metrics.json             {"valid": {...}, "test": {...}}: mean / SE / n per metric
    per-user.safetensors     CF runs: the test values per user ("users": dense user indices, "<metric>": values in
                             that order), what paired tests compare without loading the model
    log.jsonl                one line per epoch (trained models)
    checkpoint.safetensors   the resumable training state while training (removed when the run completes)
    added-items.safetensors  items added by title through ``lmrec serve`` (AlphaRec runs; see lmrec.serve.service)

Nothing is pickled: tensors are safetensors, everything else JSON, so opening a run folder received from someone
else runs no code. Paths inside are relative to the folder, so a run folder copied elsewhere loads.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lmrec import clock
from lmrec.data.conversations import CRSData, CRSSample, MentionFinder, Turn, conversation_sample, parse_conversation
from lmrec.data.interactions import SplitData
from lmrec.data.registry import DataRef
from lmrec.data.snapshot import has_snapshot, read_snapshot, write_snapshot
from lmrec.data.titles import TitleIndex, TitleMatch
from lmrec.environment import versions
from lmrec.errors import Argument, ArgumentError, LmrecError
from lmrec.eval.model import CRS_KS, REPORT_KS, test_metrics
from lmrec.eval.ranking import TIE_POLICY, NothingToEvaluate, RankingResult
from lmrec.inputs import ModelInputs
from lmrec.io import write_json
from lmrec.models.base import Model, get_model
from lmrec.models.queries import Conversations, KnownUsers, NewUser, Query
from lmrec.progress import progress_bars
from lmrec.settings import SettingsError, as_dict, build
from lmrec.tensorfile import load_tensors, save_tensors, tensor_dict, with_prefix
from lmrec.train import OnValidation, distributed
from lmrec.train.trainer import (
    CHECKPOINT_FILE,
    RESUME_MAY_CHANGE,
    RUN_SETTINGS,
    TrainConfig,
    TrainLog,
    resolve_device,
    with_legacy,
)

FORMAT, VERSION = "lmrec-run", 1
MANIFEST, WEIGHTS, METRICS, PER_USER = "manifest.json", "model.safetensors", "metrics.json", "per-user.safetensors"
EVALUATION_NOTES = ("not_evaluated", "excluded_cold_users")  # what evaluating added to the manifest's protocol
# manifest statuses of a search's trials that ended before training did (lmrec.tuning), and what happened
TRIAL_ENDS = {"pruned": "was pruned (its validation curve fell behind the other trials')",
              "failed": "failed or was interrupted"}


@dataclass(frozen=True)
class Recommendation:
    """One recommended item: its external id, title, score and rank (1 = best)."""

    rank: int
    item_id: str
    title: str
    score: float


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
        alpha: float = 0.5,
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
          embedding with weight ``alpha`` ∈ [0, 1];
        - ``conversation`` (CRS runs): the text so far (lines ``User: ...`` / ``System: ...``, or turns); the movies
          it mentions are left out.

        ``exclude``: more external item ids to leave out. The list returned also says what each title was matched to
        (``.matched``); a title that names no item, or several, is an error listing the closest ones
        (:mod:`lmrec.data.titles`).
        """
        matched = self.resolve_titles(titles or [])
        items = [*(items or []), *(m.item_id for m in matched)]
        query, seen = self.query(user, items, intent, alpha, conversation)
        with torch.no_grad():
            scores = self.model.score(query)[0]
        n_items = len(self.catalog)
        if not 1 <= int(k) <= n_items:
            raise SettingsError(Argument("k", k), f": expected an integer between 1 and the catalog size {n_items}")
        scores = scores.detach().to("cpu", torch.float32).clone()
        left_out = [self.catalog.index(i) for i in exclude] + (list(seen) if exclude_seen else [])
        if left_out:
            scores[torch.as_tensor(left_out, dtype=torch.long)] = -torch.inf
        top = torch.topk(scores, min(int(k), int(torch.isfinite(scores).sum())))
        return Recommendations([Recommendation(r, self.catalog.ids[i], self.catalog.titles[i], float(s))
                                for r, (i, s) in enumerate(zip(top.indices.tolist(), top.values.tolist()), start=1)],
                               matched)

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

    def conversation_sample(self, conversation: str | Sequence[str] | Sequence[Turn]) -> CRSSample:
        """The turn to recommend for, after ``conversation``: its context and the catalog items it mentions."""
        if isinstance(conversation, str):
            conversation = conversation.splitlines()
        turns = [t for t in conversation if isinstance(t, Turn)]
        if len(turns) != len(conversation):
            turns = parse_conversation([str(line) for line in conversation])
        if self._finder is None:
            self._finder = MentionFinder(self.catalog.titles)
        return conversation_sample(turns, self._finder)

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
def fit(
    model: str | Model,
    data: Any,
    train: TrainConfig | dict[str, Any] | None = None,
    *,
    out: str | Path | None = None,
    overwrite: bool = False,
    resume: bool = False,
    features: Any = None,
    base: Run | Model | None = None,
    ref: DataRef | None = None,
    label: str | None = None,
    test: bool = True,
    on_validation: OnValidation | None = None,
    **settings: Any,
) -> Run:
    """Fit a model (a registered name with its ``settings``, or a model object) on ``data`` (a dataset, a registered
    name or path, a :class:`DataRef`, an imported :class:`lmrec.Dataset`, or a pandas / pyarrow table of
    interactions) with ``train`` (a :class:`TrainConfig` or overrides of the model's paper
    values), evaluate it on valid and test, and return the :class:`Run`; with ``out`` the run folder is written
    (checkpoints included, so an interrupted run continues with ``resume=True``; a complete run with the same
    settings is then loaded instead of trained again, and one with other settings is an error).

    CRS models: ``features`` is a prepared folder (``lmrec crs prepare``) or :class:`LLMFeatures` for the models
    that use the LLM (and restricts training to its prepared turns); ``base`` the reindex run ``rta_adapt`` adapts.
    ``ref`` records how to load an in-memory ``data`` again (default: its name). ``label``: a display name kept in
    the manifest (e.g. a comparison's ``alpharec~tau=0.2``; the folder's name may differ).
    ``test=False`` leaves the test split unevaluated (a search that selects on validation; :meth:`Run.add_test`
    evaluates it later). ``on_validation(epoch, metrics)`` (CF models): called after each validation of training
    (:meth:`lmrec.train.Trainer.run`); what it raises stops the fit.
    """
    model, dataset, task, train_config, features, manifest = _plan(model, data, train, features, ref, settings)
    if label is not None:
        manifest["label"] = label
    folder = Path(out) if out is not None else None
    if folder is not None and _claim_once(folder, overwrite, resume, manifest):
        return Run.load(folder, data=dataset)  # complete already, with these settings
    start = clock.now()
    inputs = model.check_inputs(ModelInputs(features=features, base=base.model if isinstance(base, Run) else base))
    show = train_config.progress if train_config is not None else run_settings(train).get("progress", True)
    with progress_bars(show):  # the bars of the libraries it calls, e.g. transformers loading an encoder
        log = model.fit(dataset, train_config, inputs=inputs, folder=folder, resume=resume,
                        on_validation=on_validation)
        manifest["fit"] = _fit_summary(log, clock.now() - start)
        if hasattr(model, "diagnostics"):
            manifest["fit"]["learned"] = model.diagnostics()
        run = Run(model, dataset, manifest, log=log)
        run.metrics, run.test_result = _evaluate_splits(run, ("valid", "test") if test else ("valid",))
    if folder is not None and distributed.current().is_main:
        run._write(folder)
    return run


def run_settings(train: TrainConfig | Mapping[str, Any] | None) -> dict[str, Any]:
    """The settings about the run itself (:data:`~lmrec.train.trainer.RUN_SETTINGS`: seed, progress, device) that
    ``train`` gives, validated: all of a :class:`TrainConfig`'s, a dict's keys among them."""
    if isinstance(train, TrainConfig):
        return {key: getattr(train, key) for key in RUN_SETTINGS}
    given = {key: value for key, value in (train or {}).items() if key in RUN_SETTINGS}
    return {key: getattr(build(TrainConfig, given, what="training setting"), key) for key in given}


def planned_manifest(model: str, data: SplitData | CRSData | str | DataRef, train: dict[str, Any] | None = None,
                     *, ref: DataRef | None = None, **settings: Any) -> tuple[dict[str, Any], SplitData | CRSData]:
    """The manifest :func:`fit` would write for these arguments, and the data it would load, without training (what
    a finished run's record is matched against)."""
    _, dataset, _, _, _, manifest = _plan(model, data, train, None, ref, settings)
    return manifest, dataset


def _plan(model: str | Model, data: SplitData | CRSData | str | DataRef, train: TrainConfig | dict[str, Any] | None,
          features: Any, ref: DataRef | None, settings: dict[str, Any]) -> tuple[Any, ...]:
    """Validate :func:`fit`'s arguments and load what it needs: (model, data, task, training config, features,
    manifest)."""
    data = _as_data(data)
    if isinstance(data, (str, Path, DataRef)):
        ref, dataset = data if isinstance(data, DataRef) else DataRef.of(data), None
        task = task_of(ref)
    else:
        ref, dataset = ref or DataRef(data.name), data
        task = "crs" if isinstance(data, CRSData) else "cf"
    if isinstance(model, str):  # settings are validated before any data is read
        model = _make(get_model(model, task), settings)
    elif settings:
        raise LmrecError("settings go with a model name; a model object carries its own config")
    if model.task != task:
        raise LmrecError(f"{model.name} is a {model.task} model, but {ref.dataset!r} is {task} data")
    # a model fitted from the data (pop, dense, zero_shot_llm) has no training loop: of ``train`` only the settings
    # about the run apply to it (seed, progress, device); the others are left aside (a comparison passes the same
    # training settings to every model; the CLI refuses them for such a model)
    train_config = model.train_config(train, model.config) if model.trainable else None
    run = run_settings(train_config if model.trainable else train)
    if not model.trainable:  # a trained model moves to the training device when it is fitted
        model.device = resolve_device(run.get("device", "cpu"))
    if dataset is None:
        dataset = ref.load()
    if isinstance(dataset, SplitData) and dataset.train.nnz == 0:
        raise LmrecError(f"{dataset.name}: the training split is empty: nothing to fit")
    features = _features(features, dataset)
    manifest = _manifest(model, dataset, ref, train_config, features, run.get("seed", ref.seed))
    if train_config is not None:  # what it runs in, what "auto" picks here, and why
        manifest["precision"] = train_config.precision_choice(model.bf16_path, model.name).as_dict()
    return model, dataset, task, train_config, features, manifest


def _as_data(data: Any) -> Any:
    """An imported :class:`~lmrec.data.frames.Dataset` as its split, a data frame or pyarrow table of interactions
    through :meth:`Dataset.from_frames` (columns found by name); anything else unchanged."""
    from lmrec.data.frames import Dataset

    if isinstance(data, Dataset):
        return data.to_split()
    if hasattr(data, "columns") or hasattr(data, "to_pandas"):  # pandas or pyarrow
        return Dataset.from_frames(data).to_split()
    return data


def _claim_once(folder: Path, overwrite: bool, resume: bool, manifest: dict[str, Any]) -> bool:
    """:func:`claim_folder` in the main process only; in data-parallel training the other processes learn its
    outcome (complete already / go on / failed) before anyone reads a checkpoint from the folder."""
    world = distributed.current()
    if not world.active:
        return claim_folder(folder, overwrite=overwrite, resume=resume, manifest=manifest)
    outcome, error = 2, None  # 2: failed
    if world.is_main:
        try:
            outcome = int(claim_folder(folder, overwrite=overwrite, resume=resume, manifest=manifest))
        except Exception as exc:  # noqa: BLE001 -- the other ranks must hear of any failure, then it is raised
            error = exc
    outcome = world.from_main(outcome)
    if error is not None:
        raise error
    if outcome == 2:
        raise LmrecError(f"{folder}: the main process could not claim the run folder (its error is in its output)")
    return bool(outcome)


def task_of(ref: DataRef) -> str:
    """"crs" for conversational data, else "cf", from the registry or the folder's files (nothing is loaded)."""
    from lmrec.data.registry import CRS_FORMATS, detect_format, get_spec, is_registered

    if ref.format is not None:
        return "crs" if ref.format in CRS_FORMATS else "cf"
    if is_registered(ref.dataset):
        return get_spec(ref.dataset).task
    folder = Path(ref.dataset).expanduser()
    return "crs" if folder.is_dir() and detect_format(folder) in CRS_FORMATS else "cf"


def _features(features: Any, data: SplitData | CRSData) -> Any:
    """A prepared LLM folder (a path) opened for ``data``; an opened one (or None) as it is."""
    if features is None or not isinstance(features, (str, Path)):
        return features
    from lmrec.inputs.store import load_features

    return load_features(Path(features), data)


def _manifest(model: Model, data: SplitData | CRSData, ref: DataRef, train: TrainConfig | None,
              features: Any, eval_seed: int) -> dict[str, Any]:
    manifest: dict[str, Any] = {
        "format": FORMAT, "version": VERSION, "status": "training", "task": model.task, "model": model.name,
        "model_config": as_dict(model.config), "train_config": None if train is None else as_dict(train),
        "data": asdict(ref), "data_checksum": data.checksum(), "data_stats": _data_stats(data),
        "eval_seed": eval_seed,
        "evaluation": _evaluation_protocol(data),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "versions": versions(),
    }
    if features is not None:
        manifest["llm"] = features.meta["config"]
        manifest["features_abs"] = str(features.folder.resolve())
    return manifest


def _data_stats(data: SplitData | CRSData) -> dict[str, Any]:
    if isinstance(data, SplitData):
        return data.stats()
    return {"name": data.name, "items": len(data.catalog), **{f"{s}_conversations": len(data.split(s))
                                                              for s in ("train", "valid", "test")}}


def _evaluation_protocol(data: SplitData | CRSData) -> dict[str, Any]:
    if isinstance(data, SplitData):
        return {"ranking": "full catalog", "valid_masks": ["train"], "test_masks": ["train", "valid"],
                "ties": TIE_POLICY, "ks": list(REPORT_KS)}
    return {"ranking": "full catalog", "ties": "expected under random tie-breaking", "pairs": "one per (turn, target)",
            "ks": list(CRS_KS), "test_new": "new targets only, mentioned items removed from the ranking"}


def epochs_summary(fit: Mapping[str, Any]) -> str:
    """A run's training in one cell, from its manifest's ``fit`` block (or a table row with the same keys):
    ``"best / run"``, `` †`` when the best validation epoch is the last one run (unconverged), and why training
    ended (:meth:`TrainLog.reason`: patience, budget or time), e.g. ``"40 / 140, patience"``; ``"-"`` untrained."""
    if not fit.get("best_epoch"):
        return "-"
    why = TrainLog.reason(fit.get("stopped"))
    return (f"{fit['best_epoch']} / {fit.get('epochs_run') or '?'}" + ("" if fit.get("converged", True) else " †")
            + (f", {why}" if why else ""))


def progress_line(name: str, metric: str, valid: float | None, fit: Mapping[str, Any], seconds: float) -> str:
    """A finished run in one line for long tables: ``name: valid <metric> …, best / run …, … min`` (the validation
    part left out without a score, the epochs without a trained best epoch; see :func:`epochs_summary`)."""
    score = f"valid {metric} {valid:.4f}, " if valid is not None else ""
    epochs = f"best / run {epochs_summary(fit)}, " if fit.get("best_epoch") else ""
    return f"{name}: {score}{epochs}{seconds / 60:.1f} min"


def _fit_summary(log: TrainLog | None, seconds: float) -> dict[str, Any]:
    """``seconds``: the fit's wall time in this process, plus, for a resumed run, the seconds spent before."""
    if log is None:
        return {"seconds": seconds, "trained": False}
    seconds += log.seconds_before_resume
    best = [r.steps for r in log.records if r.epoch <= log.best_epoch]
    return {"seconds": seconds, "trained": True, "best_epoch": log.best_epoch, "epochs_run": len(log.records),
            "steps_run": sum(r.steps for r in log.records), "steps_to_best": sum(best),
            "stopped": log.stopped, "converged": log.converged, "resumed_at": log.resumed_at}


def _evaluate_splits(run: Run, splits: Sequence[str] = ("valid", "test")) -> tuple[dict[str, Any],
                                                                               RankingResult | None]:
    """The metrics.json blocks of ``splits``, and the test evaluation per user (CF); what was not evaluated,
    and why, goes into the manifest (a split left out on purpose too)."""
    metrics: dict[str, Any] = {}
    per_user = None
    notes = run.manifest["evaluation"]
    for split in ("valid", "test"):
        if split not in splits:
            notes.setdefault("not_evaluated", {})[split] = "left out when fitted (a search selecting on validation)"
            continue
        try:
            result = run.evaluate(split, metrics=test_metrics(run.data) if split == "test" else None)
        except NothingToEvaluate as exc:
            notes.setdefault("not_evaluated", {})[split] = str(exc)
            continue
        if isinstance(result, RankingResult):
            metrics[split] = result.to_dict()
            per_user = result if split == "test" else per_user
            if result.protocol.get("excluded_cold_users"):
                notes.setdefault("excluded_cold_users", {})[split] = result.protocol["excluded_cold_users"]
        else:
            metrics[split] = {name: r.to_dict() for name, r in result.items()}
    return metrics, per_user


def per_user_test_values(folder: Path, data: SplitData | None = None) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """(dense user indices, {metric: value per user}) of a complete CF run folder's test evaluation, from its
    ``per-user.safetensors`` (``data``: the run's data, when it cannot be loaded from the manifest)."""
    folder = Path(folder)
    if not (folder / PER_USER).exists():  # a folder written before the values per user were kept: they are added
        _write_per_user(folder, Run.load(folder, data=data).evaluate("test"))
    tensors, _ = load_tensors(folder / PER_USER)
    return tensors.pop("users").numpy(), {name: t.numpy() for name, t in tensors.items()}


def read_metrics(folder: Path) -> dict[str, Any]:
    """The metrics.json of a complete run folder (or record)."""
    return _read_json(Path(folder) / METRICS)


def _write_per_user(folder: Path, result: RankingResult) -> None:
    """int32 user indices and float32 values (what a paired test needs; half the size of int64 / float64)."""
    values = {name: v.astype(np.float32) for name, v in result.per_user.items()}
    save_tensors(folder / PER_USER, {"users": torch.from_numpy(result.users.astype(np.int32)), **tensor_dict(values)},
                 {"split": result.split})


# -- the folder ------------------------------------------------------------------------------------------------
def read_manifest(folder: Path) -> dict[str, Any]:
    """The manifest of a run folder; a clear error for a folder that is not one, an old or a foreign one."""
    path = Path(folder) / MANIFEST
    if not Path(folder).is_dir():
        raise LmrecError(f"{folder}: no such run folder")
    if not path.exists():
        old = " (an old lmrec run folder: config.json + model.pt; train it again)" if (
            Path(folder) / "model.pt").exists() else ""
        raise LmrecError(f"{folder}: not an lmrec run folder (no {MANIFEST}){old}")
    manifest = _read_json(path)
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise LmrecError(f"{path}: not an lmrec run manifest (format {manifest.get('format')!r})"
                         if isinstance(manifest, dict) else f"{path}: not an lmrec run manifest")
    if manifest.get("version") != VERSION:
        raise LmrecError(f"{path}: run-folder version {manifest.get('version')!r}; this lmrec reads version {VERSION}")
    return manifest


def claim_folder(folder: Path, overwrite: bool = False, resume: bool = False,
                 manifest: dict[str, Any] | None = None) -> bool:
    """Make ``folder`` ready for a run: a new or empty folder is used; an existing run is replaced only with
    ``overwrite`` and continued only with ``resume`` (same model, settings and data); any other non-empty
    folder is refused, so nothing is silently replaced or mixed. Writes the "training" manifest. True when
    ``resume`` finds the run complete already (with the same settings)."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise LmrecError(f"{folder}: exists and is not a folder")
    existing = folder.is_dir() and any(folder.iterdir())
    if existing:
        saved = read_manifest(folder) if (folder / MANIFEST).exists() else None
        if resume and saved is not None:
            _check_same_run(folder, saved, manifest)
            return saved.get("status") == "complete"
        if overwrite and saved is not None:
            shutil.rmtree(folder)
        elif saved is None:
            raise LmrecError(f"{folder}: exists, is not empty and is not an lmrec run folder; choose another --out")
        else:
            raise LmrecError(f"{folder}: holds a run already; pass --overwrite to replace it"
                             + (" or --resume to continue it" if saved.get("status") != "complete" else ""))
    try:
        folder.mkdir(parents=True, exist_ok=True)
        if manifest is not None:
            write_json(folder / MANIFEST, {k: v for k, v in manifest.items() if k != "features_abs"})
    except OSError as exc:
        raise LmrecError(f"{folder}: cannot write the run folder ({exc.strerror or exc})") from None
    return False


def settings_differ(saved: Mapping[str, Any], wanted: Mapping[str, Any]) -> list[str]:
    """The manifest keys in which run ``saved`` was made with other settings than ``wanted`` asks for (model, task,
    model and training settings, data checksum); an unfinished run may change what resuming allows."""
    keys = ("model", "task", "data_checksum", "eval_seed")
    diff = [k for k in keys if saved.get(k) != wanted.get(k)]
    if _with_defaults(saved) != _with_defaults(wanted):
        diff.append("model_config")
    protocol = lambda m: {k: v for k, v in (m.get("evaluation") or {}).items() if k not in EVALUATION_NOTES}  # noqa: E731
    if protocol(saved) != protocol(wanted):
        diff.append("evaluation")
    ignore = RESUME_MAY_CHANGE if saved.get("status") != "complete" else ("progress", "device")
    strip = lambda c: {k: v for k, v in (c or {}).items() if k not in ignore}  # noqa: E731
    legacy = lambda c: with_legacy(c) if c is not None else None  # noqa: E731
    if strip(legacy(saved.get("train_config"))) != strip(legacy(wanted.get("train_config"))):
        diff.append("train_config")
    return diff


def _with_defaults(manifest: Mapping[str, Any]) -> Any:
    """The manifest's model settings with those its model gained since (absent from an older manifest) at their
    defaults: a setting is added with the default that keeps the earlier behaviour."""
    config = manifest.get("model_config")
    try:
        defaults = as_dict(get_model(manifest["model"], manifest["task"]).Config())
    except (LmrecError, KeyError):
        return config
    return {**defaults, **config} if isinstance(config, dict) else config


def _check_same_run(folder: Path, saved: dict[str, Any], wanted: dict[str, Any] | None) -> None:
    if wanted is None:
        return
    diff = settings_differ(saved, wanted)
    if diff:
        detail = "; ".join(f"{k}: saved {saved.get(k)!r}, requested {wanted.get(k)!r}" for k in diff)
        raise LmrecError(f"{folder}: holds a run made with other settings ({detail}); resume it with the same "
                         "settings, or start again with --overwrite (or another folder)")


def _read_json(path: Path) -> Any:
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise LmrecError(f"{path}: not valid JSON ({exc})") from None


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
