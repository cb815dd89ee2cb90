"""Base of the gradient-trained recommenders: a torch module, the shared trainer, cached inference."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from lmrec.data.interactions import SplitData
from lmrec.errors import LmrecError
from lmrec.eval.ranking import fresh_scores
from lmrec.eval.validation import user_validation
from lmrec.inputs import ModelInputs
from lmrec.models.base import ModelConfig, Recommender
from lmrec.models.queries import KnownUsers, user_scorer
from lmrec.train import OnValidation, Trainable, TrainConfig, Trainer, TrainLog, resolve_device
from lmrec.train.precision import autocast


class TorchRecommender(Recommender, Trainable):
    """A recommender whose parameters live in ``self.net`` (built by :meth:`prepare`) and are fitted by
    :class:`lmrec.train.Trainer`. Subclasses implement :meth:`build`, :meth:`batches`, :meth:`loss` and
    :meth:`embed` (user and item representations used for scoring).

    Device: tensors that :meth:`build` stores on the model (graphs, LM features) and the module are moved to
    the training config's ``device``; batches are moved by the trainer.

    Precision: the model runs in the training config's ``precision`` (``self.precision``, "fp32" or "bf16");
    models with dense products to run in bf16 (``bf16_path``) call them through :meth:`dense`.
    """

    trainable: ClassVar[bool] = True
    # ``loss`` is a mean over the batch's rows (see lmrec.train.distributed)
    supports_distributed: ClassVar[bool] = True
    net: torch.nn.Module

    def __init__(self, config: ModelConfig | None = None, **overrides: Any):
        super().__init__(config, **overrides)
        self._inference: tuple[torch.Tensor, torch.Tensor] | None = None
        self._columns: tuple[torch.Tensor, torch.Tensor] | None = None  # (item vectors, their transpose, contiguous)

    # -- to implement --------------------------------------------------------------------------------
    def build(self, data: SplitData) -> torch.nn.Module:
        raise NotImplementedError

    def batches(self, rng: np.random.Generator, batch_size: int) -> Iterator[Any]:
        raise NotImplementedError

    def loss(self, batch: Any) -> torch.Tensor:
        raise NotImplementedError

    def embed(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(user representations (n_users, d), item representations (n_items, d)); score = dot product."""
        raise NotImplementedError

    # -- shared --------------------------------------------------------------------------------------
    def prepare(self, data: SplitData, seed: int = 0) -> None:
        """Build the module on ``data``, initialised from ``seed`` (the training seed; a restored state replaces it)."""
        super().prepare(data)
        torch.manual_seed(seed)
        self.net = self.build(data)
        self.to(self.device)

    def to(self, device: torch.device | str) -> TorchRecommender:
        """Move the module and every tensor the model holds to ``device``."""
        self.device = torch.device(device)
        for name, value in list(vars(self).items()):
            if isinstance(value, torch.Tensor):
                setattr(self, name, value.to(self.device))
        self.net.to(self.device)
        self._inference = None
        return self

    def fit(self, data: SplitData, train: TrainConfig | dict | None = None, *, inputs: ModelInputs | None = None,
            folder: Path | None = None, resume: bool = False, on_validation: OnValidation | None = None) -> TrainLog:
        cfg = self.train_config(train, self.config)
        self.device = resolve_device(cfg.device)
        self.precision = cfg.precision
        seed = self.stream_seed(cfg)
        self.prepare(data, seed)
        validate = user_validation(user_scorer(self.score), data, cfg)
        return Trainer.in_folder(cfg, folder).run(self, validate, resume=resume, seed=seed, on_validation=on_validation)

    def parameters(self) -> Iterator[torch.nn.Parameter]:
        return self.net.parameters()

    def dense(self, fn: Callable[..., Any], *inputs: Any) -> Any:
        """``fn(*inputs)`` with its dense products at the model's precision (bf16 autocast when it is "bf16"), its
        output (a tensor or a tuple of tensors) in float32 either way."""
        if self.precision != "bf16":
            return fn(*inputs)
        with autocast(self.precision, self.device):
            out = fn(*inputs)
        return tuple(t.float() for t in out) if isinstance(out, tuple) else out.float()

    def set_training(self, training: bool) -> None:
        """Switch train / eval mode; the cached vectors are dropped when training starts (or the mode changes)."""
        if training or self.net.training != training:
            self._inference = None
        self.net.train(training)

    def vectors(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(user vectors, item vectors) of the current state, computed once until the next training step."""
        cached = self._inference
        if cached is None:
            with torch.no_grad():
                cached = self._inference = tuple(t.detach() for t in self.embed())  # type: ignore[assignment]
        return cached  # type: ignore[return-value]

    @fresh_scores  # a new product at every call
    def score_users(self, query: KnownUsers) -> torch.Tensor:
        user_emb, item_emb = self.vectors()
        columns = self._columns
        if columns is None or columns[0] is not item_emb:  # the item vectors as contiguous columns, once per state:
            columns = self._columns = (item_emb, item_emb.T.contiguous())  # MKL multiplies by them ~1.7x faster
        return user_emb[torch.as_tensor(query.users, dtype=torch.long, device=user_emb.device)] @ columns[1]

    def item_vectors(self) -> torch.Tensor:
        return self.vectors()[1]

    def user_vectors(self) -> torch.Tensor:
        return self.vectors()[0]

    def user_vector(self, user: int, intent: str | None = None, alpha: float = 0.5) -> torch.Tensor:
        if intent is not None:
            raise LmrecError(f"{self.name} takes no intent: stated intentions need an AlphaRec-family model")
        return self.vectors()[0][user]

    def state(self) -> dict[str, torch.Tensor]:
        return {k: v.detach().clone() for k, v in self.net.state_dict().items()}

    def load_state(self, state: dict[str, torch.Tensor]) -> None:
        self.net.load_state_dict(state)
        self._inference = None
        self.set_training(False)
