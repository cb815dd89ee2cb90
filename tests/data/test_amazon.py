"""Amazon loaders: raw 2014/2018 fixtures, UniSRec and LC-Rec fixtures, and the real Industrial & Scientific files."""

import gzip
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from lmrec.data.loaders.amazon import (
    amazon_release,
    load_amazon_2014,
    load_amazon_2018,
    load_amazon_reviews,
    load_lcrec,
    load_unisrec_interactions,
    load_unisrec_split,
    read_unisrec,
)
from lmrec.errors import DataFormatError

FIXTURES = Path(__file__).parent / "fixtures"


def rows(matrix) -> list[list[int]]:
    return [matrix.indices[matrix.indptr[u] : matrix.indptr[u + 1]].tolist() for u in range(matrix.shape[0])]


# --- raw releases ------------------------------------------------------------------------------------------


def test_2014_reviews_and_python_literal_meta():
    data = load_amazon_2014(FIXTURES / "amazon-2014")
    assert data.name == "Tools_5" and len(data) == 3
    assert data.user_ids == ["A2SUAM1J3GNN3B", "A1BX2TA3C4DE5F"]
    cat = data.catalog
    assert cat.ids == ["0000013714", "0000031852", "B00NOMETA1"]  # reviewed items only, in order of first review
    assert cat.titles == ["Stanley Staples", "Girls' Ballet Tutu Zebra Hot Pink", ""]  # no metadata: empty title
    assert cat.fields["categories"][1] == "Sports & Outdoors, Other Sports, Dance; Clothing, Girls"
    assert cat.fields["brand"] == ["", "Coxlists", ""]
    assert cat.fields["description"][0] == "Heavy-duty staples."
    assert data.ratings.tolist() == [5.0, 2.0, 4.0]
    assert data.timestamps.tolist() == [1252800000, 1262800000, 1272800000]
    assert amazon_release(FIXTURES / "amazon-2014") == "2014"


def test_2018_strict_json_and_gz(tmp_path):
    for path in (FIXTURES / "amazon-2018").iterdir():
        (tmp_path / f"{path.name}.gz").write_bytes(gzip.compress(path.read_bytes()))
    for folder in (FIXTURES / "amazon-2018", tmp_path):
        data = load_amazon_2018(folder)
        assert (data.n_users, data.n_items, len(data)) == (2, 2, 3)
        cat = data.catalog
        assert cat.titles == [
            "PORTER-CABLE 740000801 Sanding Roll, 80 Grit", "PORTER-CABLE 740001201 Sanding Roll, 120 Grit"
        ]
        assert cat.fields["description"][0] == "80 grit sanding roll. Adhesive-backed."
        assert cat.fields["categories"][0] == "Industrial & Scientific, Abrasive & Finishing Products, Sanding Rolls"
        assert amazon_release(folder) == "2018"
    assert len(load_amazon_2018(FIXTURES / "amazon-2018", min_rating=4)) == 2


def test_reviews_without_meta():
    data = load_amazon_reviews(FIXTURES / "amazon-2018" / "Industrial_and_Scientific_5.json", version="2018")
    assert data.catalog.titles == ["", ""] and data.name == "Industrial_and_Scientific_5"


def _edit(tmp_path: Path, source: str, file: str, line: int, text: str) -> Path:
    folder = tmp_path / source
    shutil.copytree(FIXTURES / source, folder)
    lines = (folder / file).read_text().splitlines()
    lines[line - 1] = text
    (folder / file).write_text("\n".join(lines) + "\n")
    return folder


@pytest.mark.parametrize(
    "release, file, line, text, expected",
    [
        ("2018", "Industrial_and_Scientific_5.json", 2, '{"overall": 3.0, "reviewerID": "A3"',
         "expected a JSON object, got invalid JSON"),
        # 2018 is strict
        ("2018", "meta_Industrial_and_Scientific.json", 1, "{'asin': 'B0000223SI'}", "expected a JSON object"),
        ("2018", "Industrial_and_Scientific_5.json", 3, '{"overall": 4.0, "asin": "X", "unixReviewTime": 1}',
         "expected keys"),
        ("2018", "Industrial_and_Scientific_5.json", 1,
         '{"overall": "five", "reviewerID": "A", "asin": "X", "unixReviewTime": 1}', "numeric 'overall'"),
        ("2018", "Industrial_and_Scientific_5.json", 1, '[1, 2]', "expected an object per line"),
        ("2014", "meta_Tools.json", 2, "{'asin': '0000013714', 'title': __import__('os')}",
         "expected a JSON object or Python dict literal"),
        ("2014", "meta_Tools.json", 3, "{'title': 'no asin'}", "expected an 'asin' key"),
    ],
)
def test_raw_malformed(tmp_path, release, file, line, text, expected):
    folder = _edit(tmp_path, f"amazon-{release}", file, line, text)
    load = load_amazon_2014 if release == "2014" else load_amazon_2018
    with pytest.raises(DataFormatError, match=expected) as err:
        load(folder)
    assert (Path(err.value.path).name, err.value.line) == (file, line)


def test_truncated_gzip_names_the_file(tmp_path):
    line = (FIXTURES / "amazon-2018" / "Industrial_and_Scientific_5.json").read_text().splitlines()[0]
    payload = gzip.compress(("\n".join([line] * 2000) + "\n").encode())
    (tmp_path / "Tools_5.json.gz").write_bytes(payload[: len(payload) - 40])
    with pytest.raises(DataFormatError, match="got a truncated or corrupt file") as err:
        load_amazon_2018(tmp_path)
    assert Path(err.value.path).name == "Tools_5.json.gz" and err.value.line > 1


# --- UniSRec and LC-Rec fixtures ---------------------------------------------------------------------------


def test_unisrec_chains_capped_histories():
    seqs = read_unisrec(FIXTURES / "unisrec")
    assert seqs.sequences == [[0, 1, 2, 3, 4, 5], [2, 3, 2, 1]]  # histories in the files are capped at 3
    assert seqs.user_ids == ["ABW8NXS7SV55K", "A1SWWHE1L3XR3V"]
    assert seqs.catalog.ids[0] == "B000000000"
    assert seqs.catalog.titles[1] == "Staples. Fasteners. Stanley." and seqs.catalog.titles[5] == ""
    split = load_unisrec_split(FIXTURES / "unisrec")
    assert rows(split.train) == [[0, 1, 2, 3], [2, 3]]
    assert rows(split.valid) == [[4], [2]]  # user 1's valid target repeats a training item: kept as in the files
    assert rows(split.test) == [[5], [1]]
    data = load_unisrec_interactions(FIXTURES / "unisrec")
    assert len(data) == 10 and data.timestamps.tolist() == [0, 1, 2, 3, 4, 5, 0, 1, 2, 3]


def test_unisrec_broken_chain(tmp_path):
    folder = _edit(tmp_path, "unisrec", "Tiny.train.inter", 3, "0\t0 1\t4")
    with pytest.raises(DataFormatError, match="chain"):
        read_unisrec(folder)
    folder = _edit(tmp_path / "b", "unisrec", "Tiny.valid.inter", 2, "0\t1 2 3\t9")
    with pytest.raises(DataFormatError, match="expected an item index below 6") as err:
        read_unisrec(folder)
    assert err.value.line == 2


def test_lcrec_fixture(tmp_path):
    data = load_lcrec(FIXTURES / "lcrec")
    assert (data.n_users, data.n_items, len(data)) == (2, 3, 5)
    assert data.catalog.fields["brand"][0] == "Sealed Unit Parts Co., Inc."
    assert data.timestamps.tolist() == [0, 1, 2, 0, 1]
    shutil.copytree(FIXTURES / "lcrec", tmp_path / "bad")
    (tmp_path / "bad" / "Tiny.inter.json").write_text(json.dumps({"0": [0, 7]}))
    with pytest.raises(DataFormatError, match="got 7"):
        load_lcrec(tmp_path / "bad")
    (tmp_path / "bad" / "Tiny.inter.json").write_text('{"0": [0, 1],\n "1": [2,, 1]}')
    with pytest.raises(DataFormatError, match="expected JSON") as err:
        load_lcrec(tmp_path / "bad")
    assert err.value.line == 2


# --- the real Industrial & Scientific files ----------------------------------------------------------------


def test_real_unisrec(real_dataset):
    folder = real_dataset("amazon-industrial-scientific-2018/unisrec_format")
    data = load_unisrec_interactions(folder)
    assert (data.n_users, data.n_items, len(data)) == (8442, 4385, 59427)  # the UniSRec paper's count
    split = load_unisrec_split(folder)
    assert (split.train.nnz, split.valid.nnz, split.test.nnz) == (42356, 8442, 8442)
    # the full sequence ends with the test file's history and target
    line = (folder / "Scientific.test.inter").read_text().splitlines()[1].split("\t")
    user = int(line[0])
    expected = [int(i) for i in line[1].split()] + [int(line[2])]
    ordered = data.items[data.users == user][np.argsort(data.timestamps[data.users == user])]
    assert ordered[-len(expected):].tolist() == expected


def test_real_lcrec(real_dataset):
    data = load_lcrec(real_dataset("amazon-industrial-scientific-2018/lcrec_format"))
    assert (data.n_users, data.n_items, len(data)) == (8317, 4344, 58492)
    assert data.catalog.titles[1].startswith("Stanley TRA708T Sharpshooter")
    assert sum(bool(d) for d in data.catalog.fields["description"]) == 4221
