"""Dense retriever: the conversation's recent text vs the item titles, both embedded by a sentence encoder.

    score(turn, i) = cos(f(context_tail), f(title_i))

f = MiniLM (``all-MiniLM-L6-v2``) by default. ``context_tail`` keeps the most recent whole lines of the context
within ``context_chars`` characters (:func:`lmrec.data.conversations.truncate_context`; MiniLM reads at most 256
word pieces, ≈ 1000 characters of English, and would otherwise keep the *oldest* part of a long conversation).
The default 300 was chosen on validation HR@10 of both conversational datasets, tails of 150 / 300 / 600 / 1000
characters: INSPIRED 0.195 / 0.201 / 0.166 / 0.146, ReDIAL 0.058 / 0.061 / 0.023 / 0.020 (the last request
matters; older lines dilute it). No training: ``fit`` encodes the titles, ``score`` the context tails, both
through the embedding cache (a table scores the same turns in several blocks and on every rerun; a probe's
rewritten contexts are new texts and are encoded then).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from pydantic import PositiveInt

from lmrec.data.conversations import CRSData, CRSSample, truncate_context
from lmrec.errors import LmrecError
from lmrec.models.base import ModelConfig, register
from lmrec.models.crs.base import CRSRecommender
from lmrec.models.queries import Conversations
from lmrec.settings import settings
from lmrec.text import CachedEncoder, EmbeddingCache, TextEncoder, encode_catalog, get_encoder


@settings
class DenseConfig(ModelConfig):
    encoder: str = "minilm"  # lmrec.text.get_encoder spec
    context_chars: PositiveInt = 300  # chosen on validation (module docstring)
    encode_batch_size: PositiveInt = 64  # texts encoded at a time


def _unit(x: np.ndarray) -> torch.Tensor:
    t = torch.from_numpy(np.asarray(x, dtype=np.float32))
    return t / t.norm(dim=1, keepdim=True).clamp_min(1e-12)


@register("dense")
class DenseRetriever(CRSRecommender):
    """Cosine similarity of the encoded context tail and the encoded titles. ``encoder`` (optional) overrides
    ``config.encoder`` (e.g. a fake encoder in tests); ``cache`` is the embedding cache (default root if None)."""

    Config = DenseConfig

    def __init__(self, config: DenseConfig | None = None, encoder: TextEncoder | None = None,
                 cache: EmbeddingCache | None = None, **overrides: Any):
        super().__init__(config, **overrides)
        self.encoder = encoder
        self.cache = cache
        self.items: torch.Tensor | None = None
        self._cached: CachedEncoder | None = None

    def _encoder(self) -> TextEncoder:
        if self.encoder is None:
            self.encoder = get_encoder(self.config.encoder, device=str(self.device))
        return self.encoder

    def _cached_encoder(self) -> CachedEncoder:
        """The encoder behind the embedding cache, made once for titles and contexts (opening a cache reads its
        index)."""
        if self._cached is None:
            self._cached = CachedEncoder(self._encoder(), self.cache)
        return self._cached

    def fit(self, data: CRSData, train: Any = None, *, inputs: Any = None, folder: Path | None = None,
            resume: bool = False, on_validation: Any = None) -> None:
        self.n_items = len(data.catalog)
        vectors = encode_catalog(data.catalog.titles, self._cached_encoder(), progress=False,
                                 batch_size=self.config.encode_batch_size)
        self.items = _unit(vectors)

    def state(self) -> dict[str, torch.Tensor]:
        return {"items": self.items}

    def load_state(self, state: dict[str, torch.Tensor]) -> None:
        self.items = state["items"]

    def item_space(self) -> torch.Tensor | None:
        return self.items

    def context_text(self, sample: CRSSample) -> str:
        """The part of the context that is encoded."""
        return truncate_context(sample.context.split("\n"), self.config.context_chars)

    def score_conversations(self, query: Conversations) -> torch.Tensor:
        if self.items is None:
            raise LmrecError("dense: call fit before score")
        texts = [self.context_text(s) for s in query.samples]
        queries = self._cached_encoder().encode(texts, batch_size=self.config.encode_batch_size)
        return _unit(queries) @ self.items.T
