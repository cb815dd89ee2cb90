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


SERVER_TOKEN = "browser-test-token-0123456789"


@pytest.fixture(scope="session")
def server(tmp_path_factory):
    """`lmrec serve --allow-writes` (token from the environment) on two run folders whose data is on disk (a LightGCN
    folder of the planted data, a tiny INSPIRED folder), on a port the system picks."""
    import os
    import re
    import subprocess
    import sys
    import time

    import httpx

    from helpers import write_lightgcn_folder

    root = tmp_path_factory.mktemp("server")
    folder = write_lightgcn_folder(planted_data(), root / "planted")
    alpharec = lmrec.get_model("alpharec")(mlp_ratio=1.0)  # features from its encoder, so intentions can be read
    lmrec.fit(alpharec, folder, {"epochs": 3, "progress": False}, out=root / "alpharec")
    write_inspired(root / "data")
    lmrec.fit("fism", root / "data" / "inspired", {"epochs": 2, "progress": False}, out=root / "fism")
    env = {**os.environ, "LMREC_CACHE": str(root / "cache"), "OMP_NUM_THREADS": "1", "LMREC_SERVE_TOKEN": SERVER_TOKEN}
    process = subprocess.Popen([sys.executable, "-m", "lmrec", "serve", str(root / "alpharec"), str(root / "fism"),
                                "--port", "0", "--threads", "1", "--allow-writes", "--max-added-items", "5"], env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    started = process.stdout.readline()  # "lmrec serve: ... on http://127.0.0.1:<port>/ ...", or "" if it failed
    address = re.search(r" on (http://127\.0\.0\.1:[1-9][0-9]*)/ ", started)
    if address is None:
        process.kill()
        pytest.fail(f"lmrec serve did not start: {started}{process.stderr.read()[-2000:]}")
    url = address.group(1)
    deadline = time.monotonic() + 120
    while True:
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                break
        except httpx.TransportError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"lmrec serve did not start: {process.stderr.read()[-2000:]}")
        time.sleep(0.2)
    yield {"url": url, "process": process, "root": root, "started": started, "token": SERVER_TOKEN}
    process.terminate()
    process.wait(timeout=30)
