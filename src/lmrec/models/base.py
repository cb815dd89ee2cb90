"""The one model contract of lmrec, for collaborative filtering and conversational recommendation alike, and the
one registry of models by name.

Every model is a :class:`Model`: a typed ``Config`` (:mod:`lmrec.settings`) whose defaults are its paper's values,
the paper's training values in ``train_defaults`` (a :class:`lmrec.train.TrainConfig` through
:meth:`Model.train_config`), and

- ``fit(data, train, *, inputs, folder, resume, on_validation)``: learn from the training split (select on
  validation); ``inputs`` (:class:`lmrec.inputs.ModelInputs`) holds what it reads besides the data (LLM features, a
  base model), ``needs`` names the inputs it cannot do without;
- ``state()`` / ``artifacts()``: what a run folder saves (safetensors: nothing pickled), the learned state and the
  inputs it keeps (e.g. LM item features); ``restore(state, inputs, data)`` rebuilds the fitted model from them;
- ``score(query)``: (batch, n_items) scores for a typed query (:mod:`lmrec.models.queries`: known users, a new user,
  conversations); a model answers the kinds whose hook it implements (``score_users``, ``score_new_user``,
  ``score_conversations``: :meth:`Model.answers`) and refuses the others with one clear error.

``task`` ("cf" or "crs") says which data a model learns from (:class:`Recommender`: interactions, a
:class:`SplitData`; :class:`lmrec.models.crs.base.CRSRecommender`: conversations); nothing else branches on it.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import torch

from lmrec.data.interactions import SplitData
from lmrec.errors import LmrecError
from lmrec.inputs import ModelInputs
from lmrec.models.queries import KINDS, Conversations, KnownUsers, NewUser, Query
from lmrec.registry import Registry
from lmrec.search_space import Range
from lmrec.settings import as_dict, build, settings
from lmrec.train.trainer import OnValidation, TrainConfig, TrainLog

MODELS: Registry[type[Model]] = Registry("model", ("lmrec.models.cf", "lmrec.models.crs"))
register = MODELS.register
get_model = MODELS.get
list_models = MODELS.names


@settings
class ModelConfig:
    """Base of every model's typed config; subclasses add fields whose defaults are the paper's values."""


class Model:
    """Any lmrec model (see the module docstring). ``name`` and ``task`` identify it in the registry and in run
    folders."""

    name: ClassVar[str] = "model"
    task: ClassVar[str] = ""
    Config: ClassVar[type[ModelConfig]] = ModelConfig
    train_defaults: ClassVar[dict[str, Any]] = {}  # TrainConfig values of the paper; empty for untrained models
    trainable: ClassVar[bool] = False  # fitted by lmrec.train.Trainer (takes a TrainConfig)
    # what `lmrec tune` searches: model settings and training settings -> ranges (lmrec.search_space); empty: no search
    search_space: ClassVar[dict[str, Range]] = {}
    needs: ClassVar[tuple[str, ...]] = ()  # ModelInputs fields fit cannot do without ("features", "base")
    base_model: ClassVar[str | None] = None  # the registered model whose fitted run ``inputs.base`` must be
    takes_intent: ClassVar[bool] = False  # a stated intention can be mixed into a user (AlphaRec family)
    # dense products that run in bf16 under TrainConfig.precision (lmrec.train.precision); without, always fp32
    bf16_path: ClassVar[bool] = False

    def __init__(self, config: ModelConfig | None = None, **overrides: Any):
        if config is not None and not isinstance(config, self.Config):
            raise LmrecError(f"{self.name} takes a {self.Config.__name__}, got a {type(config).__name__}")
        self.config = build(self.Config, overrides, base=config, what=f"{self.name} setting")
        self.device = torch.device("cpu")
        self.data: Any = None
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

    # -- fitting and restoring -----------------------------------------------------------------------------
    def fit(self, data: Any, train: TrainConfig | dict | None = None, *, inputs: ModelInputs | None = None,
            folder: Path | None = None, resume: bool = False, on_validation: OnValidation | None = None
            ) -> TrainLog | None:
        """Learn from ``data``'s training split, selecting on its validation split; returns the training log (None
        when nothing is trained). ``folder``: where the per-epoch log and the resumable checkpoint go; ``resume``:
        continue from it; ``on_validation``: given to :meth:`lmrec.train.Trainer.run`."""
        raise NotImplementedError

    def restore(self, state: dict[str, torch.Tensor], inputs: ModelInputs, data: Any) -> None:
        """Rebuild the fitted model on ``data`` from its saved ``state`` and ``inputs`` (its artifacts as
        ``inputs.item_features``, the LLM lookup as ``inputs.context``); no training."""
        self.prepare(data)
        self.load_state(state)

    def prepare(self, data: Any, seed: int = 0) -> None:
        """Build what the model derives from the training data (graph, profiles); called by fit and restore."""
        self.data = data

    def check_inputs(self, inputs: ModelInputs | None) -> ModelInputs:
        """``inputs`` (empty when None), an error naming what :attr:`needs` asks for and is missing."""
        inputs = inputs or ModelInputs()
        missing = [name for name in self.needs if getattr(inputs, name) is None]
        if missing:
            what = {"features": "features= (a folder made by `lmrec crs prepare`)",
                    "base": f"base= (a fitted {self.base_model} run)"}
            raise LmrecError(f"{self.name} needs {' and '.join(what[m] for m in missing)}")
        return inputs

    # -- learned state (safetensors) -----------------------------------------------------------------------
    def state(self) -> dict[str, torch.Tensor]:
        """Learned state to save: a flat dict of tensors."""
        return {}

    def load_state(self, state: dict[str, torch.Tensor]) -> None:
        """Restore what :meth:`state` returned."""

    def artifacts(self) -> dict[str, torch.Tensor]:
        """Inputs saved beside the state that are not derived from the data (e.g. LM item features: given back to
        :meth:`restore` as ``inputs.item_features``)."""
        return {}

    # -- scoring -------------------------------------------------------------------------------------------
    def score(self, query: Query) -> torch.Tensor:
        """(batch, n_items) scores of a typed query (:mod:`lmrec.models.queries`), higher is better."""
        if getattr(query, "intent", None) is not None and not self.takes_intent:
            raise LmrecError(f"{self.name} takes no intent: stated intentions need an AlphaRec-family model "
                             "(alpharec, linear_map)")
        if isinstance(query, KnownUsers):
            return self.score_users(query)
        if isinstance(query, NewUser):
            return self.score_new_user(query)
        if isinstance(query, Conversations):
            return self.score_conversations(query)
        raise TypeError(f"not a query: {type(query).__name__} (expected KnownUsers, NewUser or Conversations)")

    def score_users(self, query: KnownUsers) -> torch.Tensor:
        """Scores of training users (the hook :meth:`score` calls for :class:`KnownUsers`)."""
        raise self._refusal(KnownUsers)

    def score_new_user(self, query: NewUser) -> torch.Tensor:
        """(1, n_items) scores of a user the model was not trained on, from their items, without retraining."""
        raise self._refusal(NewUser)

    def score_conversations(self, query: Conversations) -> torch.Tensor:
        """Scores of conversation turns."""
        raise self._refusal(Conversations)

    @classmethod
    def answers(cls) -> list[str]:
        """The kinds of query this model answers: those whose hook it implements (``lmrec.models.queries.KINDS``)."""
        hooks = {KnownUsers: "score_users", NewUser: "score_new_user", Conversations: "score_conversations"}
        return [KINDS[kind] for kind, hook in hooks.items() if getattr(cls, hook) is not getattr(Model, hook)]

    def _refusal(self, kind: type) -> LmrecError:
        able = ", ".join(sorted({name for _, name, cls in MODELS.entries() if KINDS[kind] in cls.answers()}))
        what = {KnownUsers: f"cannot score known users (it learns from {self.task} data, not users' histories)",
                NewUser: "cannot score a user it was not trained on (it learns one vector per training user)",
                Conversations: "cannot score conversations (a collaborative-filtering model: pass user=... or "
                               "items=...)"}[kind]
        return LmrecError(f"{self.name} {what}; models that can: {able}")

    # -- vectors (dot-product models): score(u, i) = user_vector(u) · item_vectors()[i] -------------------
    def item_vectors(self) -> torch.Tensor | None:
        """(n_items, d) item vectors whose dot product with :meth:`user_vector` is the score; None when the model
        does not score by a dot product (then only exact ranking through :meth:`score` serves it)."""
        return None

    def item_space(self) -> torch.Tensor | None:
        """(n_items, d) vectors whose cosine says how alike two items are to this model: why an item is recommended
        is the history items nearest to it there (:mod:`lmrec.run.reasons`). Default: :meth:`item_vectors`; None:
        the model has no item space (then no item is named as a reason)."""
        return self.item_vectors()

    def user_vectors(self) -> torch.Tensor | None:
        """(n_users, d) vectors of the training users against :meth:`item_vectors` (None: not a dot-product model)."""
        return None

    def user_vector(self, user: int, intent: str | None = None, alpha: float = 0.5) -> torch.Tensor:
        """(d,) vector of training user ``user`` (``intent``: AlphaRec models mix a stated intention in)."""
        raise LmrecError(f"{self.name} has no user vectors (it does not score by a dot product)")

    def new_user_vector(self, items: Sequence[int], intent: str | None = None, alpha: float = 0.5) -> torch.Tensor:
        """(d,) vector of a user the model was not trained on, from their ``items``."""
        if "new users" not in self.answers():
            raise self._refusal(NewUser)
        raise LmrecError(f"{self.name} has no user vectors (it does not score by a dot product)")

    def new_item_vectors(self, texts: Sequence[str]) -> torch.Tensor:
        """(len(texts), d) vectors of items the model was not trained on, from their text (AlphaRec models)."""
        raise LmrecError(f"{self.name} cannot place a new item without retraining: it learns one vector per training "
                         "item; AlphaRec models (alpharec, linear_map) place an item from its title")


class Recommender(Model):
    """A collaborative-filtering model (task ``"cf"``): it learns from the interactions of a :class:`SplitData`
    and answers known users (and, some, new users)."""

    task: ClassVar[str] = "cf"
    data: SplitData | None
