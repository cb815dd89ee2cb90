"""The LLM's KV cache kept per conversation between its messages (:class:`KVSessions`), so that a message runs only
the tokens its conversation's text does not share with the text of its last message.

RTA reads a conversation as one prompt (the system text, "Here is the conversation: " and the turns, then the
chat template's end and "1."): a new turn extends the conversation, so the new prompt shares with the last one
everything up to the end of the last turn, and only the new turn and the prompt's few closing tokens run
(:meth:`lmrec.llm.CausalLM.extend`: the longest common prefix of the token ids is kept, whatever the texts). The
vector is the full recompute's up to float rounding, so the cached and the uncached way agree; where the full
prompt is cut (its first ``max_chars`` characters of conversation, its last ``max_length`` tokens), the cut text
is what both read: a prompt cut on the left shares no prefix with the last one and is computed whole.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from lmrec.errors import LmrecError


@dataclass
class _Entry:
    ids: list[int]  # the tokens whose keys and values the cache holds
    cache: Any
    nbytes: int


class KVSessions:
    """KV caches of conversations by key (a service's session id), least recently used first out.

    Bounds: at most ``max_sessions`` conversations and ``max_mb`` MB of keys and values in all (the least recently
    used go first); a conversation is not kept while its prompt is longer than ``max_tokens`` tokens (None: no cap
    but the prompt's own cut, ``max_length``). A conversation that is not kept, or was dropped, is computed whole at
    its next message and kept again. Thread-safe; two messages of one conversation at once are both right (the
    second finds no cache and computes whole). ``stats``: messages, tokens of their prompts, tokens run, drops."""

    def __init__(self, max_mb: float = 512.0, max_sessions: int = 256, max_tokens: int | None = None):
        if not max_mb > 0 or max_sessions < 1 or (max_tokens is not None and max_tokens < 1):
            raise LmrecError(f"KV cache of {max_mb} MB, {max_sessions} sessions, {max_tokens} tokens per session: "
                             "expected more than 0 MB, at least one session and one token")
        self.max_bytes, self.max_sessions, self.max_tokens = int(max_mb * 2**20), int(max_sessions), max_tokens
        self.nbytes = 0
        self.stats = {"messages": 0, "tokens": 0, "computed": 0, "dropped": 0}
        self._entries: OrderedDict[str, _Entry] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: str) -> bool:
        return key in self._entries

    def encode(self, lm: Any, key: str, ids: Sequence[int]) -> tuple[torch.Tensor, int]:
        """(the final hidden state at the last of ``ids``, float32 ``(hidden,)``; the tokens run) through ``lm``
        (:class:`lmrec.llm.CausalLM`), on top of conversation ``key``'s cache, which then holds ``ids``."""
        with self._lock:
            entry = self._entries.pop(key, None)
            if entry is not None:
                self.nbytes -= entry.nbytes
        vector, cache, computed = lm.extend(entry.cache if entry else None, entry.ids if entry else [], ids)
        size = cache_bytes(cache)
        with self._lock:
            self.stats["messages"] += 1
            self.stats["tokens"] += len(ids)
            self.stats["computed"] += computed
            if (self.max_tokens is None or len(ids) <= self.max_tokens) and size <= self.max_bytes:
                if key in self._entries:  # another message of it finished meanwhile: this one is newer
                    self.nbytes -= self._entries.pop(key).nbytes
                self._entries[key] = _Entry(list(ids), cache, size)
                self.nbytes += size
                while self.nbytes > self.max_bytes or len(self._entries) > self.max_sessions:
                    _, dropped = self._entries.popitem(last=False)
                    self.nbytes -= dropped.nbytes
                    self.stats["dropped"] += 1
        return vector, computed

    def forget(self, key: str) -> None:
        """Drop conversation ``key``'s cache (an ended session)."""
        with self._lock:
            entry = self._entries.pop(key, None)
            if entry is not None:
                self.nbytes -= entry.nbytes


def cache_bytes(cache: Any) -> int:
    """Bytes of the keys and values a transformers cache holds."""
    total = 0
    for layer in getattr(cache, "layers", ()):
        for name in ("keys", "values"):
            tensor = getattr(layer, name, None)
            if isinstance(tensor, torch.Tensor):
                total += tensor.numel() * tensor.element_size()
    return total
