"""Conversational-recommendation data: conversations, turns and per-turn recommendation samples.

A :class:`Conversation` is a list of :class:`Turn` (``"user"`` = seeker, ``"system"`` = recommender), each with the
catalog indices of the movies it mentions. :func:`make_samples` turns a conversation into RTA / zero-shot-CRS
samples: one per system turn that mentions at least one item, with everything said before it as context.
"""

from __future__ import annotations

import dataclasses
import gzip
import json
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, NamedTuple

import numpy as np

from lmrec.data.catalog import ItemCatalog
from lmrec.errors import DataFormatError, LmrecError

Role = Literal["user", "system"]
Targets = Literal["all", "new"]
ROLE_PREFIX: dict[str, str] = {"user": "User", "system": "System"}


@dataclass
class Turn:
    """One turn: ``text`` with movie mentions already rendered as titles; ``items`` = the catalog indices it
    mentions, distinct, in order of first mention."""

    role: Role
    text: str
    items: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.role not in ROLE_PREFIX:
            raise ValueError(f"turn role must be 'user' or 'system', got {self.role!r}")


@dataclass
class Conversation:
    conv_id: str
    turns: list[Turn]


@dataclass
class CRSSample:
    """One recommendation turn.

    ``turn_id`` is the position of the target turn in its conversation (= the number of context turns);
    ``context`` the previous turns, one ``"User: ..."`` / ``"System: ..."`` line each (never the target turn);
    ``mentioned`` the distinct items of the previous turns (order of first mention); ``targets`` the distinct items
    of the target turn; ``target_is_new[i]`` is true when ``targets[i]`` is not in ``mentioned``.
    """

    conv_id: str
    turn_id: int
    context: str
    mentioned: list[int]
    targets: list[int]
    target_is_new: list[bool]


class Pair(NamedTuple):
    """One (turn, ground-truth item) evaluation unit: ``sample`` indexes the list given to :func:`expand_pairs`."""

    sample: int
    target: int
    is_new: bool


@dataclass
class CRSData:
    """A conversational dataset: the catalog, conversations per split, and what the loader skipped
    (``skipped[reason] = count``; e.g. ``"empty_conversation"``, ``"unknown_movie"``).

    ``targets``: which items of a recommending turn are its targets, in every split: ``"all"`` (every item it
    mentions) or ``"new"`` (only those the context has not mentioned; a turn left with none is not a sample).
    """

    name: str
    catalog: ItemCatalog
    train: list[Conversation]
    valid: list[Conversation]
    test: list[Conversation]
    skipped: dict[str, int] = field(default_factory=dict)
    targets: Targets = "all"

    def with_targets(self, targets: Targets) -> CRSData:
        """The same conversations with another target definition (see the class docstring)."""
        if targets not in ("all", "new"):
            raise ValueError(f"targets must be 'all' or 'new', got {targets!r}")
        return dataclasses.replace(self, targets=targets)

    def split(self, name: str) -> list[Conversation]:
        if name not in ("train", "valid", "test"):
            raise ValueError(f"split must be 'train', 'valid' or 'test', got {name!r}")
        return getattr(self, name)

    def checksum(self) -> str:
        """sha256 over the catalog and every conversation's turns (roles, texts, items): recorded with every run."""
        import hashlib

        digest = hashlib.sha256(self.catalog.checksum().encode())
        if self.targets != "all":
            digest.update(f"targets\x00{self.targets}\x00".encode())
        for split in ("train", "valid", "test"):
            for conv in self.split(split):
                digest.update(f"{split}\x00{conv.conv_id}\x00".encode())
                for turn in conv.turns:
                    digest.update(f"{turn.role}\x00{turn.text}\x00{turn.items}\x00".encode())
        return digest.hexdigest()[:16]

    def samples(self, split: str, max_context_chars: int | None = None) -> list[CRSSample]:
        """All samples of a split, conversation by conversation (see :func:`make_samples`)."""
        return [s for conv in self.split(split) for s in make_samples(conv, max_context_chars, self.targets)]

    def empty_context_turns(self, split: str) -> int:
        """System turns of ``split`` that recommend before anything was said: not samples (nothing to condition
        on), counted here so that reports can say how many were left out."""
        return sum(1 for conv in self.split(split) for k, turn in enumerate(conv.turns)
                   if turn.role == "system" and turn.items and k == 0)


def render_turn(turn: Turn) -> str:
    """``"User: text"`` / ``"System: text"`` on one line (newlines inside the text become spaces)."""
    return f"{ROLE_PREFIX[turn.role]}: {' '.join(turn.text.split())}"


def truncate_context(lines: Sequence[str], max_chars: int | None) -> str:
    """Join ``lines`` with newlines keeping the most recent whole lines within ``max_chars`` characters; when even the
    last line is longer, its last ``max_chars`` characters. ``None`` keeps everything."""
    if max_chars is None:
        return "\n".join(lines)
    if max_chars < 0:
        raise ValueError(f"max_context_chars must be >= 0, got {max_chars}")
    kept: list[str] = []
    total = -1  # no newline before the first kept line
    for line in reversed(lines):
        if total + 1 + len(line) > max_chars:
            break
        kept.append(line)
        total += 1 + len(line)
    if not kept and lines:
        return lines[-1][len(lines[-1]) - max_chars:] if max_chars else ""
    return "\n".join(reversed(kept))


def _distinct(items: Iterable[int]) -> list[int]:
    return list(dict.fromkeys(items))


def make_samples(conv: Conversation, max_context_chars: int | None = None, targets: Targets = "all"
                 ) -> list[CRSSample]:
    """One :class:`CRSSample` per system turn that mentions at least one item and has a context (a recommendation
    that opens the conversation has nothing to condition on: left out, see :meth:`CRSData.empty_context_turns`).

    Example: turns ``User: I liked Heat (1995)`` [Heat], ``System: Try Ronin (1998) or Heat (1995)`` [Ronin, Heat]
    give one sample with context ``"User: I liked Heat (1995)"``, mentioned [Heat], targets [Ronin, Heat],
    target_is_new [True, False]. ``max_context_chars`` keeps only the most recent context (see
    :func:`truncate_context`); ``mentioned`` always covers the whole history. ``targets="new"`` keeps only the
    items not mentioned before (here [Ronin]); a turn with no new item is then no sample.
    """
    samples: list[CRSSample] = []
    lines: list[str] = []
    mentioned: dict[int, None] = {}
    for turn_id, turn in enumerate(conv.turns):
        items = _distinct(turn.items)
        if turn.role == "system" and items and lines:
            sample = CRSSample(
                conv_id=conv.conv_id,
                turn_id=turn_id,
                context=truncate_context(lines, max_context_chars),
                mentioned=list(mentioned),
                targets=items,
                target_is_new=[t not in mentioned for t in items],
            )
            if targets == "new":
                sample = new_targets_only(sample)
            if sample.targets:
                samples.append(sample)
        lines.append(render_turn(turn))
        mentioned.update(dict.fromkeys(turn.items))
    return samples


def new_targets_only(sample: CRSSample) -> CRSSample:
    """``sample`` with only its new targets (those its context has not mentioned); the ``"new"`` target definition."""
    new = [t for t, is_new in zip(sample.targets, sample.target_is_new, strict=True) if is_new]
    return dataclasses.replace(sample, targets=new, target_is_new=[True] * len(new))


def expand_pairs(samples: Sequence[CRSSample]) -> list[Pair]:
    """One :class:`Pair` per (sample, target), in sample then target order: RTA evaluates per (turn, label)."""
    return [
        Pair(i, target, is_new)
        for i, sample in enumerate(samples)
        for target, is_new in zip(sample.targets, sample.target_is_new)
    ]


def training_mentions(convs: Iterable[Conversation], n_items: int | None = None) -> np.ndarray:
    """Mention counts per item (int64, length ``n_items``, default max index + 1): the number of turns of ``convs``
    that mention the item (a turn counts once per item). Use training conversations only, for popularity and the
    cold / warm / popular buckets."""
    counts: dict[int, int] = {}
    for conv in convs:
        for turn in conv.turns:
            for item in _distinct(turn.items):
                counts[item] = counts.get(item, 0) + 1
    size = n_items if n_items is not None else (max(counts) + 1 if counts else 0)
    out = np.zeros(size, dtype=np.int64)
    for item, count in counts.items():
        if item >= size:
            raise ValueError(f"item index {item} out of range for n_items={size}")
        out[item] = count
    return out


def split_conversations(
    convs: list[Conversation], valid_fraction: float, seed: int
) -> tuple[list[Conversation], list[Conversation]]:
    """Random (train, valid) split by conversation: ``round(n * valid_fraction)`` conversations drawn with
    ``numpy.random.default_rng(seed)`` go to valid; both parts keep file order."""
    if not 0.0 <= valid_fraction < 1.0:
        raise ValueError(f"valid_fraction must be in [0, 1), got {valid_fraction}")
    n_valid = int(round(len(convs) * valid_fraction))
    valid_idx = set(np.random.default_rng(seed).permutation(len(convs))[:n_valid].tolist())
    train = [c for i, c in enumerate(convs) if i not in valid_idx]
    valid = [c for i, c in enumerate(convs) if i in valid_idx]
    return train, valid


def iter_jsonl(path: str | Path) -> Iterator[tuple[int, Any]]:
    """``(line number, parsed value)`` for each non-blank line of a jsonl file (``.gz`` read transparently);
    a line that is not valid JSON raises :class:`DataFormatError` naming the file and the line."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as f:
        for line_no, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                yield line_no, json.loads(line)
            except json.JSONDecodeError as e:
                raise DataFormatError(path, line_no, f"invalid JSON ({e.msg} at column {e.colno})") from None


def check_policy(on_unknown: str) -> None:
    if on_unknown not in ("error", "skip"):
        raise ValueError(f"on_unknown must be 'error' or 'skip', got {on_unknown!r}")


# -- conversations written by a user ------------------------------------------------------------------------------
_LINE = re.compile(r"^\s*(user|system)\s*:(.*)$", re.IGNORECASE)
_WORDS = re.compile(r"\w+")
_YEAR = re.compile(r"\s*\((\d{4})?\)\s*$")


def parse_conversation(lines: Iterable[str], source: str = "<conversation>") -> list[Turn]:
    """Turns of a conversation written one utterance per line, ``User: ...`` or ``System: ...`` (case-insensitive);
    blank lines are skipped. A line without that prefix, or with nothing after it, raises LmrecError naming the line;
    so does a conversation with no turn."""
    turns: list[Turn] = []
    for line_no, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        match = _LINE.match(line)
        if match is None:
            got = line.strip()[:60]
            raise LmrecError(f"{source}, line {line_no}: expected 'User: ...' or 'System: ...', got {got!r}")
        text = " ".join(match.group(2).split())
        if not text:
            raise LmrecError(f"{source}, line {line_no}: nothing after '{match.group(1)}:'")
        turns.append(Turn(match.group(1).lower(), text))  # type: ignore[arg-type]
    if not turns:
        raise LmrecError(f"{source}: the conversation is empty; write at least one line 'User: ...'")
    return turns


class MentionFinder:
    """Catalog items named in free text, matched on words (punctuation ignored), longest match first, left to right:

    - ``"Title (Year)"`` in any case;
    - the bare title (without its year) when exactly one catalog item has it, written capitalized (first and last
      word start with a capital or a digit: "The Conjuring", not "a scary movie"); a one-word bare title
      ("Inception") must also be written exactly as the catalog writes it and not open a sentence, since one-word
      titles ("It", "Up", "Heat") are often plain words;
    - a title that names several items (two movies called "Heat" written without a year; two catalog entries with
      the same title and year) names none: :meth:`ambiguous` lists it with its candidates.
    """

    def __init__(self, titles: Sequence[str]):
        self.titles = list(titles)
        self.full: dict[tuple[str, ...], list[int]] = {}  # words of "title (year)" -> items
        self.bare: dict[tuple[str, ...], list[int]] = {}  # words of the title without its year -> items
        self.written: dict[int, str] = {}  # the bare title of each one-word title, as the catalog writes it
        for item, title in enumerate(self.titles):
            title = " ".join(title.split())
            bare_title = _YEAR.sub("", title)
            words = tuple(_WORDS.findall(title.lower()))
            bare = tuple(_WORDS.findall(bare_title.lower()))
            if words and words != bare:
                self.full.setdefault(words, []).append(item)
            if bare:
                self.bare.setdefault(bare, []).append(item)
                if len(bare) == 1:
                    self.written[item] = _WORDS.findall(bare_title)[0]
        self.longest = max((len(k) for k in [*self.full, *self.bare]), default=0)

    def find(self, text: str) -> list[int]:
        """The items ``text`` names, each once, in the order first named."""
        return list(dict.fromkeys(item for _, _, item in self.spans(text)))

    def spans(self, text: str) -> list[tuple[int, int, int]]:
        """(start, end, item) of every mention in ``text`` that names one item, left to right (character offsets)."""
        return [(start, end, item) for start, end, item, _ in self._scan(text) if item is not None]

    def ambiguous(self, text: str) -> list[tuple[str, list[int]]]:
        """(what was written, the items it could name) for each title in ``text`` that names several items."""
        return [(text[start:end], candidates) for start, end, item, candidates in self._scan(text) if item is None]

    def _scan(self, text: str) -> list[tuple[int, int, int | None, list[int]]]:
        """(start, end, the item or None when ambiguous, the candidates) of each title found, left to right."""
        spans = list(_WORDS.finditer(text))
        original = [m.group() for m in spans]
        words = [w.lower() for w in original]
        out: list[tuple[int, int, int | None, list[int]]] = []
        i = 0
        while i < len(words):
            for n in range(min(self.longest, len(words) - i), 0, -1):
                key = tuple(words[i : i + n])
                items = self.full.get(key)
                if items is None:
                    items = [item for item in self.bare.get(key, []) if self._bare_written(original, spans, text, i,
                                                                                            n, item)]
                if items:
                    start, end = spans[i].start(), spans[i + n - 1].end()
                    end += text[start:end].count("(") > text[start:end].count(")") and text[end : end + 1] == ")"
                    out.append((start, end, items[0] if len(items) == 1 else None, items))
                    i += n
                    break
            else:
                i += 1
        return out

    def _bare_written(self, original: list[str], spans: list[re.Match], text: str, i: int, n: int,
                      item: int) -> bool:
        """Whether words ``i .. i+n-1`` of the text are written as the bare title of ``item`` may be."""
        if not (_capitalized(original[i]) and _capitalized(original[i + n - 1])):
            return False
        if n > 1:
            return True
        before = text[: spans[i].start()].rstrip(" \t\"'“‘(*_-")
        return original[i] == self.written.get(item) and bool(before) and before[-1] not in ".!?\n"


def _capitalized(word: str) -> bool:
    return word[:1].isupper() or word[:1].isdigit()


def conversation_sample(turns: Sequence[Turn], finder: MentionFinder, conv_id: str = "user") -> CRSSample:
    """A sample for the next system turn: context = the rendered turns, mentioned = the items named in them."""
    mentioned: dict[int, None] = {}
    for turn in turns:
        mentioned.update(dict.fromkeys(finder.find(turn.text)))
    context = "\n".join(render_turn(t) for t in turns)
    return CRSSample(conv_id, len(turns), context, list(mentioned), [], [])
