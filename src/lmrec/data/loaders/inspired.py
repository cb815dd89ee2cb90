"""INSPIRED (Hayati et al., EMNLP 2020): the UniCRS-processed jsonl and the official tsv.

INSPIRED ships no movie id file here, so a movie's id *is* its cleaned ``"Title (Year)"`` string (runs of spaces
collapsed, ends stripped; empty titles are dropped and counted in ``skipped["empty_title"]``). Roles: ``SEEKER`` ->
``"user"``, ``RECOMMENDER`` -> ``"system"``. Turn texts already contain the titles as the people typed them.

UniCRS jsonl (``unicrs_processed/{train,valid,test}_data_dbpedia.jsonl``), one dialog per line = a list of turns::

    [{"text": "Hi! I'm here to help you chose a movie!", "role": "RECOMMENDER", "movie": [], ...},
     {"text": "the last movie i saw ... was Hustlers .", "role": "SEEKER", "movie": ["Hustlers (2019)"], ...}, ...]

Official tsv (``official/{dev,test}.tsv``; columns in ``official/dialog_data_README.md``), one utterance per row::

    dialog_id  utt_id  speaker  turn_id  text  text_with_placeholder  movies  ...  movie_dict  ...
    20191202-103716_425_live.pkl  4  SEEKER  2  I like ... drama  ...  Joker (2019); Alien (1979)  ...

Rows are grouped by ``dialog_id`` (in order of first appearance), consecutive utterances of one speaker are merged
into one turn (texts joined by a space, as UniCRS does), items come from the ``movies`` column (``;``-separated
titles) and the ``QUOTATION_MARK`` token in ``text`` becomes ``"``.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from lmrec.data.catalog import ItemCatalog
from lmrec.data.conversations import Conversation, CRSData, Turn, check_policy, iter_jsonl
from lmrec.errors import DataFormatError, MissingFileError, UnknownIdError

_ROLES = {"SEEKER": "user", "RECOMMENDER": "system"}
UNICRS_FILES = {split: f"unicrs_processed/{split}_data_dbpedia.jsonl" for split in ("train", "valid", "test")}
TSV_COLUMNS = ("dialog_id", "utt_id", "speaker", "text", "movies")


def clean_title(title: str) -> str:
    return " ".join(title.split())


def _bump(skipped: dict[str, int], reason: str) -> None:
    skipped[reason] = skipped.get(reason, 0) + 1


def _read_unicrs(path: Path) -> list[tuple[int, list[dict[str, Any]]]]:
    """(line, turns) per dialog, checking the shape of every turn."""
    dialogs = []
    for line, raw in iter_jsonl(path):
        if not isinstance(raw, list):
            raise DataFormatError(path, line, f"expected a JSON list of turns, got {type(raw).__name__}")
        for k, turn in enumerate(raw):
            if not isinstance(turn, dict) or not isinstance(turn.get("text"), str):
                raise DataFormatError(path, line, f"turn {k} has no text")
            if turn.get("role") not in _ROLES:
                got = turn.get("role")
                raise DataFormatError(path, line, f"turn {k}: role must be RECOMMENDER or SEEKER, got {got!r}")
            if not isinstance(turn.get("movie", []), list):
                raise DataFormatError(path, line, f"turn {k}: 'movie' must be a list of titles")
        dialogs.append((line, raw))
    return dialogs


def _items(
    titles: Iterable[str], catalog: ItemCatalog, on_unknown: str, skipped: dict[str, int], path: Path, line: int
) -> list[int]:
    items: list[int] = []
    for title in map(clean_title, titles):
        if not title:
            _bump(skipped, "empty_title")
        elif title in catalog:
            index = catalog.index(title)
            if index not in items:
                items.append(index)
        elif on_unknown == "error":
            raise UnknownIdError(f"{path}, line {line}: movie {title!r} is not in the catalog")
        else:
            _bump(skipped, "unknown_movie")
    return items


def _append(turns: list[Turn], role: str, text: str, items: list[int]) -> None:
    """Add a turn, merging it into the previous one when the same speaker talks again."""
    if turns and turns[-1].role == role:
        turns[-1].text = f"{turns[-1].text} {text}"
        turns[-1].items.extend(i for i in items if i not in turns[-1].items)
    else:
        turns.append(Turn(role, text, items))  # type: ignore[arg-type]


def load_inspired(folder: str | Path) -> CRSData:
    """The UniCRS split of INSPIRED (801 / 99 / 99 dialogs) from ``folder`` (the ``inspired`` data folder).

    Catalog = every distinct cleaned title of the three files, in order of first appearance (train, valid, test);
    ids = titles. Conversation ids are ``"{split}_{k}"`` (k = 0-based dialog index in its file, as in the zero-shot-CRS
    test's ``dialog_id``). An empty dialog (``[]``) is skipped and counted in ``skipped["empty_conversation"]``.
    """
    folder = Path(folder)
    missing = [name for name in UNICRS_FILES.values() if not (folder / name).is_file()]
    if missing:
        raise MissingFileError(f"{folder}: no {', '.join(missing)}, which the inspired format needs")
    raw = {split: _read_unicrs(folder / name) for split, name in UNICRS_FILES.items()}
    titles: dict[str, None] = {}
    for dialogs in raw.values():
        for _, turns in dialogs:
            for turn in turns:
                titles.update((t, None) for t in map(clean_title, turn.get("movie", [])) if t)
    catalog = ItemCatalog(ids=list(titles), titles=list(titles))
    skipped = {"empty_conversation": 0, "empty_title": 0}
    splits: dict[str, list[Conversation]] = {}
    for split, dialogs in raw.items():
        path = folder / UNICRS_FILES[split]
        convs = []
        for k, (line, turns_raw) in enumerate(dialogs):
            if not turns_raw:
                _bump(skipped, "empty_conversation")
                continue
            turns: list[Turn] = []
            for turn in turns_raw:
                items = _items(turn.get("movie", []), catalog, "error", skipped, path, line)
                _append(turns, _ROLES[turn["role"]], turn["text"], items)
            convs.append(Conversation(f"{split}_{k}", turns))
        splits[split] = convs
    return CRSData("inspired", catalog, splits["train"], splits["valid"], splits["test"], skipped)


def _read_tsv(path: Path) -> list[tuple[int, dict[str, str]]]:
    csv.field_size_limit(1 << 24)
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        missing = [c for c in TSV_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise DataFormatError(path, 1, f"tsv header lacks the columns {missing}")
        rows = []
        for row in reader:
            if None in row or any(row[c] is None for c in TSV_COLUMNS):
                n_columns = len(reader.fieldnames or [])
                raise DataFormatError(path, reader.line_num, f"expected {n_columns} tab-separated columns")
            rows.append((reader.line_num, row))
    return rows


def _tsv_titles(movies: str) -> list[str]:
    return [clean_title(t) for t in movies.split(";")]


def read_inspired_tsv(
    path: str | Path, catalog: ItemCatalog, on_unknown: str = "error", skipped: dict[str, int] | None = None
) -> list[Conversation]:
    """Conversations of one official INSPIRED tsv, ids = ``dialog_id``. A title missing from ``catalog``:
    ``on_unknown="error"`` raises :class:`UnknownIdError` naming file, line and title; ``"skip"`` counts it in
    ``skipped["unknown_movie"]``. Utterances of a dialog must be contiguous rows."""
    check_policy(on_unknown)
    path = Path(path)
    skipped = {} if skipped is None else skipped
    convs: list[Conversation] = []
    done: set[str] = set()
    for line, row in _read_tsv(path):
        dialog_id = row["dialog_id"]
        role = _ROLES.get(row["speaker"])
        if role is None:
            raise DataFormatError(path, line, f"speaker must be RECOMMENDER or SEEKER, got {row['speaker']!r}")
        if not convs or convs[-1].conv_id != dialog_id:
            if dialog_id in done:
                raise DataFormatError(path, line, f"rows of dialog {dialog_id!r} are not contiguous")
            done.add(dialog_id)
            convs.append(Conversation(dialog_id, []))
        text = row["text"].replace("QUOTATION_MARK", '"')
        titles = _tsv_titles(row["movies"]) if row["movies"].strip() else []
        items = _items(titles, catalog, on_unknown, skipped, path, line)
        _append(convs[-1].turns, role, text, items)
    return convs


def tsv_catalog(paths: Iterable[str | Path]) -> ItemCatalog:
    """Every distinct cleaned title of the ``movies`` column of the given tsv files, in order of first appearance."""
    titles: dict[str, None] = {}
    for path in paths:
        for _, row in _read_tsv(Path(path)):
            if row["movies"].strip():
                titles.update((t, None) for t in _tsv_titles(row["movies"]) if t)
    return ItemCatalog(ids=list(titles), titles=list(titles))


def load_inspired_official(
    folder: str | Path, catalog: ItemCatalog | None = None, on_unknown: str = "error"
) -> CRSData:
    """The official INSPIRED tsv split from ``folder`` (the ``inspired`` data folder): valid = ``official/dev.tsv``,
    test = ``official/test.tsv`` (99 dialogs each here); train = ``official/train.tsv`` when present, else empty.
    ``catalog`` defaults to :func:`tsv_catalog` over the files read (ids = titles); pass e.g.
    ``load_inspired(folder).catalog`` to share the UniCRS item space (then ``on_unknown`` applies).
    """
    folder = Path(folder) / "official"
    files = {split: folder / f"{name}.tsv" for split, name in (("train", "train"), ("valid", "dev"), ("test", "test"))}
    present = {split: path for split, path in files.items() if split != "train" or path.exists()}
    catalog = tsv_catalog(present.values()) if catalog is None else catalog
    skipped = {"empty_title": 0, "unknown_movie": 0}
    splits = {split: read_inspired_tsv(path, catalog, on_unknown, skipped) for split, path in present.items()}
    return CRSData("inspired-official", catalog, splits.get("train", []), splits["valid"], splits["test"], skipped)
