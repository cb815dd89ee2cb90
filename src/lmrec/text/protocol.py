"""The TextEncoder protocol: what every text encoder (and the caching wrapper) provides."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import numpy as np

__all__ = ["LazyModel", "TextEncoder"]


@runtime_checkable
class TextEncoder(Protocol):
    """Maps texts to float32 vectors of shape ``(len(texts), dim)``.

    ``identity`` names the model and every setting that changes the vectors (pooling, dtype, normalization...):
    two encoders with the same identity must return the same vectors, since the embedding cache is keyed by it.
    ``dim`` may be a property that loads the model; ``isinstance(x, TextEncoder)`` reads it on Python < 3.12.
    """

    identity: str
    dim: int

    def encode(self, texts: Sequence[str], batch_size: int = 64, progress: bool = False) -> np.ndarray: ...


class LazyModel:
    """Base of the local encoders: the model is loaded by ``_load`` on first use, which also sets ``_dim``; ``dim``
    is known without loading when the encoder was told it (a registered model), else read from the model."""

    _dim: int | None = None

    def _load(self) -> object:
        raise NotImplementedError

    @property
    def dim(self) -> int:
        if self._dim is None:
            self._load()
        assert self._dim is not None
        return self._dim
