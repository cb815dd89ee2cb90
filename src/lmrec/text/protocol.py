"""The TextEncoder protocol: what every text encoder (and the caching wrapper) provides."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import numpy as np

__all__ = ["TextEncoder"]


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
