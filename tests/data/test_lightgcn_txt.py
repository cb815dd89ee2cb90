"""LightGCN / AlphaRec text format: fixed splits, .gz files, carved validation, item texts, malformed lines."""

import gzip
import shutil
from pathlib import Path

import numpy as np
import pytest

from lmrec.data.loaders.lightgcn_txt import load_lightgcn_interactions, load_lightgcn_txt
from lmrec.errors import DataFormatError

FIXTURE = Path(__file__).parent / "fixtures" / "lightgcn"


def rows(matrix) -> list[list[int]]:
    return [matrix.indices[matrix.indptr[u] : matrix.indptr[u + 1]].tolist() for u in range(matrix.shape[0])]


def test_fixed_split_as_in_the_files():
    data = load_lightgcn_txt(FIXTURE)
    assert data.user_ids == ["0", "1", "2", "3"] and data.catalog.ids == [str(i) for i in range(6)]
    assert rows(data.train) == [[1, 2, 3], [0, 4], [], [2, 4, 5]]  # user 2 has no training items
    assert rows(data.valid) == [[4], [1], [], [0]]
    assert rows(data.test) == [[5], [2, 3], [1], [1]]
    assert data.catalog.titles[4] == "Collateral (2004)"
    assert data.protocol == "fixed files (train.txt, valid.txt, test.txt)"
    assert data.name == "lightgcn"


def test_gz_without_valid_and_items_carves_validation(tmp_path):
    for name in ("train.txt", "test.txt"):
        (tmp_path / f"{name}.gz").write_bytes(gzip.compress((FIXTURE / name).read_bytes()))
    data = load_lightgcn_txt(tmp_path, valid_fraction=0.5, seed=7)
    assert data.catalog.titles == data.catalog.ids  # no items.tsv: the ids are the titles
    original = np.array([len(r) for r in [[1, 2, 3], [0, 4], [], [2, 4, 5]]])
    assert (np.diff(data.train.indptr) + np.diff(data.valid.indptr)).tolist() == original.tolist()
    assert data.train.multiply(data.valid).nnz == 0
    assert (np.diff(data.train.indptr)[original > 0] >= 1).all()
    assert rows(data.test) == [[5], [2, 3], [1], [1]]
    assert "validation carved from train (0.5, seed 7)" in data.protocol
    again = load_lightgcn_txt(tmp_path, valid_fraction=0.5, seed=7)
    assert (again.valid != data.valid).nnz == 0


def test_interactions_union():
    data = load_lightgcn_interactions(FIXTURE)
    assert len(data) == 8 + 3 + 5 and data.timestamps is None
    assert data.to_csr().nnz == 16


def test_ids_are_mapped_densely_in_increasing_order(tmp_path):
    (tmp_path / "train.txt").write_text("2 7\n")
    (tmp_path / "test.txt").write_text("0 3\n")
    data = load_lightgcn_txt(tmp_path)
    assert data.user_ids == ["0", "2"] and data.catalog.ids == ["3", "7"]  # only the ids that occur
    assert rows(data.train) == [[], [1]] and rows(data.test) == [[0], []]


def test_contiguous_ids_keep_dense_index_equal_to_the_file_id():
    data = load_lightgcn_txt(FIXTURE)
    assert data.user_ids == [str(u) for u in range(data.n_users)]
    assert data.catalog.ids == [str(i) for i in range(data.n_items)]


def test_huge_ids_load_in_bounded_memory(tmp_path):
    import tracemalloc

    big = 2**63 - 5
    (tmp_path / "train.txt").write_text(f"{big} 1 {big - 1}\n3 1\n")
    (tmp_path / "test.txt").write_text(f"{big} 2\n")
    tracemalloc.start()
    data = load_lightgcn_txt(tmp_path)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert data.user_ids == ["3", str(big)] and data.catalog.ids == ["1", "2", str(big - 1)]
    assert peak < 5 * 2**20  # a dense range up to the largest id would need exabytes
    (tmp_path / "test.txt").write_text(f"{2**63} 2\n")
    with pytest.raises(DataFormatError, match="between 0 and 2\\^63 - 1"):
        load_lightgcn_txt(tmp_path)


def test_a_last_line_without_newline_is_read_with_a_warning(tmp_path):
    (tmp_path / "train.txt").write_text("0 1 2\n1 4")
    (tmp_path / "test.txt").write_text("0 3\n")
    with pytest.warns(UserWarning, match="train.txt, line 2: the file does not end with a newline"):
        data = load_lightgcn_txt(tmp_path)
    assert rows(data.train)[1] == [data.catalog.index("4")]


def test_nul_bytes_and_huge_tokens_give_short_messages(tmp_path):
    (tmp_path / "test.txt").write_text("0 3\n")
    (tmp_path / "train.txt").write_bytes(b"0 1\n" + b"\x00" * 400_000)
    with pytest.raises(DataFormatError, match="NUL bytes") as exc:
        load_lightgcn_txt(tmp_path)
    assert len(str(exc.value)) < 300
    (tmp_path / "train.txt").write_text("0 " + "9x" * 200_000 + "\n")
    with pytest.raises(DataFormatError, match="400000 characters") as exc:
        load_lightgcn_txt(tmp_path)
    assert len(str(exc.value)) < 300


@pytest.mark.parametrize(
    "file, text, line, expected",
    [
        ("train.txt", "0 1 2 3\n1 0 x4\n", 2, "expected an integer item id, got 'x4'"),
        ("test.txt", "0 5\n-1 2\n", 2, r"expected a user id between 0 and 2\^63 - 1"),
        ("test.txt", "0 5\n1 9\n", 2, "expected an item id listed in"),  # 9 is not in items.tsv
        ("items.tsv", "id\ttext\n0\tToy Story\n", 1, "expected the header 'item_id<TAB>text'"),
        ("items.tsv", "item_id\ttext\n0\n", 2, "expected 2 tab-separated columns"),
    ],
)
def test_malformed(tmp_path, file, text, line, expected):
    shutil.copytree(FIXTURE, tmp_path / "d")
    (tmp_path / "d" / file).write_text(text)
    with pytest.raises(DataFormatError, match=expected) as err:
        load_lightgcn_txt(tmp_path / "d")
    assert (Path(err.value.path).name, err.value.line) == (file, line)


def test_truncated_gzip_names_the_file(tmp_path):
    payload = gzip.compress(("".join(f"{u} " + " ".join(map(str, range(50))) + "\n" for u in range(200))).encode())
    (tmp_path / "train.txt.gz").write_bytes(payload[: len(payload) // 2])
    (tmp_path / "test.txt").write_text("0 1\n")
    with pytest.raises(DataFormatError, match="truncated or corrupt") as err:
        load_lightgcn_txt(tmp_path)
    assert Path(err.value.path).name == "train.txt.gz" and err.value.line is not None


def test_missing_train_is_named(tmp_path):
    (tmp_path / "test.txt").write_text("0 1\n")
    with pytest.raises(FileNotFoundError, match="train.txt"):
        load_lightgcn_txt(tmp_path)


def test_a_fixed_split_can_be_thinned_too():
    from lmrec.data.registry import load_dataset

    data = load_dataset(FIXTURE, format="lightgcn", split="fixed+thin:0.5", seed=3)
    # max(1, round(0.5·n)) of each user's training items: 3 -> 2, 2 -> 1, 0 -> 0, 3 -> 2
    assert [len(r) for r in rows(data.train)] == [2, 1, 0, 2]
    assert all(set(t) <= set(f) for t, f in zip(rows(data.train), [[1, 2, 3], [0, 4], [], [2, 4, 5]], strict=True))
    assert rows(data.valid) == [[4], [1], [], [0]] and rows(data.test) == [[5], [2, 3], [1], [1]]
    with pytest.raises(ValueError, match=r"expected thin:<share kept>, e.g. fixed\+thin:0.1"):
        load_dataset(FIXTURE, format="lightgcn", split="fixed+half")
