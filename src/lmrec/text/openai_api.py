"""OpenAI-compatible embeddings API backend: ``OpenAIEmbeddingEncoder`` (standard library only)."""

from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from typing import Any

import numpy as np

from lmrec.errors import EmbeddingError, LmrecError
from lmrec.progress import shown

__all__ = ["OpenAIEmbeddingEncoder"]

_OPENAI_DEFAULT_URL = "https://api.openai.com/v1"
_OPENAI_DIMS = {"text-embedding-3-large": 3072, "text-embedding-3-small": 1536, "text-embedding-ada-002": 1536}


class OpenAIEmbeddingEncoder:
    """Client of an OpenAI-compatible ``POST {base_url}/embeddings`` endpoint (standard library only).

    ``base_url`` defaults to ``$OPENAI_BASE_URL`` or https://api.openai.com/v1, ``api_key`` to ``$OPENAI_API_KEY``
    (required for api.openai.com, optional for other servers; checked at the first request, so fully cached texts
    need no key). Requests carry at most ``batch_size`` texts (capped at 2048); HTTP 429 / 5xx and connection errors
    are retried ``max_retries`` times with exponential backoff (or the server's Retry-After). ``dim`` is known for
    OpenAI's models or from ``dimensions``; otherwise one probe request finds it. ``device`` is accepted so that
    every encoder takes one (``get_encoder(spec, device=...)``) and ignored: the server does the work.
    """

    max_inputs_per_request = 2048

    def __init__(
        self,
        model: str = "text-embedding-3-large",
        base_url: str | None = None,
        api_key: str | None = None,
        dimensions: int | None = None,
        timeout: float = 60.0,
        max_retries: int = 5,
        backoff: float = 1.0,
        device: str | None = None,
    ):
        del device  # remote: nothing runs here
        self.model = model
        self.base_url = (base_url or os.environ.get("OPENAI_BASE_URL") or _OPENAI_DEFAULT_URL).rstrip("/")
        self.api_key = api_key if api_key is not None else os.environ.get("OPENAI_API_KEY")
        self.dimensions = dimensions
        self.timeout = timeout
        self.max_retries = max_retries
        self.backoff = backoff
        self._dim = dimensions or (_OPENAI_DIMS.get(model) if self.base_url == _OPENAI_DEFAULT_URL else None)
        where = "" if self.base_url == _OPENAI_DEFAULT_URL else f"@{self.base_url}"
        self.identity = f"openai:{model}" + (f":dimensions={dimensions}" if dimensions else "") + where
        self.requests_made = 0

    @property
    def dim(self) -> int:
        if self._dim is None:
            self._dim = int(self._request(["dimension probe"]).shape[1])
        return self._dim

    def encode(self, texts: Sequence[str], batch_size: int = 64, progress: bool = False) -> np.ndarray:
        """float32 ``(len(texts), dim)``, one request per ``batch_size`` texts."""
        texts = list(texts)
        size = max(1, min(int(batch_size), self.max_inputs_per_request))
        starts = range(0, len(texts), size)
        if shown(progress):
            from tqdm.auto import tqdm

            starts = tqdm(starts, desc=f"embedding ({self.model})", unit="request")
        parts = [self._request(texts[s : s + size]) for s in starts]
        if not parts:
            return np.zeros((0, self.dim), dtype=np.float32)
        out = np.concatenate(parts)
        if self._dim is None:
            self._dim = int(out.shape[1])
        if out.shape[1] != self._dim:
            raise EmbeddingError(
                f"encoder {self.identity!r}: the API returned vectors of dim {out.shape[1]}, expected {self.dim}"
            )
        return out

    def _request(self, texts: list[str]) -> np.ndarray:
        url = f"{self.base_url}/embeddings"
        if not self.api_key and self.base_url == _OPENAI_DEFAULT_URL:
            raise LmrecError(f"{url}: no API key; set the environment variable OPENAI_API_KEY")
        body: dict[str, Any] = {"model": self.model, "input": texts, "encoding_format": "float"}
        if self.dimensions:
            body["dimensions"] = self.dimensions
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        data = json.dumps(body).encode("utf-8")
        for attempt in range(self.max_retries + 1):
            request = urllib.request.Request(url, data=data, headers=headers, method="POST")
            retry_after: float | None = None
            try:
                self.requests_made += 1
                with urllib.request.urlopen(request, timeout=self.timeout) as response:
                    payload = response.read()
                return self._parse(payload, len(texts), url)
            except urllib.error.HTTPError as exc:
                detail = exc.read()[:500].decode("utf-8", "replace")
                if exc.code != 429 and exc.code < 500:
                    raise LmrecError(f"{url}: HTTP {exc.code}: {detail}") from exc
                error: Exception = LmrecError(f"{url}: HTTP {exc.code} after {attempt + 1} attempts: {detail}")
                retry_after = _retry_after(exc.headers.get("Retry-After") if exc.headers else None)
            except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
                error = LmrecError(f"{url}: {exc} after {attempt + 1} attempts")
            if attempt == self.max_retries:
                raise error
            delay = retry_after if retry_after is not None else self.backoff * 2**attempt
            time.sleep(min(delay, 60.0))
        raise AssertionError("unreachable")

    def _parse(self, payload: bytes, n: int, url: str) -> np.ndarray:
        try:
            items = json.loads(payload)["data"]
            if not isinstance(items, list) or len(items) != n:
                got = len(items) if isinstance(items, list) else repr(items)
                raise ValueError(f"expected {n} items in 'data', got {got}")
            items = sorted(items, key=lambda item: item.get("index", 0)) if all("index" in i for i in items) else items
            vectors = np.array([item["embedding"] for item in items], dtype=np.float32)
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise LmrecError(f"{url}: malformed embeddings response ({exc}): {payload[:200]!r}") from exc
        if vectors.ndim != 2:
            raise EmbeddingError(f"{url}: embeddings of ragged or wrong shape {vectors.shape} for {n} texts")
        return vectors


def _retry_after(value: str | None) -> float | None:
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None
