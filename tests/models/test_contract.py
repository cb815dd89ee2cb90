"""The contract every registered model keeps, checked for each one (a new model is covered by registering it).

For every (task, name) of the registry: fit on tiny data with a tiny budget, scores of the right shape and finite,
top-k recommendations through :class:`lmrec.Run`, a save / load round trip (to another folder) giving identical
scores, and clear errors for a misspelt setting, an unknown user or item id and a bad ``k``.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

import lmrec
from helpers import planted_data, single_thread, write_inspired, write_tiny_llm  # noqa: F401
from lmrec.models.base import MODELS
from lmrec.models.queries import Conversations, KnownUsers
from lmrec.settings import SettingsError

ENTRIES = [(task, name) for task, name, _ in MODELS.entries()]
TINY_TRAIN = {"epochs": 2, "eval_every": 1, "progress": False, "batch_size": 64}
# the tiny random LLM's answers map to no catalog item, so reindex also learns from the ground truth
SETTINGS = {"rta_reindex": {"label_source": "both"}}


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory):
    """An embedding cache of its own, a tiny INSPIRED-format dataset and its features from a tiny random Llama."""
    from lmrec.inputs.config import PrepareConfig
    from lmrec.inputs.prepare import prepare_dataset

    root = tmp_path_factory.mktemp("contract")
    mp = pytest.MonkeyPatch()
    mp.setenv("LMREC_CACHE", str(root / "cache"))
    write_inspired(root / "data")
    write_tiny_llm(root / "llm")
    prepared = root / "prepared"
    config = PrepareConfig(llm=str(root / "llm"), dtype="float32", max_new_tokens=6)
    prepare_dataset(root / "data" / "inspired", prepared, config, progress=False)
    yield {"root": root, "cf": planted_data(), "crs": lmrec.load_dataset(root / "data" / "inspired"),
           "prepared": prepared}
    mp.undo()


def fitted(env, task: str, name: str, out: Path | None = None, train: dict | None = None,
           resume: bool = False) -> lmrec.Run:
    cls = lmrec.get_model(name, task)
    data = env[task]
    kwargs = {}
    if task == "crs" and cls.uses_llm:
        kwargs["features"] = env["prepared"]
    if task == "crs" and cls.base_model:
        kwargs["base"] = fitted(env, task, cls.base_model)
    return lmrec.fit(cls(**SETTINGS.get(name, {})), data, (train or TINY_TRAIN) if cls.trainable else None, out=out,
                     resume=resume, **kwargs)


def scores_of(run: lmrec.Run) -> torch.Tensor:
    if run.task == "cf":
        return run.model.score(KnownUsers(np.arange(run.data.n_users)))
    return run.model.score(Conversations(tuple(run.data.samples("test")[:5])))


@pytest.mark.parametrize(("task", "name"), ENTRIES)
def test_fit_score_recommend_and_round_trip(env, tmp_path, task, name):
    run = fitted(env, task, name, out=tmp_path / "run")
    scores = scores_of(run)
    n = run.data.n_users if task == "cf" else 5
    assert scores.shape == (n, len(run.catalog)) and torch.isfinite(scores).all()
    assert set(run.metrics) >= {"test"} and (tmp_path / "run" / "manifest.json").exists()

    if task == "cf":
        top = run.recommend(user=run.data.user_ids[0], k=5)
        seen = {run.catalog.ids[i] for s in ("train", "valid", "test")
                for i in run.data.split(s)[0].indices}
        assert not seen & {r.item_id for r in top}
    else:
        top = run.recommend(conversation="User: I like Heat (1995) and Alien (1979)", k=5)
        assert not {"Heat (1995)", "Alien (1979)"} & {r.title for r in top}
    assert [r.rank for r in top] == [1, 2, 3, 4, 5]
    assert [r.score for r in top] == sorted((r.score for r in top), reverse=True)

    moved = shutil.copytree(tmp_path / "run", tmp_path / "elsewhere" / "copy")
    shutil.rmtree(tmp_path / "run")
    loaded = lmrec.Run.load(moved, data=run.data)
    assert loaded.model.name == name and loaded.task == task
    assert torch.equal(scores_of(loaded), scores)
    assert loaded.metrics == run.metrics


@pytest.mark.parametrize(("task", "name"), [e for e in ENTRIES if lmrec.get_model(e[1], e[0]).trainable])
def test_an_interrupted_fit_resumes_into_the_unbroken_one(env, tmp_path, monkeypatch, task, name):
    """Killed after epoch 6 (its last checkpoint: epoch 5), resumed: the same epochs, losses, validation scores and
    results as an unbroken fit (state kept outside the parameters, e.g. BC Loss's epoch count that ends its popularity
    warm-up after 5 epochs, must be in the checkpoint)."""
    from lmrec.train.trainer import Trainer

    train = {**TINY_TRAIN, "epochs": 8, "checkpoint_every": 1}
    fitted(env, task, name, out=tmp_path / "whole", train=train)
    append = Trainer._append_log

    def killed_after_epoch_6(self, record):
        if record.epoch == 6:
            raise KeyboardInterrupt
        append(self, record)

    monkeypatch.setattr(Trainer, "_append_log", killed_after_epoch_6)
    with pytest.raises(KeyboardInterrupt):
        fitted(env, task, name, out=tmp_path / "broken", train=train)
    monkeypatch.setattr(Trainer, "_append_log", append)
    resumed = fitted(env, task, name, out=tmp_path / "broken", train=train, resume=True)
    assert resumed.manifest["fit"]["resumed_at"] == 5
    logs = [[(r["epoch"], r["loss"], r["valid"]) for r in map(json.loads, (tmp_path / folder / "log.jsonl").open())]
            for folder in ("whole", "broken")]
    assert logs[0] == logs[1] and len(logs[0]) == 8
    assert json.loads((tmp_path / "broken" / "metrics.json").read_text()) == \
        json.loads((tmp_path / "whole" / "metrics.json").read_text())


@pytest.mark.parametrize(("task", "name"), ENTRIES)
def test_bad_input_gives_clear_errors(env, task, name):
    cls = lmrec.get_model(name, task)
    with pytest.raises(SettingsError, match="no_such_setting"):
        cls(no_such_setting=1)
    run = fitted(env, task, name)
    with pytest.raises(SettingsError, match="k=0"):
        run.recommend(run.data.user_ids[0], k=0) if task == "cf" else run.recommend(conversation="User: hi", k=0)
    if task == "cf":
        with pytest.raises(lmrec.LmrecError, match="unknown user id 'nobody'"):
            run.recommend(user="nobody")
        with pytest.raises(lmrec.LmrecError, match="unknown item id 'no-such-item'"):
            run.recommend(items=["no-such-item"])
        with pytest.raises(lmrec.LmrecError, match="pass either conversation=... or user=... / items=..., not both"):
            run.recommend(user=run.data.user_ids[0], conversation="User: hi")
        with pytest.raises(lmrec.LmrecError, match=f"{name} cannot score conversations \\(a collaborative-filtering"):
            run.recommend(conversation="User: hi")
    else:
        with pytest.raises(lmrec.LmrecError, match="expected 'User: ...'"):
            run.recommend(conversation="hello there")
        with pytest.raises(lmrec.LmrecError, match="recommends for conversations: pass conversation="):
            run.recommend(user="u0")
