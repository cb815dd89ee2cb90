"""The README runs as written: every `lmrec` command line parses with the real parser (names, flags and choices
exist), and the Python example runs and prints what the README says it prints (up to the numbers)."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from lmrec.cli import build_parser
from lmrec.models.base import MODELS

README = Path(__file__).resolve().parents[1] / "README.md"


def blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", README.read_text(encoding="utf-8"), flags=re.S)


def command_lines() -> list[list[str]]:
    lines = [line for block in blocks("bash") for line in block.splitlines() if line.strip().startswith("lmrec ")]
    # a shell substitution such as $(date +%F) stands for one word
    return [shlex.split(re.sub(r"\$\([^)]*\)", "X", line), comments=True)[1:] for line in lines]


def test_the_readme_has_commands_and_python_examples():
    assert len(command_lines()) >= 25 and len(blocks("python")) == 2


@pytest.mark.parametrize("argv", command_lines(), ids=lambda argv: " ".join(argv)[:60])
def test_every_readme_command_parses(argv):
    if "--help" in argv:
        with pytest.raises(SystemExit) as exc:
            build_parser(argv).parse_args(argv)
        assert exc.value.code == 0
        return
    args = build_parser(argv).parse_args(argv)
    if args.command == "train":
        assert args.model in {name for _, name, _ in MODELS.entries()}


def test_the_python_example_runs_as_written(tmp_path):
    code = blocks("python")[0]
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True,
                            env={**__import__("os").environ, "LMREC_CACHE": str(tmp_path / "cache"),
                                 "OMP_NUM_THREADS": "2"}, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.splitlines()
    assert re.fullmatch(r"\{'mean': 0\.\d+, 'se': 0\.\d+, 'n': 610\}", lines[0])
    assert len(lines) == 10 and all(re.match(r"[123] \S", line) for line in lines[1:])
    assert (tmp_path / "runs" / "readme-alpharec" / "manifest.json").exists()


def section(title: str) -> str:
    text = README.read_text(encoding="utf-8")
    start = text.index(f"\n## {title}\n")
    return text[start : text.index("\n## ", start + 1)]


def test_bring_your_own_data_runs_as_written(tmp_path):
    """The section's shell lines run in order in an empty folder (the server on a free port instead of 8000, asked
    over HTTP, then stopped), then its Python example; each line must succeed and print what the README says."""
    import httpx

    text = section("Bring your own data")
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
        printed[" ".join(argv[:3])] = result.stdout
    assert "kept " in printed["lmrec data import --interactions"]
    assert "matched: 'the restless lantern' -> 'The Restless Lantern: a pirate story'" in \
        printed["lmrec recommend runs/shop"]
    assert (tmp_path / "recs.parquet").exists() and (tmp_path / "vectors" / "items.parquet").exists()
    assert not (tmp_path / "data" / "shop").exists()  # the recommendations came from the run folder alone
    code = re.findall(r"```python\n(.*?)```", text, flags=re.S)[0]
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, env=env,
                            timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.splitlines()
    assert lines[0].startswith("kept ") and lines[1].startswith("normalized [")
    assert re.fullmatch(r"\(\d+, 5\)", lines[2])
