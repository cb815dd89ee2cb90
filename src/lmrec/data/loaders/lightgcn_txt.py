"""LightGCN / AlphaRec text format: one line per user, ``user item item ...``, in fixed train/valid/test files.

A dataset is a folder with::

    train.txt        0 12 7 301        <- user 0 trained on items 12, 7 and 301
    test.txt         0 5
    valid.txt        (optional; when missing, validation is carved from train)
    items.tsv        (optional) header ``item_id<TAB>text``, then ``12<TAB>Stanley Staples (1000 Count)``

Each file may be gzipped (``train.txt.gz``). A line with a user and no items (``3``) is allowed; blank lines
are skipped. Ids are non-negative integers and serve as dense indices: user ``u`` is row ``u``, item ``i`` is
column ``i`` (so precomputed embeddings indexed by the file ids line up). Users and items go from 0 to the
largest id seen; ids in that range that no file mentions are kept as users/items without interactions.
External ids are the ids as strings. Item titles are the ``items.tsv`` texts, or the ids without that file.
"""

from __future__ import annotations

import gzip
import zlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from lmrec.data.catalog import ItemCatalog
from lmrec.data.interactions import Interactions, SplitData, to_csr
from lmrec.data.splits import carve_validation
from lmrec.errors import DataFormatError

SPLIT_FILES = ("train", "valid", "test")


def iter_lines(path: Path, encoding: str = "utf-8") -> Iterator[tuple[int, str]]:
    """Yield ``(line_number, line)`` (1-based, newline stripped) of a plain or ``.gz`` text file.

    A truncated or corrupt gzip stream and undecodable bytes raise :class:`DataFormatError` naming the file
    and the line where reading stopped.
    """
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    line_no = 0
    try:
        with opener(path, "rt", encoding=encoding) as handle:
            for line_no, line in enumerate(handle, 1):
                yield line_no, line.rstrip("\r\n")
    except (EOFError, zlib.error, gzip.BadGzipFile) as exc:
        raise DataFormatError(
            path, line_no + 1, f"expected a complete gzip stream, got a truncated or corrupt file ({exc})"
        ) from None
    except UnicodeDecodeError as exc:
        raise DataFormatError(path, line_no + 1, f"expected {encoding} text, got undecodable bytes ({exc.reason})") from None


def find_file(folder: Path, name: str) -> Path | None:
    """``folder/name`` or ``folder/name.gz``, whichever exists (plain first), else None."""
    for candidate in (folder / name, folder / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    return None


def parse_int(path: Path, line: int, token: str, what: str) -> int:
    """``int(token)`` for a non-negative integer id, or :class:`DataFormatError` naming file, line and token."""
    try:
        value = int(token)
    except ValueError:
        raise DataFormatError(path, line, f"expected an integer {what}, got {token!r}") from None
    if value < 0:
        raise DataFormatError(path, line, f"expected a non-negative {what}, got {token!r}")
    return value


def read_user_items(path: Path) -> list[tuple[int, int, list[int]]]:
    """``(line_number, user, items)`` for each non-blank line of a ``user item item ...`` file."""
    rows = []
    for line_no, line in iter_lines(path):
        tokens = line.split()
        if not tokens:
            continue
        user = parse_int(path, line_no, tokens[0], "user id")
        rows.append((line_no, user, [parse_int(path, line_no, t, "item id") for t in tokens[1:]]))
    return rows


def read_item_texts(path: Path) -> dict[int, str]:
    """``items.tsv``: header ``item_id<TAB>text``, then ``12<TAB>some text`` (the text may be empty)."""
    texts: dict[int, str] = {}
    for line_no, line in iter_lines(path):
        if line_no == 1:
            if line.split("\t")[0].strip() != "item_id":
                raise DataFormatError(path, 1, f"expected the header 'item_id<TAB>text', got {line[:80]!r}")
            continue
        if not line.strip():
            continue
        parts = line.split("\t", 1)
        if len(parts) != 2:
            raise DataFormatError(path, line_no, f"expected 2 tab-separated columns (item_id, text), got {line[:80]!r}")
        item = parse_int(path, line_no, parts[0].strip(), "item id")
        if item in texts:
            raise DataFormatError(path, line_no, f"expected each item id once, got {item} again")
        texts[item] = parts[1].strip()
    return texts


def _read_folder(folder: Path) -> tuple[dict[str, tuple[Path, list]], ItemCatalog, list[str]]:
    folder = Path(folder)
    files = {}
    for split in SPLIT_FILES:
        path = find_file(folder, f"{split}.txt")
        if path is not None:
            files[split] = (path, read_user_items(path))
        elif split != "valid":
            raise FileNotFoundError(f"{folder}: expected {split}.txt or {split}.txt.gz (LightGCN text format)")
    text_path = find_file(folder, "items.tsv")
    texts = read_item_texts(text_path) if text_path else None

    max_user, max_item = -1, -1
    for path, rows in files.values():
        for line_no, user, items in rows:
            max_user = max(max_user, user)
            for item in items:
                if texts is not None and item not in texts:
                    raise DataFormatError(path, line_no, f"expected an item id listed in {text_path}, got {item}")
                max_item = max(max_item, item)
    if texts:
        max_item = max(max_item, max(texts))
    ids = [str(i) for i in range(max_item + 1)]
    titles = [texts.get(i, "") for i in range(max_item + 1)] if texts is not None else list(ids)
    return files, ItemCatalog(ids, titles), [str(u) for u in range(max_user + 1)]


def _coo(rows: list[tuple[int, int, list[int]]]) -> tuple[np.ndarray, np.ndarray]:
    users = np.array([user for _, user, items in rows for _ in items], dtype=np.int64)
    items = np.array([item for _, _, items in rows for item in items], dtype=np.int64)
    return users, items


def load_lightgcn_txt(
    folder: str | Path, name: str | None = None, valid_fraction: float = 0.1, seed: int = 2024
) -> SplitData:
    """The fixed split of a LightGCN-format folder (see the module docstring).

    Without ``valid.txt``, ``valid_fraction`` of each user's training items are moved to validation
    (:func:`~lmrec.data.splits.carve_validation` with ``seed``). Protocol: ``"fixed files (train.txt, ...)"``.
    """
    folder = Path(folder)
    files, catalog, user_ids = _read_folder(folder)
    shape = (len(user_ids), len(catalog))
    matrices = {}
    for split in SPLIT_FILES:
        users, items = _coo(files[split][1]) if split in files else (np.zeros(0, np.int64), np.zeros(0, np.int64))
        matrices[split] = to_csr(users, items, *shape)
    protocol = f"fixed files ({', '.join(path.name for path, _ in files.values())})"
    data = SplitData(name or folder.name, user_ids, catalog, matrices["train"], matrices["valid"], matrices["test"], protocol)
    return data if "valid" in files else carve_validation(data, valid_fraction, seed)


def load_lightgcn_interactions(folder: str | Path, name: str | None = None) -> Interactions:
    """All rows of train, valid and test together (no ratings, no timestamps), for re-splitting."""
    folder = Path(folder)
    files, catalog, user_ids = _read_folder(folder)
    rows = [row for split in SPLIT_FILES if split in files for row in files[split][1]]
    users, items = _coo(rows)
    return Interactions(users, items, user_ids, catalog, name=name or folder.name)
