"""A real `lmrec serve` process on loopback (uvicorn, on a port the system picks), and the web page driven in headless
Chromium (Playwright)."""

from __future__ import annotations

import importlib.util
import os
import re
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

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tools"))

@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """`lmrec serve` on two run folders whose data is on disk (a LightGCN folder, a tiny INSPIRED folder)."""
    root = tmp_path_factory.mktemp("server")
    folder = write_lightgcn_folder(planted_data(), root / "planted")
    alpharec = lmrec.get_model("alpharec")(mlp_ratio=1.0)  # features from its encoder, so intentions can be read
    lmrec.fit(alpharec, folder, {"epochs": 3, "progress": False}, out=root / "alpharec")
    write_inspired(root / "data")
    lmrec.fit("fism", root / "data" / "inspired", {"epochs": 2, "progress": False}, out=root / "fism")
    env = {**os.environ, "LMREC_CACHE": str(root / "cache"), "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen([sys.executable, "-m", "lmrec", "serve", str(root / "alpharec"), str(root / "fism"),
                                "--port", "0", "--threads", "1"], env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
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
    from page_driver import chromium, drive

    if chromium() is None:
        pytest.skip("no chromium on PATH: install Debian's chromium package to run the browser test (.ci/run does)")
    if importlib.util.find_spec("playwright") is None:
        pytest.skip("Playwright is not installed: pip install -e '.[test]' to run the browser test")
    shots = drive(server["url"], tmp_path, cf_model="alpharec", user="3", search="number 1",
                  crs_model="fism", message="I loved Heat (1995) and Alien (1979), what next?")
    assert all(path.stat().st_size > 10_000 for path in shots.values())
    keep = os.environ.get("LMREC_SCREENSHOTS")
    if keep:
        for _name, path in shots.items():
            shutil.copyfile(path, Path(keep) / path.name)


def test_a_busy_port_is_one_clear_error_and_port_0_picks_a_free_one():
    from lmrec.cli.serve import listen

    with socket.socket() as taken:  # a port the system picked for someone else, now listening
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(lmrec.LmrecError, match=f"--port {port}: cannot listen there"):
            listen("127.0.0.1", port)
    with listen("127.0.0.1", 0) as free:
        assert free.getsockname()[1] > 0
