"""Amazon review data: the raw 2014 / 2018 releases and two standard preprocessings (UniSRec, LC-Rec).

Raw releases (one record per line, plain or ``.gz``):

* 2014 (McAuley et al.): reviews ``reviews_<Category>_5.json.gz`` are JSON, metadata ``meta_<Category>.json.gz``
  are Python dict literals (``{'asin': '0000031852', 'title': 'Girls Ballet Tutu', 'brand': 'Coxlists',
  'categories': [['Sports & Outdoors', 'Dance']], 'description': '...'}``); each line is read as JSON and,
  failing that, with :func:`ast.literal_eval` (never ``eval``).
* 2018 (Ni et al.): ``<Category>_5.json.gz`` and ``meta_<Category>.json.gz``, strict JSON per line; metadata
  has ``category`` (a list) and ``description`` (a list of paragraphs).

Reviews need ``reviewerID``, ``asin``, ``overall`` and ``unixReviewTime``:
``{"reviewerID": "A1JB7HFWHRYHT7", "asin": "B0000223SI", "overall": 5.0, "unixReviewTime": 1510012800, ...}``.
Each review is one interaction (rating = ``overall``, timestamp = ``unixReviewTime``). The catalog holds the
reviewed items only, in order of first review; items without a metadata record get an empty title and empty
fields (they are kept, not dropped). Metadata records of items nobody reviewed are ignored; a repeated
metadata record of the same asin (the 2018 files have some) keeps the first.
"""

from __future__ import annotations

import ast
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from lmrec.data.catalog import ItemCatalog
from lmrec.data.interactions import Interactions, SplitData, to_csr
from lmrec.data.loaders.lightgcn_txt import iter_lines, parse_int
from lmrec.data.loaders.recbole import chain_sequence
from lmrec.errors import DataFormatError, MissingFileError

META_FIELDS = ("brand", "categories", "description")


def _records(path: Path, strict: bool) -> Iterator[tuple[int, dict[str, Any]]]:
    """``(line_number, record)`` per non-blank line: JSON, or (``strict=False``) a Python dict literal."""
    for line_no, line in iter_lines(path):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            if strict:
                raise DataFormatError(path, line_no, f"expected a JSON object, got invalid JSON ({exc.msg})") from None
            try:
                record = ast.literal_eval(line)
            except (ValueError, SyntaxError, MemoryError, RecursionError) as error:
                raise DataFormatError(
                    path, line_no, f"expected a JSON object or Python dict literal, got unparsable text ({error})"
                ) from None
        if not isinstance(record, dict):
            raise DataFormatError(path, line_no, f"expected an object per line, got {type(record).__name__}")
        yield line_no, record


def _text(value: Any, sep: str = " ") -> str:
    """Metadata value -> text: lists are joined (nested lists: inner by ``", "``, outer by ``"; "``)."""
    if value is None:
        return ""
    if isinstance(value, list):
        if value and all(isinstance(v, list) for v in value):
            return "; ".join(", ".join(str(x).strip() for x in path) for path in value)
        return sep.join(str(v).strip() for v in value if str(v).strip())
    return str(value).strip()


def read_amazon_meta(path: Path, strict: bool) -> dict[str, dict[str, str]]:
    """asin -> ``{"title", "brand", "categories", "description"}`` texts (first record of each asin)."""
    meta: dict[str, dict[str, str]] = {}
    for line_no, record in _records(path, strict):
        if "asin" not in record:
            raise DataFormatError(path, line_no, f"expected an 'asin' key, got keys {sorted(record)[:10]}")
        asin = str(record["asin"]).strip()
        if asin in meta:
            continue
        categories = record.get("categories", record.get("category"))
        meta[asin] = {
            "title": _text(record.get("title")),
            "brand": _text(record.get("brand")),
            "categories": _text(categories, sep=", "),
            "description": _text(record.get("description")),
        }
    return meta


def load_amazon_reviews(
    reviews: str | Path,
    meta: str | Path | None = None,
    version: Literal["2014", "2018"] = "2018",
    min_rating: float | None = None,
    name: str | None = None,
) -> Interactions:
    """Interactions from a raw review file and (optionally) its metadata file; see the module docstring.

    ``min_rating`` keeps only reviews with ``overall >= min_rating`` (None: every review counts).
    """
    if version not in ("2014", "2018"):
        raise ValueError(f"unknown Amazon release {version!r}: expected '2014' or '2018'")
    reviews, strict = Path(reviews), version == "2018"
    user_index: dict[str, int] = {}
    item_index: dict[str, int] = {}
    users, items, ratings, times = [], [], [], []
    for line_no, record in _records(reviews, strict):
        missing = [k for k in ("reviewerID", "asin", "overall", "unixReviewTime") if k not in record]
        if missing:
            raise DataFormatError(
                reviews, line_no, f"expected keys reviewerID, asin, overall, unixReviewTime, got no {missing}"
            )
        try:
            rating = float(record["overall"])
        except (TypeError, ValueError):
            raise DataFormatError(
                reviews, line_no, f"expected a numeric 'overall', got {record['overall']!r}"
            ) from None
        timestamp = parse_int(reviews, line_no, str(record["unixReviewTime"]), "unixReviewTime")
        if min_rating is not None and rating < min_rating:
            continue
        users.append(user_index.setdefault(str(record["reviewerID"]).strip(), len(user_index)))
        items.append(item_index.setdefault(str(record["asin"]).strip(), len(item_index)))
        ratings.append(rating)
        times.append(timestamp)
    info = read_amazon_meta(Path(meta), strict) if meta is not None else {}
    asins = list(item_index)
    empty = {"title": "", **{f: "" for f in META_FIELDS}}
    records = [info.get(asin, empty) for asin in asins]
    catalog = ItemCatalog(
        asins, [r["title"] for r in records], {f: [r[f] for r in records] for f in META_FIELDS}
    )
    return Interactions(
        np.array(users, dtype=np.int64), np.array(items, dtype=np.int64), list(user_index), catalog,
        np.array(ratings, dtype=np.float32), np.array(times, dtype=np.int64), name or _category(reviews),
    )


def _category(path: Path) -> str:
    stem = path.name.split(".json")[0]
    return stem.removeprefix("reviews_")


def find_amazon_files(folder: str | Path) -> tuple[Path, Path | None]:
    """The review file and the metadata file (``meta_*``, optional) of a folder of raw ``*.json[.gz]`` files."""
    folder = Path(folder)
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.name.endswith((".json", ".json.gz")))
    metas = [p for p in files if p.name.startswith("meta_")]
    reviews = [p for p in files if not p.name.startswith("meta_")]
    if len(reviews) != 1 or len(metas) > 1:
        raise MissingFileError(
            f"{folder}: the Amazon review format needs one review file (*.json[.gz]) and at most one "
            f"meta_*.json[.gz], found reviews {_names(reviews)} and metadata {_names(metas)}"
        )
    return reviews[0], (metas[0] if metas else None)


def amazon_release(folder: str | Path) -> Literal["2014", "2018"]:
    """Guess the release of a raw folder: 2014 when the review file is ``reviews_*`` or metadata is not JSON."""
    reviews, meta = find_amazon_files(folder)
    if reviews.name.startswith("reviews_"):
        return "2014"
    if meta is not None:
        for _, line in iter_lines(meta):
            if line.strip():
                return "2018" if line.lstrip().startswith('{"') else "2014"
    return "2018"


def load_amazon_2014(path: str | Path, min_rating: float | None = None, name: str | None = None) -> Interactions:
    """A 2014 folder (review file + optional ``meta_*``) or a single review file."""
    reviews, meta = find_amazon_files(path) if Path(path).is_dir() else (Path(path), None)
    return load_amazon_reviews(reviews, meta, "2014", min_rating, name)


def load_amazon_2018(path: str | Path, min_rating: float | None = None, name: str | None = None) -> Interactions:
    """A 2018 folder (review file + optional ``meta_*``) or a single review file."""
    reviews, meta = find_amazon_files(path) if Path(path).is_dir() else (Path(path), None)
    return load_amazon_reviews(reviews, meta, "2018", min_rating, name)


# --- UniSRec / RecBole atomic files ------------------------------------------------------------------------


@dataclass
class UniSRecSequences:
    """Per-user chronological item sequences rebuilt from UniSRec's ``*.inter`` files (dense indices)."""

    name: str
    user_ids: list[str]
    catalog: ItemCatalog
    sequences: list[list[int]]
    files: list[Path]


def _prefix(folder: Path, suffix: str) -> str:
    found = sorted(folder.glob(f"*{suffix}"))
    if len(found) != 1:
        raise MissingFileError(f"{folder}: the unisrec format needs exactly one *{suffix} file, found {_names(found)}")
    return found[0].name[: -len(suffix)]


def _names(paths: list[Path]) -> str:
    """``none`` or the file names, comma-separated."""
    return ", ".join(p.name for p in paths) or "none"


def _read_index(path: Path) -> list[str]:
    """``*.item2index`` / ``*.user2index``: ``B00TNNWMXI<TAB>0`` -> the external ids ordered by index."""
    ids: dict[int, str] = {}
    for line_no, line in iter_lines(path):
        if not line.strip():
            continue
        parts = line.split("\t")
        if len(parts) != 2:
            raise DataFormatError(path, line_no, f"expected 2 tab-separated columns (id, index), got {len(parts)}")
        index = parse_int(path, line_no, parts[1].strip(), "index")
        if index in ids:
            raise DataFormatError(path, line_no, f"expected each index once, got {index} again")
        ids[index] = parts[0].strip()
    if sorted(ids) != list(range(len(ids))):
        raise DataFormatError(path, None, f"expected indices 0..{len(ids) - 1}, got gaps")
    return [ids[i] for i in range(len(ids))]


def _read_inter(path: Path, n_users: int, n_items: int) -> list[tuple[int, int, list[int], int]]:
    """``*.inter``: header ``user_id:token<TAB>item_id_list:token_seq<TAB>item_id:token``, then
    ``0<TAB>0 1 2 3<TAB>4`` -> ``(line, user, history, target)``."""
    rows = []
    for line_no, line in iter_lines(path):
        if line_no == 1:
            if not line.startswith("user_id"):
                raise DataFormatError(path, 1, f"expected a RecBole header 'user_id:token ...', got {line[:80]!r}")
            continue
        if not line.strip():
            continue
        parts = line.split("\t")
        if len(parts) != 3:
            raise DataFormatError(
                path, line_no, f"expected 3 tab-separated columns (user, history, target), got {len(parts)}"
            )
        user = parse_int(path, line_no, parts[0].strip(), "user index")
        history = [parse_int(path, line_no, t, "item index") for t in parts[1].split()]
        target = parse_int(path, line_no, parts[2].strip(), "item index")
        if user >= n_users:
            raise DataFormatError(path, line_no, f"expected a user index below {n_users}, got {user}")
        for item in (*history, target):
            if item >= n_items:
                raise DataFormatError(path, line_no, f"expected an item index below {n_items}, got {item}")
        rows.append((line_no, user, history, target))
    return rows


def read_unisrec(folder: str | Path, name: str | None = None) -> UniSRecSequences:
    """Read a UniSRec folder (``X.text``, ``X.item2index``, ``X.user2index``, ``X.{train,valid,test}.inter``).

    ``X.text`` (header ``item_id:token<TAB>text:token_seq``) gives one text per asin: title, categories and brand
    in one string, which becomes both the title and the ``text`` field (items without a line get ``""``).
    Catalog ids are the asins and user ids the reviewer ids, ordered by their UniSRec index.

    Histories in ``*.inter`` keep only the last 50 items, so a user's full sequence is rebuilt by chaining
    samples: starting from the shortest history, the sample whose history equals the current tail gives the
    next item. Every sample of the user must be used exactly once, or :class:`DataFormatError` is raised.
    """
    folder = Path(folder)
    prefix = _prefix(folder, ".train.inter")
    item_ids = _read_index(folder / f"{prefix}.item2index")
    user_ids = _read_index(folder / f"{prefix}.user2index")
    text_path = folder / f"{prefix}.text"
    texts: dict[str, str] = {}
    for line_no, line in iter_lines(text_path):
        if line_no == 1:
            if not line.startswith("item_id"):
                raise DataFormatError(text_path, 1, f"expected a RecBole header 'item_id:token ...', got {line[:80]!r}")
            continue
        if line.strip():
            parts = line.split("\t", 1)
            if len(parts) != 2:
                raise DataFormatError(
                    text_path, line_no, f"expected 2 tab-separated columns (item_id, text), got {line[:80]!r}"
                )
            texts[parts[0].strip()] = parts[1].strip()
    titles = [texts.get(asin, "") for asin in item_ids]
    catalog = ItemCatalog(item_ids, titles, {"text": list(titles)})

    files = [folder / f"{prefix}.{split}.inter" for split in ("train", "valid", "test")]
    samples: list[list[tuple[Path, int, list[int], int]]] = [[] for _ in user_ids]
    for path in files:
        for line_no, user, history, target in _read_inter(path, len(user_ids), len(item_ids)):
            samples[user].append((path, line_no, history, target))
    cap = max((len(h) for rows in samples for _, _, h, _ in rows), default=0)
    sequences = [chain_sequence(rows, cap, user_ids[u], files[-1])[0] if rows else [] for u, rows in enumerate(samples)]
    return UniSRecSequences(name or prefix, user_ids, catalog, sequences, files)


def load_unisrec_interactions(folder: str | Path, name: str | None = None) -> Interactions:
    """Full UniSRec sequences as Interactions; the position in the sequence is the (pseudo-)timestamp."""
    data = read_unisrec(folder, name)
    users = np.repeat(np.arange(len(data.user_ids)), [len(s) for s in data.sequences])
    items = np.array([i for s in data.sequences for i in s], dtype=np.int64)
    times = np.array([t for s in data.sequences for t in range(len(s))], dtype=np.int64)
    return Interactions(users, items, data.user_ids, data.catalog, timestamps=times, name=data.name)


def load_unisrec_split(folder: str | Path, name: str | None = None) -> SplitData:
    """UniSRec's own leave-one-out split: per user, the last item tests, the one before validates, the rest train.

    This is exactly the files' split (valid/test targets), including targets that also occur earlier in the
    user's sequence (repeat purchases): such a test pair is then also a training pair.
    """
    data = read_unisrec(folder, name)
    parts = {"train": ([], []), "valid": ([], []), "test": ([], [])}
    for user, sequence in enumerate(data.sequences):
        for label, items in (("train", sequence[:-2]), ("valid", sequence[-2:-1]), ("test", sequence[-1:])):
            parts[label][0].extend([user] * len(items))
            parts[label][1].extend(items)
    shape = (len(data.user_ids), len(data.catalog))
    train, valid, test = (
        to_csr(np.array(u, dtype=np.int64), np.array(i, dtype=np.int64), *shape) for u, i in parts.values()
    )
    protocol = f"fixed files ({', '.join(p.name for p in data.files)}): leave-one-out"
    return SplitData(data.name, data.user_ids, data.catalog, train, valid, test, protocol)


# --- LC-Rec files ------------------------------------------------------------------------------------------


def _json_file(path: Path) -> Any:
    text = "\n".join(line for _, line in iter_lines(path))
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataFormatError(path, exc.lineno, f"expected JSON, got {exc.msg} (column {exc.colno})") from None


def _one(folder: Path, suffix: str) -> Path:
    found = sorted(folder.glob(f"*{suffix}")) + sorted(folder.glob(f"*{suffix}.gz"))
    if len(found) != 1:
        raise MissingFileError(f"{folder}: the lcrec format needs exactly one *{suffix}[.gz] file, "
                               f"found {_names(found)}")
    return found[0]


def load_lcrec(folder: str | Path, name: str | None = None) -> Interactions:
    """LC-Rec files: ``X.item.json[.gz]`` and ``X.inter.json[.gz]``, each one JSON object.

    Items: ``{"1": {"title": "Stanley Staples.", "description": "...", "brand": "Stanley", "categories":
    "Industrial & Scientific,Fasteners"}}`` -> catalog (ids are LC-Rec's item indices, sorted numerically; no
    asins). Interactions: ``{"1": [9, 10, 11, 12, 6]}`` = user -> chronological items; the position in the list is
    the (pseudo-)timestamp. An item missing from the item file raises :class:`DataFormatError` naming it.
    """
    folder = Path(folder)
    item_path, inter_path = _one(folder, ".item.json"), _one(folder, ".inter.json")
    records = _json_file(item_path)
    if not isinstance(records, dict) or not all(isinstance(v, dict) for v in records.values()):
        raise DataFormatError(
            item_path, None, "expected an object of item id -> {title, description, brand, categories}"
        )
    item_ids = sorted(records, key=lambda i: (not i.isdigit(), int(i) if i.isdigit() else 0, i))
    catalog = ItemCatalog(
        item_ids,
        [_text(records[i].get("title")) for i in item_ids],
        {f: [_text(records[i].get(f), sep=", " if f == "categories" else " ") for i in item_ids] for f in META_FIELDS},
    )
    sequences = _json_file(inter_path)
    if not isinstance(sequences, dict) or not all(isinstance(v, list) for v in sequences.values()):
        raise DataFormatError(inter_path, None, "expected an object of user id -> list of item ids")
    user_ids = sorted(sequences, key=lambda u: (not u.isdigit(), int(u) if u.isdigit() else 0, u))
    users, items, times = [], [], []
    for user_index, user in enumerate(user_ids):
        for position, item in enumerate(sequences[user]):
            if str(item) not in catalog:
                raise DataFormatError(
                    inter_path, None, f"user {user!r}: expected item ids listed in {item_path}, got {item!r}"
                )
            users.append(user_index)
            items.append(catalog.index(item))
            times.append(position)
    return Interactions(
        np.array(users, dtype=np.int64), np.array(items, dtype=np.int64), user_ids, catalog,
        timestamps=np.array(times, dtype=np.int64), name=name or item_path.name.split(".")[0],
    )
