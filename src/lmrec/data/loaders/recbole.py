"""RecBole atomic files: ``X.inter`` (or ``X.train.inter`` / ``X.valid.inter`` / ``X.test.inter``, any of them) and
an optional ``X.item``, tab-separated, each with a typed header of ``name:type`` fields (type ``token``,
``token_seq``, ``float`` or ``float_seq``; ``.gz`` files are read too).

Interactions come in one of two forms, told apart by the header:

* rows: ``user_id:token  item_id:token  [rating:float]  [timestamp:float]  ...``: one interaction per line, e.g.
  ``u17<TAB>B00X4<TAB>5.0<TAB>1510012800``; other fields are ignored.
* sequences: ``user_id:token  item_id_list:token_seq  item_id:token``: the user's history in time order, then the
  next item, e.g. ``0<TAB>0 1 2 3<TAB>4``. A user's full sequence is rebuilt by chaining their lines (the line whose
  history is the current sequence's tail gives the next item), so the files of a leave-one-out split give one
  sequence back; the position in it is the (pseudo-)timestamp. Histories are often capped (RecBole's
  ``MAX_ITEM_LIST_LENGTH``): chaining compares the last ``cap`` items.

``X.item``: ``item_id:token`` and any text fields, e.g. ``item_id:token<TAB>title:token_seq<TAB>brand:token``. The
``title`` field (else the first text field) is the title; every text field is kept (``ItemCatalog.fields``). A
UniSRec ``X.text`` file (``item_id:token<TAB>text:token_seq``) is read the same way when there is no ``X.item``.
The catalog holds the items that occur in the interactions, in ``X.item`` order (then in order of first
appearance); an item without a line in ``X.item`` gets an empty title. Users are in order of first appearance.
External ids are the tokens, as text.

``split="fixed"`` (needs a ``valid`` or ``test`` file): rows: each file is its split; sequences: each line's target
goes to its file's split and the rest of the sequence trains (a leave-one-out split such as LLMRank's Games-6k).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from lmrec.data.catalog import ItemCatalog
from lmrec.data.interactions import Interactions, SplitData, to_csr
from lmrec.data.loaders.lightgcn_txt import iter_lines, shown
from lmrec.errors import Argument, ArgumentError, DataFormatError

TYPES = ("token", "token_seq", "float", "float_seq")
SPLIT_NAMES = ("train", "valid", "test")
USER, ITEM, ITEM_LIST, RATING, TIME = "user_id", "item_id", "item_id_list", "rating", "timestamp"


def parse_header(path: Path, line: str) -> list[tuple[str, str]]:
    """``"user_id:token<TAB>item_id:token"`` -> ``[("user_id", "token"), ("item_id", "token")]``."""
    fields = []
    for part in line.rstrip("\r").split("\t"):
        name, colon, kind = part.strip().rpartition(":")
        if not colon or not name or kind not in TYPES:
            raise DataFormatError(path, 1, f"expected a RecBole header of name:type fields (type one of "
                                  f"{', '.join(TYPES)}), got {shown(part)}")
        fields.append((name, kind))
    return fields


def read_table(path: Path) -> tuple[list[tuple[str, str]], list[tuple[int, list[str]]]]:
    """(header fields, [(line number, values)]) of one atomic file; each line must have one value per field."""
    header: list[tuple[str, str]] = []
    rows = []
    for line_no, line in iter_lines(path):
        if line_no == 1:
            header = parse_header(path, line)
            continue
        if not line.strip():
            continue
        values = line.rstrip("\r").split("\t")
        if len(values) != len(header):
            raise DataFormatError(path, line_no, f"expected {len(header)} tab-separated values "
                                  f"({', '.join(n for n, _ in header)}), got {len(values)}")
        rows.append((line_no, values))
    if not header:
        raise DataFormatError(path, None, "expected a header line, got an empty file")
    return header, rows


def _column(path: Path, header: list[tuple[str, str]], name: str, kinds: tuple[str, ...]) -> int | None:
    names = [n for n, _ in header]
    if name not in names:
        return None
    kind = header[names.index(name)][1]
    if kind not in kinds:
        raise DataFormatError(path, 1, f"expected field {name!r} of type {' or '.join(kinds)}, got {kind}")
    return names.index(name)


def _float(path: Path, line_no: int, text: str, what: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise DataFormatError(path, line_no, f"expected a number for {what}, got {shown(text)}") from None
    if not np.isfinite(value):
        raise DataFormatError(path, line_no, f"expected a finite number for {what}, got {shown(text)}")
    return value


@dataclass
class AtomicFiles:
    """The files of one RecBole dataset folder."""

    folder: Path
    prefix: str
    inter: dict[str, Path]  # "all" (X.inter) or split name -> file
    item: Path | None

    @classmethod
    def find(cls, folder: str | Path) -> AtomicFiles:
        folder = Path(folder)
        inters = sorted(p for p in folder.iterdir() if p.is_file() and p.name.endswith((".inter", ".inter.gz")))
        if not inters:
            raise FileNotFoundError(f"{folder}: expected RecBole atomic files (X.inter or X.train/valid/test.inter), "
                                    "found none")
        stems = [p.name.removesuffix(".gz").removesuffix(".inter") for p in inters]
        prefixes = {s.rsplit(".", 1)[0] if s.rsplit(".", 1)[-1] in SPLIT_NAMES else s for s in stems}
        if len(prefixes) != 1:
            raise FileNotFoundError(f"{folder}: expected the .inter files of one dataset, got {sorted(prefixes)}")
        prefix = prefixes.pop()
        inter = {("all" if s == prefix else s.rsplit(".", 1)[-1]): p for s, p in zip(stems, inters, strict=True)}
        if "all" in inter and len(inter) > 1:
            raise FileNotFoundError(f"{folder}: both {prefix}.inter and per-split .inter files; keep one form")
        item = next((folder / f"{prefix}{suffix}" for suffix in (".item", ".item.gz", ".text", ".text.gz")
                     if (folder / f"{prefix}{suffix}").is_file()), None)
        return cls(folder, prefix, inter, item)


@dataclass
class _Log:
    """Interactions as read, external ids; ``part[k]`` is the file (split name or "all") of row ``k``."""

    users: list[str] = field(default_factory=list)
    items: list[str] = field(default_factory=list)
    ratings: list[float] = field(default_factory=list)
    times: list[float] = field(default_factory=list)
    part: list[str] = field(default_factory=list)


def _read_rows(files: AtomicFiles) -> tuple[_Log, bool]:
    """Every interaction of the ``.inter`` files (rows or rebuilt sequences); True when they were sequences."""
    log, sequences = _Log(), {}
    forms = set()
    for part, path in files.inter.items():
        header, rows = read_table(path)
        user = _column(path, header, USER, ("token",))
        item = _column(path, header, ITEM, ("token",))
        if user is None or item is None:
            raise DataFormatError(path, 1, f"expected fields {USER}:token and {ITEM}:token, got "
                                  f"{', '.join(f'{n}:{k}' for n, k in header)}")
        history = _column(path, header, ITEM_LIST, ("token_seq",))
        forms.add(history is not None)
        if history is not None:
            for line_no, values in rows:
                sequences.setdefault(values[user], []).append((path, line_no, values[history].split(), values[item],
                                                               part))
            continue
        rating, time = _column(path, header, RATING, ("float",)), _column(path, header, TIME, ("float",))
        for line_no, values in rows:
            log.users.append(values[user])
            log.items.append(values[item])
            log.ratings.append(np.nan if rating is None else _float(path, line_no, values[rating], RATING))
            log.times.append(np.nan if time is None else _float(path, line_no, values[time], TIME))
            log.part.append(part)
    if len(forms) > 1:
        raise DataFormatError(files.folder, None, f"expected every .inter file in one form, rows or sequences "
                              f"({ITEM_LIST}), got both")
    if sequences:
        cap = max(len(h) for lines in sequences.values() for _, _, h, _, _ in lines)
        for user, lines in sequences.items():
            items, parts = chain_sequence([(p, n, h, t) for p, n, h, t, _ in lines], cap, user, files.folder,
                                          [part for *_, part in lines])
            log.users += [user] * len(items)
            log.items += items
            log.times += list(range(len(items)))
            log.ratings += [np.nan] * len(items)
            log.part += parts
    return log, bool(sequences)


def chain_sequence(rows: Sequence[tuple[Path, int, list, object]], cap: int, user: str, where: Path,
                   labels: Sequence[str] | None = None) -> tuple[list, list[str]]:
    """(the user's full item sequence, the label of the line each item came from) from ``(file, line, history,
    target)`` lines: start from the line whose history no other line leads to (its history + target, last ``cap``
    items) and append the target of the line whose history equals the sequence's last ``cap`` items, until none
    does. The items of the first history get the label ``"train"``; every line must be used exactly once, or
    :class:`DataFormatError` names the user."""
    labels = list(labels) if labels is not None else ["train"] * len(rows)
    by_history: dict[tuple, tuple[Path, int, object, str]] = {}
    for (path, line_no, history, target), label in zip(rows, labels, strict=True):
        key = tuple(history)
        if key in by_history and by_history[key][2] != target:
            raise DataFormatError(path, line_no, f"expected one next item after this history of user {user!r}, got two")
        by_history[key] = (path, line_no, target, label)
    led_to = {tuple((list(h) + [t])[-cap:]) if cap else () for _, _, h, t in rows}
    starts = [list(h) for _, _, h, _ in rows if tuple(h) not in led_to] or [min((r[2] for r in rows), key=len)]
    sequence = list(starts[0])
    origin, start = ["train"] * len(sequence), len(sequence)
    while True:
        found = by_history.pop(tuple(sequence[-cap:]) if cap else (), None)
        if found is None:
            break
        sequence.append(found[2])
        origin.append(found[3])
    if by_history or len(sequence) - start != len(rows):
        raise DataFormatError(where, None, f"expected the lines of user {user!r} to chain into one sequence, "
                              "they do not")
    return sequence, origin


def _read_items(path: Path | None) -> tuple[list[str], dict[str, dict[str, str]]]:
    """(item ids in file order, id -> {field: text}) of ``X.item`` / ``X.text`` (empty without one)."""
    if path is None:
        return [], {}
    header, rows = read_table(path)
    item = _column(path, header, ITEM, ("token",))
    if item is None:
        raise DataFormatError(path, 1, f"expected an {ITEM}:token field, got {', '.join(n for n, _ in header)}")
    texts = [(i, n) for i, (n, k) in enumerate(header) if i != item and k in ("token", "token_seq")]
    order, records = [], {}
    for _, values in rows:
        item_id = values[item]
        if item_id not in records:
            order.append(item_id)
            records[item_id] = {n: values[i].strip() for i, n in texts}
    return order, records


def _catalog(files: AtomicFiles, item_ids: list[str]) -> ItemCatalog:
    """The catalog of ``item_ids`` (ordered) with their texts from the item file."""
    _, records = _read_items(files.item)
    names = list(next(iter(records.values()), {}))
    title = "title" if "title" in names else (names[0] if names else None)
    get = lambda i, n: records.get(i, {}).get(n, "")  # noqa: E731
    titles = [get(i, title) if title else i for i in item_ids]
    return ItemCatalog(item_ids, titles, {n: [get(i, n) for i in item_ids] for n in names if n != "title"})


def _indexed(files: AtomicFiles, log: _Log, name: str | None) -> tuple[Interactions, np.ndarray]:
    """(Interactions of ``log``, the file label of each row)."""
    file_order, _ = _read_items(files.item)
    present = dict.fromkeys(log.items)
    item_ids = [i for i in file_order if i in present] + [i for i in present if i not in set(file_order)]
    item_index = {item_id: k for k, item_id in enumerate(item_ids)}
    user_ids = list(dict.fromkeys(log.users))
    user_index = {u: k for k, u in enumerate(user_ids)}
    ratings, times = np.array(log.ratings, np.float32), np.array(log.times, np.float64)
    data = Interactions(
        np.array([user_index[u] for u in log.users], np.int64), np.array([item_index[i] for i in log.items], np.int64),
        user_ids, _catalog(files, item_ids),
        None if np.isnan(ratings).all() else ratings, None if np.isnan(times).all() else times.astype(np.int64),
        name or files.prefix)
    return data, np.array(log.part)


def load_recbole(folder: str | Path, name: str | None = None, min_rating: float | None = None) -> Interactions:
    """Every interaction of a RecBole atomic folder (see the module docstring)."""
    files = AtomicFiles.find(folder)
    log, _ = _read_rows(files)
    data, _ = _indexed(files, log, name)
    if min_rating is not None:
        if data.ratings is None:
            raise ValueError(f"{files.folder}: the .inter files have no {RATING} field: min_rating must be None")
        data = data.select(data.ratings >= min_rating).compact()
    return data


def load_recbole_split(folder: str | Path, name: str | None = None) -> SplitData:
    """The split the files carry (see the module docstring); an error without a valid or test file."""
    files = AtomicFiles.find(folder)
    if not {"valid", "test"} & set(files.inter):
        raise ArgumentError(f"{files.folder}: no {files.prefix}.valid.inter or .test.inter: the files carry no split; "
                            "choose one with ", Argument("split"), " (e.g. ratio:0.8,0.1,0.1)")
    log, sequences = _read_rows(files)
    data, part = _indexed(files, log, name)
    masks = [part == s for s in SPLIT_NAMES]
    train, valid, test = (to_csr(data.users[m], data.items[m], data.n_users, data.n_items) for m in masks)
    train = train - train.multiply(valid) - train.multiply(test)  # a repeated item held out is not also trained on
    train.eliminate_zeros()
    kind = "leave-one-out targets of the sequence files" if sequences else "one split per file"
    protocol = f"fixed files ({', '.join(p.name for p in files.inter.values())}): {kind}"
    return SplitData(data.name, data.user_ids, data.catalog, train, valid, test, protocol)
