"""The test format of "LLMs as Zero-Shot Conversational Recommenders" (He et al., CIKM'23): ReDIAL, INSPIRED, Reddit.

A dataset is a folder with ``entity2id.json`` (entity name -> id), ``item_ids.json`` (the ids that are candidate
items) and ``test.jsonl`` (or ``test.jsonl.gz``), one recommendation turn per line::

    {"context": ["", "Hi I am looking for a movie like Super Troopers (2001)"],
     "resp": "You should watch Police Academy (1984)", "rec": [29891], "entity": [29891, 5439],
     "prev_entity": [18433], "dialog_id": "test_20001", "turn_id": 204172, "is_user": 0,
     "input": "\\nUser: Hi I am looking for a movie like Super Troopers (2001)\\nSystem: "}

ReDIAL and INSPIRED name entities by DBpedia URI (``"<http://dbpedia.org/resource/Knives_Out>": 123``, title
"Knives Out"); Reddit maps ``"Title (Year)"`` to an IMDb id (``"The Way of the Gun (2000)": "tt0202677"``) and its
``rec`` / ``prev_entity`` hold those IMDb ids. ``rec`` are the targets; ``entity`` are the entities of the response
itself (it always contains ``rec``), so ``mentioned`` is taken from ``prev_entity`` (the entities of the previous
turns) restricted to items: with it 41 of 253 INSPIRED and 462 of 4,778 ReDIAL targets are repeated mentions, the
counts of the CIKM'23 "discussion" condition.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from lmrec.data.catalog import ItemCatalog
from lmrec.data.conversations import ROLE_PREFIX, CRSSample, check_policy, iter_jsonl
from lmrec.errors import DataFormatError, MissingFileError, UnknownIdError

DBPEDIA_PREFIX = "<http://dbpedia.org/resource/"
_TRAILING_PAREN = re.compile(r"\s*\([^()]*\)$")


def entity_title(name: str) -> str:
    """Readable title of an entity name: ``"<http://dbpedia.org/resource/Shall_We_Dance%3F_(1996_film)>"`` ->
    ``"Shall We Dance?"`` (URI decoded, underscores to spaces, trailing disambiguation dropped); any other name
    (Reddit's ``"Title (Year)"``) is returned with its spaces collapsed."""
    if name.startswith(DBPEDIA_PREFIX) and name.endswith(">"):
        title = unquote(name[len(DBPEDIA_PREFIX):-1]).replace("_", " ")
        name = _TRAILING_PAREN.sub("", title) or title
    return " ".join(name.split())


@dataclass
class CRSTestSet:
    """Ready-made recommendation samples with their catalog; ``skipped[reason] = count``."""

    name: str
    catalog: ItemCatalog
    samples: list[CRSSample]
    skipped: dict[str, int] = field(default_factory=dict)


def _load_json(path: Path) -> Any:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise DataFormatError(path, e.lineno, f"invalid JSON ({e.msg})") from None


def load_zeroshot_catalog(folder: str | Path) -> ItemCatalog:
    """Catalog of ``item_ids.json`` (in its order; ids as strings), titles from the names in ``entity2id.json``."""
    folder = Path(folder)
    entity2id = _load_json(folder / "entity2id.json")
    item_ids = _load_json(folder / "item_ids.json")
    if not isinstance(entity2id, dict):
        raise DataFormatError(folder / "entity2id.json", None, "expected a JSON object name -> id")
    if not isinstance(item_ids, list):
        raise DataFormatError(folder / "item_ids.json", None, "expected a JSON list of item ids")
    names: dict[str, str] = {}
    for name, entity_id in entity2id.items():
        names.setdefault(str(entity_id), name)
    missing = [i for i in item_ids if str(i) not in names]
    if missing:
        raise DataFormatError(
            folder / "item_ids.json", None,
            f"{len(missing)} item ids have no name in entity2id.json, e.g. {missing[0]!r}",
        )
    ids = [str(i) for i in item_ids]
    return ItemCatalog(ids=ids, titles=[entity_title(names[i]) for i in ids])


def _context_lines(raw: dict[str, Any], path: Path, line: int) -> list[str]:
    """Context turns as ``"User: ..."`` / ``"System: ..."`` lines, from ``input`` when present (its final
    ``"System: "`` prompt dropped; its role labels are kept as the file has them), else from the ``context`` list
    with roles *guessed* by alternating back from a user turn just before the target (the leading ``""`` placeholder
    dropped). The guess matches ``input`` on all 228 INSPIRED samples but on only 1,305 of the 3,552 ReDIAL ones,
    whose context lists do not alternate, so prefer files that carry ``input``."""
    if isinstance(raw.get("input"), str):
        lines = [ln for ln in raw["input"].split("\n") if ln.strip()]
        if lines and lines[-1].strip() == "System:":
            lines.pop()
        return lines
    context = raw.get("context")
    if not isinstance(context, list) or not all(isinstance(c, str) for c in context):
        raise DataFormatError(path, line, "sample has neither an 'input' string nor a 'context' list of strings")
    if context and context[0] == "":
        context = context[1:]
    roles = ["user", "system"]
    return [
        f"{ROLE_PREFIX[roles[(len(context) - 1 - k) % 2]]}: {' '.join(text.split())}" for k, text in enumerate(context)
    ]


def read_zeroshot_samples(
    path: str | Path, catalog: ItemCatalog, on_unknown: str = "error", skipped: dict[str, int] | None = None
) -> list[CRSSample]:
    """Samples of a zero-shot-CRS test file.

    ``turn_id`` = the number of context turns (the position of the target turn, as in :func:`make_samples`);
    ``conv_id`` = ``dialog_id``. A ``rec`` id missing from ``catalog``: ``on_unknown="error"`` raises
    :class:`UnknownIdError` naming file, line and id, ``"skip"`` counts it in ``skipped["unknown_movie"]``.
    Lines with ``is_user == 1`` are counted in ``skipped["user_turn"]``, lines left without a target in
    ``skipped["no_target"]``; neither becomes a sample.
    """
    check_policy(on_unknown)
    path = Path(path)
    skipped = {} if skipped is None else skipped
    samples: list[CRSSample] = []
    for line, raw in iter_jsonl(path):
        if not isinstance(raw, dict):
            raise DataFormatError(path, line, f"expected a JSON object (one sample), got {type(raw).__name__}")
        for key in ("rec", "prev_entity", "dialog_id"):
            if key not in raw:
                raise DataFormatError(path, line, f"sample has no {key!r}")
        if not isinstance(raw["rec"], list) or not isinstance(raw["prev_entity"], list):
            raise DataFormatError(path, line, "'rec' and 'prev_entity' must be lists of ids")
        if raw.get("is_user") == 1:
            skipped["user_turn"] = skipped.get("user_turn", 0) + 1
            continue
        targets: list[int] = []
        for entity_id in raw["rec"]:
            if entity_id in catalog:
                index = catalog.index(entity_id)
                if index not in targets:
                    targets.append(index)
            elif on_unknown == "error":
                raise UnknownIdError(f"{path}, line {line}: rec id {entity_id!r} is not among the catalog's items")
            else:
                skipped["unknown_movie"] = skipped.get("unknown_movie", 0) + 1
        if not targets:
            skipped["no_target"] = skipped.get("no_target", 0) + 1
            continue
        mentioned = list(dict.fromkeys(catalog.index(e) for e in raw["prev_entity"] if e in catalog))
        lines = _context_lines(raw, path, line)
        samples.append(CRSSample(
            conv_id=str(raw["dialog_id"]),
            turn_id=len(lines),
            context="\n".join(lines),
            mentioned=mentioned,
            targets=targets,
            target_is_new=[t not in mentioned for t in targets],
        ))
    return samples


def find_test_file(folder: str | Path) -> Path:
    """``test.jsonl`` or else ``test.jsonl.gz`` in ``folder``."""
    for name in ("test.jsonl", "test.jsonl.gz"):
        if (Path(folder) / name).exists():
            return Path(folder) / name
    raise MissingFileError(f"{folder}: no test.jsonl or test.jsonl.gz")


def load_zeroshot_crs(
    name: str, catalog_dir: str | Path, test_path: str | Path | None = None, on_unknown: str = "error"
) -> CRSTestSet:
    """Catalog from ``catalog_dir`` and samples from ``test_path`` (default: the test file in ``catalog_dir``)."""
    catalog = load_zeroshot_catalog(catalog_dir)
    skipped = {"unknown_movie": 0, "no_target": 0, "user_turn": 0}
    path = find_test_file(catalog_dir) if test_path is None else Path(test_path)
    return CRSTestSet(name, catalog, read_zeroshot_samples(path, catalog, on_unknown, skipped), skipped)


def load_redial_zeroshot(data_folder: str | Path) -> CRSTestSet:
    """ReDIAL's zero-shot-CRS test (3,552 samples) from the ``redial`` data folder."""
    return load_zeroshot_crs("redial-zeroshot", Path(data_folder) / "zero_shot_crs_test")


def load_inspired_zeroshot(data_folder: str | Path) -> CRSTestSet:
    """INSPIRED's zero-shot-CRS test (228 samples) from the ``inspired`` data folder."""
    return load_zeroshot_crs("inspired-zeroshot", Path(data_folder) / "zero_shot_crs_test")


def load_reddit_catalog(data_folder: str | Path) -> ItemCatalog:
    """The 7,506 Reddit-Movie items (IMDb ids, ``"Title (Year)"`` titles) from the ``reddit-movie`` data folder."""
    return load_zeroshot_catalog(Path(data_folder) / "zero_shot_crs_catalog")


def load_reddit_zeroshot(
    test_path: str | Path, catalog_dir: str | Path, on_unknown: str = "error"
) -> CRSTestSet:
    """A Reddit-Movie test file in the zero-shot-CRS format (``rec`` / ``prev_entity`` are IMDb ids) with the catalog
    of ``catalog_dir`` (e.g. ``reddit-movie/zero_shot_crs_catalog``). The Reddit dialogues are not at hand here."""
    return load_zeroshot_crs("reddit-zeroshot", catalog_dir, test_path, on_unknown)
