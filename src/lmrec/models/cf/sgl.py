"""SGL-ED (Wu et al., SIGIR 2021): LightGCN with a contrastive loss between two edge-dropout views."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated, Literal

import numpy as np
import scipy.sparse as sp
import torch
from pydantic import Field, NonNegativeFloat, NonNegativeInt, PositiveFloat

from lmrec.models.base import register
from lmrec.models.cf.lightgcn import LightGCN, LightGCNConfig
from lmrec.models.nn.augment import edge_dropout
from lmrec.models.nn.contrastive import view_info_nce
from lmrec.models.nn.graph import normalized_adjacency, propagate
from lmrec.search_space import FloatRange
from lmrec.settings import settings


@settings
class SGLConfig(LightGCNConfig):
    n_layers: NonNegativeInt = 2  # AlphaRec's runs use 2 layers (README.md:137); SGL-Torch conf/SGL.ini: 3
    drop_ratio: Annotated[float, Field(ge=0, lt=1)] = 0.1  # AlphaRec parse.py:160-166 ``droprate``
    ssl_tau: PositiveFloat = 0.15  # AlphaRec parse.py:160-166 ``temp_cl`` (SGL-Torch: 0.2)
    ssl_weight: NonNegativeFloat = 0.2  # AlphaRec parse.py:160-166 ``lambda_cl`` (SGL-Torch: 0.1)
    # new edge-dropout views every batch (AlphaRec SGL.py:36-37) or epoch (SGL-Torch)
    views: Literal["batch", "epoch"] = "batch"
    # "batch": the batch's other users/items; "all": every user/item (SGL-Torch)
    ssl_negatives: Literal["batch", "all"] = "batch"


@register("sgl")
class SGL(LightGCN):
    """SGL-ED (Wu et al. 2021): LightGCN (BPR + L2, as :class:`LightGCN`) plus λ·(L_ssl^user + L_ssl^item).

    Every batch (``views="batch"``, AlphaRec's SGL.py:36-37 @ 4b6c6cf) or every epoch (``views="epoch"``,
    SGL-Torch) two subgraphs G', G'' of the TRAINING graph are drawn, each keeping ⌊(1 − ρ)·|E|⌋ of the edges
    without replacement (ρ = 0.1; SGL.py:101), and re-normalized (D^-½AD^-½ of the subgraph). z', z'' =
    LightGCN propagation of the same layer-0 embeddings on G', G''. For the distinct users U_b (and positive
    items I_b) of the batch: L_ssl^user = mean_{u∈U_b} −log[e^{cos(z'_u, z''_u)/τ} / Σ_{v∈N} e^{cos(z'_u, z''_v)/τ}],
    likewise for items (SGL.py:132-151).

    Defaults are AlphaRec's code for SGL (the settings behind the paper's SGL row): λ = 0.2, τ = 0.15, ρ = 0.1
    (parse.py:160-166), views every batch, and the graph baselines' lr 5e-4, batch 4096, L2 1e-5, xavier init
    (:class:`LightGCN`); 2 layers, as AlphaRec's runs (its parse.py default is 0, its README passes 2).
    SGL-Torch's own conf/SGL.ini is λ = 0.1, τ = 0.2, 3 layers, lr 1e-3, batch 2048, L2 1e-4, views per epoch.

    N (``ssl_negatives``): "batch" (default) is U_b / I_b, as in AlphaRec's SGL code and SELFRec;
    "all" is every user / item, as in SGL-Torch (heavier: batch × n_users logits). Differences from the
    official code: BPR and InfoNCE are batch means, not sums (same ratio between them); the anchors are the
    distinct batch users/items. Scores: e_u·e_i on the full graph.
    """

    Config = SGLConfig
    # λ around AlphaRec's 0.2 and SGL-Torch's 0.1, down past 0.02 (our grid's choice, an edge); τ around 0.15 / 0.2;
    # ρ around 0.1 (the SGL paper searches {0, 0.1, ..., 0.5}); lr as LightGCN's
    search_space = {"ssl_weight": FloatRange(0.005, 0.5, log=True), "ssl_tau": FloatRange(0.1, 0.5, log=True),
                    "drop_ratio": FloatRange(0.05, 0.5), "lr": FloatRange(1e-4, 1e-2, log=True)}

    def build(self, data) -> torch.nn.Module:
        if self.config.ssl_negatives not in ("batch", "all"):
            raise ValueError(f"unknown ssl_negatives {self.config.ssl_negatives!r}: expected 'batch' or 'all'")
        if self.config.views not in ("batch", "epoch"):
            raise ValueError(f"unknown views {self.config.views!r}: expected 'batch' or 'epoch'")
        self.views: list[sp.csr_matrix] = []
        self.view_adjs: list[torch.Tensor] = []
        return super().build(data)

    def new_views(self, rng: np.random.Generator) -> None:
        """Draw the two edge-dropout subgraphs of the training graph."""
        self.views = [edge_dropout(self.data.train, self.config.drop_ratio, rng) for _ in range(2)]
        self.view_adjs = [normalized_adjacency(view) for view in self.views]

    def batches(self, rng: np.random.Generator, batch_size: int) -> Iterator[tuple[torch.Tensor, ...]]:
        if self.config.views == "epoch":
            self.new_views(rng)
        for batch in super().batches(rng, batch_size):
            if self.config.views == "batch":
                self.new_views(rng)
            yield batch

    def loss(self, batch: tuple[torch.Tensor, ...]) -> torch.Tensor:
        return sum(self.loss_parts(batch, batch))

    def loss_parts(self, rows: tuple[torch.Tensor, ...], whole: tuple[torch.Tensor, ...]
                   ) -> tuple[torch.Tensor, torch.Tensor]:
        """(BPR + L2 over ``rows``, λ·L_ssl over the whole batch's distinct users and items)."""
        users, pos, _ = whole
        ego = self._ego()
        n_users, n_layers = self.data.n_users, self.config.n_layers
        view1, view2 = (propagate(adj, ego, n_layers) for adj in self.view_adjs)
        ssl = 0.0
        for ids, (a, b) in ((torch.unique(users), (view1[:n_users], view2[:n_users])),
                            (torch.unique(pos), (view1[n_users:], view2[n_users:]))):
            every = self.config.ssl_negatives == "all"  # the other view's every node, or the batch's own
            ssl = ssl + view_info_nce(a[ids], b if every else b[ids], self.config.ssl_tau, ids if every else None)
        return super().loss(rows), self.config.ssl_weight * ssl
