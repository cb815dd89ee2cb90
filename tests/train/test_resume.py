"""A training process killed with SIGKILL mid-run and resumed with ``--resume`` ends exactly like an unbroken run.

The trainer checkpoints every ``checkpoint_every`` epochs (model, best state, optimizer, RNG states, log) in one
atomic safetensors file; ``--resume`` restores all of it. The runs are real ``lmrec train`` processes on one thread.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

EPOCHS = 16


def synthetic_folder(folder: Path, n_users: int = 1000, n_items: int = 300, per_user: int = 20) -> Path:
    """A LightGCN-format folder with clustered users (so training has something to learn, slowly enough)."""
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True)
    files = {split: [] for split in ("train", "valid", "test")}
    for u in range(n_users):
        centre = (u % 25) * 20
        items = np.unique((centre + rng.integers(0, 60, per_user * 2)) % n_items)[:per_user]
        rng.shuffle(items)
        parts = {"test": items[:4], "valid": items[4:8], "train": items[8:]}
        for split, chosen in parts.items():
            files[split].append(" ".join(map(str, [u, *chosen])))
    for split, lines in files.items():
        (folder / f"{split}.txt").write_text("\n".join(lines) + "\n")
    return folder


def train_command(data: Path, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "lmrec", "train", "lightgcn", "--dataset", str(data), "--epochs", str(EPOCHS),
            "--eval-every", "2", "--checkpoint-every", "2", "--batch-size", "512", "--patience", "50",
            "--threads", "1", "--no-progress", "--out", str(out), *extra]


def env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONHASHSEED": "0"}


def test_sigkill_then_resume_gives_the_same_run(tmp_path):
    data = synthetic_folder(tmp_path / "data")
    whole, broken = tmp_path / "whole", tmp_path / "broken"
    subprocess.run(train_command(data, whole), check=True, env=env(), capture_output=True)

    process = subprocess.Popen(train_command(data, broken), env=env(), stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE)
    checkpoint, log = broken / "checkpoint.safetensors", broken / "log.jsonl"
    deadline = time.monotonic() + 240
    while not (checkpoint.exists() and log.exists() and len(log.read_text().splitlines()) >= 4):
        assert process.poll() is None, f"training ended before it could be killed: {process.stderr.read()}"
        assert time.monotonic() < deadline, "no checkpoint appeared"
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    killed_at = len(log.read_text().splitlines())
    assert process.returncode == -signal.SIGKILL and killed_at < EPOCHS
    manifest = json.loads((broken / "manifest.json").read_text())
    assert manifest["status"] == "training" and not (broken / "metrics.json").exists()

    # the half-finished folder is refused as a run, and a plain rerun into it is refused too
    evaluate = subprocess.run([sys.executable, "-m", "lmrec", "evaluate", str(broken)], env=env(),
                              capture_output=True, text=True)
    assert evaluate.returncode == 2 and "incomplete" in evaluate.stderr
    rerun = subprocess.run(train_command(data, broken), env=env(), capture_output=True, text=True)
    assert rerun.returncode == 2 and "--resume" in rerun.stderr

    resumed = subprocess.run(train_command(data, broken, "--resume"), env=env(), capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    a = json.loads((whole / "metrics.json").read_text())
    b = json.loads((broken / "metrics.json").read_text())
    assert a == b  # identical to the last digit
    log_a = [json.loads(line) for line in (whole / "log.jsonl").read_text().splitlines()]
    log_b = [json.loads(line) for line in log.read_text().splitlines()]
    assert [(r["epoch"], r["loss"], r["valid"]) for r in log_a] == [(r["epoch"], r["loss"], r["valid"]) for r in log_b]
    fit_b = json.loads((broken / "manifest.json").read_text())["fit"]
    assert fit_b["resumed_at"] is not None and 2 <= fit_b["resumed_at"] < killed_at + 2
    assert fit_b["best_epoch"] == json.loads((whole / "manifest.json").read_text())["fit"]["best_epoch"]
    assert not (broken / "checkpoint.safetensors").exists()
