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


def test_the_readme_has_commands_and_a_python_example():
    assert len(command_lines()) >= 25 and len(blocks("python")) == 1


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
