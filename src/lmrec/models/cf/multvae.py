"""Mult-VAE (Liang et al., WWW 2018): a variational autoencoder over the user's bag of training items."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Annotated

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F
from pydantic import Field, NonNegativeFloat, NonNegativeInt, PositiveInt
from torch import nn

from lmrec.data.interactions import SplitData
from lmrec.errors import LmrecError
from lmrec.models.base import ModelConfig, register
from lmrec.models.nn.graph import csr_from_parts, sparse_product
from lmrec.models.queries import NewUser
from lmrec.models.torch_base import TorchRecommender
from lmrec.search_space import FloatRange
from lmrec.settings import settings


@settings
class MultVAEConfig(ModelConfig):
    hidden: PositiveInt = 600  # encoder [n_items -> 600 -> 2·200], decoder [200 -> 600 -> n_items]
    latent: PositiveInt = 200
    dropout: Annotated[float, Field(ge=0, lt=1)] = 0.5  # on the L2-normalized input row, training only
    anneal_cap: NonNegativeFloat = 0.2  # β = min(anneal_cap, updates / total_anneal_steps)
    total_anneal_steps: NonNegativeInt = 200_000


def _xavier_(layer: nn.Linear) -> nn.Linear:
    """The paper's init: weights N(0, 2/(fan_in + fan_out)), biases N(0, 0.001²)."""
    fan_out, fan_in = layer.weight.shape
    nn.init.normal_(layer.weight, 0.0, float(np.sqrt(2.0 / (fan_in + fan_out))))
    nn.init.normal_(layer.bias, 0.0, 0.001)
    return layer


class _VAE(nn.Module):
    def __init__(self, n_items: int, cfg: MultVAEConfig):
        super().__init__()
        self.latent = cfg.latent
        self.enc_in = _xavier_(nn.Linear(n_items, cfg.hidden))
        self.enc_out = _xavier_(nn.Linear(cfg.hidden, 2 * cfg.latent))  # [μ, log σ²]
        self.dec_in = _xavier_(nn.Linear(cfg.latent, cfg.hidden))
        self.dec_out = _xavier_(nn.Linear(cfg.hidden, n_items))
        self.drop = nn.Dropout(cfg.dropout)
        self.register_buffer("updates", torch.zeros((), dtype=torch.long))  # for the KL annealing

    def encode(self, first: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(μ, log σ²) from the first encoder layer's pre-activation."""
        h = self.enc_out(torch.tanh(first))
        return h[:, : self.latent], h[:, self.latent :]

    def decoder_hidden(self, z: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.dec_in(z))


@register("multvae")
class MultVAE(TorchRecommender):
    """Mult-VAE (Liang et al. 2018): x̃_u = dropout(x_u/‖x_u‖), [μ, log σ²] = W₂ tanh(W₁x̃_u + b₁) + b₂,
    z = μ + σ⊙ε, π_u = softmax(W₄ tanh(W₃z + b₃) + b₄); dims [n_items → 600 → 200 → 600 → n_items].

    Loss (per batch of users, averaged) = −Σ_i x_ui log π_ui + β·KL(N(μ, σ²) ‖ N(0, I)) with β annealed
    linearly from 0 by 1/200,000 per update and capped at 0.2 (the paper's code: ``anneal_cap=0.2``,
    ``total_anneal_steps=200000``; on small datasets β therefore stays well below the cap — that is the
    paper's schedule, counted in updates, not epochs). No weight decay. Adam lr 1e-3, batches of 500 users.

    Scores: the decoder logits at z = μ of the user's TRAINING row (no dropout, no sampling); as a dot
    product [tanh(W₃μ_u + b₃), 1]·[W₄ᵢ, b₄ᵢ]. A user with an empty training row gets the logits of the
    zero input (finite: the same ranking for all such users).
    """

    Config = MultVAEConfig
    train_defaults = {"lr": 1e-3, "batch_size": 500, "epochs": 500, "eval_every": 5, "patience": 20}
    # lr around the paper code's Adam 1e-3, input dropout around its 0.5 (the KL cap is left out: with β counted in
    # updates to 200,000, small datasets never reach it)
    search_space = {"lr": FloatRange(1e-4, 1e-2, log=True), "dropout": FloatRange(0.2, 0.8)}
    supports_distributed = False  # its dropout and sampling are drawn per batch row: N processes ≠ one

    def build(self, data: SplitData) -> nn.Module:
        rows = sp.csr_matrix(data.train, dtype=np.float32)
        norms = np.sqrt(np.asarray(rows.multiply(rows).sum(axis=1)).ravel())
        # 1/‖x_u‖ of each user's training row (0 for a user without training items): the encoder's input x_u/‖x_u‖
        self.row_scale = np.divide(1.0, norms, out=np.zeros_like(norms), where=norms > 0).astype(np.float32)
        normalized = (sp.diags(self.row_scale) @ rows).tocoo()
        self.inputs = torch.sparse_coo_tensor(
            torch.from_numpy(np.vstack([normalized.row, normalized.col]).astype(np.int64)),
            torch.from_numpy(normalized.data.astype(np.float32)), size=normalized.shape,
            check_invariants=False).coalesce()
        self.active = np.flatnonzero(np.diff(data.train.indptr))
        return _VAE(data.n_items, self.config)

    def beta(self) -> float:
        cfg = self.config
        if cfg.total_anneal_steps <= 0:
            return cfg.anneal_cap
        return min(cfg.anneal_cap, int(self.net.updates) / cfg.total_anneal_steps)

    def batches(self, rng: np.random.Generator, batch_size: int) -> Iterator[torch.Tensor]:
        """Every user with training items once per epoch, shuffled, in batches of ``batch_size``."""
        users = rng.permutation(self.active)
        for start in range(0, len(users), batch_size):
            yield torch.from_numpy(users[start : start + batch_size].astype(np.int64))

    def loss(self, users: torch.Tensor) -> torch.Tensor:
        """The loss of the class docstring on the batch's training rows, kept sparse: x̃ W₁ᵀ and its gradient
        x̃ᵀ g run over the rows' items only, dropout is drawn on those items (the zeros of x stay zero under any
        mask), and the multinomial log-likelihood sums log π over them. The same function as the dense form in
        values and gradients (tests/models/test_cf_baselines.py); the dropout draws one number per item of the
        batch, not one per (user, catalog item)."""
        batch = users.cpu().numpy()
        x = self.data.train[batch]
        row_of = np.repeat(np.arange(x.shape[0]), np.diff(x.indptr))  # the row of each stored item
        x_hat = self._input_rows(x, row_of, self.row_scale[batch])
        first = sparse_product(*x_hat, self.net.enc_in.weight.T) + self.net.enc_in.bias
        mu, logvar = self.net.encode(first)
        z = mu + torch.exp(0.5 * logvar) * torch.randn_like(mu) if self.net.training else mu
        log_pi = F.log_softmax(self.net.dec_out(self.net.decoder_hidden(z)), dim=1)
        rows = torch.from_numpy(row_of).to(self.device)
        cols = torch.from_numpy(x.indices.astype(np.int64)).to(self.device)
        values = torch.from_numpy(x.data.astype(np.float32)).to(self.device)
        nll = -(log_pi[rows, cols] * values).sum() / x.shape[0]
        kl = -0.5 * (1 + logvar - mu.pow(2) - logvar.exp()).sum(dim=1).mean()
        loss = nll + self.beta() * kl
        if self.net.training:
            self.net.updates += 1
        return loss

    def _input_rows(self, x: sp.csr_matrix, row_of: np.ndarray, scale: np.ndarray
                    ) -> tuple[torch.Tensor, torch.Tensor]:
        """x̃ = dropout(x/‖x‖) of CSR rows ``x`` (dropout in training only), as torch CSR with its transpose;
        ``row_of``: the row of each stored item, ``scale``: 1/‖x‖ of each row (:attr:`row_scale`)."""
        values = self.net.drop(torch.from_numpy(x.data * scale[row_of]).to(self.device))
        n_rows, n_items = x.shape
        by_item = np.argsort(x.indices, kind="stable")  # the transpose's order: by item, then by row
        crow_t = np.concatenate([[0], np.cumsum(np.bincount(x.indices, minlength=n_items))])
        index = lambda a: torch.from_numpy(np.asarray(a, dtype=np.int64)).to(self.device)
        m = csr_from_parts(index(x.indptr), index(x.indices), values, (n_rows, n_items))
        m_t = csr_from_parts(index(crow_t), index(row_of[by_item]), values[index(by_item)], (n_items, n_rows))
        return m, m_t

    def embed(self) -> tuple[torch.Tensor, torch.Tensor]:
        first = torch.sparse.mm(self.inputs, self.net.enc_in.weight.T) + self.net.enc_in.bias
        return self._decoder_inputs(first), torch.cat([self.net.dec_out.weight, self.net.dec_out.bias[:, None]], 1)

    def _decoder_inputs(self, first: torch.Tensor) -> torch.Tensor:
        """[tanh(W₃μ + b₃), 1] from the first encoder layer's pre-activation."""
        mu, _ = self.net.encode(first)
        hidden = self.net.decoder_hidden(mu)
        return torch.cat([hidden, torch.ones(len(hidden), 1, device=hidden.device)], dim=1)

    @torch.no_grad()
    def new_user_vector(self, items: Sequence[int], intent: str | None = None, alpha: float = 0.5) -> torch.Tensor:
        """[tanh(W₃μ + b₃), 1] of the bag of ``items`` (the same encoder as for training users)."""
        if intent is not None:
            raise LmrecError("multvae takes no intent: stated intentions need an AlphaRec-family model")
        self.set_training(False)
        x = torch.zeros(1, self.data.n_items, device=self.device)
        x[0, torch.as_tensor(np.unique(np.asarray(items, dtype=np.int64)), device=self.device)] = 1.0
        return self._decoder_inputs(self.net.enc_in(F.normalize(x, dim=1)))[0]

    def score_new_user(self, query: NewUser) -> torch.Tensor:
        """The decoder logits at z = μ of the bag of the user's items."""
        return (self.new_user_vector(query.items) @ self.item_vectors().T)[None]
