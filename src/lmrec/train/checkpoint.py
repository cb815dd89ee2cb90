"""Training checkpoints: model, best and optimizer state, RNG states and the log, in one tensor file
(:mod:`lmrec.tensorfile`: safetensors + a JSON header, written atomically; nothing pickled)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from lmrec.tensorfile import with_prefix


# -- optimizer and RNG state -----------------------------------------------------------------------------------
def optimizer_state(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The optimizer's state as (tensors under ``optim.<param>.<key>``, JSON with param groups and scalars)."""
    state = optimizer.state_dict()
    tensors, scalars = {}, {}
    for param, entries in state["state"].items():
        for key, value in entries.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optim.{param}.{key}"] = value.detach().cpu().contiguous().clone()
            else:
                scalars[f"{param}.{key}"] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def load_optimizer_state(optimizer: torch.optim.Optimizer, tensors: Mapping[str, torch.Tensor],
                         meta: Mapping[str, Any]) -> None:
    state: dict[int, dict[str, Any]] = {}
    for name, value in with_prefix(tensors, "optim.").items():
        param, _, key = name.partition(".")
        state.setdefault(int(param), {})[key] = value
    for name, value in meta["scalars"].items():
        param, _, key = name.partition(".")
        state.setdefault(int(param), {})[key] = value
    optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})

