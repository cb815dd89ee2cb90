"""Text layer: encoders (item text -> float32 vectors) and the content-addressed embedding cache."""

from lmrec.text.cache import (
    CachedEncoder,
    EmbeddingCache,
    cache_key,
    default_cache_root,
    encode_catalog,
    validate_embeddings,
)
from lmrec.text.encoders import (
    HFPooledEncoder,
    OpenAIEmbeddingEncoder,
    SentenceTransformerEncoder,
    TextEncoder,
    default_models_dir,
    get_encoder,
    resolve_causal_lm,
)

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
