"""MovieLens loaders: 100K (``u.data``/``u.item``), "latest" (``ratings.csv``/``movies.csv``) and 1M (``*.dat``).

Every rating is an interaction unless ``min_rating`` is given (then only ratings ``>= min_rating`` are kept).
The catalog holds every movie of the item file (also movies nobody rated), in file order, with the title
(year included, e.g. ``"Toy Story (1995)"``) and a ``genres`` field (``"Animation, Children's, Comedy"``);
the latest format adds a ``tags`` field from ``tags.csv``. Users are the rating file's user ids (strings),
sorted numerically. A rating whose movie is not in the item file raises :class:`DataFormatError` (no such
rows exist in the official releases).
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from lmrec.data.catalog import ItemCatalog
from lmrec.data.interactions import Interactions
from lmrec.data.loaders.lightgcn_txt import iter_lines, parse_int
from lmrec.errors import DataFormatError, MissingFileError

#: ``u.genre`` order of the 19 genre flags of ``u.item`` (used when ``u.genre`` is missing).
GENRES_100K = (
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary", "Drama",
    "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller", "War", "Western",
)

Rating = tuple[int, str, str, float, int]  # line, user id, item id, rating, timestamp


def _split(path: Path, line_no: int, line: str, sep: str, n_fields: int, what: str) -> list[str]:
    fields = line.split(sep)
    if len(fields) != n_fields:
        raise DataFormatError(
            path, line_no, f"expected {n_fields} {sep!r}-separated fields ({what}), got {len(fields)}: {line[:80]!r}"
        )
    return fields


def _rating(path: Path, line_no: int, fields: list[str]) -> Rating:
    user, item, rating, timestamp = (f.strip() for f in fields)
    try:
        value = float(rating)
    except ValueError:
        raise DataFormatError(path, line_no, f"expected a numeric rating, got {rating!r}") from None
    return (
        line_no,
        str(parse_int(path, line_no, user, "user id")),
        str(parse_int(path, line_no, item, "movie id")),
        value,
        parse_int(path, line_no, timestamp, "timestamp"),
    )


def _add_id(ids: list[str], seen: set[str], path: Path, line_no: int, token: str) -> None:
    """Append a movie id, refusing duplicates with the file and line."""
    item = str(parse_int(path, line_no, token.strip(), "movie id"))
    if item in seen:
        raise DataFormatError(path, line_no, f"expected each movie id once, got {item!r} again")
    seen.add(item)
    ids.append(item)


def _genres(text: str, sep: str = "|") -> str:
    """``"Adventure|Animation"`` -> ``"Adventure, Animation"``; ``"(no genres listed)"`` -> ``""``."""
    return ", ".join(g for g in text.split(sep) if g and g != "(no genres listed)")


def _build(
    ratings: list[Rating], ratings_path: Path, item_path: Path, catalog: ItemCatalog,
    min_rating: float | None, name: str,
) -> Interactions:
    index = {item_id: i for i, item_id in enumerate(catalog.ids)}
    for line_no, _, item, _, _ in ratings:
        if item not in index:
            raise DataFormatError(ratings_path, line_no, f"expected a movie id listed in {item_path}, got {item!r}")
    if min_rating is not None:
        ratings = [r for r in ratings if r[3] >= min_rating]
    user_ids = sorted({r[1] for r in ratings}, key=int)
    user_index = {u: i for i, u in enumerate(user_ids)}
    return Interactions(
        users=np.array([user_index[r[1]] for r in ratings], dtype=np.int64),
        items=np.array([index[r[2]] for r in ratings], dtype=np.int64),
        user_ids=user_ids,
        catalog=catalog,
        ratings=np.array([r[3] for r in ratings], dtype=np.float32),
        timestamps=np.array([r[4] for r in ratings], dtype=np.int64),
        name=name,
    )


def _require(path: Path, fmt: str) -> Path:
    """``path`` when it is a file, else a :class:`MissingFileError` naming it and the format that needs it."""
    if not path.is_file():
        raise MissingFileError(f"{path.parent}: no {path.name}, which the {fmt} format needs")
    return path


def load_movielens_100k(
    folder: str | Path, min_rating: float | None = None, name: str = "movielens-100k"
) -> Interactions:
    """MovieLens 100K: ``u.data`` (tab-separated ``196\\t242\\t3\\t881250949``: user, movie, rating, time) and
    ``u.item`` (Latin-1, ``|``-separated: ``1|Toy Story (1995)|01-Jan-1995||<imdb url>|0|0|0|1|1|...``, then
    19 genre flags named by ``u.genre``, or :data:`GENRES_100K` when that file is missing)."""
    folder = Path(folder)
    genre_path = folder / "u.genre"
    genres = list(GENRES_100K)
    if genre_path.is_file():
        genres = []
        for line_no, line in iter_lines(genre_path, "latin-1"):
            if line.strip():
                genre, position = _split(genre_path, line_no, line, "|", 2, "genre|index")
                if parse_int(genre_path, line_no, position, "genre index") != len(genres):
                    raise DataFormatError(genre_path, line_no, f"expected genre index {len(genres)}, got {position!r}")
                genres.append(genre)
    item_path = _require(folder / "u.item", "movielens-100k")
    ids, titles, genre_texts, seen = [], [], [], set()
    for line_no, line in iter_lines(item_path, "latin-1"):
        if not line.strip():
            continue
        fields = _split(
            item_path, line_no, line, "|", 5 + len(genres), f"id|title|dates|url and {len(genres)} genre flags"
        )
        flags = fields[5:]
        if any(f not in ("0", "1") for f in flags):
            raise DataFormatError(item_path, line_no, f"expected 0/1 genre flags, got {'|'.join(flags)!r}")
        _add_id(ids, seen, item_path, line_no, fields[0])
        titles.append(fields[1].strip())
        genre_texts.append(", ".join(g for g, f in zip(genres, flags) if f == "1"))
    catalog = ItemCatalog(ids, titles, {"genres": genre_texts})
    data_path = _require(folder / "u.data", "movielens-100k")
    ratings = [
        _rating(data_path, line_no, _split(data_path, line_no, line, "\t", 4, "user, movie, rating, timestamp"))
        for line_no, line in iter_lines(data_path, records=True)
        if line.strip()
    ]
    return _build(ratings, data_path, item_path, catalog, min_rating, name)


def _csv_rows(path: Path, header: list[str]):
    """``(line_number, fields)`` of a UTF-8 CSV file after checking its header (quoted fields handled)."""
    reader = None
    try:
        with open(path, newline="", encoding="utf-8-sig") as handle:
            reader = csv.reader(handle)
            first = next(reader, None)
            if first != header:
                raise DataFormatError(path, 1, f"expected the header {','.join(header)}, got {first}")
            for fields in reader:
                if not fields:
                    continue
                if len(fields) != len(header):
                    raise DataFormatError(
                        path, reader.line_num,
                        f"expected {len(header)} comma-separated fields, got {len(fields)}: {fields}"
                    )
                yield reader.line_num, fields
    except UnicodeDecodeError as exc:
        line = reader.line_num + 1 if reader else None
        raise DataFormatError(path, line, f"expected UTF-8 text, got undecodable bytes ({exc.reason})") from None
    except csv.Error as exc:
        raise DataFormatError(path, reader.line_num if reader else None, f"expected valid CSV, got {exc}") from None


def load_movielens_latest(
    folder: str | Path, min_rating: float | None = None, name: str = "movielens-latest-small", tags: bool = True
) -> Interactions:
    """MovieLens "latest" CSVs (ml-latest-small, ml-25m, ml-32m...): ``ratings.csv``
    (``userId,movieId,rating,timestamp``, e.g. ``1,1,4.0,964982703``), ``movies.csv`` (``movieId,title,genres``,
    e.g. ``11,"American President, The (1995)",Comedy|Drama|Romance``) and optional ``tags.csv``
    (``userId,movieId,tag,timestamp``): each movie's distinct tags (case-insensitive, first spelling kept, in file
    order) joined by ``", "`` form the ``tags`` field."""
    folder = Path(folder)
    movies_path = _require(folder / "movies.csv", "movielens-latest")
    ids, titles, genres, seen = [], [], [], set()
    for line_no, (movie, title, genre) in _csv_rows(movies_path, ["movieId", "title", "genres"]):
        _add_id(ids, seen, movies_path, line_no, movie)
        titles.append(title.strip())
        genres.append(_genres(genre))
    fields = {"genres": genres}
    tags_path = folder / "tags.csv"
    if tags and tags_path.is_file():
        index = {item_id: i for i, item_id in enumerate(ids)}
        per_movie: list[dict[str, str]] = [{} for _ in ids]
        for line_no, (_, movie, tag, _) in _csv_rows(tags_path, ["userId", "movieId", "tag", "timestamp"]):
            movie = str(parse_int(tags_path, line_no, movie.strip(), "movie id"))
            if movie not in index:
                raise DataFormatError(tags_path, line_no, f"expected a movie id listed in {movies_path}, got {movie!r}")
            if tag.strip():
                per_movie[index[movie]].setdefault(tag.strip().lower(), tag.strip())
        fields["tags"] = [", ".join(found.values()) for found in per_movie]
    catalog = ItemCatalog(ids, titles, fields)
    ratings_path = _require(folder / "ratings.csv", "movielens-latest")
    ratings = [
        _rating(ratings_path, line_no, row)
        for line_no, row in _csv_rows(ratings_path, ["userId", "movieId", "rating", "timestamp"])
    ]
    return _build(ratings, ratings_path, movies_path, catalog, min_rating, name)


def load_movielens_1m(folder: str | Path, min_rating: float | None = None, name: str = "movielens-1m") -> Interactions:
    """MovieLens 1M (Latin-1, ``::``-separated): ``ratings.dat`` (``1::1193::5::978300760``: user, movie, rating,
    time) and ``movies.dat`` (``1::Toy Story (1995)::Animation|Children's|Comedy``)."""
    folder = Path(folder)
    movies_path = _require(folder / "movies.dat", "movielens-1m")
    ids, titles, genres, seen = [], [], [], set()
    for line_no, line in iter_lines(movies_path, "latin-1"):
        if line.strip():
            movie, title, genre = _split(movies_path, line_no, line, "::", 3, "movie, title, genres")
            _add_id(ids, seen, movies_path, line_no, movie)
            titles.append(title.strip())
            genres.append(_genres(genre.strip()))
    catalog = ItemCatalog(ids, titles, {"genres": genres})
    ratings_path = _require(folder / "ratings.dat", "movielens-1m")
    ratings = [
        _rating(ratings_path, line_no, _split(ratings_path, line_no, line, "::", 4, "user, movie, rating, timestamp"))
        for line_no, line in iter_lines(ratings_path, "latin-1", records=True)
        if line.strip()
    ]
    return _build(ratings, ratings_path, movies_path, catalog, min_rating, name)
