"""Dataset registry: names, aliases, data roots, the bundled ml-latest-small, format detection, default splits."""

import shutil
from pathlib import Path

import numpy as np
import pytest

from helpers import write_inspired
from lmrec.data import registry
from lmrec.data.conversations import CRSData
from lmrec.data.registry import (
    BUNDLED_DIR,
    DataRef,
    DatasetNotFoundError,
    detect_format,
    find_dataset_dir,
    list_datasets,
    load_dataset,
    load_interactions,
)

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture(autouse=True)
def no_env_roots(monkeypatch):
    monkeypatch.delenv("LMREC_DATA", raising=False)


def test_specs():
    names = {spec.name for spec in list_datasets()}
    assert {"movielens-latest-small", "movielens-100k", "movielens-1m", "amazon-industrial-scientific-2018",
            "amazon-industrial-scientific-2018-unisrec", "inspired", "redial"} <= names
    for spec in list_datasets():
        assert spec.licence and spec.url and spec.description
        if spec.task == "cf":
            assert spec.format in registry.FORMATS and spec.split == "ratio:0.4,0.3,0.3"
        else:  # conversational datasets come with their own split
            assert spec.task == "crs" and spec.format in registry.CRS_FORMATS and spec.split == "fixed"
    assert {spec.name for spec in list_datasets() if spec.task == "crs"} == {"inspired", "redial"}


def test_conversational_dataset_by_name(tmp_path):
    write_inspired(tmp_path)
    assert detect_format(tmp_path / "inspired") == "inspired"
    data = load_dataset("inspired", data_dir=tmp_path)
    assert isinstance(data, CRSData) and data.name == "inspired"
    assert (len(data.train), len(data.valid), len(data.test)) == (12, 3, 3)
    assert data.checksum() == load_dataset(tmp_path / "inspired").checksum()
    with pytest.raises(ValueError, match="its own split"):
        load_dataset("inspired", data_dir=tmp_path, split="ratio:0.8,0.1,0.1")


def test_data_ref_of_a_path_is_absolute(tmp_path, monkeypatch):
    shutil.copytree(FIXTURES / "ml-1m", tmp_path / "ml")
    monkeypatch.chdir(tmp_path)
    ref = DataRef.of("ml", split="ratio:0.8,0.1,0.1", seed=3)
    assert ref.dataset == str(tmp_path.resolve() / "ml") and (ref.split, ref.seed) == ("ratio:0.8,0.1,0.1", 3)
    assert DataRef.of("ml-1m").dataset == "ml-1m"  # a registered name stays a name
    monkeypatch.chdir(FIXTURES)
    assert ref.load().checksum() == load_dataset(tmp_path / "ml", split="ratio:0.8,0.1,0.1", seed=3).checksum()


def test_bundled_latest_small():
    assert find_dataset_dir("ml-latest-small") == BUNDLED_DIR / "ml-latest-small"
    assert (BUNDLED_DIR / "ml-latest-small" / "README.txt").is_file()  # the GroupLens licence travels with it
    data = load_dataset("ml-latest-small")
    assert data.name == "movielens-latest-small"
    assert (data.n_users, data.n_items) == (610, 9742)
    assert (data.train.nnz, data.valid.nnz, data.test.nnz) == (40315, 30275, 30246)
    assert data.protocol == "per-user random 0.4:0.3:0.3 (seed 2024)"


def test_default_split_is_alpharec_433(real_dataset, shared_data):
    real_dataset("movielens-100k")
    data = load_dataset("ml-100k", data_dir=shared_data)
    sizes = np.diff(data.train.indptr) + np.diff(data.valid.indptr) + np.diff(data.test.indptr)
    assert sizes.sum() == 100000
    assert (np.diff(data.train.indptr) == np.floor(0.4 * sizes + 0.5)).all()  # the training part rounds first
    assert (np.diff(data.valid.indptr) == np.floor(0.3 * sizes + 0.5)).all()
    same = load_dataset("ml-100k", data_dir=shared_data)
    other = load_dataset("ml-100k", data_dir=shared_data, seed=1)
    assert (same.test != data.test).nnz == 0 and (other.test != data.test).nnz > 0


def test_env_roots_in_order(tmp_path, monkeypatch):
    first, second = tmp_path / "a", tmp_path / "b"
    shutil.copytree(FIXTURES / "ml-1m", second / "ml-1m")
    monkeypatch.setenv("LMREC_DATA", f"{first}{registry.os.pathsep}{second}")
    assert find_dataset_dir("movielens-1m") == second / "ml-1m"
    shutil.copytree(FIXTURES / "ml-1m", first / "movielens-1m")
    assert find_dataset_dir("ml-1m") == first / "movielens-1m"
    assert len(load_interactions("ml-1m")) == 7


def test_not_found_lists_folders_and_url(tmp_path):
    with pytest.raises(DatasetNotFoundError) as err:
        find_dataset_dir("movielens-1m", data_dir=tmp_path)
    message = str(err.value)
    assert str(tmp_path / "movielens-1m") in message and str(BUNDLED_DIR / "ml-1m") in message
    assert "https://files.grouplens.org/datasets/movielens/ml-1m.zip" in message
    with pytest.raises(DatasetNotFoundError, match="neither a known dataset"):
        load_dataset("no-such-dataset")


@pytest.mark.parametrize(
    "folder, expected",
    [("ml-1m", "movielens-1m"), ("ml-100k", "movielens-100k"), ("ml-latest", "movielens-latest"),
     ("lightgcn", "lightgcn"), ("unisrec", "unisrec"), ("lcrec", "lcrec"),
     ("amazon-2014", "amazon-2014"), ("amazon-2018", "amazon-2018")],
)
def test_detect_format(folder, expected):
    assert detect_format(FIXTURES / folder) == expected


def test_paths_and_fixed_splits():
    fixed = load_dataset(FIXTURES / "lightgcn")
    assert fixed.protocol.startswith("fixed files") and fixed.test.nnz == 5
    resplit = load_dataset(str(FIXTURES / "lightgcn"), split="ratio:0.8,0.1,0.1", seed=3)
    assert resplit.protocol == "per-user random 0.8:0.1:0.1 (seed 3)"
    uni = load_dataset(FIXTURES / "unisrec", split="fixed")
    assert uni.test.nnz == 2 and "leave-one-out" in uni.protocol
    loo = load_dataset(FIXTURES / "unisrec", split="loo")
    assert loo.protocol == "leave-one-out (temporal)"
    with pytest.raises(ValueError, match="no split of its own"):
        load_dataset(FIXTURES / "ml-1m", split="fixed")
    with pytest.raises(ValueError, match="no ratings"):
        load_dataset(FIXTURES / "lcrec", min_rating=4)
    assert load_interactions(FIXTURES / "ml-1m", min_rating=4).ratings.min() >= 4
    assert load_interactions(FIXTURES / "amazon-2014", format="amazon-2014").n_items == 3


def test_real_amazon_names(shared_data, real_dataset):
    real_dataset("amazon-industrial-scientific-2018")
    lcrec = load_dataset("amazon-industrial-scientific-2018", data_dir=shared_data)
    assert (lcrec.n_users, lcrec.n_items) == (8317, 4344)
    assert (lcrec.train.nnz, lcrec.valid.nnz, lcrec.test.nnz) == (22824, 19325, 16343)
    uni = load_dataset("amazon-industrial-scientific-2018-unisrec", data_dir=shared_data, split="fixed")
    assert (uni.n_users, uni.n_items, uni.test.nnz) == (8442, 4385, 8442)
