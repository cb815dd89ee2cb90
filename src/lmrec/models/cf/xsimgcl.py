"""XSimGCL (Yu et al., TKDE 2023): noise-perturbed LightGCN with a cross-layer contrastive loss."""

from __future__ import annotations

import torch
from pydantic import NonNegativeFloat, PositiveFloat, PositiveInt

from lmrec.errors import Argument
from lmrec.models.base import register
from lmrec.models.cf.lightgcn import LightGCN, LightGCNConfig
from lmrec.models.nn.augment import propagate_layers
from lmrec.models.nn.contrastive import view_info_nce
from lmrec.search_space import FloatRange
from lmrec.settings import SettingsError, settings


@settings
class XSimGCLConfig(LightGCNConfig):
    n_layers: PositiveInt = 2
    eps: NonNegativeFloat = 0.1  # noise magnitude ‖Δ‖ per layer (AlphaRec parse.py:168-177 ``eps_XSimGCL``)
    cl_layer: PositiveInt = 1  # l*: the layer whose (perturbed) output is contrasted with the final one (``layer_cl``)
    cl_tau: PositiveFloat = 0.15  # ``temp_cl``
    cl_weight: NonNegativeFloat = 0.1  # λ, ``lambda_cl``


@register("xsimgcl")
class XSimGCL(LightGCN):
    """XSimGCL (Yu et al. 2023): E⁽ˡ⁺¹⁾ = ÂE⁽ˡ⁾ + Δ⁽ˡ⁺¹⁾ with Δ = eps·sign(E)⊙normalize(U(0,1)) during
    training (no noise at inference); final e = mean(E⁽¹⁾, …, E⁽ᴸ⁾) — layer 0 is left out, as in the paper
    and the official code. Loss = BPR on the perturbed final embeddings + L2 (as :class:`LightGCN`)
    + λ·(InfoNCE_τ(e_u, e_u^{(l*)}) + InfoNCE_τ(e_i, e_i^{(l*)})) over the distinct batch users / positive
    items with in-batch negatives (cosine), l* = 1.

    Defaults are AlphaRec's code (LehengTHU/AlphaRec @ 4b6c6cf): λ = 0.1, τ = 0.15, eps = 0.1, l* = 1
    (parse.py:168-177; noise after each propagation, XSimGCL.py:66-67; layer 0 left out, :59,71-72), 2 layers,
    and the graph baselines' lr 5e-4, batch 4096, L2 1e-5, xavier init (:class:`LightGCN`). The authors'
    answer in LehengTHU/AlphaRec#10 gives per-dataset values for Table 3 (Movies λ 0.1, τ 0.2; Games λ 0.01,
    τ 0.2; Books λ 0.1, τ 0.15; eps 0.1). SELFRec's conf: λ 0.2, τ 0.15, eps 0.2. The L2 term is LightGCN's on
    the layer-0 batch embeddings (AlphaRec's XSimGCL code; SELFRec puts an unsquared norm on the final ones).
    Scores: e_u·e_i without noise.
    """

    Config = XSimGCLConfig
    # λ around AlphaRec's 0.1, down past the authors' 0.01 for Games and our grid's 0.005-0.01; τ around 0.15 / 0.2;
    # eps around AlphaRec's 0.1 and SELFRec's 0.2; lr as LightGCN's. KAR inherits it.
    search_space = {"cl_weight": FloatRange(0.002, 0.5, log=True), "cl_tau": FloatRange(0.1, 0.3),
                    "eps": FloatRange(0.05, 0.3), "lr": FloatRange(1e-4, 1e-2, log=True)}

    def build(self, data) -> torch.nn.Module:
        if not 1 <= self.config.cl_layer <= self.config.n_layers:
            raise SettingsError("xsimgcl setting ", Argument("cl_layer", self.config.cl_layer), ": expected 1 to ",
                                Argument("n_layers", self.config.n_layers))
        return super().build(data)

    def _propagated(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Final (user, item) embeddings; perturbed in training mode, where the l* view is kept for the loss."""
        ego = self._ego()
        eps = self.config.eps if self.net.training else 0.0
        layers = propagate_layers(self.adj, ego, self.config.n_layers, eps)
        final = sum(layers[1:], layers[0]) / len(layers)
        self._cl_view = layers[self.config.cl_layer - 1]
        self._final = final
        return final[: self.data.n_users], final[self.data.n_users :]

    def loss(self, batch: tuple[torch.Tensor, ...]) -> torch.Tensor:
        return sum(self.loss_parts(batch, batch))

    def loss_parts(self, rows: tuple[torch.Tensor, ...], whole: tuple[torch.Tensor, ...]
                   ) -> tuple[torch.Tensor, torch.Tensor]:
        """(BPR + L2 over ``rows`` on the perturbed embeddings, λ·cross-layer InfoNCE over the whole batch's
        distinct users and items, from the same perturbed pass)."""
        main = LightGCN.loss(self, rows)  # calls _propagated: draws the noise, keeps the l* view
        users, pos, _ = whole
        n_users, tau = self.data.n_users, self.config.cl_tau
        u, i = torch.unique(users), torch.unique(pos) + n_users
        cl = view_info_nce(self._final[u], self._cl_view[u], tau) + view_info_nce(self._final[i], self._cl_view[i], tau)
        return main, self.config.cl_weight * cl
