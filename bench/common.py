"""What every bench script shares: the machine line of a result file and writing it."""

from __future__ import annotations

import os
import platform
from collections.abc import Sequence
from pathlib import Path

from lmrec.environment import cpu_name
from lmrec.io import atomic_write


def machine() -> str:
    """CPU model and core count, e.g. 'Intel(R) Xeon(R) ... (2 cores, Linux x86_64)'."""
    return f"{cpu_name()} ({os.cpu_count()} cores, {platform.system()} {platform.machine()})"


def write_lines(path: Path, lines: Sequence[str]) -> None:
    """Write a markdown result (atomically) and print it."""
    text = "\n".join(lines)
    atomic_write(path, lambda f: f.write(text))
    print(text)
