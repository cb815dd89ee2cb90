"""Looking model inputs up while evaluating and serving: q vectors and completions of conversation contexts,
prepared ones from their table and new ones from the LLM (loaded once, one call at a time: a server answers from
many threads), each new q through the embedding cache."""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from lmrec.data.conversations import CRSSample
from lmrec.errors import LmrecError
from lmrec.inputs.config import PrepareConfig, prepare_config
from lmrec.inputs.store import LLMFeatures

if TYPE_CHECKING:
    from lmrec.llm.kv_sessions import KVSessions


def context_features(features: LLMFeatures | None, config: PrepareConfig | None = None,
                     cache_root: str | Path | None = None) -> ContextFeatures:
    """q / completion lookup over the prepared turns of ``features`` (none when None), with the LLM of
    ``config`` (default: the one that prepared ``features``) loaded lazily for new contexts."""
    from lmrec.llm import CausalLM
    from lmrec.text.cache import EmbeddingCache

    cfg = config or prepare_config(features.meta)  # type: ignore[union-attr]
    return ContextFeatures(features.q_table() if features else {}, features.completions() if features else {},
                           lm_loader=lambda: CausalLM.load(cfg.llm, dtype=cfg.dtype, device=cfg.device), config=cfg,
                           cache=EmbeddingCache(cache_root) if cache_root else None,
                           samples=features.samples if features else None)


class ContextFeatures:
    """q vectors and completions for contexts: prepared tables first, the LLM (loaded lazily) for the rest.

    Used at evaluation and serving time: a new conversation (or a masked probe of a known one) is encoded by the
    LLM through the embedding cache; ``completion`` generates with the prepare settings. ``lm_loader`` returns a
    :class:`lmrec.llm.CausalLM` (e.g. ``lambda: CausalLM.load(name, dtype)``). ``cache``: an
    :class:`lmrec.text.EmbeddingCache` for new q vectors; None = the default cache root; False = no cache (every
    new context runs the LLM, as for timing). ``samples``: the prepared turns per split (what a run is evaluated on).
    ``kv``: the LLM's KV cache kept per conversation (:meth:`keep_kv`; None: every new context runs whole).
    """

    def __init__(
        self,
        q_table: Mapping[str, torch.Tensor] | None = None,
        completions: Mapping[str, str] | None = None,
        lm_loader: Callable[[], Any] | None = None,
        config: PrepareConfig | None = None,
        cache: Any = None,
        samples: Mapping[str, Sequence[CRSSample]] | None = None,
    ):
        self.q_table = dict(q_table or {})
        self.samples = {split: list(turns) for split, turns in (samples or {}).items()}  # the prepared turns
        self.completion_table = dict(completions or {})
        self.lm_loader = lm_loader
        self.config = config or PrepareConfig()
        self.cache = cache
        self._lm: Any = None
        self.kv: KVSessions | None = None
        self._lock = threading.RLock()  # one LLM load, one LLM call at a time (a server answers from many threads)

    @property
    def lm(self) -> Any:
        with self._lock:
            if self._lm is None:
                if self.lm_loader is None:
                    raise LmrecError("this context was not prepared and no LLM is configured to encode it")
                self._lm = self.lm_loader()
            return self._lm

    def keep_kv(self, max_mb: float = 512.0, max_sessions: int = 256, max_tokens: int | None = None) -> KVSessions:
        """Keep the LLM's KV cache per conversation from now on (:class:`lmrec.llm.kv_sessions.KVSessions`, with
        these bounds): a new context of a conversation (``keys`` of :meth:`q`) then runs only the tokens its
        conversation's last context did not have (the same q up to float rounding)."""
        from lmrec.llm.kv_sessions import KVSessions

        with self._lock:
            self.kv = KVSessions(max_mb, max_sessions, max_tokens)
            return self.kv

    def q(self, contexts: Sequence[str], keys: Sequence[str] | None = None) -> torch.Tensor:
        """(len(contexts), d) float32; safe to call from several threads (the LLM runs one call at a time).
        ``keys``: the conversation of each context (e.g. a service's session id), for the KV cache kept per
        conversation (:meth:`keep_kv`); without it, or without keys, new contexts are encoded in batches."""
        if keys is not None and len(keys) != len(contexts):
            raise LmrecError(f"{len(contexts)} contexts but {len(keys)} conversation keys")
        with self._lock:
            return self._q(contexts, keys)

    def _q(self, contexts: Sequence[str], keys: Sequence[str] | None = None) -> torch.Tensor:
        missing = list(dict.fromkeys(c for c in contexts if c not in self.q_table))
        if missing:
            cfg = self.config
            completions = self._completions(missing) if cfg.q_mode == "completion" else None
            from lmrec.text.cache import EmbeddingCache

            cache = None if self.cache is False else self.cache if self.cache is not None else EmbeddingCache()
            options = {"batch_size": cfg.encode_batch_size, "max_length": cfg.max_length, "cache": cache,
                       "domain": cfg.domain, "n_items": cfg.n_titles}
            if self.kv is not None and keys is not None:  # one conversation at a time, on top of its KV cache
                key_of = dict(zip(contexts, keys, strict=True))
                vectors = torch.cat([self.lm.encode_contexts(
                    [c], completions=None if completions is None else [completions[i]], session=(self.kv, key_of[c]),
                    **options) for i, c in enumerate(missing)])
            else:
                vectors = self.lm.encode_contexts(missing, completions=completions, reuse_kv=cfg.reuse_kv, **options)
            self.q_table.update(zip(missing, vectors.float()))
        return torch.stack([self.q_table[c] for c in contexts]) if contexts else torch.empty(0, 0)

    def completions(self, contexts: Sequence[str]) -> list[str]:
        with self._lock:
            return self._completions(contexts)

    def _completions(self, contexts: Sequence[str]) -> list[str]:
        missing = list(dict.fromkeys(c for c in contexts if c not in self.completion_table))
        if missing:
            cfg = self.config
            texts = self.lm.generate(missing, max_new_tokens=cfg.max_new_tokens, batch_size=cfg.generate_batch_size,
                                     answer_prefix=cfg.answer_prefix, progress=False, n_items=cfg.n_titles,
                                     domain=cfg.domain)
            self.completion_table.update(zip(missing, texts))
        return [self.completion_table[c] for c in contexts]
