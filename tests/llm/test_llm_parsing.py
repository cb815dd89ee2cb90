"""Parsing an LLM's title list and mapping it onto a catalog: hand-computed cases, no model."""

import pytest
from rapidfuzz.distance import Levenshtein

from lmrec.llm.parsing import (
    TitleMatcher,
    map_titles_to_catalog,
    parse_completion,
    parse_titles,
    title_key,
    title_matcher,
)

MESSY = """Sure! Here are 20 movie titles like the ones you loved in 2011.

1. Inception (2010)
2. "The Matrix" (1999)
3) Interstellar (2014) - a mind-bending journey through space and time
4. **Blade Runner 2049**
5. The Matrix (1999)
6. Schindler's List
7. 2001: A Space Odyssey (1968)
8.  Se7en
9. 300
10. Star Wars: Episode IV - A New Hope

I hope you enjoy these movies!</s>"""


def test_messy_numbered_completion():
    parsed = parse_completion(MESSY)
    assert [t.display for t in parsed] == [
        "Inception (2010)",
        "The Matrix (1999)",
        "Interstellar (2014)",  # the description after the year is dropped
        "Blade Runner 2049",
        "Schindler's List",
        "2001: A Space Odyssey (1968)",
        "Se7en",
        "300",  # the official numbering regex would also eat bare leading digits
        "Star Wars: Episode IV - A New Hope",
    ]
    assert parse_titles(MESSY) == [
        "inception",
        "the matrix",  # once: "5. The Matrix (1999)" is a duplicate
        "interstellar",
        "blade runner 2049",
        "schindlers list",
        "2001 a space odyssey",
        "se7en",
        "300",
        "star wars episode iv a new hope",
    ]


def test_unnumbered_lines_are_kept_only_on_request():
    titles = parse_titles(MESSY, numbered_only=False)
    assert titles[-1] == "i hope you enjoy these movies" and len(titles) == 10


def test_split_at_first_item_not_inside_a_number():
    assert parse_titles("My 2011. picks:\n1. Heat\n2. Ronin") == ["heat", "ronin"]
    assert parse_titles("1.Heat\n2)Ronin\n3、Thief") == ["heat", "ronin", "thief"]


def test_comma_list_when_there_is_no_numbering():
    text = "The movie is 300, 2001: A Space Odyssey, 'Heat', Heat</s>"
    assert parse_titles(text) == ["300", "2001 a space odyssey", "heat"]
    assert parse_titles("") == [] and parse_titles("1.\n2.\n") == []


def test_title_key():
    assert title_key("Schindler's List (1993)") == "schindlers list"
    assert title_key("  The  Dark Knight ") == "the dark knight"
    assert title_key("<http://dbpedia.org/resource/Toy_Story>") == "toy story"
    assert title_key(title_key("Se7en (1995)!")) == title_key("Se7en (1995)!") == "se7en"


CATALOG = [
    "Toy Story (1995)",  # 0
    "Inception (2010)",  # 1
    "The Matrix (1999)",  # 2
    "Interstellar (2014)",  # 3
    "Heat (1995)",  # 4
    "Heat (1986)",  # 5
    "The Dark Knight (2008)",  # 6
    "Star Wars (1977)",  # 7
]
TITLES = [
    "inceptoin",
    "dark knight",
    "heat",
    "star wars episode iv a new hope",
    "The Matrix (1999)",
    "the matrix",
    "the matrix reloaded",
    "",
]


def test_map_to_catalog_nearest_with_cutoff():
    result = map_titles_to_catalog(TITLES, CATALOG)
    # fuzz.ratio = 100 * (1 - indel / (len1 + len2)):
    # inceptoin~inception: 1 - 2/18 = 88.9; dark knight~the dark knight: 1 - 4/26 = 84.6;
    # star wars episode iv a new hope~star wars: 1 - 22/40 = 45; the matrix reloaded~the matrix: 1 - 9/29 = 69
    assert result.indices == [1, 6, 4, 2]
    assert result.matched == [1, 6, 4, None, 2, 2, None, None]
    assert result.scores[:3] == [pytest.approx(100 * (1 - 2 / 18)), pytest.approx(100 * (1 - 4 / 26)), 100.0]
    assert result.unmapped == ["star wars episode iv a new hope", "the matrix reloaded"] and result.n_unmapped == 2


def test_ground_truth_first_within_two_edits():
    # "heat" ties two items; the label (index 5, the 1986 one) wins. "inceptoin" is 2 edits from label 1.
    assert Levenshtein.distance("inceptoin", "inception") == 2
    result = map_titles_to_catalog(["heat", "inceptoin", "toy stroy"], CATALOG, ground_truth=[5, 1])
    assert result.indices == [5, 1, 0]
    no_gt_step = map_titles_to_catalog(["heat"], CATALOG, ground_truth=[5], max_edit=None)
    assert no_gt_step.indices == [4]


def test_official_nearest_edit_distance_maps_everything():
    matcher = TitleMatcher(CATALOG, scorer=Levenshtein.distance, cutoff=None)
    result = matcher.map(["the matrix reloaded", "star wars episode iv a new hope"])
    assert result.indices[0] == 2 and result.scores[0] == 9  # "the matrix": 9 insertions
    assert result.n_unmapped == 0 and len(result.indices) == 2


def test_title_matcher_modes():
    """"fuzzy" leaves a far title unmapped; "nearest" (the official rule) maps it to the nearest title, ties to the
    first in catalog order; an unknown mode names the choices."""
    far = ["star wars episode iv a new hope"]
    assert title_matcher(CATALOG, "fuzzy").map(far).indices == []
    nearest = title_matcher(CATALOG, "nearest")
    distances = [Levenshtein.distance(far[0], title_key(t)) for t in CATALOG]
    assert nearest.map(far).indices == [distances.index(min(distances))]
    assert nearest.map(["heat"]).indices == [4]  # "Heat (1995)" and "Heat (1986)" tie at 0: the first
    assert nearest.map(["heat"], ground_truth=[5]).indices == [5]  # the turn's target within 2 edits first
    with pytest.raises(ValueError, match="fuzzy, nearest"):
        title_matcher(CATALOG, "closest")
