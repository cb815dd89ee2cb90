"""Decoder-LLM backend: ``HFPooledEncoder``, final-layer hidden states of a transformers LM pooled per text."""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from lmrec.errors import EmbeddingError, LmrecError
from lmrec.progress import shown
from lmrec.text.protocol import LazyModel
from lmrec.text.weights import _CAUSAL_LM_ALIASES, _CAUSAL_LMS, _registered_gguf, resolve_causal_lm

__all__ = ["HFPooledEncoder"]

_DTYPE_ALIASES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16", "half": "float16", "float": "float32"}


def _torch_dtype(dtype: Any) -> Any:
    import torch

    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    name = _DTYPE_ALIASES.get(str(dtype).lower(), str(dtype).lower()).removeprefix("torch.")
    value = getattr(torch, name, None)
    if not isinstance(value, torch.dtype):
        raise LmrecError(f"unknown dtype {dtype!r}; expected float32, bfloat16 or float16")
    return value


class HFPooledEncoder(LazyModel):
    """Final-layer hidden states of a transformers LM, pooled into one vector per text.

    ``pooling="last"``: the hidden state of the last token, with LEFT padding (position -1 is every text's last
    token; position ids count real tokens only), so a text's vector does not depend on its batch.
    ``pooling="mean"``: the mean over non-pad tokens. Texts longer than ``max_length`` tokens are cut at the end.

    ``model`` is either a loaded transformers model (then ``tokenizer`` is required and ``dtype`` must be None or
    the model's dtype: a shared model is never cast) or anything ``resolve_causal_lm`` accepts, loaded on first
    use in ``dtype`` (default float32; bfloat16 is 3-4x faster on CPUs with AMX, but several times slower on
    AVX2-only CPUs). The hidden states are those of
    the base model (``model.base_model``, after its final norm); no LM head is computed.
    """

    def __init__(
        self,
        model: Any = "smollm2-135m",
        pooling: str = "last",
        dtype: Any = None,
        max_length: int | None = 512,
        tokenizer: Any = None,
        device: str | None = None,
        gguf_file: str | None = None,
        name: str | None = None,
    ):
        if pooling not in ("last", "mean"):
            raise LmrecError(f"pooling must be 'last' or 'mean', got {pooling!r}")
        self.pooling = pooling
        self.max_length = max_length
        self._model: Any = None
        self._tokenizer: Any = tokenizer
        self._gguf_file = gguf_file
        if isinstance(model, (str, Path)):
            spec = str(model)
            key = _CAUSAL_LM_ALIASES.get(spec.lower(), spec.lower())
            if key in _CAUSAL_LMS:
                self._source: str | None = key
                self._dim: int | None = _CAUSAL_LMS[key][2]
                label = f"{key}:gguf={_registered_gguf(key, assemble=False).stem}"
            else:
                path = Path(spec).expanduser()
                self._source = str(path.resolve()) if path.exists() else spec
                self._dim = None
                label = self._source + (f":gguf={gguf_file}" if gguf_file else "")
            self._dtype = _torch_dtype(dtype if dtype is not None else "float32")
            self.device = device or "cpu"
        else:
            if tokenizer is None:
                raise LmrecError("HFPooledEncoder: a loaded model needs its tokenizer (tokenizer=...)")
            self._model = model
            self._source = None
            self._dim = _hidden_size(model.config)
            wanted = _torch_dtype(dtype)
            if wanted is not None and wanted != model.dtype:
                raise LmrecError(
                    f"HFPooledEncoder: the model is {model.dtype}, dtype={wanted} was asked; cast the model yourself"
                )
            self._dtype = model.dtype
            self.device = device or str(model.device)
            label = getattr(model.config, "_name_or_path", "") or getattr(model, "name_or_path", "") or "model"
        self.name = name or label
        dtype_name = str(self._dtype).removeprefix("torch.")
        self.identity = f"hf:{self.name}:pooling={pooling}:dtype={dtype_name}:max_length={max_length}"

    def _load(self) -> tuple[Any, Any]:
        if self._model is None:
            from transformers import AutoModel, AutoTokenizer

            folder = resolve_causal_lm(self._source or "", gguf_file=self._gguf_file)
            if self._tokenizer is None:
                self._tokenizer = AutoTokenizer.from_pretrained(str(folder))
            model = AutoModel.from_pretrained(str(folder), dtype=self._dtype)
            self._model = model.to(self.device).eval()
            self._dim = _hidden_size(model.config)
        return self._model, self._tokenizer

    def encode(self, texts: Sequence[str], batch_size: int = 64, progress: bool = False) -> np.ndarray:
        """float32 ``(len(texts), dim)``; texts are batched by token length, results come back in input order."""
        import torch

        texts = list(texts)
        model, tokenizer = self._load()
        ids: list[list[int]] = tokenizer(
            texts, add_special_tokens=True, truncation=self.max_length is not None, max_length=self.max_length
        )["input_ids"]
        for i, seq in enumerate(ids):
            if not seq:
                raise EmbeddingError(f"encoder {self.identity!r}: text {i} ({texts[i][:80]!r}) has no tokens")
        pad_id = tokenizer.pad_token_id
        if pad_id is None:
            pad_id = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else 0
        base = getattr(model, "base_model", model)
        params = inspect.signature(base.forward).parameters
        device = next(model.parameters()).device
        order = np.argsort([len(seq) for seq in ids], kind="stable")
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        starts = range(0, len(texts), batch_size)
        if shown(progress):
            from tqdm.auto import tqdm

            starts = tqdm(starts, desc=f"encoding ({self.name})", unit="batch")
        was_training = model.training
        model.eval()
        try:
            with torch.inference_mode():
                for start in starts:
                    rows = order[start : start + batch_size]
                    width = max(len(ids[i]) for i in rows)
                    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
                    mask = torch.zeros((len(rows), width), dtype=torch.long)
                    for r, i in enumerate(rows):  # left padding
                        input_ids[r, width - len(ids[i]) :] = torch.tensor(ids[i])
                        mask[r, width - len(ids[i]) :] = 1
                    kwargs: dict[str, Any] = {"input_ids": input_ids.to(device), "attention_mask": mask.to(device)}
                    if "position_ids" in params:
                        kwargs["position_ids"] = (mask.cumsum(1) - 1).clamp(min=0).to(device)
                    if "use_cache" in params:
                        kwargs["use_cache"] = False
                    output = base(**kwargs)
                    hidden = getattr(output, "last_hidden_state", None)
                    hidden = (output[0] if hidden is None else hidden).float()  # (batch, width, dim)
                    if self.pooling == "last":
                        pooled = hidden[:, -1]
                    else:
                        weights = kwargs["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                        pooled = (hidden * weights).sum(1) / weights.sum(1)
                    out[rows] = pooled.cpu().numpy()
        finally:
            model.train(was_training)
        return out


def _hidden_size(config: Any) -> int:
    size = getattr(config, "hidden_size", None)
    if size is None and hasattr(config, "get_text_config"):
        size = getattr(config.get_text_config(), "hidden_size", None)
    if size is None:
        raise LmrecError(f"cannot find the hidden size in the model config {type(config).__name__}")
    return int(size)
