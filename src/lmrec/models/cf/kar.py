"""KAR (Xi et al., 2023): knowledge-augmented recommendation — LM knowledge vectors from a hybrid-expert
adaptor fused into a CF backbone (here XSimGCL, as AlphaRec's runs)."""

from __future__ import annotations

from typing import Annotated, Literal

import torch
from pydantic import Field, NonNegativeInt, PositiveInt
from torch import nn

from lmrec.data.interactions import SplitData
from lmrec.errors import Argument
from lmrec.models.base import register
from lmrec.models.cf.xsimgcl import XSimGCL, XSimGCLConfig
from lmrec.models.nn.lm_inputs import LMFeatures, affine_outputs
from lmrec.settings import SettingsError, settings


@settings
class KARConfig(XSimGCLConfig):
    encoder: str = "minilm"  # text encoder spec (lmrec.text.get_encoder), as AlphaRec
    text_fields: tuple[str, ...] = ("title",)
    n_shared_experts: NonNegativeInt = 2  # KAR run_ctr.py: export_num
    n_specific_experts: NonNegativeInt = 5  # per side (user / item): specific_export_num
    # convert_arch: each expert is Linear-ReLU per width (at least one: the adaptor's input layers are the first)
    expert_arch: Annotated[tuple[PositiveInt, ...], Field(min_length=1)] = (128, 32)
    dropout: Annotated[float, Field(ge=0, lt=1)] = 0.0  # convert_dropout
    # "concat": e⁰ = [cf ‖ r]; "add": e⁰ = cf + r (needs expert_arch[-1] == emb_dim)
    fusion: Literal["concat", "add"] = "concat"


def _expert(dim_in: int, arch: tuple[int, ...], dropout: float) -> nn.Sequential:
    layers: list[nn.Module] = []
    for width in arch:
        layers += [nn.Linear(dim_in, width), nn.ReLU(), nn.Dropout(dropout)]
        dim_in = width
    return nn.Sequential(*layers)


class HybridExpertAdaptor(nn.Module):
    """KAR's hybrid-expert adaptor for two inputs (user-side and item-side knowledge):
    r_s = Σ_k g_{s,k}(x_s)·expert_k(x_s) over the shared experts and side s's own experts, with the gate
    g_s = softmax(W_s x_s + b_s) (one gate per side). Every layer that reads x_s is affine
    (:meth:`input_layers`): the model computes them its own way (:meth:`KAR._knowledge`) and :meth:`combine`
    merges the outputs."""

    def __init__(self, dim_in: int, n_shared: int, n_specific: int, arch: tuple[int, ...], dropout: float):
        super().__init__()
        self.shared = nn.ModuleList(_expert(dim_in, arch, dropout) for _ in range(n_shared))
        self.specific = nn.ModuleList(
            nn.ModuleList(_expert(dim_in, arch, dropout) for _ in range(n_specific)) for _ in range(2))
        self.gates = nn.ModuleList(nn.Linear(dim_in, n_shared + n_specific) for _ in range(2))

    def _experts(self, side: int) -> list[nn.Sequential]:
        return [*self.shared, *self.specific[side]]

    def input_layers(self, side: int) -> list[nn.Linear]:
        """The layers that read side ``side``'s input x (0: users, 1: items): each expert's first, then the gate."""
        return [expert[0] for expert in self._experts(side)] + [self.gates[side]]

    def combine(self, side: int, firsts: list[torch.Tensor]) -> torch.Tensor:
        """r_s from the outputs of :meth:`input_layers` on x_s."""
        *hidden, gate = firsts
        experts = torch.stack([expert[1:](h) for expert, h in zip(self._experts(side), hidden, strict=True)], 1)
        return (torch.softmax(gate, dim=-1).unsqueeze(-1) * experts).sum(dim=1)  # (n, k, out) → (n, out)


@register("kar")
class KAR(LMFeatures, XSimGCL):
    """KAR (Xi et al. 2023) on XSimGCL: r_u, r_i = HEA(z_u, z_i), e⁰ = [p ‖ r] (or p + r), e = XSimGCL(e⁰),
    score = e_u·e_i; loss as :class:`XSimGCL` (BPR + L2 on the CF part p + λ·cross-layer InfoNCE).

    Knowledge inputs: z_i = LM(title_i) and z_u = mean of z_i over u's TRAINING items, as AlphaRec (same
    encoder, cache and ``features=`` injection). KAR itself prompts an LLM for a reasoning text about each
    user's preferences and a factual text about each item, then encodes those texts; generating them is
    not possible offline here, so the user "reasoning" vector is the profile mean and the item "factual"
    vector is the title embedding. HEA defaults are KAR's run_ctr.py: 2 shared + 5 specific experts per
    side, experts Linear(d,128)-ReLU-Linear(128,32)-ReLU, no dropout; KAR feeds the augmented vectors to a
    CTR backbone as extra features — here they are concatenated to the layer-0 CF embeddings
    (``fusion="concat"``, 64 + 32 dims) and propagated with them.

    Backbone: AlphaRec's parse.py gives KAR, RLMRec and XSimGCL one block of settings (λ 0.1, τ 0.15, eps 0.1,
    layer_cl 1; parse.py:168-177 @ 4b6c6cf), i.e. its KAR runs on XSimGCL; its repository has no KAR model file.
    Training as the graph baselines (lr 5e-4, batch 4096, L2 1e-5). ``cl_weight=0, eps=0`` leaves a LightGCN
    whose final embedding averages layers 1..L.
    """

    Config = KARConfig
    bf16_path = True  # the adaptor's products (TrainConfig.precision)

    def build(self, data: SplitData) -> nn.Module:
        cfg = self.config
        if cfg.fusion not in ("concat", "add"):
            raise ValueError(f"unknown fusion {cfg.fusion!r}: expected 'concat' or 'add'")
        if cfg.fusion == "add" and cfg.expert_arch[-1] != cfg.emb_dim:
            raise SettingsError("kar setting ", Argument("fusion", "add"), ": needs the last width of ",
                                Argument("expert_arch", cfg.expert_arch), " to equal ",
                                Argument("emb_dim", cfg.emb_dim))
        self.z_users, self.z_items = self.lm_inputs(data)
        net = super().build(data)
        net.adaptor = HybridExpertAdaptor(self.z_items.shape[1], cfg.n_shared_experts, cfg.n_specific_experts,
                                          tuple(cfg.expert_arch), cfg.dropout)
        return net

    def _ego(self) -> torch.Tensor:
        r_users, r_items = self.dense(self._knowledge)
        if self.config.fusion == "concat":
            return torch.cat([torch.cat([self.net.users, r_users], 1), torch.cat([self.net.items, r_items], 1)])
        return torch.cat([self.net.users + r_users, self.net.items + r_items])

    def _knowledge(self) -> tuple[torch.Tensor, torch.Tensor]:
        """HEA(z_users, z_items), the users' input layers through the items where that is cheaper
        (:meth:`LMFeatures.users_affine`: Amazon data; the same values)."""
        adaptor = self.net.adaptor
        return (adaptor.combine(0, self.users_affine(adaptor.input_layers(0))),
                adaptor.combine(1, affine_outputs(adaptor.input_layers(1), self.z_items)))
