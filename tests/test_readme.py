"""The README and the guide run as written: every `lmrec` command line of README.md and docs/**/*.md parses with the
real parser (names, flags and choices exist), the Python example (docs/guide/python.md) runs and prints what the page
says it prints (up to the numbers), and Bring your own data (docs/guide/data.md) runs line by line."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from lmrec.cli import build_parser
from lmrec.models.base import MODELS

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
PAGES = [README, *sorted((ROOT / "docs").rglob("*.md"))]
PYTHON = ROOT / "docs" / "guide" / "python.md"  # the Python API's example
OWN_DATA = ROOT / "docs" / "guide" / "data.md"  # Bring your own data


def blocks(language: str, pages: list[Path] = PAGES) -> list[str]:
    return [block for page in pages
            for block in re.findall(rf"```{language}\n(.*?)```", page.read_text(encoding="utf-8"), flags=re.S)]


def command_lines() -> list[tuple[str, list[str]]]:
    """(page, argv) of every command line in a bash block of the README and the docs."""
    lines = [(page.relative_to(ROOT).as_posix(), line) for page in PAGES for block in blocks("bash", [page])
             for line in block.splitlines() if line.strip().startswith("lmrec ")]
    # a shell substitution such as $(date +%F) stands for one word
    return [(page, shlex.split(re.sub(r"\$\([^)]*\)", "X", line), comments=True)[1:]) for page, line in lines]


def test_the_docs_have_commands_and_python_examples():
    assert len(command_lines()) >= 25
    assert {page for page, _ in command_lines()} >= {"docs/guide/cli.md", "docs/guide/data.md"}
    # the two Python examples are the ones run below, and there is no other
    assert len(blocks("python", [PYTHON])) == 1 and len(blocks("python", [OWN_DATA])) == 1
    assert sorted(blocks("python")) == sorted(blocks("python", [PYTHON]) + blocks("python", [OWN_DATA]))


@pytest.mark.parametrize(("page", "argv"), command_lines(), ids=lambda x: x if isinstance(x, str) else " ".join(x)[:60])
def test_every_command_parses(page, argv):
    if "--help" in argv:
        with pytest.raises(SystemExit) as exc:
            build_parser(argv).parse_args(argv)
        assert exc.value.code == 0
        return
    args = build_parser(argv).parse_args(argv)
    if args.command == "train":
        assert args.model in {name for _, name, _ in MODELS.entries()}


def test_the_python_example_runs_as_written(tmp_path):
    code = blocks("python", [PYTHON])[0]
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True,
                            env={**__import__("os").environ, "LMREC_CACHE": str(tmp_path / "cache"),
                                 "OMP_NUM_THREADS": "2"}, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.splitlines()
    assert re.fullmatch(r"\{'mean': 0\.\d+, 'se': 0\.\d+, 'n': 610\}", lines[0])
    assert len(lines) == 10 and all(re.match(r"[123] \S", line) for line in lines[1:])
    assert (tmp_path / "runs" / "readme-alpharec" / "manifest.json").exists()


def test_bring_your_own_data_runs_as_written(tmp_path):
    """The page's shell lines run in order in an empty folder (the server on a free port instead of 8000, asked
    over HTTP, then stopped), then its Python example; each line must succeed and print what the page says."""
    import httpx

    text = OWN_DATA.read_text(encoding="utf-8")
    shell = re.findall(r"```bash\n(.*?)```", text, flags=re.S)[0]
    env = {**__import__("os").environ, "LMREC_CACHE": str(tmp_path / "cache"), "OMP_NUM_THREADS": "2"}
    printed = {}
    for line in shell.splitlines():
        argv = shlex.split(line, comments=True)
        if argv[:2] == ["lmrec", "serve"]:
            argv[argv.index("--port") + 1] = "0"  # a free port: the machine's 8000 may be taken
            server = subprocess.Popen([sys.executable, "-m", "lmrec", *argv[1:]], cwd=tmp_path, env=env,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            try:
                url = re.search(r" on (http://[^/]+)/ ", server.stdout.readline()).group(1)
                for _ in range(100):
                    try:
                        answer = httpx.post(f"{url}/models/shop/recommend",
                                            json={"titles": ["the restless lantern"], "k": 3}, timeout=5)
                        break
                    except httpx.TransportError:
                        __import__("time").sleep(0.2)
                assert answer.status_code == 200 and answer.json()["matched"][0]["how"] == "normalized"
            finally:
                server.terminate()
                server.wait(timeout=30)
            continue
        command = [sys.executable, "-m", "lmrec", *argv[1:]] if argv[0] == "lmrec" else argv
        result = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
        assert result.returncode == 0, f"{line}\n{result.stderr[-3000:]}"
        printed[" ".join(argv)] = result.stdout

    def output(start: str) -> str:  # what the one line starting so printed
        [out] = [out for line, out in printed.items() if line.startswith(start)]
        return out

    assert "kept " in output("lmrec data import --interactions")
    assert "matched: 'the restless lantern' -> 'The Restless Lantern: a pirate story'" in \
        output("lmrec recommend runs/shop --title")
    assert (tmp_path / "recs.parquet").exists() and (tmp_path / "vectors" / "items.parquet").exists()
    assert not (tmp_path / "data" / "shop").exists()  # the recommendations came from the run folder alone
    code = re.findall(r"```python\n(.*?)```", text, flags=re.S)[0]
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, env=env,
                            timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.splitlines()
    assert lines[0].startswith("kept ") and lines[1].startswith("normalized [")
    assert re.fullmatch(r"\(\d+, 5\)", lines[2])


def test_the_conversational_quick_start_runs_as_written(tmp_path, real_dataset):
    """README's "Conversational recommendation in a minute", line by line in an empty folder: chat reads two lines
    from stdin, the server runs on a free port and answers one message over HTTP, then stops."""
    import os

    import httpx

    data = real_dataset("inspired").parent
    text = README.read_text(encoding="utf-8")
    section = text[text.index("## Conversational recommendation in a minute"):]
    shell = re.findall(r"```bash\n(.*?)```", section, flags=re.S)[0]
    env = {**os.environ, "LMREC_DATA": str(data), "LMREC_CACHE": str(tmp_path / "cache"), "OMP_NUM_THREADS": "2"}
    printed = {}
    for line in shell.splitlines():
        argv = shlex.split(line, comments=True)
        if argv[0] != "lmrec":
            subprocess.run(["bash", "-c", line], cwd=tmp_path, check=True)
            continue
        if argv[1] == "serve":
            server = subprocess.Popen([sys.executable, "-m", "lmrec", *argv[1:], "--port", "0"], cwd=tmp_path,
                                      env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            try:
                url = re.search(r" on (http://[^/]+)/ ", server.stdout.readline()).group(1)
                session = httpx.post(f"{url}/models/fism/sessions", timeout=30).json()["session_id"]
                answer = httpx.post(f"{url}/models/fism/sessions/{session}/messages",
                                    json={"text": "I loved Inception", "k": 3}, timeout=30)
                assert answer.status_code == 200, answer.text
                assert [m["title"] for m in answer.json()["mentions"]] == ["Inception (2010)"]
                assert len(answer.json()["recommendations"]) == 3
            finally:
                server.terminate()
                server.wait(timeout=30)
            continue
        stdin = "I loved Inception and Heat (1995)\n/quit\n" if argv[1:3] == ["crs", "chat"] else None
        result = subprocess.run([sys.executable, "-m", "lmrec", *argv[1:]], cwd=tmp_path, env=env, input=stdin,
                                capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, f"{line}\n{result.stderr[-3000:]}"
        printed[argv[1]] = result.stdout
    assert "mentioned: Inception (2010); The Matrix (1999)" in printed["recommend"]
    ranked = [line for line in printed["recommend"].splitlines() if re.match(r"\s+\d+\. ", line)]
    assert len(ranked) == 5 and all("because you mentioned" in line for line in ranked)
    assert "Inception (2010); Heat (1995)" in printed["crs"]
