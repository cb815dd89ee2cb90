"""AlphaRec (Sheng et al., ICLR 2025): collaborative filtering on language representations, and the
paper's linear-mapping probe (RQ1)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F
from torch import nn

from lmrec.data.interactions import SplitData
from lmrec.errors import EmbeddingError
from lmrec.models.base import ModelConfig, register
from lmrec.models.nn.graph import normalized_adjacency, propagate
from lmrec.models.nn.losses import info_nce
from lmrec.models.nn.sampling import Sampler
from lmrec.models.torch_base import TorchRecommender

# The paper picks the MLP width per LM to keep ~4.7M MLP parameters: hidden = m·d with m = 1/2 for
# text-embedding-3-large (3072-d), 2 for ada-002 (1536-d), 8 for BERT (768-d), 9/32 for 4096-d LLMs.
PAPER_MLP_RATIO = {3072: 0.5, 1536: 2.0, 768: 8.0, 4096: 9 / 32}


@dataclass
class AlphaRecConfig(ModelConfig):
    encoder: str = "minilm"  # text encoder spec (lmrec.text.get_encoder)
    text_fields: tuple[str, ...] = ("title",)  # the paper embeds the title only
    mapping: str = "mlp"  # "mlp": Linear(d, m·d) -> LeakyReLU -> Linear(m·d, emb_dim); "linear": Linear(d, emb_dim, bias=False)
    mlp_ratio: float | None = None  # None: the paper's m for its LM dimensions, else 2 (CPU-friendly; see docstring)
    emb_dim: int = 64
    n_layers: int = 2
    tau: float = 0.15
    n_negatives: int = 256
    negatives: str = "shared"  # "shared": one set per batch (2x faster on CPU); "per_row": the paper's sampler
    seed: int = 2024


class _Mapper(nn.Module):
    def __init__(self, dim_in: int, cfg: AlphaRecConfig):
        super().__init__()
        if cfg.mapping == "linear":
            self.f: nn.Module = nn.Linear(dim_in, cfg.emb_dim, bias=False)
        elif cfg.mapping == "mlp":
            ratio = cfg.mlp_ratio or PAPER_MLP_RATIO.get(dim_in, 2.0)
            hidden = max(1, int(round(ratio * dim_in)))
            self.f = nn.Sequential(nn.Linear(dim_in, hidden), nn.LeakyReLU(0.01), nn.Linear(hidden, cfg.emb_dim))
        else:
            raise ValueError(f"unknown mapping {cfg.mapping!r}: expected 'mlp' or 'linear'")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.f(x)


@register("alpharec")
class AlphaRec(TorchRecommender):
    """Item i: z_i = LM(title_i); user u: z_u = mean of z_i over u's TRAINING items.
    E⁽⁰⁾ = MLP([z_users; z_items]) (one MLP shared by users and items), E = LightGCN(E⁽⁰⁾) over the training
    graph with L layers, s(u, i) = cos(e_u, e_i).

    Loss = InfoNCE with temperature τ over the positive and ``n_negatives`` items drawn uniformly among the
    user's non-training items: −log[e^{s⁺/τ} / (e^{s⁺/τ} + Σ e^{s⁻/τ})]. Adam, lr 5e-4, batch 4096, no L2.

    Negatives: ``shared`` (default) draws one set per batch and masks, per row, the negatives that are training
    items of that user (so the positive never counts as a negative); ``per_row`` draws each row's own set, as
    the official sampler does, and gathers their scores from one (batch, n_items) product.

    Differences from the official code: epochs are selected on VALIDATION Recall@20 (the official code
    selects on test). The MLP width defaults to the paper's m for its LM sizes and to m = 2 for other
    dimensions (MiniLM 384-d, SmolLM2 576-d), where the paper's ~4.7M-parameter rule would make the MLP
    40x slower on CPU; set ``mlp_ratio`` to change it.
    """

    Config = AlphaRecConfig
    train_defaults = {"lr": 5e-4, "batch_size": 4096, "epochs": 500, "eval_every": 5, "patience": 20}

    def __init__(self, config: AlphaRecConfig | None = None, features: np.ndarray | None = None, **overrides: Any):
        super().__init__(config, **overrides)
        self.features = features  # (n_items, d) LM embeddings; encoded from the catalog when None

    # -- inputs ----------------------------------------------------------------------------------------
    def item_features(self, data: SplitData) -> np.ndarray:
        if self.features is None:
            from lmrec.text import encode_catalog, get_encoder

            texts = data.catalog.text(self.config.text_fields)
            self.features = encode_catalog(texts, get_encoder(self.config.encoder))
        features = np.asarray(self.features, dtype=np.float32)
        if features.ndim != 2 or features.shape[0] != data.n_items:
            raise EmbeddingError(f"item features have shape {features.shape}, expected ({data.n_items}, dim)")
        if not np.isfinite(features).all():
            bad = int(np.flatnonzero(~np.isfinite(features).all(axis=1))[0])
            raise EmbeddingError(f"item features of item {data.catalog.ids[bad]!r} (row {bad}) are not finite")
        return features

    @staticmethod
    def user_features(interactions: sp.csr_matrix, item_features: np.ndarray) -> np.ndarray:
        """z_u = mean of the item features of u's items (a zero vector for a user without items)."""
        counts = np.asarray(interactions.sum(axis=1)).ravel()
        scale = sp.diags(np.divide(1.0, counts, out=np.zeros_like(counts, dtype=np.float64), where=counts > 0))
        return np.asarray(scale @ interactions @ item_features, dtype=np.float32)

    # -- model -----------------------------------------------------------------------------------------
    def build(self, data: SplitData) -> nn.Module:
        items = self.item_features(data)
        self.z_items = torch.from_numpy(items)
        self.z_users = torch.from_numpy(self.user_features(data.train, items))
        self.adj = normalized_adjacency(data.train)
        self.sampler = Sampler(data.train)
        return _Mapper(items.shape[1], self.config)

    def represent(self, z_users: torch.Tensor, z_items: torch.Tensor, adj: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Normalized (user, item) representations for LM inputs on a graph (also used zero-shot)."""
        out = propagate(adj, self.net(torch.cat([z_users, z_items])), self.config.n_layers)
        users, items = out[: len(z_users)], out[len(z_users) :]
        return F.normalize(users, dim=-1), F.normalize(items, dim=-1)

    def embed(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.represent(self.z_users, self.z_items, self.adj)

    def batches(self, rng: np.random.Generator, batch_size: int) -> Iterator[tuple[torch.Tensor, ...]]:
        n_neg, n = self.config.n_negatives, self.data.train.nnz
        for _ in range(max(1, round(n / batch_size))):
            users, pos = self.sampler.user_positive(batch_size, rng)
            if self.config.negatives == "shared":
                neg = rng.integers(0, self.data.n_items, n_neg)
                keep = ~self.sampler.seen(users, np.broadcast_to(neg, (len(users), n_neg)))
                yield torch.from_numpy(users), torch.from_numpy(pos), torch.from_numpy(neg), torch.from_numpy(keep)
            else:
                neg = self.sampler.negatives(users, n_neg, rng)
                yield torch.from_numpy(users), torch.from_numpy(pos), torch.from_numpy(neg), None

    def loss(self, batch: tuple[torch.Tensor, ...]) -> torch.Tensor:
        users, pos, neg, keep = batch
        user_emb, item_emb = self.embed()
        u = user_emb[users]  # (b, d)
        pos_scores = (u * item_emb[pos]).sum(-1)  # (b,)
        if keep is None:
            neg_scores = torch.gather(u @ item_emb.T, 1, neg)  # (b, n_neg): gather scores, not embeddings
        else:
            neg_scores = u @ item_emb[neg].T  # (b, n_neg) against the shared set
        return info_nce(pos_scores, neg_scores, self.config.tau, keep)

    # -- persistence: the LM features travel with the model --------------------------------------------
    def artifacts(self) -> dict[str, Any]:
        return {"features": torch.from_numpy(np.asarray(self.features, np.float32))}

    def restore(self, state: dict[str, Any], artifacts: dict[str, Any], data: SplitData) -> None:
        self.features = artifacts["features"].numpy()
        super().restore(state, artifacts, data)


@dataclass
class LinearMapConfig(AlphaRecConfig):
    mapping: str = "linear"
    n_layers: int = 0


@register("linear_map")
class LinearMap(AlphaRec):
    """The paper's RQ1 probe: s(u, i) = cos(W z_u, W z_i) with W a bias-free Linear(d, 64), no graph,
    trained like AlphaRec (InfoNCE, cosine, z_u = mean of the user's training item embeddings)."""

    Config = LinearMapConfig
