"""Parse an LLM's list of titles and map it onto a catalog (RTA's tools/2_entity_mapping.py, with its defects fixed).

Official steps: strip "The movie is " and "</s>"; split at the first "1." (no "1.": commas become newlines); split on
newlines; clean each title (numbering, parentheses, punctuation removed; spaces collapsed; lowercased); map each title
to a ground-truth label within edit distance 2, else to the nearest-edit-distance name of the dataset's pool.

Differences, each a fix of the official behaviour:

* the split is at the first "1." that is not part of a number ("2021." or "1.5" do not count);
* numbering is removed only with its delimiter ("2.", "3)", "4、"); the official regex also strips bare leading digits,
  turning "300" into "" and "2001: A Space Odyssey" into "a space odyssey";
* empty titles are dropped and duplicates removed (first kept);
* ``numbered_only=True`` (default): when the answer is a numbered list (two or more numbered lines), unnumbered lines
  (descriptions, a closing sentence) are dropped instead of being mapped to whatever title is nearest;
* text after a parenthesized year ("Inception (2010) - a mind-bending thriller") is dropped;
* the nearest catalog title must score at least ``cutoff`` (rapidfuzz ``fuzz.ratio`` on the normalized forms by
  default); titles below it are reported unmapped rather than forced onto an arbitrary item.
  ``scorer=rapidfuzz.distance.Levenshtein.distance, cutoff=None`` reproduces the official nearest-edit-distance rule.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = [
    "TITLE_MATCHES",
    "ParsedTitle",
    "TitleMatch",
    "TitleMapping",
    "TitleMatcher",
    "map_titles_to_catalog",
    "parse_completion",
    "parse_titles",
    "title_key",
    "title_matcher",
]

TitleMatch = Literal["fuzzy", "nearest"]
TITLE_MATCHES: tuple[TitleMatch, ...] = ("fuzzy", "nearest")

_FIRST_ITEM = re.compile(r"(?<![\d.])1\.(?!\d)")
_NUMBERED = re.compile(r"^\s*(?:[#*\s]*)\d{1,3}\s*[.)、]")
_NUMBERING = re.compile(r"^(?:\d{1,3}\s*[.)、]\s*)?(?:[-—–]\s+)?")
_BULLET = re.compile(r"^(?:#+\s+|[-*•]\s+)")
_MARKUP = re.compile(r"\*\*|__|`")
_QUOTES = "\"'“”‘’«»"
_QUOTED = re.compile(r"^[\"“](.+?)[\"”]\s*(\(.*\))?$")
_YEAR_END = re.compile(r"^(.*?\(\s*(?:1[89]|20)\d{2}\s*\))")
_PARENS = re.compile(r"\([^()]*\)")
_PUNCT = re.compile(r"[^\w\s]")


def title_key(title: str) -> str:
    """Normalized form used for matching (the official ``_clean_title(...).lower()`` minus the numbering step).

    DBpedia names (``<http://dbpedia.org/resource/Toy_Story>``) become their last path part with spaces; then
    parenthesized parts are removed, punctuation removed, spaces collapsed, and the result lowercased:
    ``"Schindler's List (1993)" -> "schindlers list"``.
    """
    if "dbpedia.org" in title:
        title = title.split("/")[-1].replace("_", " ").replace(">", "")
    return " ".join(_PUNCT.sub("", _PARENS.sub("", title)).lower().split())


@dataclass(frozen=True)
class ParsedTitle:
    """One title of a completion: ``display`` as the model wrote it (numbering, markup, quotes and anything after a
    parenthesized year removed; case, year and punctuation kept) and ``key`` = ``title_key(display)``."""

    display: str
    key: str


def _display(line: str) -> str:
    text = _MARKUP.sub("", line).strip()
    text = _BULLET.sub("", text)
    text = _NUMBERING.sub("", text).strip()
    year = _YEAR_END.match(text)
    if year:
        text = year.group(1)
    quoted = _QUOTED.match(text.strip())  # a quoted title followed by its year: "Heat" (1995)
    if quoted:
        text = quoted.group(1) + (f" {quoted.group(2)}" if quoted.group(2) else "")
    return " ".join(text.strip().strip(_QUOTES).split())


def parse_completion(completion: str, numbered_only: bool = True) -> list[ParsedTitle]:
    """The titles of a completion, in order, without empties and duplicates (by ``key``); see the module docstring."""
    text = completion.replace("The movie is ", "").replace("</s>", "")
    first = _FIRST_ITEM.search(text)
    if first is not None:
        lines = text[first.end() :].split("\n")
        if numbered_only and sum(bool(_NUMBERED.match(line)) for line in lines[1:]) >= 1:
            lines = lines[:1] + [line for line in lines[1:] if _NUMBERED.match(line)]
    else:
        lines = text.replace(",", "\n").split("\n")
    out: list[ParsedTitle] = []
    seen: set[str] = set()
    for line in lines:
        display = _display(line)
        key = title_key(display)
        if key and key not in seen:
            seen.add(key)
            out.append(ParsedTitle(display, key))
    return out


def parse_titles(completion: str, numbered_only: bool = True) -> list[str]:
    """The normalized titles (``title_key`` form) of a completion, ordered and unique; ``parse_completion`` keeps the
    display form too."""
    return [title.key for title in parse_completion(completion, numbered_only)]


@dataclass
class TitleMapping:
    """Result of mapping a list of titles onto a catalog.

    ``indices``: catalog indices in the titles' order, duplicates removed (first kept) — the ranked recommendation.
    ``matched[i]`` / ``scores[i]``: catalog index of input title ``i`` and the scorer's value between the two keys
    (both None where the title is empty or unmapped). ``unmapped``: the non-empty input titles below the cutoff.
    """

    indices: list[int]
    matched: list[int | None]
    scores: list[float | None]
    unmapped: list[str] = field(default_factory=list)

    @property
    def n_unmapped(self) -> int:
        return len(self.unmapped)


class TitleMatcher:
    """Maps generated titles onto a fixed catalog; normalizes the catalog once (reuse it across completions).

    A title first goes to a ground-truth item whose key is within Levenshtein distance ``max_edit`` (the official
    rule, first label in the given order; ``max_edit=None`` turns the step off), then to the exact key if one catalog
    title has it (the first such item), then to ``rapidfuzz.process.extractOne(key, catalog_keys, scorer=scorer,
    score_cutoff=cutoff)``. The default scorer is ``fuzz.ratio`` (normalized Indel similarity, 0-100) with cutoff 80:
    it tolerates a wrong article or a typo ("dark knight" ~ "the dark knight": 84.6) but not a franchise word
    ("star wars" vs "star wars episode iv a new hope": 45). For a distance scorer the cutoff is a maximum distance.
    Catalog titles sharing a key (remakes) resolve to the first one unless ground truth picks another.
    """

    def __init__(
        self,
        catalog_titles: Sequence[str],
        scorer: Callable[..., Any] | None = None,
        cutoff: float | None = 80.0,
        max_edit: int | None = 2,
    ):
        from rapidfuzz import fuzz

        self.keys = [title_key(t) for t in catalog_titles]
        self.scorer = scorer if scorer is not None else fuzz.ratio
        self.cutoff = cutoff
        self.max_edit = max_edit
        self._exact: dict[str, int] = {}
        for i, key in enumerate(self.keys):
            self._exact.setdefault(key, i)

    def match(self, title: str, ground_truth: Sequence[int] | None = None) -> tuple[int | None, float | None]:
        """(catalog index, score) of one title, or (None, None) when it is empty or scores below the cutoff."""
        from rapidfuzz import process
        from rapidfuzz.distance import Levenshtein

        key = title_key(title)
        if not key:
            return None, None
        if ground_truth is not None and self.max_edit is not None:
            for label in ground_truth:
                if Levenshtein.distance(key, self.keys[label], score_cutoff=self.max_edit) <= self.max_edit:
                    return int(label), float(self.scorer(key, self.keys[label]))
        if key in self._exact:
            return self._exact[key], float(self.scorer(key, key))
        found = process.extractOne(key, self.keys, scorer=self.scorer, processor=None, score_cutoff=self.cutoff)
        if found is None:
            return None, None
        return int(found[2]), float(found[1])

    def map(self, titles: Sequence[str], ground_truth: Sequence[int] | None = None) -> TitleMapping:
        """Map titles (raw or ``title_key`` form) in order; see the class docstring."""
        indices: list[int] = []
        seen: set[int] = set()
        matched: list[int | None] = []
        scores: list[float | None] = []
        unmapped: list[str] = []
        for title in titles:
            index, score = self.match(title, ground_truth)
            matched.append(index)
            scores.append(score)
            if index is None:
                if title_key(title):
                    unmapped.append(title)
            elif index not in seen:
                seen.add(index)
                indices.append(index)
        return TitleMapping(indices, matched, scores, unmapped)


def title_matcher(catalog_titles: Sequence[str], match: TitleMatch = "fuzzy") -> TitleMatcher:
    """The matcher of one mapping rule. ``"fuzzy"`` (lmrec's default): ``fuzz.ratio`` ≥ 80, a title far from every
    catalog title stays unmapped. ``"nearest"`` (the official tools/2_entity_mapping.py, the paper's row): every
    title goes to the catalog title at the smallest Levenshtein distance of the normalized forms (ties: the first in
    catalog order), so each title the LLM writes becomes an item, however far."""
    if match == "fuzzy":
        return TitleMatcher(catalog_titles)
    if match == "nearest":
        from rapidfuzz.distance import Levenshtein

        return TitleMatcher(catalog_titles, scorer=Levenshtein.distance, cutoff=None)
    raise ValueError(f"title match must be one of {', '.join(TITLE_MATCHES)}; got {match!r}")


def map_titles_to_catalog(
    titles: Sequence[str],
    catalog_titles: Sequence[str],
    ground_truth: Sequence[int] | None = None,
    max_edit: int | None = 2,
    cutoff: float | None = 80.0,
    scorer: Callable[..., Any] | None = None,
) -> TitleMapping:
    """One-off ``TitleMatcher(catalog_titles, scorer, cutoff, max_edit).map(titles, ground_truth)``.

    ``ground_truth``: catalog indices of the turn's labels (checked first, within ``max_edit`` edits). Returns the
    ordered unique catalog indices and the unmapped titles (``result.n_unmapped``).
    """
    return TitleMatcher(catalog_titles, scorer=scorer, cutoff=cutoff, max_edit=max_edit).map(titles, ground_truth)
