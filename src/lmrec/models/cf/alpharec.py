"""AlphaRec (Sheng et al., ICLR 2025): collaborative filtering on language representations, and the
paper's linear-mapping probe (RQ1)."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from typing import Literal

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F
from pydantic import NonNegativeInt, PositiveFloat, PositiveInt
from torch import nn

from lmrec.data.interactions import SplitData
from lmrec.errors import LmrecError
from lmrec.models.base import ModelConfig, register
from lmrec.models.nn.graph import normalized_adjacency, propagate
from lmrec.models.nn.lm_inputs import LMFeatures
from lmrec.models.nn.losses import info_nce, row_scores
from lmrec.models.nn.sampling import Sampler
from lmrec.models.queries import KnownUsers, NewUser
from lmrec.models.torch_base import TorchRecommender
from lmrec.search_space import FloatRange
from lmrec.settings import settings

# The paper picks the MLP width per LM to keep ~4.7M MLP parameters: hidden = m·d with m = 1/2 for
# text-embedding-3-large (3072-d), 2 for ada-002 (1536-d), 8 for BERT (768-d), 9/32 for 4096-d LLMs.
PAPER_MLP_RATIO = {3072: 0.5, 1536: 2.0, 768: 8.0, 4096: 9 / 32}
_ENCODER_LOCK = threading.Lock()
@settings
class AlphaRecConfig(ModelConfig):
    encoder: str = "minilm"  # text encoder spec (lmrec.text.get_encoder)
    text_fields: tuple[str, ...] = ("title",)  # the paper embeds the title only
    # "mlp": Linear(d, m·d) -> LeakyReLU -> Linear(m·d, emb_dim); "linear": Linear(d, emb_dim, bias=False)
    mapping: Literal["mlp", "linear"] = "mlp"
    # None: the paper's m for its LM dimensions, else 2 (CPU-friendly; see docstring)
    mlp_ratio: PositiveFloat | None = None
    emb_dim: PositiveInt = 64
    n_layers: NonNegativeInt = 2
    tau: PositiveFloat = 0.15
    n_negatives: PositiveInt = 256
    # "shared": one set per batch (2x faster on CPU); "per_row": the paper's sampler
    negatives: Literal["shared", "per_row"] = "shared"


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

    def first_and_rest(self) -> tuple[nn.Linear, nn.Module]:
        """(the first, affine layer; what follows it) of the mapping."""
        return (self.f[0], self.f[1:]) if isinstance(self.f, nn.Sequential) else (self.f, nn.Identity())


@register("alpharec")
class AlphaRec(LMFeatures, TorchRecommender):
    """Item i: z_i = LM(title_i); user u: z_u = mean of z_i over u's TRAINING items.
    E⁽⁰⁾ = MLP([z_users; z_items]) (one MLP shared by users and items), E = LightGCN(E⁽⁰⁾) over the training
    graph with L layers, s(u, i) = cos(e_u, e_i).

    Loss = InfoNCE with temperature τ over the positive and ``n_negatives`` items drawn uniformly among the
    user's non-training items: −log[e^{s⁺/τ} / (e^{s⁺/τ} + Σ e^{s⁻/τ})]. Adam, lr 5e-4, batch 4096, no L2.

    Negatives: ``shared`` (default) draws one set per batch and masks, per row, the negatives that are training
    items of that user (so the positive never counts as a negative); ``per_row`` draws each row's own set, as
    the official sampler does, and scores each row against its own items only (:func:`row_scores`).

    New users (:meth:`score_new_user`, no retraining): the user joins the training graph with edges to the given
    items, z_u = mean of their z_i, and the graph is propagated again (exact for the new graph). User intention
    (:meth:`score_with_intent`): ẽ_u⁽⁰⁾ = (1 − α)·e_u⁽⁰⁾ + α·MLP(LM(text)) (paper §2.7, see :class:`IntentScorer`).

    Differences from the official code: epochs are selected on VALIDATION Recall@20 (the official code
    selects on test). The MLP width defaults to the paper's m for its LM sizes and to m = 2 for other
    dimensions (MiniLM 384-d, SmolLM2 576-d), where the paper's ~4.7M-parameter rule would make the MLP
    40x slower on CPU; set ``mlp_ratio`` to change it.
    """

    Config = AlphaRecConfig
    takes_intent = True
    train_defaults = {"lr": 5e-4, "batch_size": 4096, "epochs": 500, "eval_every": 5, "patience": 20}
    # τ around the paper's 0.15 (and the authors' 0.2 for Games; our validation grid chose 0.25-0.3 on MovieLens,
    # docs/results/2026-12-03-alpharec-epyc-2core); lr around 5e-4 (AlphaRec parse.py:44). linear_map inherits it.
    search_space = {"tau": FloatRange(0.05, 0.5, log=True), "lr": FloatRange(1e-4, 5e-3, log=True)}
    bf16_path = True  # the MLP's products (TrainConfig.precision)
    items_at_hand = True  # one MLP for users and items: the items' first layer is computed anyway

    # -- model -----------------------------------------------------------------------------------------
    def build(self, data: SplitData) -> nn.Module:
        # through the items (users_affine): Amazon Industrial (8,317 users, 22,824 edges) 1.52x per step, MovieLens
        # latest-small (610 users) 0.87x (bench/users_route.py, CPU)
        self.z_users, self.z_items = self.lm_inputs(data)
        self.adj = normalized_adjacency(data.train)
        self.sampler = Sampler(data.train)
        return _Mapper(self.z_items.shape[1], self.config)

    def mlp(self, z: torch.Tensor) -> torch.Tensor:
        """MLP(z) (the mapping) at the model's precision, as float32."""
        return self.dense(self.net, z)

    def represent(self, z_users: torch.Tensor, z_items: torch.Tensor, adj: torch.Tensor,
                  e0_users: torch.Tensor | None = None) -> tuple[torch.Tensor, ...]:
        """Normalized (user, item) representations for LM inputs on a graph (also used zero-shot);
        ``e0_users`` replaces MLP(z_users) as the users' layer-0 rows when given."""
        users0 = self.mlp(z_users) if e0_users is None else e0_users
        return self.propagated(users0, self.mlp(z_items), adj)

    def propagated(self, users0: torch.Tensor, items0: torch.Tensor, adj: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Normalized (user, item) rows of LightGCN(adj, [users0; items0])."""
        out = propagate(adj, torch.cat([users0, items0]), self.config.n_layers)
        users, items = out[: len(users0)], out[len(users0) :]
        return F.normalize(users, dim=-1), F.normalize(items, dim=-1)

    def embed(self) -> tuple[torch.Tensor, torch.Tensor]:
        """:meth:`represent` of the training users and items; with many users per edge, the users' first layer
        through the items' (:meth:`users_affine`: the same values, one dense layer over the items only)."""
        if self.users_via_items:
            return self.propagated(*self.dense(self._mapped_via_items), self.adj)
        return self.represent(self.z_users, self.z_items, self.adj)

    def _mapped_via_items(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(MLP(z_users), MLP(z_items)), the users' first layer taken from the items'."""
        first, rest = self.net.first_and_rest()
        items = first(self.z_items)
        (users,) = self.users_affine([first], of_items=items)
        return rest(users), rest(items)

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

    @property
    def row_fields(self) -> tuple[int, ...]:
        """The per-row fields of a batch: shared negatives are one set for the batch (not split across ranks)."""
        return (0, 1, 3) if self.config.negatives == "shared" else (0, 1, 2)

    def loss(self, batch: tuple[torch.Tensor, ...]) -> torch.Tensor:
        users, pos, neg, keep = batch
        user_emb, item_emb = self.embed()
        u = user_emb[users]  # (b, d)
        pos_scores = (u * item_emb[pos]).sum(-1)  # (b,)
        if keep is None:
            neg_scores = row_scores(u, item_emb, neg)  # (b, n_neg)
        else:
            neg_scores = u @ item_emb[neg].T  # (b, n_neg) against the shared set
        return info_nce(pos_scores, neg_scores, self.config.tau, keep)

    # -- users the model was not trained on, and stated intentions ---------------------------------------
    def encode_texts(self, texts: list[str]) -> torch.Tensor:
        """(len(texts), d_lm) LM vectors of free texts with the model's encoder (through the embedding cache); the
        encoder is loaded once and used by one caller at a time (a server calls from many threads)."""
        from lmrec.text import CachedEncoder, get_encoder

        with _ENCODER_LOCK:
            encoder = getattr(self, "_text_encoder", None)
            if encoder is None:
                encoder = self._text_encoder = CachedEncoder(get_encoder(self.config.encoder, device=str(self.device)))
            vectors = torch.from_numpy(encoder.encode(texts, progress=False)).to(self.device)
        if vectors.shape[1] != self.z_items.shape[1]:  # features given as an array, not made by this encoder
            raise LmrecError(f"{self.name}'s item features are {self.z_items.shape[1]}-d and its encoder "
                             f"{self.config.encoder!r} gives {vectors.shape[1]}-d vectors: texts (a stated intention) "
                             "need the encoder that made the features (the model's encoder setting)")
        return vectors

    @torch.no_grad()
    def _with_new_user(self, items: Sequence[int], intent: str | None, alpha: float
                       ) -> tuple[torch.Tensor, torch.Tensor]:
        """(the new user's vector (d,), the item vectors (n_items, d)) on the training graph with that user added."""
        self.set_training(False)
        items = np.unique(np.asarray(items, dtype=np.int64))
        row = sp.csr_matrix((np.ones(len(items), np.float32), (np.zeros(len(items), np.int64), items)),
                            shape=(1, self.data.n_items))
        train = sp.vstack([self.data.train, row], format="csr")
        z_user = self.z_items[torch.from_numpy(items).to(self.device)].mean(0, keepdim=True)
        z_users = torch.cat([self.z_users, z_user])
        e0_users = self.mlp(z_users)
        if intent is not None:
            e_intent = self.mlp(self.encode_texts([intent]))[0]
            e0_users[-1] = (1 - alpha) * e0_users[-1] + alpha * e_intent
        users, item_emb = self.represent(z_users, self.z_items, normalized_adjacency(train).to(self.device), e0_users)
        return users[-1], item_emb

    def score_new_user(self, query: NewUser) -> torch.Tensor:
        """(1, n_items) cosine scores of a user who interacted with ``query.items``, added to the training graph
        (exact propagation on the graph with that user); an intent is mixed in with weight ``alpha``."""
        user, item_emb = self._with_new_user(query.items, query.intent, query.alpha)
        return (user @ item_emb.T)[None]

    def new_user_vector(self, items: Sequence[int], intent: str | None = None, alpha: float = 0.5) -> torch.Tensor:
        """The new user's vector; against :meth:`item_vectors` (the graph without that user) the scores differ from
        :meth:`score_new_user` only by the degree change of the user's items."""
        return self._with_new_user(items, intent, alpha)[0]

    def score_users(self, query: KnownUsers) -> torch.Tensor:
        """Cosine scores of training users; with an intent (one user), the user's layer-0 row mixed with it
        (:class:`IntentScorer`)."""
        if query.intent is None:
            return super().score_users(query)
        if len(query.users) != 1:
            raise LmrecError("a stated intention is one user's: ask for one user at a time")
        scorer = IntentScorer(self)
        return scorer.scores(int(query.users[0]), scorer.map_intent(self.encode_texts([query.intent]))[0],
                             [query.alpha])

    def user_vector(self, user: int, intent: str | None = None, alpha: float = 0.5) -> torch.Tensor:
        if intent is None:
            return super().user_vector(user)
        scorer = IntentScorer(self)
        return scorer.user_vector(user, scorer.map_intent(self.encode_texts([intent]))[0], alpha)

    @torch.no_grad()
    def new_item_vectors(self, texts: Sequence[str]) -> torch.Tensor:
        """(len(texts), d) vectors of items the model was not trained on, from their text alone: a new item has no
        edge in the training graph, so its propagated vector is MLP(LM(text))/(L+1), normalized: exact, and every
        score against it is exact too (no other vector depends on an isolated node)."""
        self.set_training(False)
        return F.normalize(self.mlp(self.encode_texts(list(texts))), dim=-1)


class IntentScorer:
    """Scores of a trained AlphaRec with user u's layer-0 embedding mixed with an intention (paper §2.7):

        ẽ_u⁽⁰⁾ = (1 − α)·e_u⁽⁰⁾ + α·MLP(LM(intention)),   e_u⁽⁰⁾ = MLP(z_u)

    then propagated as usual. Only user u's layer-0 row changes, and the propagation E = P·E⁽⁰⁾ with
    P = mean(I, Â, …, Âᴸ) is linear, so the EXACT result is E' = E + P[:, u]·δᵀ with δ = ẽ_u⁽⁰⁾ − e_u⁽⁰⁾: u's
    final vector and the final vectors of the items within L hops of u move. Scores are cosines, as in AlphaRec.
    """

    def __init__(self, model: AlphaRec):
        if not isinstance(model, AlphaRec):
            raise LmrecError(f"intention needs an AlphaRec-family model with LM inputs, got {model.name!r}")
        self.model = model
        model.set_training(False)
        with torch.no_grad():
            self.e0 = model.mlp(torch.cat([model.z_users, model.z_items]))  # E⁽⁰⁾ (n_users + n_items, d)
            self.final = propagate(model.adj, self.e0, model.config.n_layers)  # E = P·E⁽⁰⁾
        self.n_users = len(model.z_users)

    def map_intent(self, z_intent: np.ndarray | torch.Tensor) -> torch.Tensor:
        """e^Intention = MLP(LM(sentence)), (n, d) for (n, d_lm) LM vectors."""
        z = torch.as_tensor(np.asarray(z_intent.cpu() if isinstance(z_intent, torch.Tensor) else z_intent,
                                       dtype=np.float32)).reshape(-1, self.model.z_items.shape[1])
        with torch.no_grad():
            return self.model.mlp(z.to(self.model.device))

    def user_vector(self, user: int, e_intent: torch.Tensor, alpha: float) -> torch.Tensor:
        """u's final normalized vector with ẽ_u⁽⁰⁾ = (1 − α)·e_u⁽⁰⁾ + α·e_intent (exact)."""
        with torch.no_grad():
            onehot = torch.zeros(len(self.e0), 1, device=self.e0.device)
            onehot[user] = 1.0
            p_uu = propagate(self.model.adj, onehot, self.model.config.n_layers)[user, 0]
            return F.normalize(self.final[user] + p_uu * alpha * (e_intent - self.e0[user]), dim=-1)

    def scores(self, user: int, e_intent: torch.Tensor, alphas: Sequence[float]) -> torch.Tensor:
        """(len(alphas), n_items) cosine scores with ẽ_u⁽⁰⁾ = (1 − α)·e_u⁽⁰⁾ + α·e_intent for each α."""
        with torch.no_grad():
            onehot = torch.zeros(len(self.e0), 1, device=self.e0.device)
            onehot[user] = 1.0
            p = propagate(self.model.adj, onehot, self.model.config.n_layers)[:, 0]  # P[:, u] (P is symmetric)
            a = torch.tensor(list(alphas), dtype=torch.float32, device=self.e0.device)[:, None]
            delta = a * (e_intent.reshape(1, -1) - self.e0[user])  # (n_alpha, d)
            users = F.normalize(self.final[user] + p[user] * delta, dim=-1)  # (n_alpha, d)
            p_items = p[self.n_users :]  # P[i, u] for every item i
            items = F.normalize(self.final[self.n_users :][None] + p_items[None, :, None] * delta[:, None, :],
                                dim=-1)  # (n_alpha, n_items, d)
            return torch.einsum("ad,aid->ai", users, items)


@settings
class LinearMapConfig(AlphaRecConfig):
    mapping: Literal["mlp", "linear"] = "linear"
    n_layers: NonNegativeInt = 0


@register("linear_map")
class LinearMap(AlphaRec):
    """The paper's RQ1 probe: s(u, i) = cos(W z_u, W z_i) with W a bias-free Linear(d, 64), no graph,
    trained like AlphaRec (InfoNCE, cosine, z_u = mean of the user's training item embeddings)."""

    Config = LinearMapConfig
