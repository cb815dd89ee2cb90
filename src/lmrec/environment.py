"""Facts about the machine and the libraries, recorded with every run and report."""

from __future__ import annotations

import platform
import subprocess
from collections.abc import Sequence
from pathlib import Path


def versions() -> dict[str, str]:
    import numpy
    import scipy
    import torch

    from lmrec import __version__

    return {"lmrec": __version__, "python": platform.python_version(), "torch": torch.__version__,
            "numpy": numpy.__version__, "scipy": scipy.__version__, "machine": platform.machine()}


CPUINFO = Path("/proc/cpuinfo")


def cpu_info() -> dict[str, str]:
    """The first processor's fields of /proc/cpuinfo (``model name``, ``vendor_id``, ``flags``, ...); empty where
    there is no such file (e.g. not Linux)."""
    try:
        text = CPUINFO.read_text(encoding="ascii", errors="replace")
    except OSError:
        return {}
    fields: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip():
            break
        key, _, value = line.partition(":")
        fields[key.strip()] = value.strip()
    return fields


def cpu_name() -> str:
    """The CPU model from /proc/cpuinfo (e.g. 'AMD EPYC'), else ``platform.processor()``."""
    return cpu_info().get("model name") or platform.processor()


def git_state(folder: Path | None = None, paths: Sequence[str] = (), untracked: bool = False) -> dict[str, object]:
    """``{"commit": HEAD's hash, "dirty": whether files under ``paths`` (all when empty) have changes}`` of the git
    checkout at ``folder`` (the working folder when None), untracked files counted with ``untracked``;
    ``{"commit": None}`` outside git."""
    status = ["git", "status", "--porcelain", *(() if untracked else ("--untracked-files=no",)), "--", *paths]
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=folder, capture_output=True, text=True,
                                check=True).stdout.strip()
        dirty = bool(subprocess.run(status, cwd=folder, capture_output=True, text=True, check=True).stdout.strip())
    except (OSError, subprocess.CalledProcessError):
        return {"commit": None}
    return {"commit": commit, "dirty": dirty}
