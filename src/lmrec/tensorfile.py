"""Tensor files: tensors and a JSON header in one safetensors file, written atomically (temp file + rename).

Used for run folders, checkpoints and prepared LLM features. Nothing is pickled: safetensors stores raw tensors
and the header is JSON, so opening a file received from someone else runs no code.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load as _load_bytes
from safetensors.torch import save as _save_bytes

from lmrec.errors import LmrecError
from lmrec.io import write_bytes

META_KEY = "lmrec"


def tensor_dict(values: Mapping[str, Any], prefix: str = "") -> dict[str, torch.Tensor]:
    """Flat ``{prefix + name: contiguous CPU tensor}`` of a (possibly nested) mapping of tensors / arrays."""
    out: dict[str, torch.Tensor] = {}
    for name, value in values.items():
        key = f"{prefix}{name}"
        if isinstance(value, Mapping):
            out.update(tensor_dict(value, f"{key}."))
        elif isinstance(value, np.ndarray):
            out[key] = torch.from_numpy(np.ascontiguousarray(value))
        elif isinstance(value, torch.Tensor):
            out[key] = value.detach().to("cpu").contiguous().clone()
        else:
            raise TypeError(f"state entry {key!r} is a {type(value).__name__}, not a tensor")
    return out


def with_prefix(tensors: Mapping[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """The entries of ``tensors`` under ``prefix`` (``"model."``), with the prefix removed."""
    return {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}


def save_tensors(path: Path, tensors: Mapping[str, torch.Tensor], meta: Mapping[str, Any] | None = None) -> None:
    """Write ``tensors`` (and ``meta`` as JSON in the header) to ``path`` atomically."""
    header = {META_KEY: json.dumps(meta or {})}
    write_bytes(Path(path), _save_bytes(dict(tensors), metadata=header))


def load_tensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(tensors, meta) of a file written by :func:`save_tensors`; a clear error when it is not one."""
    path = Path(path)
    try:
        data = path.read_bytes()
        tensors = _load_bytes(data)
        with safe_open(str(path), framework="pt") as f:
            header = f.metadata() or {}
    except FileNotFoundError:
        raise LmrecError(f"{path}: no such file") from None
    except (SafetensorError, ValueError, OSError) as exc:
        raise LmrecError(f"{path}: not a safetensors file written by lmrec ({exc})") from None
    try:
        meta = json.loads(header.get(META_KEY, "{}"))
    except json.JSONDecodeError as exc:
        raise LmrecError(f"{path}: corrupt lmrec header ({exc})") from None
    return tensors, meta
