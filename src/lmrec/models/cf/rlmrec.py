"""RLMRec-Con (Ren et al., WWW 2024): a graph CF backbone (XSimGCL) aligned with LM representations by a
contrastive loss."""

from __future__ import annotations

import torch
from pydantic import NonNegativeFloat, PositiveFloat
from torch import nn

from lmrec.data.interactions import SplitData
from lmrec.models.base import register
from lmrec.models.cf.xsimgcl import XSimGCL, XSimGCLConfig
from lmrec.models.nn.contrastive import view_info_nce
from lmrec.models.nn.lm_inputs import LMFeatures
from lmrec.search_space import FloatRange
from lmrec.settings import settings


@settings
class RLMRecConfig(XSimGCLConfig):
    encoder: str = "minilm"  # text encoder spec (lmrec.text.get_encoder), as AlphaRec
    text_fields: tuple[str, ...] = ("title",)
    kd_weight: NonNegativeFloat = 1e-2  # RLMRec lightgcn_plus.yml (amazon, yelp): kd_weight 1.0e-2
    kd_tau: PositiveFloat = 0.2  # kd_temperature 0.2


@register("rlmrec")
class RLMRec(LMFeatures, XSimGCL):
    """RLMRec-Con (Ren et al. 2024) on XSimGCL: loss = the :class:`XSimGCL` loss + w·L_kd with
    s = MLP(z) = Linear(d, (d+64)/2) → LeakyReLU → Linear(→ 64), one MLP for users and items, and

    L_kd = InfoNCE_τ(e_u, s_u; all users' s) + InfoNCE_τ(e_i⁺, s_i⁺; batch s⁺) + InfoNCE_τ(e_j⁻, s_j⁻; batch s⁻),

    cosine similarities, over the DISTINCT users / positives / negatives of the batch, each term averaged
    (the official ``cal_infonce_loss`` sums over all batch rows, duplicates included — a repeated item is
    then its own negative — and divides by the batch size); e = the backbone's final embeddings.
    Scores: e_u·e_i (the MLP is used in training only).

    Semantic inputs: z_i = LM(title_i) and z_u = mean of z_i over u's TRAINING items, as AlphaRec (same
    encoder, cache and ``features=`` injection). RLMRec embeds LLM-generated user/item profile texts instead;
    generating them is not possible offline. Defaults: w = 0.01, τ = 0.2 (AlphaRec parse.py:179-183 @
    4b6c6cf, the same as RLMRec's simgcl_plus.yml:37-38).

    Backbone: AlphaRec's parse.py gives RLMRec, KAR and XSimGCL one block of settings (λ 0.1, τ 0.15, eps 0.1,
    layer_cl 1; parse.py:168-177), i.e. its RLMRec runs on XSimGCL (its repository has no RLMRec model file);
    RLMRec's own SimGCL variant is 32-d, 3 layers, λ 0.1, τ 0.2, eps 0.9 (simgcl_plus.yml:3,30-39). Training as
    the graph baselines (64-d, 2 layers, lr 5e-4, batch 4096, L2 1e-5, xavier init).
    """

    Config = RLMRecConfig
    # XSimGCL's space, and the alignment weight around RLMRec's 1e-2 (simgcl_plus.yml:37; AlphaRec parse.py:179)
    search_space = {**XSimGCL.search_space, "kd_weight": FloatRange(1e-3, 0.1, log=True)}
    bf16_path = True  # the projection MLP's products (TrainConfig.precision)

    def build(self, data: SplitData) -> nn.Module:
        self.z_users, self.z_items = self.lm_inputs(data)
        net = super().build(data)
        dim_in, dim_out = self.z_items.shape[1], self.config.emb_dim
        net.mlp = nn.Sequential(nn.Linear(dim_in, (dim_in + dim_out) // 2), nn.LeakyReLU(),
                                nn.Linear((dim_in + dim_out) // 2, dim_out))
        for layer in net.mlp:
            if isinstance(layer, nn.Linear):
                nn.init.xavier_uniform_(layer.weight)
        return net

    def _propagated(self) -> tuple[torch.Tensor, torch.Tensor]:
        self._last = super()._propagated()  # kept for the alignment term of the same batch
        return self._last

    def loss_parts(self, rows: tuple[torch.Tensor, ...], whole: tuple[torch.Tensor, ...]
                   ) -> tuple[torch.Tensor, torch.Tensor]:
        """(the backbone's row terms, its whole-batch terms + w·L_kd over the whole batch's distinct ids)."""
        main, backbone = super().loss_parts(rows, whole)
        users, pos, neg = whole
        user_emb, item_emb = self._last
        tau, mlp = self.config.kd_tau, lambda z: self.dense(self.net.mlp, z)
        s_users = self.dense(self._users_mapped)
        u, i, j = torch.unique(users), torch.unique(pos), torch.unique(neg)
        kd = (view_info_nce(user_emb[u], s_users, tau, targets=u)
              + view_info_nce(item_emb[i], mlp(self.z_items[i]), tau)
              + view_info_nce(item_emb[j], mlp(self.z_items[j]), tau))
        return main, backbone + self.config.kd_weight * kd

    def _users_mapped(self) -> torch.Tensor:
        """MLP(z_users), its first layer through the items where that is cheaper (:meth:`LMFeatures.users_affine`:
        Amazon data; the same values)."""
        (first,) = self.users_affine([self.net.mlp[0]])
        return self.net.mlp[1:](first)
