"""What a run folder keeps of its data, so that it loads, recommends and serves with the dataset moved, renamed,
deleted or never on disk (a run fitted on data made in memory).

A snapshot is a folder ``data/`` inside the run folder::

    snapshot.json          task, dataset name, split protocol, checksum (the data's, as the run's manifest records)
    items.parquet          item id, title and every text field of the catalog
    users.parquet          user ids, in index order (collaborative filtering)
    interactions.parquet   user and item index and split (0 train, 1 valid, 2 test) of every pair (collaborative
                           filtering)

Collaborative-filtering runs keep their three splits (the model rebuilds its graph and profiles from the training
split; a known user's items are left out of their recommendations), conversational runs their catalog (their models
keep what they learned in their state; conversations are needed only to evaluate again). Reading checks the
checksum, so a damaged snapshot is an error, never a silently different model.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from lmrec.data.catalog import ItemCatalog
from lmrec.data.conversations import CRSData
from lmrec.data.interactions import SplitData, to_csr
from lmrec.errors import DataFormatError
from lmrec.io import write_json

FOLDER, MANIFEST = "data", "snapshot.json"
ITEMS, USERS, INTERACTIONS = "items.parquet", "users.parquet", "interactions.parquet"
SPLITS = ("train", "valid", "test")


def has_snapshot(run_folder: Path) -> bool:
    return (Path(run_folder) / FOLDER / MANIFEST).exists()


def write_snapshot(run_folder: Path, data: SplitData | CRSData) -> None:
    """Write ``run_folder/data/`` (each file atomically; the manifest last, so a snapshot without it is not one)."""
    import pandas as pd

    folder = Path(run_folder) / FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    (folder / MANIFEST).unlink(missing_ok=True)
    _write_parquet(folder / ITEMS, pd.DataFrame({"item": data.catalog.ids, "title": data.catalog.titles,
                                                 **data.catalog.fields}))
    meta: dict[str, Any] = {"name": data.name}
    if isinstance(data, SplitData):
        parts = [data.split(s).tocoo() for s in SPLITS]
        _write_parquet(folder / USERS, pd.DataFrame({"user": data.user_ids}))
        _write_parquet(folder / INTERACTIONS, pd.DataFrame({
            "user": np.concatenate([p.row for p in parts]).astype(np.int32),
            "item": np.concatenate([p.col for p in parts]).astype(np.int32),
            "split": np.repeat(np.arange(3, dtype=np.int8), [p.nnz for p in parts])}))
        meta.update(task="cf", protocol=data.protocol, checksum=data.checksum())
    else:
        meta.update(task="crs", catalog_checksum=data.catalog.checksum())
    write_json(folder / MANIFEST, meta)


def read_snapshot(run_folder: Path) -> SplitData | CRSData:
    """The data of a run folder's snapshot (a CRS snapshot: the catalog, no conversations), checksum verified."""
    import json

    import pandas as pd

    folder = Path(run_folder) / FOLDER
    meta = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
    items = pd.read_parquet(folder / ITEMS)
    fields = [c for c in items.columns if c not in ("item", "title")]
    catalog = ItemCatalog(items["item"].astype(str).tolist(), items["title"].astype(str).tolist(),
                          {c: items[c].astype(str).tolist() for c in fields})
    if meta["task"] == "crs":
        if catalog.checksum() != meta["catalog_checksum"]:
            raise DataFormatError(folder / ITEMS, None, "the catalog's checksum differs from the snapshot's: the "
                                  "file was changed or damaged")
        return CRSData(meta["name"], catalog, [], [], [])
    users = pd.read_parquet(folder / USERS)["user"].astype(str).tolist()
    pairs = pd.read_parquet(folder / INTERACTIONS)
    code = pairs["split"].to_numpy()
    u, i = pairs["user"].to_numpy(np.int64), pairs["item"].to_numpy(np.int64)
    train, valid, test = (to_csr(u[code == k], i[code == k], len(users), len(catalog)) for k in range(3))
    data = SplitData(meta["name"], users, catalog, train, valid, test, meta.get("protocol", ""))
    if data.checksum() != meta["checksum"]:
        raise DataFormatError(folder, None, f"the data's checksum is {data.checksum()}, the snapshot says "
                              f"{meta['checksum']}: its files were changed or damaged")
    return data


def _write_parquet(path: Path, frame: Any) -> None:
    from lmrec.io import atomic_write

    atomic_write(path, lambda f: frame.to_parquet(f, index=False), binary=True)
