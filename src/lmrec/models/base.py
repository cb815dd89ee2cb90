"""The recommender contract: fit / score / recommend / save / load, and the registry of models by name."""

from __future__ import annotations

import dataclasses
import json
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from lmrec.data.interactions import SplitData
from lmrec.errors import LmrecError
from lmrec.io import atomic_write
from lmrec.registry import Registry

MODELS: Registry[type[Recommender]] = Registry("model", "lmrec.models.cf")
register = MODELS.register
get_model = MODELS.get
list_models = MODELS.names


@dataclasses.dataclass
class ModelConfig:
    """Base of every model's typed config; subclasses add fields whose defaults are the paper's values."""


class Recommender(ABC):
    """A top-N recommender over the items of one :class:`SplitData`.

    Subclasses set ``Config`` (a dataclass of hyper-parameters) and implement :meth:`fit` and :meth:`score`.
    ``train_defaults`` overrides :class:`lmrec.train.TrainConfig` defaults with the paper's training values.
    """

    name: ClassVar[str] = "recommender"
    Config: ClassVar[type[ModelConfig]] = ModelConfig
    train_defaults: ClassVar[dict[str, Any]] = {}

    def __init__(self, config: ModelConfig | None = None, **overrides: Any):
        base = config if config is not None else self.Config()
        self.config = dataclasses.replace(base, **overrides)
        self.data: SplitData | None = None

    @abstractmethod
    def fit(self, data: SplitData, train_config: Any = None) -> Any:
        """Learn from ``data.train`` (select on ``data.valid``); returns a training log or None."""

    @abstractmethod
    def score(self, users: np.ndarray) -> torch.Tensor:
        """Scores (len(users), n_items) for dense user indices; higher is better."""

    def recommend(self, user: int, k: int = 10, exclude_seen: bool = True) -> list[tuple[int, float]]:
        """Top-k (item index, score) for one dense user index; training items removed when ``exclude_seen``."""
        scores = self.score(np.array([user]))[0].detach().clone()
        if exclude_seen and self.data is not None:
            seen = self.data.train.indices[self.data.train.indptr[user] : self.data.train.indptr[user + 1]]
            scores[torch.from_numpy(seen.astype(np.int64))] = -torch.inf
        top = torch.topk(scores, min(k, len(scores)))
        return [(int(i), float(s)) for i, s in zip(top.indices, top.values) if s > -torch.inf]

    # -- persistence -------------------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        """Learned state to save (tensors or arrays)."""
        return {}

    def load_state(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state` returned (after :meth:`prepare` rebuilt data-derived buffers)."""

    def artifacts(self) -> dict[str, Any]:
        """Inputs saved beside the state that are not derived from the data (e.g. LM item features)."""
        return {}

    def restore(self, state: dict[str, Any], artifacts: dict[str, Any], data: SplitData) -> None:
        """Rebuild on ``data`` and load a saved state (subclasses first take back their artifacts)."""
        self.prepare(data)
        self.load_state(state)

    def prepare(self, data: SplitData) -> None:
        """Build what the model derives from training data (graph, profiles); called by fit and load."""
        self.data = data

    def save(self, path: str | Path) -> None:
        """Write ``model.pt`` with name, config, data checksum and state (atomically)."""
        payload = {
            "name": self.name,
            "config": dataclasses.asdict(self.config),
            "data_checksum": None if self.data is None else self.data.checksum(),
            "state": self.state(),
            "artifacts": self.artifacts(),
        }
        atomic_write(Path(path), lambda f: torch.save(payload, f), binary=True)

    @staticmethod
    def load(path: str | Path, data: SplitData) -> Recommender:
        """Rebuild a saved model on the same dataset (checked by checksum)."""
        payload = torch.load(Path(path), map_location="cpu", weights_only=False)
        cls = get_model(payload["name"])
        known = {f.name for f in dataclasses.fields(cls.Config)}
        unknown = sorted(set(payload["config"]) - known)
        if unknown:
            raise LmrecError(f"{path}: saved settings {unknown} are unknown to this lmrec's {cls.name!r} "
                             f"(saved by another version?); known settings: {sorted(known)}")
        model = cls(cls.Config(**payload["config"]))
        if payload["data_checksum"] not in (None, data.checksum()):
            raise LmrecError(
                f"{path}: model was trained on data with checksum {payload['data_checksum']}, "
                f"but the given dataset {data.name!r} has checksum {data.checksum()} (different data or split)"
            )
        model.restore(payload["state"], payload.get("artifacts", {}), data)
        return model

    def describe(self) -> str:
        return f"{self.name}({json.dumps(dataclasses.asdict(self.config))})"
