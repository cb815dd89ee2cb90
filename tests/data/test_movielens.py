"""MovieLens loaders: real 100K and latest-small files, a hand-written 1M fixture, malformed input."""

import shutil
from pathlib import Path

import numpy as np
import pytest

from lmrec.data.loaders.movielens import load_movielens_1m, load_movielens_100k, load_movielens_latest
from lmrec.errors import DataFormatError

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture(scope="module")
def ml100k(real_dataset):
    return load_movielens_100k(real_dataset("movielens-100k"))


@pytest.fixture(scope="module")
def latest(real_dataset):
    return load_movielens_latest(real_dataset("movielens-latest-small"))


def test_100k_counts_and_text(ml100k):
    assert (ml100k.n_users, ml100k.n_items, len(ml100k)) == (943, 1682, 100000)
    assert ml100k.catalog.titles[0] == "Toy Story (1995)"
    assert ml100k.catalog.fields["genres"][0] == "Animation, Children's, Comedy"
    assert ml100k.catalog.titles[ml100k.catalog.index("543")] == "Misérables, Les (1995)"  # Latin-1 decoded
    assert set(np.unique(ml100k.ratings)) == {1, 2, 3, 4, 5}
    first = ml100k.user_ids[ml100k.users[0]], ml100k.catalog.ids[ml100k.items[0]], ml100k.timestamps[0]
    assert first == ("196", "242", 881250949)  # first line of u.data


def test_100k_min_rating(real_dataset):
    data = load_movielens_100k(real_dataset("movielens-100k"), min_rating=4)
    assert len(data) == 55375 and data.ratings.min() >= 4
    assert data.n_items == 1682  # the catalog keeps every movie


def test_latest_small_counts_and_text(latest):
    assert (latest.n_users, latest.n_items, len(latest)) == (610, 9742, 100836)
    assert len(np.unique(latest.items)) == 9724
    cat = latest.catalog
    assert cat.titles[cat.index("11")] == "American President, The (1995)"
    assert cat.fields["genres"][cat.index("1")] == "Adventure, Animation, Children, Comedy, Fantasy"
    assert cat.fields["genres"][cat.index("114335")] == ""  # "(no genres listed)"
    assert cat.fields["tags"][cat.index("1")] == "pixar, fun"
    assert sum(bool(t) for t in cat.fields["tags"]) == 1572


def test_1m_fixture():
    data = load_movielens_1m(FIXTURES / "ml-1m")
    assert (data.n_users, data.n_items, len(data)) == (3, 4, 7)
    assert data.user_ids == ["1", "2", "10"]  # sorted numerically
    assert data.catalog.titles[data.catalog.index("73")] == "Misérables, Les (1995)"
    assert data.catalog.fields["genres"][0] == "Animation, Children's, Comedy"
    assert data.ratings.tolist() == [5, 3, 3, 4, 2, 5, 1]
    assert data.timestamps[0] == 978300760
    assert len(load_movielens_1m(FIXTURES / "ml-1m", min_rating=4)) == 3


def test_100k_fixture_without_u_genre():
    data = load_movielens_100k(FIXTURES / "ml-100k")
    assert data.catalog.fields["genres"] == [
        "Animation, Children's, Comedy", "Action, Adventure, Thriller", "Drama, Romance"
    ]
    assert data.user_ids == ["22", "186", "196"]


def test_latest_fixture_quotes_and_tags():
    data = load_movielens_latest(FIXTURES / "ml-latest")
    cat = data.catalog
    assert cat.titles[cat.index("29")] == "City of Lost Children, The (Cité des enfants perdus, La) (1995)"
    assert cat.fields["tags"] == ["pixar, fun", "politics, romance", "", ""]
    assert data.ratings.tolist() == [4.0, 2.5, 5.0, 0.5]
    assert "tags" not in load_movielens_latest(FIXTURES / "ml-latest", tags=False).catalog.fields


def _broken(tmp_path: Path, source: str, file: str, line: int, text: str) -> Path:
    """A copy of a fixture folder whose ``file`` has line ``line`` replaced by ``text``."""
    folder = tmp_path / source
    shutil.copytree(FIXTURES / source, folder)
    lines = (folder / file).read_bytes().decode("latin-1").splitlines()
    lines[line - 1] = text
    (folder / file).write_bytes(("\n".join(lines) + "\n").encode("latin-1"))
    return folder


@pytest.mark.parametrize(
    "file, line, text, expected",
    [
        ("ratings.dat", 3, "1::3::3", "expected 4 '::'-separated fields"),  # truncated line
        ("ratings.dat", 5, "2::two::2::978299026", "expected an integer movie id, got 'two'"),
        ("ratings.dat", 2, "1::1::five::978300760", "expected a numeric rating"),
        ("ratings.dat", 6, "10::999::5::978226474", "expected a movie id listed in"),
        ("movies.dat", 2, "x2::Jumanji (1995)::Adventure", "expected an integer movie id, got 'x2'"),
        ("movies.dat", 4, "1::Toy Story again::Comedy", "expected each movie id once"),
    ],
)
def test_1m_malformed(tmp_path, file, line, text, expected):
    folder = _broken(tmp_path, "ml-1m", file, line, text)
    with pytest.raises(DataFormatError, match=expected) as err:
        load_movielens_1m(folder)
    assert err.value.line == line and Path(err.value.path).name == file
    assert f"{file}, line {line}:" in str(err.value)


@pytest.mark.parametrize(
    "file, line, text, expected",
    [
        ("u.data", 2, "186\t2\t3", "expected 4 '\\\\t'-separated fields"),
        ("u.data", 4, "abc\t3\t5\t881250950", "expected an integer user id, got 'abc'"),
        ("u.item", 2, "2|GoldenEye (1995)|01-Jan-1995||url|0|1", "expected 24 '\\|'-separated fields"),
    ],
)
def test_100k_malformed(tmp_path, file, line, text, expected):
    folder = _broken(tmp_path, "ml-100k", file, line, text)
    with pytest.raises(DataFormatError, match=expected) as err:
        load_movielens_100k(folder)
    assert (err.value.line, Path(err.value.path).name) == (line, file)


@pytest.mark.parametrize(
    "file, line, text, expected",
    [
        ("ratings.csv", 3, "1,11,2.5", "expected 4 comma-separated fields"),
        ("ratings.csv", 4, "2,29x,5.0,1445714994", "expected an integer movie id, got '29x'"),
        ("movies.csv", 1, "movieId,name,genres", "expected the header movieId,title,genres"),
        ("tags.csv", 3, "3,12345,fun,1445714996", "expected a movie id listed in"),
    ],
)
def test_latest_malformed(tmp_path, file, line, text, expected):
    folder = _broken(tmp_path, "ml-latest", file, line, text)
    with pytest.raises(DataFormatError, match=expected) as err:
        load_movielens_latest(folder)
    assert (err.value.line, Path(err.value.path).name) == (line, file)


def test_missing_file_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="movies.dat"):
        load_movielens_1m(tmp_path)
