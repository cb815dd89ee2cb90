"""Atomic file writing: write to a temporary file in the same folder, then rename over the target."""

from __future__ import annotations

import errno
import json
import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any


def atomic_write(path: Path, write: Callable[[IO], Any], binary: bool = False) -> None:
    """Call ``write(f)`` on a temp file beside ``path`` and rename it to ``path``; on error nothing changes."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb" if binary else "w", **({} if binary else {"encoding": "utf-8"})) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600 files; give the usual permissions
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _read_umask() -> int:
    """The process umask, read once at import (setting it, even briefly, is not safe with threads)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _read_umask()


def write_bytes(path: Path, data: bytes) -> None:
    atomic_write(path, lambda f: f.write(data), binary=True)


def write_json(path: Path, obj: Any, allow_nan: bool = True) -> None:
    """``obj`` as indented JSON, atomically; ``allow_nan=False`` refuses NaN / inf (ValueError) instead of writing
    values no JSON parser reads."""
    atomic_write(path, lambda f: json.dump(obj, f, indent=2, sort_keys=False, default=str, allow_nan=allow_nan))


@contextmanager
def atomic_folder(folder: Path) -> Iterator[Path]:
    """A hidden temporary folder beside ``folder`` to write into; renamed to ``folder`` when the block ends without
    an error (else removed), so ``folder`` is either absent or complete. An existing non-empty folder is refused
    (:class:`FileExistsError` naming it); an empty one is replaced."""
    import shutil

    folder = Path(folder)
    if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
        raise FileExistsError(errno.EEXIST, "exists and is not an empty folder; choose another", str(folder))
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        yield tmp
        tmp.chmod(0o777 & ~_UMASK)
        if folder.exists():
            folder.rmdir()
        tmp.rename(folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
