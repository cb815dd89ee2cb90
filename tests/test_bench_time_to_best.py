"""bench/time_to_best.py on a tiny synthetic dataset: its runs report progress while they train, the table is
written, and a second call with the same settings reads the finished runs back instead of training again."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from lmrec.data.synth import synthesize

BENCH = Path(__file__).resolve().parents[1] / "bench" / "time_to_best.py"


def test_time_to_best_shows_progress_and_keeps_its_runs(tmp_path: Path) -> None:
    data = tmp_path / "tiny"
    synthesize(data, interactions=1500, users=60, items=50, seed=3)
    out = tmp_path / "ttb"
    command = [sys.executable, str(BENCH), str(data), "--budget", "2", "--eval-every", "1", "--threads", "1",
               "--libraries", "lmrec", "--out", str(out)]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}

    first = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
    assert first.returncode == 0, first.stderr[-3000:]
    assert "train alpharec" in first.stderr and "train lightgcn" in first.stderr  # each run's progress passes through
    table = out.with_suffix(".md").read_text()
    assert "alpharec" in table and "lightgcn" in table and "kept from" not in table
    assert sorted(p.name for p in out.with_name("ttb.runs").iterdir()) == ["tiny-lmrec-alpharec.json",
                                                                          "tiny-lmrec-lightgcn.json"]

    again = subprocess.run(command + ["--quiet"], capture_output=True, text=True, env=env, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "train alpharec" not in again.stderr  # nothing trained again
    assert again.stdout.count("kept from an earlier call with the same settings") == 2
    assert "Runs read back from an earlier call" in out.with_suffix(".md").read_text()
