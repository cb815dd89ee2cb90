"""Text layer: encoders (item text -> float32 vectors) and the content-addressed embedding cache."""

from lmrec.text.cache import (
    CachedEncoder,
    EmbeddingCache,
    cache_key,
    default_cache_root,
    encode_catalog,
    validate_embeddings,
)
from lmrec.text.factory import get_encoder
from lmrec.text.hf_pooled import HFPooledEncoder
from lmrec.text.openai_api import OpenAIEmbeddingEncoder
from lmrec.text.protocol import TextEncoder
from lmrec.text.st_encoder import SentenceTransformerEncoder
from lmrec.text.weights import default_models_dir, resolve_causal_lm

__all__ = [
    "CachedEncoder",
    "EmbeddingCache",
    "HFPooledEncoder",
    "OpenAIEmbeddingEncoder",
    "SentenceTransformerEncoder",
    "TextEncoder",
    "cache_key",
    "default_cache_root",
    "default_models_dir",
    "encode_catalog",
    "get_encoder",
    "resolve_causal_lm",
    "validate_embeddings",
]
