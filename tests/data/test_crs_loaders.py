"""CRS loaders: hand-written fixtures (exact values), bad input, and the real files in ../shared/data."""

import gzip
import json
import shutil
from pathlib import Path

import pytest

from lmrec.data.conversations import CRSData, expand_pairs, render_turn
from lmrec.data.loaders.inspired import load_inspired, load_inspired_official, read_inspired_tsv, tsv_catalog
from lmrec.data.loaders.redial import load_redial, load_redial_catalog, read_redial
from lmrec.data.loaders.zeroshot_crs import (
    entity_title,
    load_inspired_zeroshot,
    load_reddit_catalog,
    load_reddit_zeroshot,
    load_redial_zeroshot,
    load_zeroshot_catalog,
    read_zeroshot_samples,
)
from lmrec.errors import DataFormatError, UnknownIdError

FIXTURES = Path(__file__).parent / "fixtures" / "crs"


@pytest.fixture(scope="module")
def crs_shared_data(shared_data: Path) -> Path:
    return shared_data


# ---------------------------------------------------------------- ReDIAL fixture


def test_redial_catalog_cleans_titles():
    catalog = load_redial_catalog(FIXTURES / "redial" / "movies_with_mentions.csv")
    assert catalog.ids == ["111776", "151656", "192131", "134643", "94688"]
    assert catalog.titles[1:4] == ["Police Academy (1984)", "American Pie", "American Pie (1999)"]


def test_redial_fixture_conversation():
    data = load_redial(FIXTURES / "redial", valid_fraction=0.25, seed=0)
    assert data.skipped == {"empty_conversation": 1, "unknown_movie": 0}
    assert [c.conv_id for c in data.test] == ["20001"]
    assert len(data.train) == 3 and len(data.valid) == 1
    turns = data.test[0].turns
    assert [t.role for t in turns] == ["user", "system", "user", "system", "user"]  # messages 3+4 merged
    assert turns[2].text == "I have seen American Pie I mean American Pie (1999)"
    assert turns[3].text == (
        'Yes Police Academy (1984) is "very" funny and so is Police Academy 2: Their First Assignment (1985)'
    )
    samples = data.samples("test")
    assert [s.turn_id for s in samples] == [1, 3]
    assert samples[1].context == (
        "User: Hi I am looking for a movie like Super Troopers (2001)\n"
        "System: You should watch Police Academy (1984)\n"
        "User: I have seen American Pie I mean American Pie (1999)"
    )
    assert samples[1].mentioned == [0, 1, 2, 3]
    assert samples[1].targets == [1, 4] and samples[1].target_is_new == [False, True]


def _write(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_redial_malformed_line_names_file_and_line(tmp_path):
    catalog = load_redial_catalog(FIXTURES / "redial" / "movies_with_mentions.csv")
    good = (FIXTURES / "redial" / "test_data.jsonl").read_text(encoding="utf-8").splitlines()[0]
    path = _write(tmp_path / "bad.jsonl", [good, '{"messages": [}'])
    with pytest.raises(DataFormatError, match=r"bad\.jsonl, line 2"):
        read_redial(path, catalog)


def test_redial_unknown_movie_policy(tmp_path):
    catalog = load_redial_catalog(FIXTURES / "redial" / "movies_with_mentions.csv")
    conv = {"movieMentions": {"999": "Nope (2022)"}, "conversationId": "7", "initiatorWorkerId": 1,
            "respondentWorkerId": 2, "messages": [{"text": "hi", "senderWorkerId": 1},
                                                  {"text": "see @999 or @111776", "senderWorkerId": 2}]}
    path = _write(tmp_path / "unknown.jsonl", ["", json.dumps(conv)])
    with pytest.raises(UnknownIdError, match=r"unknown\.jsonl, line 2: movie id 999"):
        read_redial(path, catalog)
    skipped: dict[str, int] = {}
    (parsed,) = read_redial(path, catalog, on_unknown="skip", skipped=skipped)
    assert skipped == {"unknown_movie": 1}
    assert parsed.turns[1].text == "see Nope (2022) or Super Troopers (2001)"
    assert parsed.turns[1].items == [0]
    with pytest.raises(ValueError, match="on_unknown"):
        read_redial(path, catalog, on_unknown="ignore")


def test_redial_stranger_sender_is_an_error(tmp_path):
    catalog = load_redial_catalog(FIXTURES / "redial" / "movies_with_mentions.csv")
    conv = {"conversationId": "7", "initiatorWorkerId": 1, "respondentWorkerId": 2,
            "messages": [{"text": "hi", "senderWorkerId": 3}]}
    with pytest.raises(DataFormatError, match="line 1: message 0: sender 3"):
        read_redial(_write(tmp_path / "s.jsonl", [json.dumps(conv)]), catalog)


# ---------------------------------------------------------------- INSPIRED bad input


def test_inspired_unicrs_bad_line_and_empty_dialog(tmp_path, crs_shared_data):
    folder = tmp_path / "inspired"
    shutil.copytree(crs_shared_data / "inspired" / "unicrs_processed", folder / "unicrs_processed")
    valid = folder / "unicrs_processed" / "valid_data_dbpedia.jsonl"
    lines = valid.read_text(encoding="utf-8").splitlines()
    _write(valid, lines[:3] + ["[]"] + lines[3:])
    data = load_inspired(folder)
    assert data.skipped["empty_conversation"] == 1 and len(data.valid) == 99
    _write(valid, lines[:3] + ['[{"text": "hi", "role": "SEEKER"'] + lines[3:])
    with pytest.raises(DataFormatError, match=r"valid_data_dbpedia\.jsonl, line 4"):
        load_inspired(folder)


def test_inspired_tsv_unknown_title_policy(tmp_path):
    header = "dialog_id\tutt_id\tspeaker\tturn_id\ttext\ttext_with_placeholder\tmovies"
    path = _write(tmp_path / "t.tsv", [
        header,
        "d1\t1\tSEEKER\t1\tI like QUOTATION_MARKHeatQUOTATION_MARK\tx\tHeat (1995)",
        "d1\t2\tRECOMMENDER\t1\tTry Ronin\tx\tRonin (1998);  Heat (1995)",
        "d1\t3\tRECOMMENDER\t1\tor Alien\tx\tAlien (1979)",
    ])
    catalog = tsv_catalog([path])
    assert catalog.ids == ["Heat (1995)", "Ronin (1998)", "Alien (1979)"]
    (conv,) = read_inspired_tsv(path, catalog)
    assert conv.turns[0].text == 'I like "Heat"'
    assert conv.turns[1].text == "Try Ronin or Alien" and conv.turns[1].items == [1, 0, 2]
    small = catalog.subset([0, 1])
    with pytest.raises(UnknownIdError, match=r"t\.tsv, line 4: movie 'Alien \(1979\)'"):
        read_inspired_tsv(path, small)
    skipped: dict[str, int] = {}
    (conv,) = read_inspired_tsv(path, small, on_unknown="skip", skipped=skipped)
    assert skipped == {"unknown_movie": 1} and conv.turns[1].items == [1, 0]
    _write(path, [header, "d1\t1\tWIZARD\t1\thi\tx\t"])
    with pytest.raises(DataFormatError, match="line 2: speaker"):
        read_inspired_tsv(path, catalog)


# ---------------------------------------------------------------- zero-shot format: Reddit fixture


def test_reddit_fixture_samples():
    test = load_reddit_zeroshot(FIXTURES / "reddit" / "test.jsonl", FIXTURES / "reddit")
    assert test.catalog.titles == ["Heat (1995)", "Ronin (1998)", "Collateral (2004)", "Thief (1981)", "Drive (2011)"]
    assert test.skipped == {"unknown_movie": 0, "no_target": 0, "user_turn": 0}
    s = test.samples
    assert [x.conv_id for x in s] == ["r1", "r1", "r2", "r3"]
    assert s[1].context == (
        "User: Looking for something like Heat (1995)\nSystem: Try Ronin (1998)\nUser: Seen it. More Michael Mann?"
    )
    assert s[1].turn_id == 3 and s[1].mentioned == [0, 1] and s[1].targets == [2, 0]
    assert s[1].target_is_new == [True, False]
    assert s[2].mentioned == [] and s[2].targets == [4, 3] and s[2].target_is_new == [True, True]
    # no `input`: roles alternate back from the user turn before the target
    assert s[3].context == "User: I loved Drive (2011)\nSystem: Me too\nUser: What else?"
    assert s[3].targets == [3] and s[3].target_is_new == [True]
    assert len(expand_pairs(s)) == 6


def test_zeroshot_unknown_rec_and_bad_line(tmp_path):
    catalog = load_zeroshot_catalog(FIXTURES / "reddit")
    lines = (FIXTURES / "reddit" / "test.jsonl").read_text(encoding="utf-8").splitlines()
    sample = json.loads(lines[0])
    sample["rec"] = ["tt9999999"]
    path = _write(tmp_path / "t.jsonl", [lines[1], json.dumps(sample)])
    with pytest.raises(UnknownIdError, match=r"t\.jsonl, line 2: rec id 'tt9999999'"):
        read_zeroshot_samples(path, catalog)
    skipped: dict[str, int] = {}
    assert len(read_zeroshot_samples(path, catalog, on_unknown="skip", skipped=skipped)) == 1
    assert skipped == {"unknown_movie": 1, "no_target": 1}
    _write(path, [lines[1], "{not json"])
    with pytest.raises(DataFormatError, match=r"t\.jsonl, line 2: invalid JSON"):
        read_zeroshot_samples(path, catalog)
    del sample["prev_entity"]
    _write(path, [json.dumps(sample)])
    with pytest.raises(DataFormatError, match="line 1: sample has no 'prev_entity'"):
        read_zeroshot_samples(path, catalog)


def test_entity_title():
    assert entity_title("<http://dbpedia.org/resource/Knives_Out>") == "Knives Out"
    assert entity_title("<http://dbpedia.org/resource/Shall_We_Dance%3F_(1996_film)>") == "Shall We Dance?"
    assert entity_title("The Way of the Gun (2000)") == "The Way of the Gun (2000)"


# ---------------------------------------------------------------- real files


@pytest.fixture(scope="module")
def redial(crs_shared_data) -> CRSData:
    return load_redial(crs_shared_data / "redial")


@pytest.fixture(scope="module")
def inspired(crs_shared_data) -> CRSData:
    return load_inspired(crs_shared_data / "inspired")


def _counts(data: CRSData, split: str) -> tuple[int, int, int, int]:
    samples = data.samples(split)
    pairs = expand_pairs(samples)
    return len(data.split(split)), len(samples), len(pairs), sum(p.is_new for p in pairs)


def _assert_no_leakage(data: CRSData) -> None:
    """Each context is exactly the previous turns; the target turn's own line is never the last context line."""
    for split in ("train", "valid", "test"):
        convs = {c.conv_id: c for c in data.split(split)}
        for s in data.samples(split):
            turns = convs[s.conv_id].turns
            assert s.context == "\n".join(render_turn(t) for t in turns[: s.turn_id])
            assert turns[s.turn_id].role == "system" and s.targets == turns[s.turn_id].items
            if s.turn_id:
                assert s.context.split("\n")[-1] != render_turn(turns[s.turn_id]) or (
                    turns[s.turn_id - 1].text == turns[s.turn_id].text
                )


def test_redial_real(redial):
    assert len(redial.catalog) == 6924
    assert redial.skipped == {"empty_conversation": 0, "unknown_movie": 0}
    assert _counts(redial, "test") == (1342, 3617, 4897, 4426)
    assert redial.empty_context_turns("test") == 54  # recommendations that open a conversation: not turns
    train, valid = _counts(redial, "train"), _counts(redial, "valid")
    assert (train[0], valid[0]) == (811, 90)
    assert (train[1] + valid[1], train[2] + valid[2], train[3] + valid[3]) == (2650, 3518, 3200)
    assert not {c.conv_id for c in redial.train} & {c.conv_id for c in redial.valid}
    _assert_no_leakage(redial)


def test_redial_split_is_seeded(crs_shared_data, redial):
    other = load_redial(crs_shared_data / "redial", seed=1)
    assert {c.conv_id for c in other.valid} != {c.conv_id for c in redial.valid}
    same = load_redial(crs_shared_data / "redial")
    assert [c.conv_id for c in same.valid] == [c.conv_id for c in redial.valid]


def test_inspired_real(inspired):
    assert len(inspired.catalog) == 1806
    assert inspired.skipped == {"empty_conversation": 0, "empty_title": 1}
    assert _counts(inspired, "train") == (801, 2061, 2440, 2056)
    assert inspired.empty_context_turns("train") == 9
    assert _counts(inspired, "valid") == (99, 272, 308, 243)
    assert _counts(inspired, "test") == (99, 256, 291, 248)
    _assert_no_leakage(inspired)


def test_inspired_official_real(crs_shared_data, inspired):
    data = load_inspired_official(crs_shared_data / "inspired")
    assert len(data.catalog) == 563 and data.train == []
    assert _counts(data, "valid") == (99, 282, 320, 252)
    assert _counts(data, "test") == (99, 264, 304, 261)
    # the tsv test dialogs are UniCRS's test dialogs, turn for turn
    assert [[t.role for t in c.turns] for c in data.test] == [[t.role for t in c.turns] for c in inspired.test]
    _assert_no_leakage(data)
    shared = load_inspired_official(crs_shared_data / "inspired", catalog=inspired.catalog, on_unknown="skip")
    assert shared.skipped["unknown_movie"] == 15


def test_zeroshot_real(crs_shared_data):
    redial = load_redial_zeroshot(crs_shared_data / "redial")
    pairs = expand_pairs(redial.samples)
    assert (len(redial.catalog), len(redial.samples), len(pairs)) == (6281, 3552, 4778)
    assert sum(not p.is_new for p in pairs) == 462
    assert len({s.conv_id for s in redial.samples}) == 1322
    inspired = load_inspired_zeroshot(crs_shared_data / "inspired")
    pairs = expand_pairs(inspired.samples)
    assert (len(inspired.catalog), len(inspired.samples), len(pairs)) == (1123, 228, 253)
    assert sum(not p.is_new for p in pairs) == 41
    assert "Knives Out" in inspired.catalog.titles
    first = inspired.samples[0]
    assert first.context.startswith("System: Hi! I'm here to help you chose a movie!\nUser: Terrific")
    assert first.turn_id == 4 and first.context.count("\n") == 3
    with gzip.open(crs_shared_data / "redial" / "zero_shot_crs_test" / "test.jsonl.gz", "rt") as f:
        responses = [json.loads(line)["resp"] for line in f]
    assert all(not s.context.endswith(r) for s, r in zip(redial.samples, responses))


def test_reddit_catalog_real(crs_shared_data):
    catalog = load_reddit_catalog(crs_shared_data / "reddit-movie")
    assert len(catalog) == 7506
    assert catalog.ids[:2] == ["tt10650424", "tt2844994"]
    assert catalog.titles[:2] == ["Theater (2020)", "Homeland (2013)"]
