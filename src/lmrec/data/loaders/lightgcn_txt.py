"""LightGCN / AlphaRec text format: one line per user, ``user item item ...``, in fixed train/valid/test files.

A dataset is a folder with::

    train.txt        0 12 7 301        <- user 0 trained on items 12, 7 and 301
    test.txt         0 5
    valid.txt        (optional; when missing, validation is carved from train)
    items.tsv        (optional) header ``item_id<TAB>text``, then ``12<TAB>Stanley Staples (1000 Count)``

Each file may be gzipped (``train.txt.gz``). A line with a user and no items (``3``) is allowed; blank lines
are skipped. Ids are non-negative integers below 2⁶³; the users and items are the ids that occur (in any file, or
in ``items.tsv``), in increasing order, mapped to dense indices: memory grows with the number of distinct ids, not
with the largest one. With the usual contiguous ids 0..n-1 (the official LightGCN / AlphaRec files) user ``u`` is
row ``u`` and item ``i`` column ``i``, so precomputed embeddings indexed by the file ids line up. External ids are
the ids as strings. Item titles are the ``items.tsv`` texts, or the ids without that file. A file whose last line
has no final newline is read, with a warning: a file cut short may end in a truncated id.
"""

from __future__ import annotations

import gzip
import warnings
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lmrec.data.catalog import ItemCatalog
from lmrec.data.interactions import Interactions, SplitData, to_csr
from lmrec.data.splits import carve_validation
from lmrec.errors import DataFormatError, MissingFileError

SPLIT_FILES = ("train", "valid", "test")


MAX_ID = 2**63 - 1
MAX_SHOWN = 40  # characters of a bad token shown in an error message


def shown(token: str) -> str:
    """``repr`` of a token, cut to :data:`MAX_SHOWN` characters (a binary file can hold one huge "token")."""
    return repr(token) if len(token) <= MAX_SHOWN else f"{token[:MAX_SHOWN]!r}... ({len(token)} characters)"


def iter_lines(path: Path, encoding: str = "utf-8", records: bool = False) -> Iterator[tuple[int, str]]:
    """Yield ``(line_number, line)`` (1-based, newline stripped) of a plain or ``.gz`` text file.

    A truncated or corrupt gzip stream, undecodable bytes and NUL bytes raise :class:`DataFormatError` naming the
    file and the line where reading stopped. ``records``: one record per line, where a last line without a final
    newline is ambiguous (a file cut short ends in a truncated value): warned about.
    """
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    line_no = 0
    try:
        with opener(path, "rt", encoding=encoding) as handle:
            for line_no, line in enumerate(handle, 1):
                if "\x00" in line:
                    raise DataFormatError(path, line_no, "expected text, got NUL bytes (a binary file?)")
                if records and not line.endswith("\n") and line.strip():
                    warnings.warn(f"{path}, line {line_no}: the file does not end with a newline; if it was cut "
                                  "short, its last value may be truncated", stacklevel=2)
                yield line_no, line.rstrip("\r\n")
    except (EOFError, zlib.error, gzip.BadGzipFile) as exc:
        raise DataFormatError(
            path, line_no + 1, f"expected a complete gzip stream, got a truncated or corrupt file ({exc})"
        ) from None
    except UnicodeDecodeError as exc:
        raise DataFormatError(
            path, line_no + 1, f"expected {encoding} text, got undecodable bytes ({exc.reason})"
        ) from None


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
        raise DataFormatError(path, line, f"expected an integer {what}, got {shown(token)}") from None
    if not 0 <= value <= MAX_ID:
        raise DataFormatError(path, line, f"expected a {what} between 0 and 2^63 - 1, got {shown(token)}")
    return value


def read_user_items(path: Path) -> list[tuple[int, int, list[int]]]:
    """``(line_number, user, items)`` for each non-blank line of a ``user item item ...`` file."""
    rows = []
    for line_no, line in iter_lines(path, records=True):
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


@dataclass
class _Folder:
    """The files of a folder as dense (user, item) index arrays, with the id mappings."""

    rows: dict[str, tuple[np.ndarray, np.ndarray]]  # split -> (users, items), dense indices
    files: dict[str, Path]
    catalog: ItemCatalog
    user_ids: list[str]


def _read_folder(folder: Path) -> _Folder:
    folder = Path(folder)
    files = {}
    for split in SPLIT_FILES:
        path = find_file(folder, f"{split}.txt")
        if path is not None:
            files[split] = path
        elif split != "valid":
            raise MissingFileError(f"{folder}: no {split}.txt or {split}.txt.gz, which the lightgcn format needs")
    text_path = find_file(folder, "items.tsv")
    texts = read_item_texts(text_path) if text_path else None
    raw: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    users_seen = []
    for split, path in files.items():
        users, items = [], []
        for line_no, user, row in read_user_items(path):
            if texts is not None:
                for item in row:
                    if item not in texts:
                        raise DataFormatError(path, line_no, f"expected an item id listed in {text_path}, got {item}")
            users_seen.append(user)
            users.extend([user] * len(row))
            items.extend(row)
        raw[split] = (np.array(users, dtype=np.int64), np.array(items, dtype=np.int64))
    user_values = np.unique(np.array(users_seen, dtype=np.int64))
    item_values = np.unique(np.concatenate([i for _, i in raw.values()] +
                                           [np.array(sorted(texts or ()), dtype=np.int64)]))
    rows = {split: (np.searchsorted(user_values, u), np.searchsorted(item_values, i)) for split, (u, i) in raw.items()}
    ids = [str(i) for i in item_values.tolist()]
    titles = [texts[i] for i in item_values.tolist()] if texts is not None else list(ids)
    return _Folder(rows, files, ItemCatalog(ids, titles), [str(u) for u in user_values.tolist()])


def load_lightgcn_txt(
    folder: str | Path, name: str | None = None, valid_fraction: float = 0.1, seed: int = 2024
) -> SplitData:
    """The fixed split of a LightGCN-format folder (see the module docstring).

    Without ``valid.txt``, ``valid_fraction`` of each user's training items are moved to validation
    (:func:`~lmrec.data.splits.carve_validation` with ``seed``). Protocol: ``"fixed files (train.txt, ...)"``.
    """
    folder = Path(folder)
    read = _read_folder(folder)
    shape = (len(read.user_ids), len(read.catalog))
    empty = (np.zeros(0, np.int64), np.zeros(0, np.int64))
    matrices = {split: to_csr(*read.rows.get(split, empty), *shape) for split in SPLIT_FILES}
    protocol = f"fixed files ({', '.join(path.name for path in read.files.values())})"
    data = SplitData(name or folder.name, read.user_ids, read.catalog, matrices["train"], matrices["valid"],
                     matrices["test"], protocol)
    return data if "valid" in read.files else carve_validation(data, valid_fraction, seed)


def load_lightgcn_interactions(folder: str | Path, name: str | None = None) -> Interactions:
    """All rows of train, valid and test together (no ratings, no timestamps), for re-splitting."""
    folder = Path(folder)
    read = _read_folder(folder)
    users = np.concatenate([read.rows[s][0] for s in SPLIT_FILES if s in read.rows])
    items = np.concatenate([read.rows[s][1] for s in SPLIT_FILES if s in read.rows])
    return Interactions(users, items, read.user_ids, read.catalog, name=name or folder.name)
