"""Run folders to serve: AlphaRec and Pop on the planted data, a conversational Pop and FISM on a tiny INSPIRED."""

from __future__ import annotations

from pathlib import Path

import pytest

import lmrec
from helpers import planted_data, planted_features, write_inspired

TRAIN = {"epochs": 3, "eval_every": 1, "progress": False}


@pytest.fixture(scope="session", autouse=True)
def own_cache(tmp_path_factory: pytest.TempPathFactory):
    """The service encodes intentions and new titles: into an embedding cache of the tests' own."""
    mp = pytest.MonkeyPatch()
    mp.setenv("LMREC_CACHE", str(tmp_path_factory.mktemp("cache")))
    yield
    mp.undo()


@pytest.fixture(scope="session")
def served_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("serve")
    data = planted_data()
    alpharec = lmrec.get_model("alpharec")(mlp_ratio=1.0, features=planted_features())
    lmrec.fit(alpharec, data, TRAIN, out=root / "alpharec")
    lmrec.fit("pop", data, out=root / "pop")
    write_inspired(root / "data")
    conversations = root / "data" / "inspired"  # by path: the run folders record where it is
    lmrec.fit("pop", conversations, out=root / "crs-pop")
    lmrec.fit("fism", conversations, {"epochs": 2, "progress": False}, out=root / "fism")
    return {"root": root, "alpharec": root / "alpharec", "pop": root / "pop", "crs-pop": root / "crs-pop",
            "fism": root / "fism", "data": data}


@pytest.fixture
def app_runs(served_runs):
    """Fresh Run objects (tests that add items must not leak them into other tests' folders)."""
    import shutil

    def load(name: str, tmp: Path) -> lmrec.Run:
        folder = shutil.copytree(served_runs[name], tmp / name)
        data = served_runs["data"] if name in ("alpharec", "pop") else None
        return lmrec.Run.load(folder, data=data)

    return load
