"""What every bench script shares: the machine line of a result file, writing it, the datasets, the scorer, timing
ways against each other."""

from __future__ import annotations

import os
import platform
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from lmrec.environment import cpu_name, git_state
from lmrec.io import atomic_write

ROOT = Path(__file__).resolve().parent.parent
# synthetic datasets the benches name: MovieLens-1M-sized (6,040 users, 3,260 items, 1M pairs asked: 502k training)
SYNTH = {"synth-ml1m": (ROOT / "runs" / "bench-ml1m", dict(interactions=1_000_000, users=6040, items=3260, seed=1))}


def commit() -> str:
    """The checked-out lmrec commit (short), with "+" when ``src`` has changes (new files too); "unknown" outside
    git."""
    state = git_state(ROOT, ("src",), untracked=True)
    return f"{state['commit'][:7]}{'+' if state['dirty'] else ''}" if state["commit"] else "unknown"


def machine() -> str:
    """CPU model and core count, e.g. 'Intel(R) Xeon(R) ... (2 cores, Linux x86_64)'."""
    return f"{cpu_name()} ({os.cpu_count()} cores, {platform.system()} {platform.machine()})"


def dataset_path(name: str) -> str:
    """A registered dataset name as given, a folder made absolute (child processes run elsewhere), or one of
    :data:`SYNTH`'s names as its folder, written there first when missing (``lmrec data synth``)."""
    if name in SYNTH:
        folder, spec = SYNTH[name]
        if not (folder / "train.txt").exists():
            from lmrec.data.synth import synthesize

            synthesize(folder, **spec)
        return str(folder)
    return str(Path(name).resolve()) if Path(name).is_dir() else name


def write_lines(path: Path, lines: Sequence[str]) -> None:
    """Write a markdown result (atomically) and print it."""
    text = "\n".join(lines)
    atomic_write(path, lambda f: f.write(text))
    print(text)


def user_scores(model: Any) -> Callable[[np.ndarray], Any]:
    """Evaluation's scorer of known users from a fitted CF model: ``user_scorer(model.score)`` on the one model
    contract; ``model.score`` itself on lmrec's code before it (a before/after bench runs on both)."""
    try:
        from lmrec.models.queries import user_scorer
    except ImportError:
        return model.score
    return user_scorer(model.score)


def median_ms(fns: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    """Median ms of each function, alternating, after one warm-up each."""
    for fn in fns.values():
        fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: 1000 * statistics.median(t) for name, t in times.items()}
