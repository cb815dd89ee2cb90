"""Your own data in: interactions (and items) from data frames or files, imported once into a canonical dataset
folder that every command and :func:`lmrec.load_dataset` read.

:meth:`Dataset.from_frames` takes pandas data frames or pyarrow tables; :meth:`Dataset.from_files` reads CSV / TSV
(any delimiter, ``.gz`` too), Parquet and JSON Lines. Ids are kept as text (``"SKU-0042"``, ``"42"``), never
renumbered in what the user sees. Import, in this order:

1. rows without a user or an item are dropped (counted);
2. ``min_rating``: rows rated below it are dropped (needs a rating column);
3. repeated (user, item) pairs keep their first row in time order (the file's order without a time column);
4. ``kcore``: users and items with fewer than k interactions are dropped, repeatedly, until none is left;
5. the catalog is the items that still have an interaction, in the items file's order; an item without a row in
   the items file, or with empty text, keeps an empty title (counted: AlphaRec-family models learn nothing from it).

The canonical folder (:meth:`Dataset.save`)::

    interactions.parquet   user, item (text), rating (float32) and timestamp (int64) when the source has them
    items.parquet          item, title, and every other text column
    dataset.json           format and version, name, default split and seed, counts, checksum, import settings and
                           report (what was read and dropped)

A split (``ratio:0.8,0.1,0.1``, ``temporal-user:0.8,0.1,0.1``, ``temporal-global``, ``loo``) given on import is the
folder's default; ``load_dataset(DIR, split=...)`` or ``--split`` at train time overrides it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lmrec.data.catalog import ItemCatalog
from lmrec.data.interactions import Interactions, SplitData
from lmrec.data.splits import kcore as kcore_filter
from lmrec.data.splits import parse_split
from lmrec.errors import Argument, ArgumentError, DataFormatError, LmrecError

FORMAT, VERSION = "lmrec-dataset", 1
MANIFEST, INTERACTIONS, ITEMS = "dataset.json", "interactions.parquet", "items.parquet"
DEFAULT_SPLIT, DEFAULT_SEED = "ratio:0.8,0.1,0.1", 2024
USER_NAMES = ("user_id", "user", "userid", "uid", "customer_id", "visitor_id", "session_id")
ITEM_NAMES = ("item_id", "item", "itemid", "iid", "product_id", "sku", "asin", "movie_id", "movieid")
RATING_NAMES = ("rating", "score", "stars", "overall")
TIME_NAMES = ("timestamp", "time", "ts", "datetime", "date", "event_time")


@dataclass
class ImportReport:
    """What an import read and what it dropped, step by step (see the module docstring)."""

    rows: int = 0
    missing_dropped: int = 0
    below_min_rating: int = 0
    duplicates_dropped: int = 0
    kcore_dropped: int = 0
    users: int = 0
    items: int = 0
    interactions: int = 0
    items_without_text: int = 0
    interactions_without_text: int = 0
    listed_items_without_interactions: int = 0

    def lines(self) -> list[str]:
        return [f"read {self.rows} rows",
                f"dropped {self.missing_dropped} without a user or an item, {self.below_min_rating} below the minimum "
                f"rating, {self.duplicates_dropped} repeated (user, item) pairs, {self.kcore_dropped} by the k-core",
                f"kept {self.interactions} interactions of {self.users} users and {self.items} items",
                f"{self.items_without_text} items ({self.interactions_without_text} interactions) have no text; "
                f"{self.listed_items_without_interactions} listed items have no interaction (left out)"]


@dataclass
class Dataset:
    """Interactions imported from a practitioner's data, the default split and how they were imported."""

    interactions: Interactions
    split: str = DEFAULT_SPLIT
    seed: int = DEFAULT_SEED
    report: ImportReport = field(default_factory=ImportReport)
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.interactions.name

    def to_split(self, split: str | None = None, seed: int | None = None) -> SplitData:
        """The train / valid / test split (``split`` / ``seed`` override the dataset's defaults)."""
        return parse_split(split or self.split, self.interactions, self.seed if seed is None else seed)

    def checksum(self) -> str:
        return self.interactions.checksum()

    # -- in ------------------------------------------------------------------------------------------------
    @classmethod
    def from_frames(cls, interactions: Any, items: Any = None, *, user_col: str | None = None,
                    item_col: str | None = None, rating_col: str | None = None, time_col: str | None = None,
                    text_cols: Sequence[str] | None = None, min_rating: float | None = None, kcore: int | None = None,
                    split: str = DEFAULT_SPLIT, seed: int = DEFAULT_SEED, name: str = "dataset",
                    sources: Mapping[str, str] | None = None) -> Dataset:
        """A dataset from a pandas data frame or pyarrow table of interactions and, optionally, one of items.

        Columns are found by name when not given: user ``user_id``/``user``/..., item ``item_id``/``item``/``sku``
        /..., rating ``rating``/``score``/..., time ``timestamp``/``time``/``date``/... (numbers are seconds; dates
        and date strings are converted). ``text_cols``: the items' text columns, the first one the title (default:
        ``title`` and ``description`` where present). ``split`` is checked now and applied by :meth:`to_split`.
        """
        where = (sources or {}).get("interactions", "interactions")
        frame = _frame(interactions, where)
        user_col = _column(frame, user_col, USER_NAMES, "user", where, "user_col")
        item_col = _column(frame, item_col, ITEM_NAMES, "item", where, "item_col")
        rating_col = _column(frame, rating_col, RATING_NAMES, None, where, "rating_col")
        time_col = _column(frame, time_col, TIME_NAMES, None, where, "time_col")
        if min_rating is not None and rating_col is None:
            raise ArgumentError(f"{where}: ", Argument("min_rating", min_rating), " needs a rating column (none of "
                                f"{', '.join(RATING_NAMES)} is there); name it with ", Argument("rating_col"))
        if kcore is not None and kcore < 1:
            raise ArgumentError(Argument("kcore", kcore), ": expected a positive number of interactions")
        report = ImportReport(rows=len(frame))
        users, items_ = _ids(frame[user_col]), _ids(frame[item_col])
        keep = (users != "") & (items_ != "")
        report.missing_dropped = int((~keep).sum())
        ratings = _numbers(frame[rating_col], where, rating_col) if rating_col else None
        times = _times(frame[time_col], where, time_col) if time_col else None
        if min_rating is not None:
            low = keep & (ratings < min_rating)
            report.below_min_rating = int(low.sum())
            keep &= ~low
        rows = np.flatnonzero(keep)
        if times is not None:
            rows = rows[np.argsort(times[rows], kind="stable")]
        pair = users[rows].astype(object) + "\x00" + items_[rows].astype(object)
        _, first = np.unique(pair, return_index=True)
        report.duplicates_dropped = len(rows) - len(first)
        rows = np.sort(rows[first]) if times is None else rows[np.sort(first)]
        catalog_order, texts, title, text_names = _items(items, item_col, text_cols, sources)
        user_ids = list(dict.fromkeys(users[rows].tolist()))
        present = dict.fromkeys(items_[rows].tolist())
        item_ids = [i for i in catalog_order if i in present] + [i for i in present if i not in texts]
        report.listed_items_without_interactions = len(set(catalog_order) - set(present))
        user_index = {u: k for k, u in enumerate(user_ids)}
        item_index = {i: k for k, i in enumerate(item_ids)}
        get = lambda i, c: texts.get(i, {}).get(c, "")  # noqa: E731
        catalog = ItemCatalog(item_ids, [get(i, title) if title else "" for i in item_ids],
                              {c: [get(i, c) for i in item_ids] for c in text_names if c != title})
        data = Interactions(np.array([user_index[u] for u in users[rows]], np.int64),
                            np.array([item_index[i] for i in items_[rows]], np.int64), user_ids, catalog,
                            None if ratings is None else ratings[rows].astype(np.float32),
                            None if times is None else times[rows], name)
        if kcore:
            before = len(data)
            data = kcore_filter(data, kcore, kcore)
            report.kcore_dropped = before - len(data)
        textless = np.array([not any(data.catalog.text(("title", *data.catalog.fields))[i].strip())
                             for i in range(data.n_items)], dtype=bool) if data.n_items else np.zeros(0, bool)
        report.users, report.items, report.interactions = data.n_users, data.n_items, len(data)
        report.items_without_text = int(textless.sum())
        report.interactions_without_text = int(textless[data.items].sum()) if len(data) else 0
        if len(data) == 0:
            raise LmrecError(f"{where}: no interaction is left after the import filters ({'; '.join(report.lines())})")
        _check_split(split, data)
        settings = {"user_col": user_col, "item_col": item_col, "rating_col": rating_col, "time_col": time_col,
                    "text_cols": [title, *[c for c in text_names if c != title]] if title else [],
                    "min_rating": min_rating, "kcore": kcore, "sources": dict(sources or {})}
        return cls(data, split, seed, report, settings)

    @classmethod
    def from_files(cls, interactions: str | Path, items: str | Path | None = None, *, sep: str | None = None,
                   **options: Any) -> Dataset:
        """:meth:`from_frames` on files: CSV / TSV (``sep``, else from the extension or sniffed), Parquet, JSON Lines;
        ``.gz`` is read through."""
        sources = {"interactions": str(interactions), **({"items": str(items)} if items is not None else {})}
        frames = [read_table(Path(interactions), sep), read_table(Path(items), sep) if items is not None else None]
        return cls.from_frames(*frames, sources=sources, **options)

    @classmethod
    def from_interactions(cls, data: Interactions, **options: Any) -> Dataset:
        """:meth:`from_frames` on interactions loaded from a known format (``lmrec.data.registry``), e.g. RecBole
        atomic files: the same filters, report and folder."""
        import pandas as pd

        frame = {"user_id": np.array(data.user_ids, dtype=object)[data.users],
                 "item_id": np.array(data.catalog.ids, dtype=object)[data.items]}
        if data.ratings is not None:
            frame["rating"] = data.ratings
        if data.timestamps is not None:
            frame["timestamp"] = data.timestamps
        items = pd.DataFrame({"item_id": data.catalog.ids, "title": data.catalog.titles, **data.catalog.fields})
        options.setdefault("text_cols", ["title", *data.catalog.fields])
        return cls.from_frames(pd.DataFrame(frame), items, user_col="user_id", item_col="item_id",
                               rating_col="rating" if data.ratings is not None else None,
                               time_col="timestamp" if data.timestamps is not None else None,
                               **{"name": data.name, **options})

    # -- the canonical folder ------------------------------------------------------------------------------
    def save(self, folder: str | Path) -> Path:
        """Write the canonical folder (module docstring): built in a hidden temporary folder, then renamed, so a
        folder is never half-written. An existing non-empty folder is refused."""
        import pandas as pd

        from lmrec.io import atomic_folder, write_json

        folder = Path(folder)
        data = self.interactions
        columns: dict[str, Any] = {"user": np.array(data.user_ids, dtype=object)[data.users],
                                   "item": np.array(data.catalog.ids, dtype=object)[data.items]}
        if data.ratings is not None:
            columns["rating"] = data.ratings.astype(np.float32)
        if data.timestamps is not None:
            columns["timestamp"] = data.timestamps.astype(np.int64)
        items = {"item": data.catalog.ids, "title": data.catalog.titles, **data.catalog.fields}
        manifest = {"format": FORMAT, "version": VERSION, "name": data.name, "split": self.split, "seed": self.seed,
                    "counts": {"users": data.n_users, "items": data.n_items, "interactions": len(data)},
                    "checksum": self.checksum(), "import": self.settings, "report": asdict(self.report)}
        with atomic_folder(folder) as tmp:
            pd.DataFrame(columns).to_parquet(tmp / INTERACTIONS, index=False)
            pd.DataFrame(items).to_parquet(tmp / ITEMS, index=False)
            write_json(tmp / MANIFEST, manifest)
        return folder

    @classmethod
    def load(cls, folder: str | Path) -> Dataset:
        """A canonical folder back, its checksum verified (a changed or damaged file is an error naming it)."""
        import pandas as pd

        folder = Path(folder)
        manifest = read_manifest(folder)
        frame = pd.read_parquet(folder / INTERACTIONS)
        items = pd.read_parquet(folder / ITEMS)
        catalog_ids = items["item"].astype(str).tolist()
        fields = [c for c in items.columns if c not in ("item", "title")]
        catalog = ItemCatalog(catalog_ids, items["title"].fillna("").astype(str).tolist(),
                              {c: items[c].fillna("").astype(str).tolist() for c in fields})
        user_ids = list(dict.fromkeys(frame["user"].astype(str).tolist()))
        user_index = {u: k for k, u in enumerate(user_ids)}
        try:
            item_rows = [catalog.index(i) for i in frame["item"].astype(str)]
        except LmrecError as exc:
            raise DataFormatError(folder / INTERACTIONS, None, f"expected items listed in {ITEMS}: {exc}") from None
        data = Interactions(np.array([user_index[u] for u in frame["user"].astype(str)], np.int64),
                            np.array(item_rows, np.int64), user_ids, catalog,
                            frame["rating"].to_numpy(np.float32) if "rating" in frame else None,
                            frame["timestamp"].to_numpy(np.int64) if "timestamp" in frame else None, manifest["name"])
        if data.checksum() != manifest["checksum"]:
            raise DataFormatError(folder, None, f"the data's checksum is {data.checksum()}, {MANIFEST} says "
                                  f"{manifest['checksum']}: the files were changed or damaged since the import")
        report = ImportReport(**manifest.get("report", {}))
        return cls(data, manifest.get("split", DEFAULT_SPLIT), manifest.get("seed", DEFAULT_SEED), report,
                   manifest.get("import", {}))


def read_manifest(folder: Path) -> dict[str, Any]:
    path = Path(folder) / MANIFEST
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataFormatError(folder, None, f"not an imported dataset folder (no {MANIFEST}; make one with "
                              "`lmrec data import`)") from None
    except json.JSONDecodeError as exc:
        raise DataFormatError(path, exc.lineno, f"expected JSON ({exc.msg})") from None
    if manifest.get("format") != FORMAT or manifest.get("version") != VERSION:
        raise DataFormatError(path, None, f"expected format {FORMAT!r} version {VERSION}, got "
                              f"{manifest.get('format')!r} version {manifest.get('version')!r}")
    return manifest


def is_dataset_folder(folder: Path) -> bool:
    try:
        return json.loads((Path(folder) / MANIFEST).read_text(encoding="utf-8")).get("format") == FORMAT
    except (OSError, ValueError):
        return False


def load_canonical(folder: str | Path, name: str | None = None, min_rating: float | None = None) -> Interactions:
    """The interactions of a canonical folder (the registry's ``lmrec`` format)."""
    data = Dataset.load(folder).interactions
    if min_rating is not None:
        if data.ratings is None:
            raise ValueError(f"{folder}: the imported data has no ratings: min_rating must be None")
        data = data.select(data.ratings >= min_rating).compact()
    return data


# -- reading files and columns ---------------------------------------------------------------------------------
def read_table(path: Path, sep: str | None = None) -> Any:
    """A pandas data frame of a CSV / TSV / Parquet / JSON Lines file (``.gz`` read through); text columns as text."""
    import pandas as pd

    if not path.is_file():
        raise LmrecError(f"{path}: no such file")
    suffixes = [s.lower() for s in path.suffixes if s.lower() != ".gz"]
    kind = suffixes[-1] if suffixes else ""
    try:
        if kind in (".parquet", ".pq"):
            return pd.read_parquet(path)
        if kind in (".jsonl", ".ndjson", ".json"):
            return pd.read_json(path, lines=True, dtype=False)
        sep = sep if sep is not None else ("\t" if kind in (".tsv", ".tab") else None)
        return pd.read_csv(path, sep=sep, dtype=str, keep_default_na=False, na_values=[""],
                           engine="python" if sep is None else "c")
    except (ValueError, OSError, UnicodeDecodeError) as exc:
        raise LmrecError(f"{path}: cannot read it as {kind or 'CSV'} ({exc})") from None


def _frame(value: Any, where: str) -> Any:
    import pandas as pd

    if isinstance(value, pd.DataFrame):
        return value
    if hasattr(value, "to_pandas"):  # a pyarrow table (or anything that turns into a data frame)
        return value.to_pandas()
    raise LmrecError(f"{where}: expected a pandas DataFrame or a pyarrow Table, got {type(value).__name__}")


def _column(frame: Any, given: str | None, names: Sequence[str], what: str | None, where: str, keyword: str
            ) -> str | None:
    """The column given (an error naming it when absent), else the first of ``names`` present (any case)."""
    columns = [str(c) for c in frame.columns]
    if given is not None:
        if given not in columns:
            raise ArgumentError(f"{where}: no column {given!r} (", Argument(keyword, given), "); its columns are "
                                f"{', '.join(columns)}")
        return given
    lower = {c.lower(): c for c in columns}
    found = next((lower[n] for n in names if n in lower), None)
    if found is None and what is not None:
        raise ArgumentError(f"{where}: which column holds the {what}? None of {', '.join(names)} is there (columns: "
                            f"{', '.join(columns)}); name it with ", Argument(keyword))
    return found


def _ids(column: Any) -> np.ndarray:
    """Ids as text ("" where missing); integral floats (ids read with a gap) lose their ".0"."""
    import pandas as pd

    values = column
    if pd.api.types.is_float_dtype(values) and values.dropna().apply(float.is_integer).all():
        values = values.astype("Int64")
    return values.astype("string").fillna("").str.strip().to_numpy(dtype=object).astype(str)


def _numbers(column: Any, where: str, name: str) -> np.ndarray:
    import pandas as pd

    values = pd.to_numeric(column, errors="coerce")
    bad = values.isna() & column.notna()
    if bad.any():
        row = int(np.flatnonzero(bad.to_numpy())[0])
        raise DataFormatError(where, row + 2, f"expected a number in column {name!r}, got {column.iloc[row]!r}")
    return values.to_numpy(np.float64)


def _times(column: Any, where: str, name: str) -> np.ndarray:
    """Seconds since the epoch (int64): numbers as they are, dates and date strings converted."""
    import pandas as pd

    if pd.api.types.is_datetime64_any_dtype(column):
        return (column.astype("datetime64[ns]").astype("int64") // 10**9).to_numpy()
    numbers = pd.to_numeric(column, errors="coerce")
    if numbers.notna().all():
        return numbers.to_numpy(np.float64).astype(np.int64)
    parsed = pd.to_datetime(column, errors="coerce", utc=True)
    bad = parsed.isna()
    if bad.any():
        row = int(np.flatnonzero(bad.to_numpy())[0])
        raise DataFormatError(where, row + 2, f"expected a number or a date in column {name!r}, got "
                              f"{column.iloc[row]!r}")
    return (parsed.astype("int64") // 10**9).to_numpy()


def _items(items: Any, item_col: str, text_cols: Sequence[str] | None, sources: Mapping[str, str] | None
           ) -> tuple[list[str], dict[str, dict[str, str]], str | None, list[str]]:
    """(item ids in the items frame's order, id -> {column: text}, the title column, the text columns)."""
    if items is None:
        if text_cols:
            raise ArgumentError(Argument("text_cols", ",".join(text_cols)), " needs a file of items: ",
                                Argument("items"))
        return [], {}, None, []
    where = (sources or {}).get("items", "items")
    frame = _frame(items, where)
    key = item_col if item_col in frame.columns else _column(frame, None, ITEM_NAMES, "item", where, "item_col")
    if text_cols is None:
        text_cols = [c for c in ("title", "description") if c in frame.columns]
    for c in text_cols:
        if c not in frame.columns:
            raise ArgumentError(f"{where}: no column {c!r} (", Argument("text_cols", ",".join(text_cols)),
                                f"); its columns are {', '.join(map(str, frame.columns))}")
    ids = _ids(frame[key])
    columns = {c: frame[c].astype("string").fillna("").str.strip().to_numpy(dtype=object) for c in text_cols}
    order, texts = [], {}
    for row, item_id in enumerate(ids):
        if item_id and item_id not in texts:
            order.append(item_id)
            texts[item_id] = {c: str(columns[c][row]) for c in text_cols}
    return order, texts, (text_cols[0] if text_cols else None), list(text_cols)


def _check_split(split: str, data: Interactions) -> None:
    """A split that cannot be applied (unknown, or temporal without timestamps) is an error now, not at train time."""
    try:
        parse_split(split, data, 0)
    except ValueError as exc:
        raise ArgumentError(Argument("split", split), f": {exc}") from None

