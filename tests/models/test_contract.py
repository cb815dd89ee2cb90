"""The contract every registered model keeps, checked for each one with the checks lmrec ships
(:mod:`lmrec.testing`; a new model is covered by registering it): fit on tiny data with a tiny budget, scores of the
right shape and finite, top-k recommendations through :class:`lmrec.Run`, a save / load round trip (to another
folder) giving identical scores, resuming an interrupted fit, and clear errors for a misspelt setting, an unknown
user or item id and a bad ``k``.
"""

from __future__ import annotations

import pytest

import lmrec
from helpers import planted_data, single_thread, write_inspired, write_tiny_llm  # noqa: F401
from lmrec.models.base import MODELS
from lmrec.settings import SettingsError
from lmrec.testing import check_model, check_resume, fit_for_check

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


def inputs_for(env, task: str, name: str) -> dict:
    """What ``lmrec.fit`` gives the model besides the data: the prepared LLM folder and a fitted base run."""
    cls = lmrec.get_model(name, task)
    inputs = {}
    if cls.uses_llm if task == "crs" else False:
        inputs["features"] = env["prepared"]
    if cls.base_model:
        inputs["base"] = fitted(env, task, cls.base_model)
    return inputs


def fitted(env, task: str, name: str) -> lmrec.Run:
    return fit_for_check(name, task, env[task], None, SETTINGS.get(name), None, **inputs_for(env, task, name))


@pytest.mark.parametrize(("task", "name"), ENTRIES)
def test_fit_score_recommend_and_round_trip(env, tmp_path, task, name):
    """lmrec.testing's contract checks, the ones a model written outside lmrec runs (tests/test_testing.py)."""
    check_model(name, tmp_path, task, data=env[task], settings=SETTINGS.get(name), **inputs_for(env, task, name))


@pytest.mark.parametrize(("task", "name"), [e for e in ENTRIES if lmrec.get_model(e[1], e[0]).trainable])
def test_an_interrupted_fit_resumes_into_the_unbroken_one(env, tmp_path, task, name):
    """Killed after epoch 6 (its last checkpoint: epoch 5), resumed: the same epochs, losses, validation scores and
    results as an unbroken fit (state kept outside the parameters, e.g. BC Loss's epoch count that ends its popularity
    warm-up after 5 epochs, must be in the checkpoint)."""
    check_resume(name, tmp_path, task, data=env[task], settings=SETTINGS.get(name), **inputs_for(env, task, name))


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
