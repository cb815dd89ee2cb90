"""BC Loss (Zhang et al., NeurIPS 2022): bias-aware margins in a contrastive loss, on a LightGCN backbone."""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Annotated, Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field, NonNegativeFloat, NonNegativeInt, PositiveFloat, PositiveInt
from torch import nn

from lmrec.data.interactions import SplitData
from lmrec.errors import LmrecError
from lmrec.models.base import register
from lmrec.models.cf.lightgcn import LightGCN, LightGCNConfig
from lmrec.models.nn.losses import info_nce, row_scores
from lmrec.search_space import FloatRange
from lmrec.settings import settings

_CLAMP = 1 - 1e-7  # arccos is not differentiable at ±1 (the official code clamps the same way)


@settings
class BCLossConfig(LightGCNConfig):
    reg: NonNegativeFloat = 1e-5  # official parse.py ``regs``
    tau1: PositiveFloat = 0.07  # temperature of the main (bias-aware) loss
    tau2: PositiveFloat = 0.1  # temperature of the popularity branch
    w_lambda: Annotated[float, Field(ge=0, le=1)] = 0.5  # loss = (1 − w)·L_BC + w·L_pop
    freeze_epochs: NonNegativeInt = 5  # epochs training only the popularity branch, which is frozen afterwards
    n_negatives: PositiveInt = 128  # sampled per positive among the user's non-training items
    # "sigmoid": the released code's M = 1 − σ(p_u·p_i); "angle": the paper's M = min(θ̂, π − θ)
    margin: Literal["sigmoid", "angle"] = "sigmoid"
    pred_norm: bool = False  # False: raw dot product (the released predict); True: cosine (the loss's similarity)


def popularity_index(degree: np.ndarray) -> tuple[np.ndarray, int]:
    """Dense rank of each node's training degree among the distinct degrees (the official ``*_pop_idx``):
    nodes with the same number of training interactions share one popularity embedding."""
    values, index = np.unique(degree, return_inverse=True)
    return index.astype(np.int64), len(values)


@register("bc_loss")
class BCLoss(LightGCN):
    """BC Loss (Zhang et al. 2022) on LightGCN: L = (1 − w)·L_BC + w·L_pop + L2.

    Popularity branch: embeddings p_u, p_i indexed by the popularity (rank of the training degree) of the user
    and the item only, trained with L_pop = InfoNCE_τ₂ over cos(p_u, p_i) and the negatives' cos(p_u, p_j).
    θ̂_ui = arccos cos(p_u, p_i) is the angle the popularity alone predicts (small when the pair is
    "explained" by popularity). Main branch: e = LightGCN embeddings, θ_ui = arccos cos(e_u, e_i) and
    L_BC = −log[e^{cos(θ_ui + M_ui)/τ₁} / (e^{cos(θ_ui + M_ui)/τ₁} + Σ_j e^{cos θ_uj/τ₁})] with the bias-aware
    margin M_ui = 1 − σ(p_u·p_i), the raw dot product of the un-normalized popularity embeddings
    (``margin="sigmoid"``, the released code: anzhang314/BC-Loss @ d33870f model.py:390 and :421).
    ``margin="angle"`` is the paper's M_ui = min(θ̂_ui, π − θ_ui) (a large margin where popularity explains
    little); from near-orthogonal starting embeddings its gradient on the positive is ~1e-3 of the sigmoid
    margin's, and exactly zero once θ̂ ≥ π − θ, so tail positives are barely pulled (why that form sat at
    popularity level in our first runs).

    Schedule, as in the official main.py: the first ``freeze_epochs`` epochs optimise only w·L_pop; then the
    popularity embeddings are frozen and (1 − w)·L_BC + L2 is optimised (w·L_pop is then a constant and is
    neither computed nor logged). L2 = reg·(‖e⁰_u‖² + ‖e⁰_i‖² + Σ_j‖e⁰_j‖²)/(2b) on the main layer-0
    embeddings (the official popularity L2 acts on normalized vectors, i.e. is constant, so it is omitted).
    Negatives: 128 per positive, uniform among the user's non-training items (the official sampled-negative
    ``BC_LOSS``; its in-batch ``BC_LOSS_batch`` variant does not run as released, model.py:508). Defaults from
    the official parse.py: τ₁ 0.07 (:78), τ₂ 0.1 (:80), w 0.5 (:82), 5 freeze epochs (:84), lr 5e-4 (:18),
    batch 1024 (:16), L2 1e-5 (:20), 2 layers (:42), 64-d (:14), xavier-normal init (model.py:32-33, also the
    popularity tables, :380-381); the same τ₁, τ₂, w, freeze in AlphaRec's parse.py:145-152. Budget: AlphaRec's
    500 epochs for every baseline (the BC Loss code allows 1600, its parse.py:22). Scores: the raw dot product
    e_u·e_i (the released ``LGN.predict``, model.py:93-103); ``pred_norm=True`` scores by cosine.
    """

    Config = BCLossConfig
    # τ₁ around the official 0.07 (parse.py:78), up past 0.1 (our grid's choice, an edge); τ₂ around 0.1 (:80);
    # lr as LightGCN's
    search_space = {"tau1": FloatRange(0.03, 0.3, log=True), "tau2": FloatRange(0.05, 0.3, log=True),
                    "lr": FloatRange(1e-4, 1e-2, log=True)}
    train_defaults = {**LightGCN.train_defaults, "batch_size": 1024}

    def build(self, data: SplitData) -> nn.Module:
        if self.config.margin not in ("sigmoid", "angle"):
            raise ValueError(f"unknown margin {self.config.margin!r}: expected 'sigmoid' or 'angle'")
        net = super().build(data)
        user_pop, n_user_pop = popularity_index(np.diff(data.train.indptr))
        item_pop, n_item_pop = popularity_index(np.bincount(data.train.indices, minlength=data.n_items))
        self.user_pop, self.item_pop = torch.from_numpy(user_pop), torch.from_numpy(item_pop)
        net.user_pop = nn.Parameter(nn.init.xavier_normal_(torch.empty(n_user_pop, self.config.emb_dim)))
        net.item_pop = nn.Parameter(nn.init.xavier_normal_(torch.empty(n_item_pop, self.config.emb_dim)))
        self.epoch = 0
        return net

    def batches(self, rng: np.random.Generator, batch_size: int) -> Iterator[tuple[torch.Tensor, ...]]:
        self.epoch += 1
        warmup = torch.tensor(self.epoch <= self.config.freeze_epochs)
        n = self.data.train.nnz
        for _ in range(max(1, round(n / batch_size))):
            users, pos = self.sampler.user_positive(batch_size, rng)
            neg = self.sampler.negatives(users, self.config.n_negatives, rng)
            yield torch.from_numpy(users), torch.from_numpy(pos), torch.from_numpy(neg), warmup

    def extra_state(self) -> dict[str, torch.Tensor]:
        """The epochs run, in checkpoints: a resumed run goes on after the popularity warm-up, not through it again."""
        return {"epoch": torch.tensor(self.epoch)}

    def load_extra_state(self, state: dict[str, torch.Tensor]) -> None:
        if "epoch" not in state:
            raise LmrecError("a BC Loss checkpoint without its epoch count (made before lmrec kept it): resuming it "
                             "would repeat the popularity warm-up; start the run again with --overwrite")
        self.epoch = int(state["epoch"])

    def popularity_cosines(self, users: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor):
        """(cos(p_u, p_i⁺) (b,), cos(p_u, p_j) (b, n), raw p_u·p_i⁺ (b,)) of the popularity branch.

        Cosines are taken against the (small) table of popularity embeddings and gathered, which keeps the
        backward cheap (no scatter of b·n rows)."""
        pu, pi = self.net.user_pop[self.user_pop[users]], self.net.item_pop[self.item_pop[pos]]
        dot = (pu * pi).sum(-1)
        table = F.normalize(self.net.item_pop, dim=-1)
        cos = F.normalize(pu, dim=-1) @ table.T  # (b, n_item_pop)
        return cos.gather(1, self.item_pop[pos][:, None])[:, 0], cos.gather(1, self.item_pop[neg]), dot

    def margin(self, theta: torch.Tensor, pop_cos: torch.Tensor, pop_dot: torch.Tensor) -> torch.Tensor:
        """M_ui for the positive pairs, given θ_ui and the (frozen) popularity branch's cos / raw dot."""
        if self.config.margin == "sigmoid":
            return 1 - torch.sigmoid(pop_dot)
        return torch.minimum(torch.arccos(pop_cos.clamp(-_CLAMP, _CLAMP)), math.pi - theta)

    def loss(self, batch: tuple[torch.Tensor, ...]) -> torch.Tensor:
        users, pos, neg, warmup = batch
        cfg = self.config
        if warmup:
            pop_pos, pop_neg, _ = self.popularity_cosines(users, pos, neg)
            return cfg.w_lambda * info_nce(pop_pos, pop_neg, cfg.tau2)
        with torch.no_grad():
            pop_pos, _, pop_dot = self.popularity_cosines(users, pos, neg)
        user_emb, item_emb = self._propagated()
        unit_users, unit_items = F.normalize(user_emb[users], dim=-1), F.normalize(item_emb, dim=-1)
        cos_pos, cos_neg = (unit_users * unit_items[pos]).sum(-1), row_scores(unit_users, unit_items, neg)
        theta = torch.arccos(cos_pos.clamp(-_CLAMP, _CLAMP))
        biased = torch.cos(theta + self.margin(theta, pop_pos, pop_dot))
        counts = torch.bincount(torch.cat([pos, neg.reshape(-1)]), minlength=self.data.n_items).to(cos_neg.dtype)
        ego = self.net.users[users].pow(2).sum() + (counts * self.net.items.pow(2).sum(-1)).sum()
        return (1 - cfg.w_lambda) * info_nce(biased, cos_neg, cfg.tau1) + cfg.reg * ego / (2 * len(users))

    def embed(self) -> tuple[torch.Tensor, torch.Tensor]:
        users, items = self._propagated()
        if self.config.pred_norm:
            return F.normalize(users, dim=-1), F.normalize(items, dim=-1)
        return users, items
