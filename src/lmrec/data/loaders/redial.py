"""ReDIAL in its official jsonl format (Li et al., NeurIPS 2018).

One conversation per line, movies written ``@movieId`` in the text::

    {"movieMentions": {"111776": "Super Troopers (2001)"}, "messages": [{"timeOffset": 0,
     "text": "Hi I am looking for a movie like @111776", "senderWorkerId": 956, "messageId": 204171}, ...],
     "conversationId": "20001", "initiatorWorkerId": 956, "respondentWorkerId": 957, ...}

The initiator is the seeker (``"user"``), the respondent the recommender (``"system"``). HTML entities of the text
(``&quot;``) are unescaped, ``@id`` is replaced by the catalog title and consecutive messages of the same sender are
merged into one turn (texts joined by a space), as the zero-shot-CRS / UniCRS preprocessing does. Catalog:
``movies_with_mentions.csv`` (``movieId,movieName,nbMentions``, e.g. ``75815,Angels in the Outfield  (1994),6``),
titles with runs of spaces collapsed and ends stripped.
"""

from __future__ import annotations

import csv
import html
import re
from pathlib import Path
from typing import Any

from lmrec.data.catalog import ItemCatalog
from lmrec.data.conversations import Conversation, CRSData, Turn, check_policy, iter_jsonl, split_conversations
from lmrec.errors import DataFormatError, MissingFileError, UnknownIdError

_MENTION = re.compile(r"@(\d+)")


def clean_title(title: str) -> str:
    """``"Police Academy  (1984)" -> "Police Academy (1984)"``; ``"American Pie " -> "American Pie"``."""
    return " ".join(title.split())


def load_redial_catalog(path: str | Path) -> ItemCatalog:
    """The ReDIAL movie list: ids = ``movieId``, titles = cleaned ``movieName``."""
    path = Path(path)
    ids: list[str] = []
    titles: list[str] = []
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if header is None or [h.strip() for h in header[:2]] != ["movieId", "movieName"]:
            raise DataFormatError(path, 1, f"expected header 'movieId,movieName,nbMentions', got {header!r}")
        seen: set[str] = set()
        for row in reader:
            line = reader.line_num
            if len(row) < 2 or not row[0].strip().isdigit():
                raise DataFormatError(path, line, f"expected 'movieId,movieName,nbMentions', got {row!r}")
            movie_id = row[0].strip()
            if movie_id in seen:
                raise DataFormatError(path, line, f"duplicate movieId {movie_id}")
            seen.add(movie_id)
            ids.append(movie_id)
            titles.append(clean_title(row[1]))
    return ItemCatalog(ids=ids, titles=titles)


def _parse_conversation(
    raw: Any, path: Path, line: int, catalog: ItemCatalog, on_unknown: str, skipped: dict[str, int]
) -> Conversation | None:
    if not isinstance(raw, dict):
        raise DataFormatError(path, line, f"expected a JSON object (one conversation), got {type(raw).__name__}")
    for key in ("messages", "conversationId", "initiatorWorkerId", "respondentWorkerId"):
        if key not in raw:
            raise DataFormatError(path, line, f"conversation has no {key!r}")
    messages = raw["messages"]
    if not isinstance(messages, list):
        raise DataFormatError(path, line, "'messages' must be a list")
    if not messages:
        skipped["empty_conversation"] = skipped.get("empty_conversation", 0) + 1
        return None
    roles = {raw["initiatorWorkerId"]: "user", raw["respondentWorkerId"]: "system"}
    mention_names = raw.get("movieMentions") or {}
    turns: list[Turn] = []
    for k, message in enumerate(messages):
        if not isinstance(message, dict) or not isinstance(message.get("text"), str):
            raise DataFormatError(path, line, f"message {k} has no text")
        role = roles.get(message.get("senderWorkerId"))
        if role is None:
            raise DataFormatError(
                path, line, f"message {k}: sender {message.get('senderWorkerId')!r} is neither the initiator "
                f"{raw['initiatorWorkerId']!r} nor the respondent {raw['respondentWorkerId']!r}"
            )
        items: list[int] = []

        # called by _MENTION.sub right below, within this iteration: this message's ``items`` and ``k`` are bound
        # explicitly (as defaults) rather than looked up late from the loop
        def render(match: re.Match[str], *, items: list[int] = items, k: int = k) -> str:
            movie_id = match.group(1)
            if movie_id in catalog:
                index = catalog.index(movie_id)
                items.append(index)
                return catalog.titles[index]
            if on_unknown == "error":
                raise UnknownIdError(f"{path}, line {line}: movie id {movie_id} (message {k}) is not in the catalog")
            skipped["unknown_movie"] = skipped.get("unknown_movie", 0) + 1
            name = mention_names.get(movie_id)
            return clean_title(name) if isinstance(name, str) and name.strip() else match.group(0)

        text = _MENTION.sub(render, html.unescape(message["text"]))
        if turns and turns[-1].role == role:
            last = turns[-1]
            last.text = f"{last.text} {text}"
            last.items.extend(i for i in items if i not in last.items)
        else:
            turns.append(Turn(role, text, list(dict.fromkeys(items))))
    return Conversation(str(raw["conversationId"]), turns)


def read_redial(
    path: str | Path, catalog: ItemCatalog, on_unknown: str = "error", skipped: dict[str, int] | None = None
) -> list[Conversation]:
    """Conversations of one ReDIAL jsonl file, in file order.

    A conversation with no messages is skipped and counted in ``skipped["empty_conversation"]``. A movie id missing
    from ``catalog``: ``on_unknown="error"`` raises :class:`UnknownIdError` naming file, line and id; ``"skip"``
    drops the mention from the turn's items (its text keeps the ``movieMentions`` title) and counts it in
    ``skipped["unknown_movie"]``. Malformed lines raise :class:`DataFormatError`.
    """
    check_policy(on_unknown)
    path = Path(path)
    skipped = {} if skipped is None else skipped
    convs = []
    for line, raw in iter_jsonl(path):
        conv = _parse_conversation(raw, path, line, catalog, on_unknown, skipped)
        if conv is not None:
            convs.append(conv)
    return convs


def load_redial(
    folder: str | Path, valid_fraction: float = 0.1, seed: int = 2024, on_unknown: str = "error",
    train_file: str = "kgsf_valid_split/valid_data.jsonl", test_file: str = "test_data.jsonl",
) -> CRSData:
    """ReDIAL from ``folder`` (``movies_with_mentions.csv``, ``train_file``, ``test_file``).

    test = the official test split (1,342 conversations). The official train split is not at hand here, so by default
    train + valid come from the 901 training conversations of KGSF's carve-out (``kgsf_valid_split/valid_data.jsonl``),
    split by conversation with :func:`split_conversations` (default 811 train / 90 valid, seed 2024). Point
    ``train_file`` at the official ``train_data.jsonl`` when you have it. ``skipped`` sums both files.
    """
    folder = Path(folder)
    missing = [name for name in ("movies_with_mentions.csv", train_file, test_file) if not (folder / name).is_file()]
    if missing:
        raise MissingFileError(f"{folder}: no {', '.join(missing)}, which the redial format needs")
    catalog = load_redial_catalog(folder / "movies_with_mentions.csv")
    skipped = {"empty_conversation": 0, "unknown_movie": 0}
    pool = read_redial(folder / train_file, catalog, on_unknown, skipped)
    test = read_redial(folder / test_file, catalog, on_unknown, skipped)
    train, valid = split_conversations(pool, valid_fraction, seed)
    return CRSData("redial", catalog, train, valid, test, skipped)
