"""Titles a person types, matched to catalog items honestly: one matcher for the Python API, the CLI and the service
(its search box, ``{"titles": [...]}`` and the items it adds).

A query is tried in three steps, and the answer says which one matched (``how``):

1. ``exact``: the catalog title, character for character;
2. ``normalized``: the same words after case, accents and punctuation are dropped, an article moved to the end
   ("Matrix, The") or written in front ("The Matrix") or left out ("matrix"), and the year optional: a query without
   a year matches every year; one with a year, only that year. Failing that, the same for the main title, the part
   before a colon ("The Restless Lantern" for "The Restless Lantern: a pirate story");
3. ``fuzzy``: the closest normalized title by rapidfuzz's ``ratio`` (0–100), when it reaches :data:`FUZZY_MIN` and
   leads the next different title by :data:`FUZZY_MARGIN` (typos: "Shawshank Redemtion").

A step that finds several items (remakes, a title listed twice) is :class:`AmbiguousTitle`; nothing close enough is
:class:`TitleNotFound`; both list the closest candidates with their ids. Nothing is ever picked silently.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass

from lmrec.errors import LmrecError, UnknownIdError

FUZZY_MIN = 88.0  # rapidfuzz.fuzz.ratio of the normalized titles
FUZZY_MARGIN = 4.0
ARTICLES = ("the", "a", "an", "la", "le", "les", "l", "il", "el", "los", "las", "der", "die", "das", "den", "det")
_YEAR = re.compile(r"\s*\((\d{4})\)\s*$")
_NON_WORD = re.compile(r"[^\w]+")
_MOVED_ARTICLE = re.compile(r"^(.*?),\s*(" + "|".join(ARTICLES) + r")'?\s*$", re.IGNORECASE)


def title_words(title: str) -> tuple[str, str | None]:
    """(normalized words without a leading or moved article, year or None): ``"Matrix, The (1999)"`` and ``"the
    matrix"`` -> ``("matrix", "1999")`` and ``("matrix", None)``."""
    text = " ".join(title.split())
    year = None
    found = _YEAR.search(text)
    if found:
        year, text = found.group(1), text[: found.start()]
    moved = _MOVED_ARTICLE.match(text)
    if moved:
        text = moved.group(1)
    text = unicodedata.normalize("NFKD", text.casefold())
    words = _NON_WORD.sub(" ", "".join(c for c in text if not unicodedata.combining(c))).split()
    if len(words) > 1 and words[0] in ARTICLES:
        words = words[1:]
    return " ".join(words), year


@dataclass(frozen=True)
class TitleMatch:
    """What a typed title was matched to: ``how`` is ``exact``, ``normalized`` or ``fuzzy`` (``score`` 0–100)."""

    query: str
    index: int
    item_id: str
    title: str
    how: str
    score: float

    def as_dict(self) -> dict[str, object]:
        return {"query": self.query, "item_id": self.item_id, "title": self.title, "how": self.how,
                "score": round(self.score, 1)}

    def __str__(self) -> str:
        how = f"fuzzy {self.score:.0f}/100" if self.how == "fuzzy" else self.how
        return f"{self.query!r} -> {self.title!r} ({self.item_id}; {how})"


class TitleNotFound(UnknownIdError):
    """No catalog title is close enough; ``candidates`` are the closest (id, title, score)."""

    def __init__(self, message: str, candidates: list[tuple[str, str, float]]):
        super().__init__(message)
        self.candidates = candidates


class AmbiguousTitle(LmrecError):
    """Several items match equally; ``candidates`` are they (id, title, score)."""

    def __init__(self, message: str, candidates: list[tuple[str, str, float]]):
        super().__init__(message)
        self.candidates = candidates


class TitleIndex:
    """The titles of a catalog (and of items added later) for :meth:`match` and :meth:`search`."""

    def __init__(self, ids: Sequence[str], titles: Sequence[str], name: str = "the catalog"):
        self.name = name
        self.ids: list[str] = []
        self.titles: list[str] = []
        self.keys: list[str] = []
        self.years: list[str | None] = []
        self._exact: dict[str, list[int]] = {}
        self._by_key: dict[str, list[int]] = {}
        self._by_main: dict[str, list[int]] = {}  # the main title (before a colon) of titles that have one
        for item_id, title in zip(ids, titles, strict=True):
            self.add(item_id, title)

    def __len__(self) -> int:
        return len(self.ids)

    def add(self, item_id: str, title: str) -> int:
        """Index one more item (e.g. added through the service); returns its position."""
        index = len(self.ids)
        key, year = title_words(title)
        self.ids.append(str(item_id))
        self.titles.append(title)
        self.keys.append(key)
        self.years.append(year)
        self._exact.setdefault(title.strip(), []).append(index)
        if key:
            self._by_key.setdefault(key, []).append(index)
        main, colon, _ = title.partition(":")
        if colon and title_words(main)[0]:
            self._by_main.setdefault(title_words(main)[0], []).append(index)
        return index

    def match(self, query: str) -> TitleMatch:
        """The one item ``query`` names (module docstring), or :class:`TitleNotFound` / :class:`AmbiguousTitle`."""
        text = " ".join(str(query).split())
        if not text:
            raise TitleNotFound("an empty title names no item", [])
        exact = self._exact.get(text, [])
        if len(exact) == 1:
            return self._match(query, exact[0], "exact", 100.0)
        if len(exact) > 1:
            self._ambiguous(query, exact, "is the title of")
        key, year = title_words(text)
        for table in (self._by_key, self._by_main):
            same = [i for i in table.get(key, []) if year is None or self.years[i] == year]
            if len(same) == 1:
                return self._match(query, same[0], "normalized", 100.0)
            if len(same) > 1:
                self._ambiguous(query, same, "matches")
        return self._fuzzy(query, key, year)

    def _fuzzy(self, query: str, key: str, year: str | None) -> TitleMatch:
        from rapidfuzz import fuzz, process

        found = process.extract(key, self.keys, scorer=fuzz.ratio, limit=12) if key else []
        if year is not None:  # the year is part of what was asked: titles of that year first
            found.sort(key=lambda hit: (-(hit[1] + (5.0 if self.years[hit[2]] == year else 0.0)), hit[2]))
        if found and found[0][1] >= FUZZY_MIN:
            best = found[0]
            rivals = [h for h in found[1:] if h[0] != best[0] and best[1] - h[1] < FUZZY_MARGIN]
            twins = [h[2] for h in found if h[0] == best[0] and (year is None or self.years[h[2]] == year)]
            if not rivals and len(twins) <= 1:
                return self._match(query, best[2], "fuzzy", float(best[1]))
            self._ambiguous(query, [h[2] for h in (best, *rivals)] + twins[1:], "is as close to")
        candidates = [(self.ids[i], self.titles[i], float(s)) for _, s, i in found[:5]]
        closest = "; closest: " + ", ".join(f"{t!r} ({i}, {s:.0f}/100)" for i, t, s in candidates) if candidates else ""
        raise TitleNotFound(f"no title in {self.name} matches {query!r}{closest}", candidates)

    def _match(self, query: str, index: int, how: str, score: float) -> TitleMatch:
        return TitleMatch(query, index, self.ids[index], self.titles[index], how, score)

    def _ambiguous(self, query: str, indices: Sequence[int], verb: str) -> None:
        indices = list(dict.fromkeys(indices))
        candidates = [(self.ids[i], self.titles[i], 100.0) for i in indices[:10]]
        listed = ", ".join(f"{t!r} ({i})" for i, t, _ in candidates)
        raise AmbiguousTitle(f"{query!r} {verb} {len(indices)} items of {self.name}: {listed}; give the year or the "
                             "item id", candidates)

    def search(self, query: str, limit: int = 10) -> list[int]:
        """Positions of the items a search box should show for ``query``, best first: titles containing every
        normalized word of it (exact and normalized matches first, then shorter titles), else the closest titles
        by fuzzy ratio (at least 60)."""
        key, year = title_words(query)
        words = key.split()
        if not words:
            return []
        hits = [i for i, k in enumerate(self.keys) if all(w in k.split() or w in k for w in words)
                and (year is None or self.years[i] == year)]
        if hits:
            rank = lambda i: (self.keys[i] != key, len(self.keys[i]), i)  # noqa: E731
            return sorted(hits, key=rank)[:limit]
        from rapidfuzz import fuzz, process

        return [i for _, _, i in process.extract(key, self.keys, scorer=fuzz.ratio, limit=limit, score_cutoff=60)]
