"""LightGCN (He et al., SIGIR 2020) and matrix factorization with BPR (its zero-layer case)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import NonNegativeFloat, NonNegativeInt, PositiveFloat, PositiveInt
from torch import nn

from lmrec.data.interactions import SplitData
from lmrec.models.base import ModelConfig, register
from lmrec.models.nn.graph import normalized_adjacency, propagate
from lmrec.models.nn.losses import bpr_loss
from lmrec.models.nn.sampling import Sampler
from lmrec.models.torch_base import TorchRecommender
from lmrec.search_space import FloatRange, IntRange
from lmrec.settings import settings


@settings
class LightGCNConfig(ModelConfig):
    emb_dim: PositiveInt = 64
    n_layers: NonNegativeInt = 2
    reg: NonNegativeFloat = 1e-5  # L2 on the layer-0 embeddings of the batch (AlphaRec parse.py:77 ``regs``)
    init: Literal["xavier", "normal"] = "xavier"  # "xavier": N(0, 2/(n + d)) per table; "normal": N(0, init_std²)
    init_std: PositiveFloat = 0.1  # used by init="normal" only


class _Embeddings(nn.Module):
    """User and item tables; ``init="xavier"`` is xavier-normal per table, std = √(2/(rows + dim)), as
    AlphaRec's code (models/General/base/abstract_model.py:45-46 @ 4b6c6cf) and RecBole initialise them."""

    def __init__(self, n_users: int, n_items: int, dim: int, init: str, std: float):
        super().__init__()
        if init not in ("xavier", "normal"):
            raise ValueError(f"unknown init {init!r}: expected 'xavier' or 'normal'")
        self.users, self.items = (
            nn.Parameter(nn.init.xavier_normal_(torch.empty(n, dim)) if init == "xavier" else torch.randn(n, dim) * std)
            for n in (n_users, n_items))


@register("lightgcn")
class LightGCN(TorchRecommender):
    """E = mean(E⁽⁰⁾, ÂE⁽⁰⁾, …, ÂᴸE⁽⁰⁾) over the training graph; score(u, i) = e_u·e_i.

    Loss = BPR(e_u·e_i⁺, e_u·e_i⁻) + reg·(‖e⁰_u‖² + ‖e⁰_i⁺‖² + ‖e⁰_i⁻‖²)/(2b), one negative per positive,
    drawn uniformly among the user's non-training items; users sampled uniformly (LightGCN's sampler).

    Defaults are AlphaRec's code for its graph baselines (LehengTHU/AlphaRec @ 4b6c6cf): xavier-normal init
    (base/abstract_model.py:45-46), L2 ``regs`` 1e-5 (parse.py:77, used at abstract_model.py:32), Adam lr 5e-4
    without weight decay (parse.py:44; abstract_RS.py:183), batch 4096 (parse.py:38), at most 500 epochs
    (parse.py:27), validation every 5 epochs (parse.py:29) and patience 20 evaluations (its README's runs).
    """

    Config = LightGCNConfig
    train_defaults = {"lr": 5e-4, "batch_size": 4096, "epochs": 500, "eval_every": 5, "patience": 20}
    # lr around AlphaRec's 5e-4 (parse.py:44) and the LightGCN paper's 1e-3 (§4.1.2); reg over the paper's L2 grid
    # {1e-6, ..., 1e-2} (§4.1.2; AlphaRec's 1e-5, parse.py:77); 1-3 layers (the paper tries 1-4, AlphaRec runs 2)
    search_space = {"lr": FloatRange(1e-4, 1e-2, log=True), "reg": FloatRange(1e-6, 1e-2, log=True),
                    "n_layers": IntRange(1, 3)}

    def build(self, data: SplitData) -> nn.Module:
        self.sampler = Sampler(data.train)
        self.adj = normalized_adjacency(data.train) if self.config.n_layers > 0 else None
        cfg = self.config
        return _Embeddings(data.n_users, data.n_items, cfg.emb_dim, cfg.init, cfg.init_std)

    def _ego(self) -> torch.Tensor:
        """Layer-0 embeddings of all users then all items, (n_users + n_items, d)."""
        return torch.cat([self.net.users, self.net.items])

    def _propagated(self) -> tuple[torch.Tensor, torch.Tensor]:
        ego = self._ego()
        out = propagate(self.adj, ego, self.config.n_layers) if self.adj is not None else ego
        return out[: self.data.n_users], out[self.data.n_users :]

    def batches(self, rng: np.random.Generator, batch_size: int) -> Iterator[tuple[torch.Tensor, ...]]:
        n = self.data.train.nnz
        for _ in range(max(1, round(n / batch_size))):
            users, pos = self.sampler.user_positive(batch_size, rng)
            neg = self.sampler.negatives(users, 1, rng)[:, 0]
            yield tuple(torch.from_numpy(a) for a in (users, pos, neg))

    def loss(self, batch: tuple[torch.Tensor, ...]) -> torch.Tensor:
        """One gather per table (positives and negatives together; for MF, whose propagated rows are the layer-0
        rows, the L2 term reuses them): each gather's backward scatters into a zeroed copy of its whole table."""
        users, pos, neg = batch
        user_emb, item_emb = self._propagated()
        items = torch.cat([pos, neg])
        u, ij = F.embedding(users, user_emb), F.embedding(items, item_emb)
        i, j = ij[: len(pos)], ij[len(pos) :]
        rank_loss = bpr_loss((u * i).sum(-1), (u * j).sum(-1))
        if user_emb is self.net.users and item_emb is self.net.items:
            ego_u, ego_ij = u, ij
        else:
            ego_u, ego_ij = F.embedding(users, self.net.users), F.embedding(items, self.net.items)
        return rank_loss + self.config.reg * (ego_u.pow(2).sum() + ego_ij.pow(2).sum()) / (2 * len(users))

    def embed(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self._propagated()


@settings
class MFConfig(LightGCNConfig):
    n_layers: NonNegativeInt = 0


@register("mf")
class MF(LightGCN):
    """Matrix factorization with BPR (Rendle et al., 2009): LightGCN with zero propagation layers,
    score(u, i) = p_u·q_i."""

    Config = MFConfig
    # LightGCN's ranges of lr and L2 (no layers: MF is the zero-layer case)
    search_space = {"lr": FloatRange(1e-4, 1e-2, log=True), "reg": FloatRange(1e-6, 1e-2, log=True)}

    def _propagated(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Without propagation layers the tables themselves (no concatenated copy per batch)."""
        if self.adj is None:
            return self.net.users, self.net.items
        return super()._propagated()
