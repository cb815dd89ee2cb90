"""A real `lmrec serve` process on loopback (uvicorn), and the web page driven in headless Chromium (Playwright)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

import lmrec
from helpers import planted_data, write_inspired, write_lightgcn_folder

CHROMIUM = "/usr/bin/chromium"
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tools"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """`lmrec serve` on two run folders whose data is on disk (a LightGCN folder, a tiny INSPIRED folder)."""
    root = tmp_path_factory.mktemp("server")
    folder = write_lightgcn_folder(planted_data(), root / "planted")
    alpharec = lmrec.get_model("alpharec")(mlp_ratio=1.0)  # features from its encoder, so intentions can be read
    lmrec.fit(alpharec, folder, {"epochs": 3, "progress": False}, out=root / "alpharec")
    write_inspired(root / "data")
    lmrec.fit("fism", root / "data" / "inspired", {"epochs": 2, "progress": False}, out=root / "fism")
    port = free_port()
    env = {**os.environ, "LMREC_CACHE": str(root / "cache"), "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen([sys.executable, "-m", "lmrec", "serve", str(root / "alpharec"), str(root / "fism"),
                                "--port", str(port), "--threads", "1"], env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
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
    yield {"url": url, "process": process, "root": root}
    process.terminate()
    process.wait(timeout=30)


def test_a_real_server_answers_on_loopback(server):
    url = server["url"]
    models = httpx.get(f"{url}/models").json()
    assert [m["name"] for m in models] == ["alpharec", "fism"]
    top = httpx.post(f"{url}/models/alpharec/recommend", json={"user": "5", "k": 3}).json()
    assert len(top["recommendations"]) == 3
    sid = httpx.post(f"{url}/models/fism/sessions").json()["session_id"]
    reply = httpx.post(f"{url}/models/fism/sessions/{sid}/messages", json={"text": "I like Heat (1995)"}).json()
    assert reply["mentioned"][0]["title"] == "Heat (1995)" and reply["recommendations"]
    bad = httpx.post(f"{url}/models/alpharec/recommend", content=b"\xff\xfe garbage")
    assert bad.status_code == 422 and "error" in bad.json()


def test_the_page_in_headless_chromium(server, tmp_path):
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} not found: install Debian's chromium package to run the browser test "
                    "(.ci/run does)")
    from page_driver import drive

    shots = drive(server["url"], tmp_path, cf_model="alpharec", user="3", search="number 1",
                  crs_model="fism", message="I loved Heat (1995) and Alien (1979), what next?")
    assert all(path.stat().st_size > 10_000 for path in shots.values())
    keep = os.environ.get("LMREC_SCREENSHOTS")
    if keep:
        for _name, path in shots.items():
            shutil.copyfile(path, Path(keep) / path.name)
