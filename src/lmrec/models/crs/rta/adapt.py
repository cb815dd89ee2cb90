"""Adapt step: fit the reindexed LLM's scores to the platform's items (papers.md 1.5).

With s_i = λ · q·e_i the reindexed LLM score (λ = 1 unless ``llm_scale="learned"``, see below):

- bias variants      logits_i = (s_i + b_i) · w_i       ``b``: w fixed to 1; ``gW``: b fixed to 0; ``gW+b``: both
                                                          (b init 0, w init 1: training starts from the LLM scores;
                                                          the official scripts always run with both)
- gating             logits_i = σ(c)·s_i + (1 − σ(c))·r_i   c a scalar init 0 (σ = 0.5), r = FISM or SASRec over the
                                                          items mentioned so far (:mod:`lmrec.models.crs.fism`,
                                                          :mod:`lmrec.models.crs.sasrec`), trained jointly from scratch
- ``none``           logits_i = s_i (the reindexed LLM alone; nothing to train)

The aggregator is frozen (its item table computed once) or trained further (``freeze_aggregator=False``: the table is
recomputed at every step, which costs a full aggregator pass over the catalog). The LLM embeddings always stay frozen.

Training is :func:`lmrec.models.crs.training.fit_crs_module` on the ground-truth (turn, target) pairs of the TRAINING
split: AdamW — the official configs say ``optimizer: sgd`` but compare ``self.args.optimizer.lower == "sgd"`` (a
method to a string, always False), so AdamW is what ran —, batch 256, gradient clip 5, cross-entropy over the
target and 1000 negatives drawn once per batch without replacement from the dataset's items (collisions with a row's
target masked; ``n_negatives=None``: full softmax over the catalog), VALIDATION HR@10 every 10 epochs, stop after 10
evaluations without improvement, at most 200 epochs, best state restored (the official INSPIRED / ReDIAL schedule).
Learning rates: 1e-4 for the bias variants, 1e-3 for gating (the official grids).

Scale: SmolLM2's q has norm ≈ 48, so q·e can be far larger than a FISM/SASRec logit (≈ 0.01 at init); the official
code trains the raw dot product. ``llm_scale="learned"`` multiplies s by a learned λ = exp(t), t init 0 (so the
starting scores are unchanged): the gate can then balance the two sources without driving σ(c) to an extreme.
``llm_scale="standardized"`` (a balanced start; not in the paper) is the same learned λ with t init −log std(q·e) over
the training turns, so the LLM's logits start with unit spread and σ(c) = 0.5 weighs two sources of like scale.

Learning rates (not in the paper): ``head_lr`` gives the few adapt parameters (b, w, the gate c, λ) a rate of their
own, e.g. 1e-2 with 1e-3 for the recsys, so they move within a short budget; None: one rate for all (the official).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import NonNegativeInt, PositiveFloat, PositiveInt
from torch import nn

from lmrec.data.conversations import CRSData, CRSSample
from lmrec.errors import Argument, ArgumentError, LmrecError
from lmrec.inputs import ModelInputs
from lmrec.models.base import ModelConfig, register
from lmrec.models.crs.base import CRSRecommender
from lmrec.models.crs.rta.reindex import ItemIndexer
from lmrec.models.crs.training import CRS_TRAIN_DEFAULTS, MAX_HISTORY, fit_crs_module, history_tensor
from lmrec.models.queries import Conversations
from lmrec.settings import settings
from lmrec.train.trainer import TrainConfig, TrainLog, resolve_device

__all__ = ["ADAPT_TRAIN_DEFAULTS", "BIAS_VARIANTS", "GATE_VARIANTS", "VARIANTS", "AdaptConfig", "AdaptModule",
           "RTAAdapt", "build_recsys"]

BIAS_VARIANTS = ("b", "gW", "gW+b")
GATE_VARIANTS = ("gate-fism", "gate-sasrec")
VARIANTS = ("none", *BIAS_VARIANTS, *GATE_VARIANTS)


@settings
class AdaptConfig(ModelConfig):
    """Adapt model settings (the training schedule is a :class:`lmrec.train.TrainConfig`: see ``train_defaults``;
    the learning rate is 1e-4 for the bias variants and 1e-3 for gating, as in the official grids)."""

    variant: Literal["none", "b", "gW", "gW+b", "gate-fism", "gate-sasrec"] = "gW+b"
    freeze_aggregator: bool = True
    llm_scale: Literal["none", "learned", "standardized"] = "none"
    head_lr: PositiveFloat | None = None  # learning rate of b, w, the gate and λ (None: the training lr)
    n_negatives: PositiveInt | None = 1000  # None: full softmax over the catalog
    recsys_dim: PositiveInt = 64
    max_history: NonNegativeInt = MAX_HISTORY


#: the official INSPIRED / ReDIAL adapt schedule (lr: see :meth:`RTAAdapt.train_config`)
ADAPT_TRAIN_DEFAULTS: dict[str, Any] = {**CRS_TRAIN_DEFAULTS, "eval_every": 10, "patience": 10}


def build_recsys(kind: str, n_items: int, dim: int = 64, max_len: int = MAX_HISTORY) -> nn.Module:
    """FISM or SASRec over the mentioned items (``forward(history (b, L)) -> (b, n_items)``)."""
    if kind == "fism":
        from lmrec.models.crs.fism import FISM

        return FISM(n_items, dim)
    if kind == "sasrec":
        from lmrec.models.crs.sasrec import SASRec

        return SASRec(n_items, dim, max_len=max_len)
    raise ValueError(f"unknown recsys {kind!r}: expected 'fism' or 'sasrec'")


class AdaptModule(nn.Module):
    """``forward(q (b, d), history (b, L)) -> (b, n_items)`` logits; see the module docstring."""

    def __init__(self, indexer: ItemIndexer, variant: str = "gW+b", freeze_aggregator: bool = True,
                 recsys: nn.Module | None = None, llm_scale: str = "none", head_lr: float | None = None):
        super().__init__()
        if variant not in VARIANTS:
            raise ValueError(f"unknown adapt variant {variant!r}: expected one of {', '.join(VARIANTS)}")
        if (variant in GATE_VARIANTS) != (recsys is not None):
            raise ValueError(f"variant {variant!r} {'needs' if variant in GATE_VARIANTS else 'takes no'} recsys")
        self.variant = variant
        self.indexer = indexer
        self.freeze_aggregator = freeze_aggregator
        n = indexer.n_items
        if freeze_aggregator:
            for p in indexer.parameters():
                p.requires_grad_(False)
            self.register_buffer("frozen_table", indexer.item_table())
        else:
            self.frozen_table = None
        self.bias = nn.Parameter(torch.zeros(n)) if variant in ("b", "gW+b") else None
        self.weight = nn.Parameter(torch.ones(n)) if variant in ("gW", "gW+b") else None
        self.log_scale = nn.Parameter(torch.zeros(())) if llm_scale in ("learned", "standardized") else None
        self.gate = nn.Parameter(torch.zeros(())) if recsys is not None else None
        self.recsys = recsys
        self.head_lr = head_lr

    def head(self) -> list[nn.Parameter]:
        """The adapt parameters proper: b, w, the gate c and λ (those present)."""
        return [p for p in (self.bias, self.weight, self.gate, self.log_scale) if p is not None]

    def param_groups(self, lr: float) -> list[dict[str, Any]]:
        """Optimizer groups: the head at ``head_lr`` (when set), everything else trainable at ``lr``."""
        head = {id(p) for p in self.head()}
        rest = [p for p in self.parameters() if p.requires_grad and id(p) not in head]
        groups = [{"params": rest, "lr": lr}] if rest else []
        head_params = [p for p in self.head() if p.requires_grad]
        if head_params:
            groups.append({"params": head_params, "lr": self.head_lr if self.head_lr is not None else lr})
        return groups

    def item_table(self) -> torch.Tensor:
        return self.frozen_table if self.frozen_table is not None else self.indexer.embed()

    def llm_logits(self, q: torch.Tensor) -> torch.Tensor:
        """(b, n_items) λ · q·e_i (q centred as the reindex step centred it)."""
        s = self.indexer.center(q) @ self.item_table().T
        return s * self.log_scale.exp() if self.log_scale is not None else s

    def forward(self, q: torch.Tensor, history: torch.Tensor) -> torch.Tensor:
        s = self.llm_logits(q)
        if self.bias is not None:
            s = s + self.bias
        if self.weight is not None:
            s = s * self.weight
        if self.gate is not None:
            g = torch.sigmoid(self.gate)
            s = g * s + (1 - g) * self.recsys(history)
        return s


@register("rta_adapt")
class RTAAdapt(CRSRecommender):
    """The reindexed LLM adapted to the platform (bias terms or RecSys gating), trained on ground truth.

    ``fit(data, train, inputs=ModelInputs(features=..., base=<a fitted rta_reindex>))``; a saved run holds the whole
    module (the reindexed item table and the title tokens included), so it loads without the reindex run.
    """

    Config = AdaptConfig
    train_defaults = ADAPT_TRAIN_DEFAULTS
    trainable = True
    uses_llm = True
    base_model = "rta_reindex"
    needs = ("features", "base")

    def __init__(self, config: AdaptConfig | None = None, **overrides: Any):
        super().__init__(config, **overrides)
        self.module: AdaptModule | None = None
        self.log: TrainLog | None = None

    @classmethod
    def train_config(cls, overrides: TrainConfig | dict | None = None, config: Any = None) -> TrainConfig:
        """The official schedule with lr 1e-4 for the bias variants and 1e-3 for gating (unless given)."""
        variant = config.variant if config is not None else AdaptConfig().variant
        lr = 1e-3 if variant in GATE_VARIANTS else 1e-4
        return TrainConfig.with_overrides({**cls.train_defaults, "lr": lr}, overrides).with_precision(cls.bf16_path,
                                                                                                       cls.name)

    def build(self, indexer: ItemIndexer, seed: int) -> None:
        c = self.config
        torch.manual_seed(seed)
        recsys = build_recsys(c.variant.removeprefix("gate-"), indexer.n_items, c.recsys_dim, c.max_history) \
            if c.variant in GATE_VARIANTS else None
        self.module = AdaptModule(indexer, c.variant, c.freeze_aggregator, recsys, c.llm_scale,
                                  c.head_lr).to(self.device)
        self.n_items = indexer.n_items

    def inputs(self, samples: Sequence[CRSSample]) -> tuple[torch.Tensor, torch.Tensor]:
        return self.q(samples), history_tensor([s.mentioned for s in samples], self.config.max_history).to(self.device)

    def fit(self, data: CRSData, train: TrainConfig | dict | None = None, *, inputs: ModelInputs | None = None,
            folder: Path | None = None, resume: bool = False, on_validation: Any = None) -> TrainLog:
        from lmrec.inputs.lookup import context_features
        from lmrec.models.crs.rta.reindex import RTAReindex

        inputs = self.check_inputs(inputs)
        features, base = inputs.features, inputs.base
        if not isinstance(base, RTAReindex) or base.indexer is None:
            raise ArgumentError("rta_adapt adapts a fitted rta_reindex: fit it with ", Argument("features"), " and ",
                                Argument("base"), " (the rta_reindex run)")
        cfg = self.train_config(train, self.config)
        self.device = resolve_device(cfg.device)
        self.context = context_features(features)
        seed = self.stream_seed(cfg)
        self.build(copy.deepcopy(base.indexer).to(self.device), seed)
        if len(data.catalog) != self.n_items:
            raise LmrecError(f"rta_adapt: {self.n_items} items indexed, the data has {len(data.catalog)}")
        if not any(p.requires_grad for p in self.module.parameters()):
            self.log = TrainLog(stopped="nothing to train (variant 'none' with a frozen aggregator)")
            return self.log
        if self.config.llm_scale == "standardized":
            with torch.no_grad():
                turns = features.samples["train"][:1024]
                spread = self.module.llm_logits(self.q(turns)).std()
                self.module.log_scale.fill_(-float(torch.log(spread.clamp(min=1e-12))))
        self.log = fit_crs_module(self.module, self.inputs, features.samples["train"],
                                  features.samples.get("valid", []), self.n_items, cfg, self.config.n_negatives,
                                  folder, resume, name=f"rta_adapt {self.config.variant}", seed=seed,
                                  groups=self.module.param_groups)
        return self.log

    def item_space(self) -> torch.Tensor | None:
        return self.module.item_table().detach() if self.module is not None else None

    def score_conversations(self, query: Conversations) -> torch.Tensor:
        if self.module is None:
            raise LmrecError("rta_adapt: call fit before score")
        self.module.eval()
        with torch.no_grad():
            return self.module(*self.inputs(query.samples))

    def diagnostics(self) -> dict[str, Any]:
        """Learned gate σ(c), scale λ and bias / weight summaries."""
        m = self.module
        out: dict[str, Any] = {"variant": m.variant, "freeze_aggregator": m.freeze_aggregator}
        if m.gate is not None:
            out["sigma_c"] = float(torch.sigmoid(m.gate.detach()))
        if m.log_scale is not None:
            out["llm_scale"] = float(m.log_scale.detach().exp())
        if m.bias is not None:
            out["bias_mean_abs"] = float(m.bias.detach().abs().mean())
        if m.weight is not None:
            out["weight_mean"], out["weight_std"] = float(m.weight.detach().mean()), float(m.weight.detach().std())
        return out

    def state(self) -> dict[str, torch.Tensor]:
        return {k: v.detach().clone() for k, v in self.module.state_dict().items()}

    def load_state(self, state: dict[str, torch.Tensor]) -> None:
        from lmrec.models.crs.rta.aggregators import build_aggregator
        from lmrec.models.crs.rta.reindex import tokens_from_state

        tokens = tokens_from_state(state, "indexer.")
        aggregator = _aggregator_kind(state)
        indexer = ItemIndexer(tokens, build_aggregator(aggregator, int(tokens.table.shape[1]), tokens.ids.shape[1]))
        self.build(indexer, 0)
        self.module.load_state_dict(state)


def _aggregator_kind(state: dict[str, torch.Tensor]) -> str:
    """The aggregator whose parameters a saved indexer holds (``sum`` has none)."""
    names = {k.split(".")[2] for k in state if k.startswith("indexer.aggregator.")}
    for kind, marker in (("gru", "gru"), ("transformer", "layer"), ("weighted", "position_logits")):
        if marker in names:
            return kind
    return "sum"
