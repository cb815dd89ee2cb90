"""A real `lmrec serve` process on loopback (uvicorn, on a port the system picks), and the web page driven in headless
Chromium (Playwright)."""

from __future__ import annotations

import importlib.util
import os
import shutil
import socket
import sys
from pathlib import Path

import httpx
import pytest

import lmrec

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tools"))


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


def test_connections_accepted_on_the_listening_socket_send_without_delay():
    """asyncio (under uvicorn) turns Nagle's algorithm off (TCP_NODELAY) on the connections it accepts only from a
    socket made with IPPROTO_TCP; without it each answer on a kept-alive connection waited for a delayed ACK."""
    import asyncio

    from lmrec.cli.serve import listen

    async def accepted_nodelay() -> int:
        seen: asyncio.Future[int] = asyncio.get_running_loop().create_future()

        def connected(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            sock = writer.get_extra_info("socket")
            seen.set_result(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
            writer.close()

        with listen("127.0.0.1", 0) as sock:
            server = await asyncio.start_server(connected, sock=sock)
            async with server:
                _, writer = await asyncio.open_connection(*sock.getsockname()[:2])
                value = await asyncio.wait_for(seen, 30)
                writer.close()
        return value

    assert asyncio.run(accepted_nodelay()) != 0


def test_writes_on_a_real_server_need_its_token_and_reads_do_not(server):
    url, token = server["url"], server["token"]
    assert "writes: on, up to 5 items per run" in server["started"]
    missing = httpx.post(f"{url}/models/alpharec/items", json={"title": "Nobody's Film"})
    assert missing.status_code == 401 and missing.headers["www-authenticate"] == "Bearer"
    wrong = httpx.post(f"{url}/models/alpharec/items", json={"title": "Nobody's Film"},
                       headers={"Authorization": "Bearer " + token[::-1]})
    assert wrong.status_code == 403 and wrong.json() == {"error": "the bearer token is not this server's"}
    assert httpx.get(f"{url}/models/alpharec/items/3").json()["title"] == "Movie number 3"


@pytest.mark.parametrize(("allow", "file_text", "variable", "error"), [
    (False, "x" * 20, None, "--token-file goes with --allow-writes"),
    (True, None, None, "--allow-writes needs a token: --token-file PATH, or the environment variable "
                       "LMREC_SERVE_TOKEN"),
    (True, "short\n", None, "--token-file TOKEN: expected a token of at least 16 characters"),
    (True, None, "has a space in it somewhere", "LMREC_SERVE_TOKEN: expected a token of at least 16 characters"),
])
def test_the_write_token_is_read_from_a_file_or_the_environment(tmp_path, monkeypatch, allow, file_text, variable,
                                                                error):
    from lmrec.cli.serve import read_token

    monkeypatch.delenv("LMREC_SERVE_TOKEN", raising=False)
    if variable is not None:
        monkeypatch.setenv("LMREC_SERVE_TOKEN", variable)
    path = tmp_path / "token"
    if file_text is not None:
        path.write_text(file_text)
    with pytest.raises(lmrec.LmrecError) as raised:
        read_token(allow, str(path) if file_text is not None else None)
    assert str(raised.value).replace(str(path), "TOKEN").startswith(error)


def test_a_token_file_wins_over_the_environment_and_no_writes_need_none(tmp_path, monkeypatch):
    from lmrec.cli.serve import read_token

    monkeypatch.setenv("LMREC_SERVE_TOKEN", "from-the-environment-0123")
    (tmp_path / "token").write_text("  from-the-file-0123456789\n")
    assert read_token(True, str(tmp_path / "token")) == "from-the-file-0123456789"
    assert read_token(True, None) == "from-the-environment-0123"
    assert read_token(False, None) is None
    with pytest.raises(lmrec.LmrecError, match="cannot read it"):
        read_token(True, str(tmp_path / "missing"))
