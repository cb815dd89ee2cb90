"""A practitioner's own files in: string ids, any delimiter, gzip, Parquet, JSON Lines, data frames and pyarrow
tables; what was read and dropped is reported; the canonical folder loads everywhere with its checksum checked."""

from __future__ import annotations

import gzip
import json

import pandas as pd
import pytest

import lmrec
from lmrec import cli
from lmrec.data.frames import Dataset
from lmrec.data.registry import detect_format, load_dataset
from lmrec.errors import DataFormatError, LmrecError

INTERACTIONS = """user_id,item_id,rating,timestamp
alice,SKU-1,5,100
alice,SKU-2,2,200
alice,SKU-1,4,300
bob,SKU-2,4,150
bob,SKU-3,5,160
,SKU-3,5,170
carol,SKU-1,3,120
carol,SKU-4,5,130
"""
ITEMS = """item_id,title,description
SKU-3,Red Kettle,A kettle
SKU-1,Blue Mug,
SKU-2,,
SKU-4,Green Teapot,For tea
SKU-9,Never Bought,
"""


@pytest.fixture
def files(tmp_path):
    (tmp_path / "interactions.csv").write_text(INTERACTIONS)
    (tmp_path / "items.csv").write_text(ITEMS)
    return tmp_path


def test_files_in_with_string_ids_and_a_report_of_what_was_dropped(files):
    data = Dataset.from_files(files / "interactions.csv", files / "items.csv", text_cols=["title", "description"])
    i = data.interactions
    assert i.user_ids == ["alice", "carol", "bob"]  # first appearance in time order
    assert i.catalog.ids == ["SKU-3", "SKU-1", "SKU-2", "SKU-4"]  # the items file's order; SKU-9 never bought
    assert i.catalog.titles == ["Red Kettle", "Blue Mug", "", "Green Teapot"]
    assert i.catalog.fields["description"] == ["A kettle", "", "", "For tea"]
    r = data.report
    assert (r.rows, r.missing_dropped, r.duplicates_dropped) == (8, 1, 1)  # alice's second SKU-1 (t=300) goes
    assert (r.users, r.items, r.interactions) == (3, 4, 6)
    assert (r.items_without_text, r.interactions_without_text, r.listed_items_without_interactions) == (1, 2, 1)
    first = [(i.user_ids[u], i.catalog.ids[t], rating) for u, t, rating in zip(i.users, i.items, i.ratings)]
    assert ("alice", "SKU-1", 5.0) in first and ("alice", "SKU-1", 4.0) not in first
    high = Dataset.from_files(files / "interactions.csv", min_rating=4)
    assert high.report.below_min_rating == 2 and high.interactions.catalog.titles == [""] * 4  # no items file


def test_any_delimiter_gzip_parquet_and_json_lines_read_the_same(files):
    frame = pd.read_csv(files / "interactions.csv", dtype=str)
    (files / "i.tsv").write_text(INTERACTIONS.replace(",", "\t"))
    (files / "i.psv").write_text(INTERACTIONS.replace(",", "|"))
    with gzip.open(files / "i.csv.gz", "wt") as f:
        f.write(INTERACTIONS)
    frame.to_parquet(files / "i.parquet")
    frame.to_json(files / "i.jsonl", orient="records", lines=True)
    want = Dataset.from_files(files / "interactions.csv").checksum()
    for name, sep in (("i.tsv", None), ("i.psv", "|"), ("i.csv.gz", None), ("i.parquet", None), ("i.jsonl", None)):
        assert Dataset.from_files(files / name, sep=sep).checksum() == want, name


def test_data_frames_and_pyarrow_tables_with_other_column_names():
    import pyarrow as pa

    frame = pd.DataFrame({"customer": ["u1", "u1", "u2", "u2", "u3"], "product": [10, 11, 10, 12, 11],
                          "when": pd.to_datetime(["2024-01-01", "2024-01-02", "2024-01-01", "2024-02-01",
                                                  "2024-03-01"])})
    data = Dataset.from_frames(pa.Table.from_pandas(frame), user_col="customer", item_col="product", time_col="when",
                               split="temporal-user:0.5,0,0.5")
    assert data.interactions.catalog.ids == ["10", "11", "12"]  # integer ids as text
    assert data.interactions.timestamps.min() == 1704067200  # 2024-01-01 in seconds
    split = data.to_split()
    assert split.test.nnz == 2 and "temporal" in split.protocol  # u3's one item stays in training
    with pytest.raises(LmrecError, match=r"which column holds the user\? .*name it with user_col="):
        Dataset.from_frames(frame)
    with pytest.raises(LmrecError, match=r"no column 'nope' \(rating_col='nope'\)"):
        Dataset.from_frames(frame, user_col="customer", item_col="product", rating_col="nope")
    with pytest.raises(LmrecError, match=r"split='temporal-user.*timestamps"):
        Dataset.from_frames(frame[["customer", "product"]], user_col="customer", item_col="product",
                            split="temporal-user:0.8,0.1,0.1")


def test_a_bad_value_names_the_file_line_and_column(files):
    (files / "bad.csv").write_text("user_id,item_id,rating\nu,i,5\nu,j,five\n")
    with pytest.raises(DataFormatError, match=r"bad.csv, line 3: expected a number in column 'rating', got 'five'"):
        Dataset.from_files(files / "bad.csv")
    with pytest.raises(LmrecError, match=r"nothing.csv: no such file"):
        Dataset.from_files(files / "nothing.csv")


def test_kcore_and_the_canonical_folder_round_trip(tmp_path):
    rows = [(f"u{u}", f"i{(u + j) % 6}", 1000 * u + j) for u in range(8) for j in range(3)] + [("loner", "i0", 5)]
    frame = pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp"])
    data = Dataset.from_frames(frame, kcore=2, split="loo")
    assert data.report.kcore_dropped == 1 and "loner" not in data.interactions.user_ids
    folder = data.save(tmp_path / "shop")
    assert sorted(p.name for p in folder.iterdir()) == ["dataset.json", "interactions.parquet", "items.parquet"]
    assert detect_format(folder) == "lmrec"
    back = Dataset.load(folder)
    assert back.checksum() == data.checksum() and back.split == "loo"
    assert load_dataset(folder).protocol == "leave-one-out (temporal)"  # the folder's own default split
    assert "per-user random" in load_dataset(folder, split="ratio:0.5,0.25,0.25").protocol
    with pytest.raises(FileExistsError):
        data.save(folder)
    stored = pd.read_parquet(folder / "interactions.parquet")
    stored.iloc[:-1].to_parquet(folder / "interactions.parquet")
    with pytest.raises(DataFormatError, match="changed or damaged"):
        load_dataset(folder)


def test_lmrec_data_import_prints_and_saves_what_it_read(files, tmp_path, capsys):
    out = tmp_path / "shop"
    assert cli.main(["data", "import", "--interactions", str(files / "interactions.csv"), "--items",
                     str(files / "items.csv"), "--text-cols", "title,description", "--min-rating", "3",
                     "--split", "ratio:0.6,0.2,0.2", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "read 8 rows" in printed and "1 repeated (user, item) pairs" in printed and f"--dataset {out}" in printed
    manifest = json.loads((out / "dataset.json").read_text())
    assert manifest["report"]["below_min_rating"] == 1 and manifest["split"] == "ratio:0.6,0.2,0.2"
    assert manifest["import"]["text_cols"] == ["title", "description"]
    assert cli.main(["data", "import", "--interactions", str(files / "interactions.csv"), "--out", str(out)]) == 2
    assert "exists and is not an empty folder" in capsys.readouterr().err
    assert cli.main(["data", "import", "--interactions", str(files / "interactions.csv"), "--text-cols", "title",
                     "--out", str(tmp_path / "x")]) == 2
    assert "--text-cols title needs a file of items: --items" in capsys.readouterr().err
    recbole = tmp_path / "from-recbole"
    assert cli.main(["data", "import", "--dataset", str(__import__("pathlib").Path(__file__).parent / "fixtures" /
                                                        "recbole-rows"), "--out", str(recbole)]) == 0
    assert Dataset.load(recbole).interactions.catalog.fields["brand"] == ["Acme", "Acme", "TeaCo"]


def test_fit_takes_a_dataset_or_a_data_frame(files):
    data = Dataset.from_files(files / "interactions.csv", files / "items.csv")
    run = lmrec.fit("pop", data)
    assert run.data.checksum() == data.to_split().checksum()
    frame = pd.read_csv(files / "interactions.csv")
    assert lmrec.fit("pop", frame).data.checksum() == Dataset.from_frames(frame).to_split().checksum()
