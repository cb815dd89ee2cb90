"""The model contract shared by every model of lmrec, and the one registry of models by name.

:class:`Model` (every model): a typed ``Config`` (see :mod:`lmrec.settings`), the paper's training values in
``train_defaults`` (turned into a :class:`lmrec.train.TrainConfig` by :meth:`Model.train_config`), and its learned
state as a flat dict of tensors (saved as safetensors by :class:`lmrec.run.Run`; nothing is pickled).
:class:`Recommender` (collaborative filtering, task ``"cf"``) adds fit / score over the users of a
:class:`SplitData`; :class:`lmrec.models.crs.base.CRSRecommender` (task ``"crs"``) scores conversation turns.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from lmrec.data.interactions import SplitData
from lmrec.errors import LmrecError
from lmrec.registry import Registry
from lmrec.settings import as_dict, build, settings
from lmrec.train.trainer import TrainConfig, TrainLog

MODELS: Registry[type[Model]] = Registry("model", ("lmrec.models.cf", "lmrec.models.crs"))
register = MODELS.register
get_model = MODELS.get
list_models = MODELS.names


@settings
class ModelConfig:
    """Base of every model's typed config; subclasses add fields whose defaults are the paper's values."""


class Model:
    """Any lmrec model. ``name`` and ``task`` identify it in the registry and in run folders."""

    name: ClassVar[str] = "model"
    task: ClassVar[str] = ""
    Config: ClassVar[type[ModelConfig]] = ModelConfig
    train_defaults: ClassVar[dict[str, Any]] = {}  # TrainConfig values of the paper; empty for untrained models
    trainable: ClassVar[bool] = False  # fitted by lmrec.train.Trainer (takes a TrainConfig)
    # dense products that run in bf16 under TrainConfig.precision (lmrec.train.precision); without, always fp32
    bf16_path: ClassVar[bool] = False

    def __init__(self, config: ModelConfig | None = None, **overrides: Any):
        if config is not None and not isinstance(config, self.Config):
            raise LmrecError(f"{self.name} takes a {self.Config.__name__}, got a {type(config).__name__}")
        self.config = build(self.Config, overrides, base=config, what=f"{self.name} setting")
        self.device = torch.device("cpu")
        self.precision = "fp32"  # of the dense products (TrainConfig.precision), set when the model is fitted or loaded

    @classmethod
    def train_config(cls, overrides: TrainConfig | dict[str, Any] | None = None,
                     config: ModelConfig | None = None) -> TrainConfig:
        """The paper's training values (``train_defaults``) overridden by ``overrides``; validated, with ``precision``
        resolved for this model on this machine (never "auto")."""
        return TrainConfig.with_overrides(cls.train_defaults, overrides).with_precision(cls.bf16_path, cls.name)

    def identity(self) -> dict[str, Any]:
        """The model's name and settings: what makes its random streams its own (:meth:`TrainConfig.stream_seed`)."""
        return {"name": self.name, "config": as_dict(self.config)}

    def stream_seed(self, train: TrainConfig) -> int:
        """This model's seed of sampling and initialisation under ``train`` (:meth:`TrainConfig.stream_seed`)."""
        return train.stream_seed(self.identity())

    # -- learned state (safetensors) -----------------------------------------------------------------------
    def state(self) -> dict[str, torch.Tensor]:
        """Learned state to save: a flat dict of tensors."""
        return {}

    def load_state(self, state: dict[str, torch.Tensor]) -> None:
        """Restore what :meth:`state` returned."""


class Recommender(Model, ABC):
    """A top-N recommender over the items of one :class:`SplitData` (task ``"cf"``).

    Subclasses implement :meth:`fit` and :meth:`score`; models that can score a user who was not in the training
    data (from a list of items, without retraining) implement :meth:`score_new_user`.
    """

    task: ClassVar[str] = "cf"

    def __init__(self, config: ModelConfig | None = None, **overrides: Any):
        super().__init__(config, **overrides)
        self.data: SplitData | None = None

    @abstractmethod
    def fit(self, data: SplitData, train: TrainConfig | dict | None = None, *, folder: Path | None = None,
            resume: bool = False) -> TrainLog | None:
        """Learn from ``data.train`` (select on ``data.valid``); returns the training log (None if untrained).
        ``folder``: where the per-epoch log and the resumable checkpoint go; ``resume``: continue from it."""

    @abstractmethod
    def score(self, users: np.ndarray) -> torch.Tensor:
        """Scores (len(users), n_items) for dense user indices; higher is better."""

    def score_new_user(self, items: Sequence[int]) -> torch.Tensor:
        """(n_items,) scores for a user who was not in the training data and interacted with ``items``."""
        raise LmrecError(f"{self.name} cannot score a user it was not trained on (it learns one vector per "
                         "training user); models that can: pop, multvae, alpharec, linear_map")

    # -- vectors (dot-product models): score(u, i) = user_vector(u) · item_vectors()[i] -------------------
    def item_vectors(self) -> torch.Tensor | None:
        """(n_items, d) item vectors whose dot product with :meth:`user_vector` is the score; None when the model
        does not score by a dot product (then only exact ranking through :meth:`score` serves it)."""
        return None

    def user_vectors(self) -> torch.Tensor | None:
        """(n_users, d) vectors of the training users against :meth:`item_vectors` (None: not a dot-product model)."""
        return None

    def user_vector(self, user: int, intent: str | None = None, alpha: float = 0.5) -> torch.Tensor:
        """(d,) vector of training user ``user`` (``intent``: AlphaRec models mix a stated intention in)."""
        raise LmrecError(f"{self.name} has no user vectors (it does not score by a dot product)")

    def new_user_vector(self, items: Sequence[int], intent: str | None = None, alpha: float = 0.5) -> torch.Tensor:
        """(d,) vector of a user the model was not trained on, from their ``items``."""
        self.score_new_user(items)  # the same refusal, for the models that cannot
        raise LmrecError(f"{self.name} has no user vectors (it does not score by a dot product)")

    def new_item_vectors(self, texts: Sequence[str]) -> torch.Tensor:
        """(len(texts), d) vectors of items the model was not trained on, from their text (AlphaRec models)."""
        raise LmrecError(f"{self.name} cannot place a new item without retraining: it learns one vector per training "
                         "item; AlphaRec models (alpharec, linear_map) place an item from its title")

    # -- persistence -------------------------------------------------------------------------------------
    def artifacts(self) -> dict[str, torch.Tensor]:
        """Inputs saved beside the state that are not derived from the data (e.g. LM item features)."""
        return {}

    def restore(self, state: dict[str, torch.Tensor], artifacts: dict[str, torch.Tensor], data: SplitData) -> None:
        """Rebuild on ``data`` and load a saved state (subclasses first take back their artifacts)."""
        self.prepare(data)
        self.load_state(state)

    def prepare(self, data: SplitData, seed: int = 0) -> None:
        """Build what the model derives from training data (graph, profiles); called by fit and restore."""
        self.data = data
