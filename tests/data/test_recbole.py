"""RecBole atomic files: the row form with string ids, ratings and timestamps; the sequence form (item_id_list)
rebuilt into full sequences, capped histories included; the files' own split; errors naming file and line."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from lmrec.data.loaders.recbole import chain_sequence, load_recbole, load_recbole_split
from lmrec.data.registry import detect_format, load_dataset
from lmrec.errors import DataFormatError

FIXTURES = Path(__file__).parent / "fixtures"


def test_rows_keep_string_ids_ratings_times_and_item_texts():
    data = load_recbole(FIXTURES / "recbole-rows")
    assert data.user_ids == ["alice", "bob", "carol"]
    assert data.catalog.ids == ["SKU-3", "SKU-1", "SKU-2"]  # .item order; SKU-9 has no interaction
    assert data.catalog.titles == ["Red Kettle", "Blue Mug", "Green Teapot"]
    assert data.catalog.fields["brand"] == ["Acme", "Acme", "TeaCo"]
    pairs = {(data.user_ids[u], data.catalog.ids[i]) for u, i in zip(data.users, data.items)}
    assert pairs == {("alice", "SKU-1"), ("alice", "SKU-2"), ("bob", "SKU-2"), ("bob", "SKU-3"), ("carol", "SKU-1")}
    np.testing.assert_array_equal(data.ratings, [5.0, 3.0, 4.0, 1.0, 4.5])
    np.testing.assert_array_equal(data.timestamps, [100, 200, 150, 160, 120])
    high = load_recbole(FIXTURES / "recbole-rows", min_rating=4.0)
    assert len(high) == 3 and "SKU-3" not in high.catalog


def test_sequences_chain_through_capped_histories_and_split_as_the_files_say():
    folder = FIXTURES / "recbole-seq"
    assert detect_format(folder) == "recbole"
    data = load_recbole(folder)
    sequences = {data.user_ids[u]: [data.catalog.ids[i] for i in data.items[data.users == u][
        np.argsort(data.timestamps[data.users == u])]] for u in range(data.n_users)}
    assert sequences == {"0": ["10", "11", "12", "13", "14"], "1": ["20", "21", "22", "23"]}
    split = load_recbole_split(folder)
    ids = lambda m, u: sorted(split.catalog.ids[i] for i in m[split.user_index(u)].indices)  # noqa: E731
    assert (ids(split.train, "0"), ids(split.valid, "0"), ids(split.test, "0")) == (["10", "11", "12"], ["13"],
                                                                                     ["14"])
    assert split.catalog.titles[split.catalog.index("14")] == "Fourteen"
    ratio = load_dataset(folder, split="ratio:0.6,0.2,0.2")
    assert ratio.train.nnz + ratio.valid.nnz + ratio.test.nnz == 9


def test_lines_that_do_not_chain_are_an_error_naming_the_user():
    rows = [(Path("x.inter"), 2, ["1", "2"], "3"), (Path("x.inter"), 3, ["5", "6"], "7")]
    with pytest.raises(DataFormatError, match="user 'u9'"):
        chain_sequence(rows, 2, "u9", Path("x"))


def test_a_bad_header_or_row_names_the_file_and_line(tmp_path):
    (tmp_path / "d.inter").write_text("user_id:token\titem_id:tokn\nu\ti\n")
    with pytest.raises(DataFormatError, match=r"d.inter, line 1: expected a RecBole header .*item_id:tokn"):
        load_recbole(tmp_path)
    (tmp_path / "d.inter").write_text("user_id:token\titem_id:token\trating:float\nu\ti\tfive\n")
    with pytest.raises(DataFormatError, match=r"d.inter, line 2: expected a number for rating, got 'five'"):
        load_recbole(tmp_path)
    (tmp_path / "d.inter").write_text("user_id:token\titem_id:token\nu\ti\textra\n")
    with pytest.raises(DataFormatError, match=r"line 2: expected 2 tab-separated values"):
        load_recbole(tmp_path)


def test_amazon_video_games_loads_with_the_counts_of_its_source(real_dataset, monkeypatch):
    monkeypatch.setenv("LMREC_DATA", str(real_dataset("amazon-video-games-2018").parent))
    data = load_dataset("amazon-video-games-2018")
    stats = data.stats()
    assert (stats["users"], stats["items"], stats["interactions"]) == (50546, 16859, 440264)  # SOURCE.md
    assert data.catalog.titles[0] == "Fire Emblem: The Sacred Stones"
    fixed = load_dataset("games", split="fixed")
    assert fixed.valid.nnz == fixed.test.nnz == 50546
