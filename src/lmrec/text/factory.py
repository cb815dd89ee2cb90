"""``get_encoder``: a text encoder from a short spec string."""

from __future__ import annotations

from typing import Any

from lmrec.errors import LmrecError
from lmrec.text.hf_pooled import HFPooledEncoder
from lmrec.text.openai_api import OpenAIEmbeddingEncoder
from lmrec.text.protocol import TextEncoder
from lmrec.text.st_encoder import _ST_MODELS, SentenceTransformerEncoder
from lmrec.text.weights import _CAUSAL_LM_ALIASES, _CAUSAL_LMS

__all__ = ["get_encoder"]


def get_encoder(spec: str = "minilm", device: str = "cpu", **kwargs: Any) -> TextEncoder:
    """An encoder from a short spec; ``kwargs`` go to its constructor (e.g. ``dtype="bfloat16"``).

    ``minilm`` (default), ``mpnet``, ``smollm2-135m`` and ``gemma-3-270m`` (last-token pooling),
    ``openai:<model>``, ``st:<path-or-id>``, ``hf:<path-or-id>[:last|mean]``.
    ``device`` (``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"mps"``...) is where a local model runs; the OpenAI client
    accepts it and ignores it. It is not part of the identity, so the embedding cache is shared across devices.
    """
    kwargs["device"] = device
    text = spec.strip()
    lower = text.lower()
    if lower in _ST_MODELS:
        return SentenceTransformerEncoder(text, **kwargs)
    if _CAUSAL_LM_ALIASES.get(lower, lower) in _CAUSAL_LMS:
        return HFPooledEncoder(text, **{"pooling": "last", **kwargs})
    prefix, _, rest = text.partition(":")
    if rest:
        if prefix.lower() == "openai":
            return OpenAIEmbeddingEncoder(rest, **kwargs)
        if prefix.lower() in ("st", "sentence-transformers"):
            return SentenceTransformerEncoder(rest, **kwargs)
        if prefix.lower() == "hf":
            target, _, pooling = rest.rpartition(":")
            if pooling.lower() in ("last", "mean") and target:
                return HFPooledEncoder(target, **{"pooling": pooling.lower(), **kwargs})
            return HFPooledEncoder(rest, **{"pooling": "last", **kwargs})
    raise LmrecError(
        f"unknown encoder spec {spec!r}; expected minilm, mpnet, smollm2-135m, gemma-3-270m, openai:<model>, "
        "st:<path-or-id> or hf:<path-or-id>[:last|mean]"
    )
