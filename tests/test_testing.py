"""A model written outside lmrec registers itself and passes lmrec's shipped contract checks (lmrec.testing)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import lmrec
from lmrec.models.base import MODELS, ModelConfig, Recommender, register
from lmrec.models.queries import KnownUsers, NewUser
from lmrec.settings import settings
from lmrec.testing import check_model, check_resume, planted_data


@pytest.fixture(autouse=True)
def registry_restored():
    """The toy models leave the registry as they found it (other tests list every registered model)."""
    MODELS.names()  # lmrec's own models imported first
    before = dict(MODELS._classes)
    register("toy_item_knn")(ToyItemKNN)
    yield
    MODELS._classes.clear()
    MODELS._classes.update(before)


@settings
class ItemKNNConfig(ModelConfig):
    shrink: float = 10.0  # added to the co-occurrence norms


class ToyItemKNN(Recommender):
    """A model from outside lmrec: item-item cosine over the training matrix, s(u, i) = Σ_j∈u sim(j, i)."""

    Config = ItemKNNConfig

    def fit(self, data, train=None, *, inputs=None, folder=None, resume=False, on_validation=None):
        self.prepare(data)

    def prepare(self, data, seed: int = 0) -> None:
        super().prepare(data)
        x = torch.from_numpy(data.train.toarray())
        norms = x.sum(0).sqrt() + self.config.shrink
        self.sim = (x.T @ x) / norms[:, None] / norms[None, :]
        self.sim.fill_diagonal_(0)

    def score_users(self, query: KnownUsers) -> torch.Tensor:
        rows = torch.from_numpy(self.data.train[np.asarray(query.users)].toarray())
        return rows @ self.sim

    def score_new_user(self, query: NewUser) -> torch.Tensor:
        return self.sim[list(query.items)].sum(0, keepdim=True)


def test_a_model_from_outside_lmrec_passes_the_shipped_checks(tmp_path: Path) -> None:
    loaded = check_model("toy_item_knn", tmp_path)
    assert loaded.model.answers() == ["known users", "new users"]
    assert lmrec.get_model("toy_item_knn") is ToyItemKNN and "toy_item_knn" in lmrec.list_models()


def test_the_checks_catch_a_model_that_breaks_the_contract(tmp_path: Path) -> None:
    class Forgetful(ToyItemKNN):
        """Restores nothing of what it learned: a loaded run scores differently."""

        def state(self) -> dict[str, Any]:
            return {}

        def load_state(self, state: dict[str, Any]) -> None:
            self.sim = torch.rand_like(self.sim)

    register("toy_forgetful")(Forgetful)
    with pytest.raises(AssertionError, match="toy_forgetful: the loaded run scores differently"):
        check_model("toy_forgetful", tmp_path, data=planted_data(1))


def test_resume_checks_run_for_a_trainable_lmrec_model(tmp_path: Path) -> None:
    check_resume("mf", tmp_path, settings={"emb_dim": 8})
