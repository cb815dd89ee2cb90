"""Content-addressed embedding cache: one vector per (encoder identity, text), stored on disk once.

Layout under the cache root::

    <root>/<sha256(identity)>/identity.txt      the identity in clear, for humans
    <root>/<sha256(identity)>/shard-*.npz       append-only shards: ``keys`` (n,) V32, ``vectors`` (n, dim) float32

A key is ``sha256(identity + "\\x00" + text)``. Every shard is written to a temporary file in the same folder and
then renamed, so a crash never leaves a half-written shard and never touches the shards already there.

Keys are raw 32-byte digests stored as ``V32`` (opaque bytes, kept exactly). Shards written before stored them as
``S32``, which drops trailing NUL bytes; they are read back by padding each key with NULs to 32 bytes.
"""

from __future__ import annotations

import hashlib
import os
import time
import uuid
import warnings
import zipfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from lmrec.errors import EmbeddingError, LmrecError
from lmrec.io import write_bytes
from lmrec.progress import shown
from lmrec.text.protocol import TextEncoder

__all__ = [
    "CachedEncoder",
    "EmbeddingCache",
    "cache_key",
    "default_cache_root",
    "encode_catalog",
    "validate_embeddings",
]

_KEY_BYTES = 32  # a sha256 digest
_KEY_DTYPE = np.dtype(f"V{_KEY_BYTES}")  # raw digests, every byte kept (S32 drops trailing NULs)


def default_cache_root() -> Path:
    """``$LMREC_CACHE/embeddings`` if LMREC_CACHE is set, else ``~/.cache/lmrec/embeddings``."""
    base = os.environ.get("LMREC_CACHE")
    return (Path(base) if base else Path.home() / ".cache" / "lmrec") / "embeddings"


def cache_key(identity: str, text: str) -> bytes:
    """The 32-byte sha256 digest of ``identity + "\\x00" + text`` (UTF-8)."""
    return hashlib.sha256(f"{identity}\x00{text}".encode("utf-8", "surrogatepass")).digest()


def validate_embeddings(vectors: object, texts: Sequence[str], encoder: TextEncoder) -> np.ndarray:
    """Return ``vectors`` as float32 of shape ``(len(texts), encoder.dim)``, all finite.

    Raises EmbeddingError naming the encoder identity and the expected and received shape, or the index (and
    start) of the first text whose vector holds NaN / inf.
    """
    expected = (len(texts), int(encoder.dim))
    try:
        array = np.asarray(vectors, dtype=np.float32)
    except (TypeError, ValueError) as exc:
        raise EmbeddingError(
            f"encoder {encoder.identity!r} returned something that is not a numeric array "
            f"({type(vectors).__name__}); expected shape {expected}: {exc}"
        ) from exc
    if array.shape != expected:
        raise EmbeddingError(
            f"encoder {encoder.identity!r} returned embeddings of shape {array.shape}, expected {expected} "
            f"({expected[0]} texts x dim {expected[1]})"
        )
    finite = np.isfinite(array).all(axis=1)
    if not finite.all():
        i = int(np.flatnonzero(~finite)[0])
        raise EmbeddingError(
            f"encoder {encoder.identity!r} returned non-finite values (NaN or inf) for text {i} "
            f"({texts[i][:80]!r}); {int((~finite).sum())} of {expected[0]} vectors are affected"
        )
    return array


def _shard_paths(folder: Path) -> list[Path]:
    """The shards now in ``folder``, oldest name first (temp files of writers in progress are not matched)."""
    return sorted(folder.glob("shard-*.npz"))


def _read_keys(keys: np.ndarray) -> list[bytes] | None:
    """The 32-byte keys in a shard's ``keys`` (V32, or old S32 with its trailing NULs restored); None if neither."""
    if keys.ndim != 1:
        return None
    if keys.dtype == _KEY_DTYPE:
        return keys.tolist()
    if keys.dtype.kind == "S" and keys.dtype.itemsize <= _KEY_BYTES:  # old shards: S32 strips trailing NULs only
        return [key.ljust(_KEY_BYTES, b"\0") for key in keys.tolist()]
    return None


def _read_shard(shard: Path) -> tuple[list[bytes], np.ndarray] | None:
    """``(keys, vectors)`` of one shard file; None (with a warning) when it is unreadable or malformed."""
    try:
        with np.load(shard, allow_pickle=False) as data:
            keys, vectors = data["keys"], data["vectors"]
    except FileNotFoundError:  # removed since it was listed (another process compacted)
        return None
    except (OSError, ValueError, KeyError, zipfile.BadZipFile, EOFError) as exc:
        warnings.warn(f"lmrec embedding cache: skipping unreadable shard {shard}: {exc}", stacklevel=4)
        return None
    key_list = _read_keys(keys)
    if key_list is None or vectors.ndim != 2 or len(key_list) != len(vectors):
        warnings.warn(f"lmrec embedding cache: skipping malformed shard {shard}", stacklevel=4)
        return None
    return key_list, vectors


class _Store:
    """In-memory view of shards of one identity: key -> row of a list of vector blocks.

    Reads ``shards`` (default: every shard now in ``folder``); ``loaded`` lists those that were read.
    """

    def __init__(self, folder: Path, shards: Sequence[Path] | None = None):
        self.folder = folder
        self.index: dict[bytes, tuple[int, int]] = {}  # key -> (block, row)
        self.blocks: list[np.ndarray] = []
        self.dim: int | None = None
        self.loaded: list[Path] = []
        for shard in _shard_paths(folder) if shards is None else shards:
            read = _read_shard(shard)
            if read is not None:
                self._add(*read, shard)
                self.loaded.append(shard)

    def _add(self, keys: Sequence[bytes], vectors: np.ndarray, where: object) -> None:
        if self.dim is None:
            self.dim = int(vectors.shape[1])
        elif vectors.shape[1] != self.dim:
            raise EmbeddingError(
                f"{where}: vectors of dim {vectors.shape[1]}, but this identity's cache holds dim {self.dim}"
            )
        block = len(self.blocks)
        self.blocks.append(vectors)
        for row, key in enumerate(keys):
            self.index[key] = (block, row)


class EmbeddingCache:
    """Disk cache of text embeddings, keyed by ``sha256(identity + "\\x00" + text)``; safe to reopen any time.

    Shards are only ever added (atomically), so concurrent writers may duplicate work but never corrupt it.
    """

    def __init__(self, root: Path | str | None = None):
        self.root = Path(root) if root is not None else default_cache_root()
        self._stores: dict[str, _Store] = {}

    def folder(self, identity: str) -> Path:
        """The folder that holds this identity's shards."""
        return self.root / hashlib.sha256(identity.encode("utf-8")).hexdigest()

    def _checked_folder(self, identity: str) -> Path:
        """``folder(identity)``, after checking that its identity.txt (if any) names this identity."""
        folder = self.folder(identity)
        id_file = folder / "identity.txt"
        if id_file.exists():
            stored = id_file.read_text(encoding="utf-8")
            if stored != identity:
                raise LmrecError(f"{id_file}: holds identity {stored!r}, expected {identity!r}")
        return folder

    def _store(self, identity: str) -> _Store:
        store = self._stores.get(identity)
        if store is None:
            store = self._stores[identity] = _Store(self._checked_folder(identity))
        return store

    def get(self, identity: str, texts: Sequence[str]) -> list[np.ndarray | None]:
        """The cached vector of each text (float32, read-only view), or None where it is not cached."""
        store = self._store(identity)
        out: list[np.ndarray | None] = []
        for text in texts:
            hit = store.index.get(cache_key(identity, text))
            out.append(None if hit is None else store.blocks[hit[0]][hit[1]])
        return out

    def put(self, identity: str, texts: Sequence[str], vectors: np.ndarray) -> None:
        """Store ``vectors`` (len(texts), dim) as one new shard, written atomically (temp file + rename)."""
        vectors = np.array(vectors, dtype=np.float32, copy=True)  # ours, read-only once stored
        if vectors.ndim != 2 or len(vectors) != len(texts):
            raise EmbeddingError(
                f"cache put for {identity!r}: vectors of shape {vectors.shape} for {len(texts)} texts"
            )
        if not len(texts):
            return
        store = self._store(identity)
        key_list = [cache_key(identity, t) for t in texts]
        keys = np.array(key_list, dtype=_KEY_DTYPE)
        if store.dim is not None and vectors.shape[1] != store.dim:
            raise EmbeddingError(
                f"cache put for {identity!r}: vectors of dim {vectors.shape[1]}, the cache holds dim {store.dim}"
            )
        folder = store.folder
        folder.mkdir(parents=True, exist_ok=True)
        id_file = folder / "identity.txt"
        if not id_file.exists():
            write_bytes(id_file, identity.encode("utf-8"))
        name = f"shard-{time.time_ns():020d}-{uuid.uuid4().hex[:8]}.npz"
        write_bytes(folder / name, _npz_bytes(keys, vectors))
        vectors.setflags(write=False)
        store._add(key_list, vectors, folder / name)

    def count(self, identity: str) -> int:
        """How many distinct texts are cached for this identity."""
        return len(self._store(identity).index)

    def compact(self, identity: str) -> None:
        """Merge this identity's shards into one; safe while other processes write to the same cache.

        The shards on disk now are listed and read afresh (not this object's in-memory index), merged into one new
        shard written atomically, and then exactly the listed shards that were read are removed. A shard another
        process adds meanwhile is neither merged nor removed; an unreadable one is left in place (with a warning).
        """
        folder = self._checked_folder(identity)
        listed = _shard_paths(folder)
        if len(listed) < 2:
            return
        merged = _Store(folder, listed)
        if len(merged.loaded) < 2:
            return
        keys = np.array(list(merged.index), dtype=_KEY_DTYPE)
        vectors = np.stack([merged.blocks[b][r] for b, r in merged.index.values()]).astype(np.float32)
        name = f"shard-{time.time_ns():020d}-{uuid.uuid4().hex[:8]}.npz"
        write_bytes(folder / name, _npz_bytes(keys, vectors))
        for shard in merged.loaded:
            shard.unlink(missing_ok=True)
        self._stores.pop(identity, None)


def _npz_bytes(keys: np.ndarray, vectors: np.ndarray) -> bytes:
    import io

    buffer = io.BytesIO()
    np.savez(buffer, keys=keys, vectors=vectors)
    return buffer.getvalue()


class CachedEncoder:
    """A TextEncoder that reads vectors from an EmbeddingCache and encodes only the texts it lacks.

    Same ``identity`` and ``dim`` as the wrapped encoder (cached vectors equal freshly encoded ones). Missing texts
    are deduplicated, encoded in chunks of ``chunk_size``, validated and stored chunk by chunk, so an interrupted
    run keeps what it finished. ``last_encoded`` / ``last_hits`` count the texts of the last ``encode`` call.
    """

    def __init__(self, encoder: TextEncoder, cache: EmbeddingCache | None = None, chunk_size: int = 1024):
        self.encoder = encoder
        self.cache = cache if cache is not None else EmbeddingCache()
        self.chunk_size = int(chunk_size)
        self.last_encoded = 0
        self.last_hits = 0

    @property
    def identity(self) -> str:
        return self.encoder.identity

    @property
    def dim(self) -> int:
        return self.encoder.dim

    def encode(self, texts: Sequence[str], batch_size: int = 64, progress: bool = False) -> np.ndarray:
        """float32 ``(len(texts), dim)`` in input order; encodes each missing distinct text once."""
        texts = list(texts)
        identity, dim = self.identity, int(self.dim)
        out = np.empty((len(texts), dim), dtype=np.float32)
        cached = self.cache.get(identity, texts)
        missing: dict[str, list[int]] = {}
        for i, (text, vector) in enumerate(zip(texts, cached)):
            if vector is None:
                missing.setdefault(text, []).append(i)
            elif vector.shape != (dim,):
                raise EmbeddingError(
                    f"cache {self.cache.folder(identity)} holds vectors of shape {vector.shape} for encoder "
                    f"{identity!r}, expected ({dim},)"
                )
            else:
                out[i] = vector
        self.last_hits = len(texts) - sum(len(v) for v in missing.values())
        self.last_encoded = 0
        todo = list(missing)
        bar = None
        if shown(progress) and todo:
            from tqdm.auto import tqdm

            bar = tqdm(total=len(todo), desc=f"encoding ({identity})", unit="text")
        try:
            for start in range(0, len(todo), self.chunk_size):
                chunk = todo[start : start + self.chunk_size]
                vectors = validate_embeddings(
                    self.encoder.encode(chunk, batch_size=batch_size, progress=False), chunk, self.encoder
                )
                self.cache.put(identity, chunk, vectors)
                for text, vector in zip(chunk, vectors):
                    out[missing[text]] = vector
                self.last_encoded += len(chunk)
                if bar is not None:
                    bar.update(len(chunk))
        finally:
            if bar is not None:
                bar.close()
        return out


def encode_catalog(
    texts: Sequence[str],
    encoder: TextEncoder,
    cache: EmbeddingCache | None = None,
    progress: bool = True,
    batch_size: int = 64,
) -> np.ndarray:
    """Encode a catalog's texts through the cache (default root if ``cache`` is None); float32 ``(n, dim)``."""
    if not isinstance(encoder, CachedEncoder):
        encoder = CachedEncoder(encoder, cache)
    elif cache is not None and cache is not encoder.cache:
        encoder = CachedEncoder(encoder.encoder, cache, encoder.chunk_size)
    return encoder.encode(texts, batch_size=batch_size, progress=progress)
