"""The model contract as checks, shipped with lmrec: a model written outside lmrec registers itself
(``@lmrec.models.base.register("name")`` on a :class:`~lmrec.models.base.Model` subclass) and runs them in its own
tests, as every model of lmrec does (``tests/models/test_contract.py``)::

    from lmrec.testing import check_model

    def test_my_model_keeps_the_contract(tmp_path):
        check_model("my_model", tmp_path)

:func:`check_model` fits the model through :func:`lmrec.fit` on small data with planted structure (or the data
given), then checks: every query kind the model answers gives finite scores of the right shape; recommendations
through :class:`lmrec.Run` are ranked, sorted and leave out what the user (or the conversation) has; the run folder,
moved elsewhere, loads into a model that scores identically, with the same metrics; a misspelt setting, an unknown
user and a bad ``k`` are clear errors. :func:`check_resume`: a trainable model killed mid-fit resumes into the
unbroken fit. A failed check raises :class:`AssertionError` saying which.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lmrec.data.catalog import ItemCatalog
from lmrec.data.interactions import SplitData, to_csr
from lmrec.errors import LmrecError
from lmrec.models.queries import Conversations, KnownUsers, NewUser
from lmrec.settings import SettingsError

TINY_TRAIN = {"epochs": 2, "eval_every": 1, "progress": False, "batch_size": 64}


def planted_data(seed: int = 0, n_users: int = 30, n_items: int = 40, clusters: int = 6) -> SplitData:
    """Small interaction data a working model learns from: users in ``clusters`` groups each see most items of
    their group's block (and a few popular items); each user's items split at random, 2 valid, 2 test, the rest
    train. Titles name the block, so a text-based model can learn it too."""
    rng = np.random.default_rng(seed)
    popular, per = 4, (n_items - 4) // clusters
    parts: list[list[tuple[int, int]]] = [[], [], []]
    for u in range(n_users):
        block = u % clusters
        items = [popular + block * per + j for j in range(per) if rng.random() < 0.85]
        items += [i for i in range(popular) if rng.random() < 0.5]
        rng.shuffle(items)
        for k, item in enumerate(items):
            parts[0 if k >= 4 else 1 if k < 2 else 2].append((u, item))
    matrices = [to_csr(np.array([u for u, _ in p]), np.array([i for _, i in p]), n_users, n_items) for p in parts]
    titles = [f"Popular hit {i}" if i < popular else f"Story of group {(i - popular) // per} number {i}"
              for i in range(n_items)]
    return SplitData("planted", [f"u{u}" for u in range(n_users)], ItemCatalog([f"i{i}" for i in range(n_items)],
                                                                                titles), *matrices, "planted")


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise AssertionError(message)


def scores_of(run: Any) -> torch.Tensor:
    """The run's scores for the first query kind its model answers: every known user, or five test turns."""
    if "known users" in run.model.answers():
        return run.model.score(KnownUsers(np.arange(run.data.n_users)))
    return run.model.score(Conversations(tuple(run.data.samples("test")[:5])))


def fit_for_check(name: str, task: str | None, data: Any, folder: Path | None, settings: Mapping[str, Any] | None,
                  train: Mapping[str, Any] | None, resume: bool = False, **inputs: Any) -> Any:
    """``lmrec.fit`` of the registered model with the tiny budget (trainable models) and its inputs."""
    import lmrec

    cls = lmrec.get_model(name, task)
    return lmrec.fit(cls(**dict(settings or {})), data, dict(train or TINY_TRAIN) if cls.trainable else None,
                     out=folder, resume=resume, **inputs)


def check_model(name: str, folder: str | Path, task: str | None = None, data: Any = None,
                settings: Mapping[str, Any] | None = None, train: Mapping[str, Any] | None = None,
                **inputs: Any) -> Any:
    """Check that registered model ``name`` keeps the contract (see the module docstring) on ``data`` (default:
    :func:`planted_data`), fitted with ``settings`` and ``train`` (default: 2 epochs) into ``folder``; ``inputs``
    (``features=``, ``base=``) go to :func:`lmrec.fit`. Returns the run loaded from its moved folder."""
    import lmrec

    folder = Path(folder)
    data = planted_data() if data is None else data
    cls = lmrec.get_model(name, task)
    try:
        cls(no_such_setting=1)
    except SettingsError as exc:
        _check("no_such_setting" in str(exc), f"{name}: a misspelt setting's error does not name it: {exc}")
    else:
        raise AssertionError(f"{name}: a misspelt setting was accepted")
    _check(cls.answers() != [], f"{name} answers no query: implement score_users, score_new_user or "
           "score_conversations")
    run = fit_for_check(name, task, data, folder / "run", settings, train, **inputs)
    _check((folder / "run" / "manifest.json").exists() and "test" in run.metrics,
           f"{name}: the run folder or its test metrics are missing")
    scores = scores_of(run)
    rows = data.n_users if "known users" in cls.answers() else min(5, len(data.samples("test")))
    _check(tuple(scores.shape) == (rows, len(run.catalog)) and bool(torch.isfinite(scores).all()),
           f"{name}: scores of shape {tuple(scores.shape)} (expected {(rows, len(run.catalog))}) or not finite")
    if "new users" in cls.answers():
        new = run.model.score(NewUser((0, 1)))
        _check(tuple(new.shape) == (1, len(run.catalog)) and bool(torch.isfinite(new).all()),
               f"{name}: a new user's scores have shape {tuple(new.shape)}, expected (1, {len(run.catalog)})")
    _check_recommendations(run)
    moved = shutil.copytree(folder / "run", folder / "elsewhere" / "copy")
    shutil.rmtree(folder / "run")
    loaded = lmrec.Run.load(moved, data=data)
    _check(loaded.model.name == name, f"{name}: the loaded run's model is {loaded.model.name!r}")
    _check(torch.equal(scores_of(loaded), scores), f"{name}: the loaded run scores differently from the fitted one")
    _check(loaded.metrics == json.loads(json.dumps(run.metrics)), f"{name}: the loaded run's metrics differ")
    return loaded


def _check_recommendations(run: Any) -> None:
    name = run.model.name
    if "known users" in run.model.answers():
        user = run.data.user_ids[int(np.flatnonzero(np.diff(run.data.train.indptr))[0])]
        top = run.recommend(user=user, k=5)
        seen = {run.catalog.ids[i] for i in run.data.user_items(run.data.user_index(user))}
        _check(not seen & {r.item_id for r in top}, f"{name}: recommended items the user already has")
        for bad, what in ((dict(user="nobody"), "unknown user id 'nobody'"), (dict(user=user, k=0), "k=0")):
            try:
                run.recommend(**bad)
            except LmrecError as exc:
                _check(what in str(exc), f"{name}: the error for {bad} does not say {what!r}: {exc}")
            else:
                raise AssertionError(f"{name}: {bad} was accepted")
    else:
        top = run.recommend(conversation="User: I like " + " and ".join(run.catalog.titles[:2]), k=5)
        _check(not set(run.catalog.titles[:2]) & {r.title for r in top},
               f"{name}: recommended items the conversation mentions")
    _check([r.rank for r in top] == [1, 2, 3, 4, 5], f"{name}: ranks {[r.rank for r in top]}, expected 1..5")
    _check([r.score for r in top] == sorted((r.score for r in top), reverse=True),
           f"{name}: recommendations not sorted by score")
    space = run.model.item_space()  # why an item is recommended is read there (lmrec.run.reasons)
    _check(space is None or tuple(space.shape[:1]) == (len(run.catalog),),
           f"{name}: item_space() has {None if space is None else space.shape[0]} rows for {len(run.catalog)} items")
    _check(all(r.reason and len(r.because) <= 3 for r in top), f"{name}: a recommendation without its reason")


def check_resume(name: str, folder: str | Path, task: str | None = None, data: Any = None,
                 settings: Mapping[str, Any] | None = None, **inputs: Any) -> None:
    """A trainable model killed after epoch 6 of 8 (its last checkpoint: epoch 5) and resumed gives the same
    epochs, losses, validation scores and metrics as an unbroken fit (state outside the parameters must be in
    the checkpoint)."""
    from lmrec.train.trainer import Trainer

    folder = Path(folder)
    data = planted_data() if data is None else data
    train = {**TINY_TRAIN, "epochs": 8, "checkpoint_every": 1}
    fit_for_check(name, task, data, folder / "whole", settings, train, **inputs)
    append = Trainer._append_log

    def killed_after_epoch_6(self: Trainer, record: Any) -> None:
        if record.epoch == 6:
            raise KeyboardInterrupt
        append(self, record)

    Trainer._append_log = killed_after_epoch_6  # type: ignore[method-assign]
    try:
        fit_for_check(name, task, data, folder / "broken", settings, train, **inputs)
    except KeyboardInterrupt:
        pass
    else:
        raise AssertionError(f"{name}: the fit was not interrupted")
    finally:
        Trainer._append_log = append  # type: ignore[method-assign]
    resumed = fit_for_check(name, task, data, folder / "broken", settings, train, resume=True, **inputs)
    _check(resumed.manifest["fit"]["resumed_at"] == 5, f"{name}: resumed at {resumed.manifest['fit']['resumed_at']}")
    logs = [[(r["epoch"], r["loss"], r["valid"]) for r in map(json.loads, (folder / part / "log.jsonl").open())]
            for part in ("whole", "broken")]
    _check(logs[0] == logs[1] and len(logs[0]) == 8, f"{name}: the resumed fit's log differs from the unbroken one")
    _check(json.loads((folder / "broken" / "metrics.json").read_text()) ==
           json.loads((folder / "whole" / "metrics.json").read_text()),
           f"{name}: the resumed fit's metrics differ from the unbroken one")
