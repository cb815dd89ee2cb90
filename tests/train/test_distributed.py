"""Data-parallel training (lmrec.train.distributed): two gloo processes on loopback against one process.

The contract: same seed and global batch -> the same per-epoch losses, validation scores, selected epoch and final
metrics, up to floating-point summation order. The runs are real ``lmrec train`` processes (``--nproc 2`` starts
torchrun; the two-node case starts two torchrun launchers that meet on a loopback port).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from lmrec.train.distributed import World

EPOCHS = 6


def env() -> dict[str, str]:
    """The environment of a process a test starts: this one's as it is now (the suite's LMREC_CACHE included)."""
    return {**os.environ, "OMP_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("synth") / "data"
    subprocess.run([sys.executable, "-m", "lmrec", "data", "synth", "--interactions", "20000", "--users", "400",
                    "--items", "300", "--seed", "1", "--out", str(folder)], check=True, env=env(), capture_output=True)
    return folder


def train(data: Path, out: Path, model: str, *extra: str, epochs: int = EPOCHS) -> dict:
    command = [sys.executable, "-m", "lmrec", "train", model, "--dataset", str(data), "--out", str(out),
               "--epochs", str(epochs), "--eval-every", "2", "--batch-size", "1024", "--no-progress", *extra]
    done = subprocess.run(command, env=env(), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return read(out)


def read(out: Path) -> dict:
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    manifest = json.loads((out / "manifest.json").read_text())
    return {"log": log, "fit": manifest["fit"], "metrics": json.loads((out / "metrics.json").read_text())}


def assert_same_run(one: dict, two: dict, rel: float = 1e-4) -> None:
    """Same epochs, losses, validation scores, selected epoch and final metrics, up to ``rel``. The two runs differ
    only in the order of float sums, but Adam divides each gradient coordinate by its running size, so on
    coordinates whose gradient is near zero a float-level difference becomes a step of size lr: the runs drift apart
    slowly, faster for the MLP models (AlphaRec, BC Loss), which is why their runs are short and their tolerance
    wider. The exact part of the contract is the per-batch gradient test below."""
    assert [r["epoch"] for r in one["log"]] == [r["epoch"] for r in two["log"]]
    np.testing.assert_allclose([r["loss"] for r in two["log"]], [r["loss"] for r in one["log"]], rtol=1e-4)
    for a, b in zip(one["log"], two["log"], strict=True):
        assert (a["valid"] is None) == (b["valid"] is None)
        if a["valid"]:
            for key, value in a["valid"].items():
                assert b["valid"][key] == pytest.approx(value, rel=rel, abs=1e-6), key
    assert one["fit"]["best_epoch"] == two["fit"]["best_epoch"]
    for split in ("valid", "test"):
        for key, est in one["metrics"][split].items():
            assert two["metrics"][split][key]["mean"] == pytest.approx(est["mean"], rel=rel, abs=1e-6), (split, key)
            assert two["metrics"][split][key]["n"] == est["n"]


# lightgcn: rows only; xsimgcl: whole-batch contrastive terms + noise; alpharec: per-batch shared negatives
@pytest.mark.parametrize("model", ["lightgcn", "xsimgcl", "alpharec"])
def test_two_processes_train_like_one(data, tmp_path, model):
    epochs = 2 if model == "alpharec" else EPOCHS
    one = train(data, tmp_path / "one", model, epochs=epochs)
    two = train(data, tmp_path / "two", model, "--nproc", "2", epochs=epochs)
    assert_same_run(one, two, rel=2e-3 if model == "alpharec" else 1e-4)


@pytest.mark.slow
@pytest.mark.parametrize("model", ["mf", "sgl", "bc_loss", "kar", "rlmrec", "linear_map"])
def test_two_processes_train_like_one_every_model(data, tmp_path, model):
    epochs = {"bc_loss": 7, "kar": 2, "rlmrec": 2, "linear_map": 2}.get(model, EPOCHS)  # BC Loss: 5 warm-up epochs
    one = train(data, tmp_path / "one", model, epochs=epochs)
    two = train(data, tmp_path / "two", model, "--nproc", "2", epochs=epochs)
    assert_same_run(one, two, rel=2e-3)


@pytest.mark.parametrize("model", ["mf", "lightgcn", "sgl", "xsimgcl", "bc_loss", "kar", "rlmrec", "alpharec",
                                   "linear_map"])
@pytest.mark.parametrize("size", [2, 3])
def test_rank_losses_give_the_one_process_gradient(data, model, size):
    """Σ_r ∇ℓ_r / N = ∇L(B) for one batch, each rank's loss computed as the trainer does (same torch seed per rank,
    as in a real run): the exact part of the contract. The end-to-end runs above then differ only by float noise."""
    from lmrec.data.registry import DataRef
    from lmrec.models.base import get_model
    from lmrec.train.trainer import _rank_loss

    split = DataRef.of(str(data)).load()
    cls = get_model(model, "cf")
    extra = {"features": np.random.default_rng(0).normal(size=(split.n_items, 16)).astype(np.float32)} \
        if "encoder" in cls.Config.__dataclass_fields__ else {}
    net = cls(**extra, **({"freeze_epochs": 0} if model == "bc_loss" else {}))
    net.prepare(split, seed=1)
    net.set_training(True)
    batch = next(net.batches(np.random.default_rng(0), 301))  # 301 rows: unequal shares
    params = [p for p in net.net.parameters() if p.requires_grad]
    torch.manual_seed(7)
    net.loss(batch).backward()
    expected = [p.grad.clone() if p.grad is not None else torch.zeros_like(p) for p in params]
    for p in params:
        p.grad = None
    for rank in range(size):
        torch.manual_seed(7)
        _rank_loss(net, batch, World(rank, size)).backward()
    for p, want in zip(params, expected, strict=True):
        got = (p.grad if p.grad is not None else torch.zeros_like(p)) / size
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-6 * float(want.abs().max()) + 1e-9)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_torchrun_two_nodes_on_loopback(data, tmp_path):
    """Two torchrun launchers (node ranks 0 and 1, one process each) meet on 127.0.0.1: the multi-machine
    entry point, as it would run on two hosts. Both must be told the port beforehand: a free one, and another if
    something else took it before the first launcher listened on it."""
    one = train(data, tmp_path / "one", "lightgcn")
    for attempt in range(3):
        port, out = free_port(), tmp_path / f"two-nodes-{attempt}"
        lmrec = ["-m", "lmrec", "train", "lightgcn", "--dataset", str(data), "--out", str(out), "--epochs",
                 str(EPOCHS), "--eval-every", "2", "--batch-size", "1024", "--no-progress"]
        nodes = [subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--nnodes=2", "--nproc-per-node=1",
                                   f"--node-rank={node}", "--master-addr=127.0.0.1", f"--master-port={port}", *lmrec],
                                  env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for node in (0, 1)]
        errors = [node.communicate(timeout=600)[1] for node in nodes]
        if any(node.returncode for node in nodes) and any("EADDRINUSE" in err for err in errors):
            continue  # the port was taken meanwhile
        for node, err in zip(nodes, errors, strict=True):
            assert node.returncode == 0, err[-3000:]
        break
    else:
        pytest.fail(f"three free ports were taken before torchrun listened on them: {errors[0][-1000:]}")
    assert_same_run(one, read(out))


def test_a_model_without_data_parallel_support_is_refused(monkeypatch):
    from lmrec.train import distributed
    from lmrec.train.trainer import Trainable, Trainer

    class Plain(Trainable):  # supports_distributed: the default, False
        name = "plain"

        def parameters(self):
            return iter(())

    monkeypatch.setattr(distributed, "current", lambda: World(0, 2))
    with pytest.raises(Exception, match="plain does not support distributed training"):
        Trainer().run(Plain(), None)


# -- the pieces, in one process ---------------------------------------------------------------------------------
def test_shares_cover_the_batch_once():
    batch = (torch.arange(10), torch.arange(10) * 2, torch.arange(3), torch.tensor(True))
    shares = [World(r, 3).share(batch, rows=(0, 1)) for r in range(3)]
    assert torch.equal(torch.cat([s[0] for s in shares]), batch[0])
    assert torch.equal(torch.cat([s[1] for s in shares]), batch[1])
    assert all(torch.equal(s[2], batch[2]) and s[3] is batch[3] for s in shares)  # per-batch fields stay whole
    assert [len(s[0]) for s in shares] == [3, 3, 4]
    with pytest.raises(Exception, match="not per row"):
        World(0, 2).share(batch)  # field 2 has 3 rows, the batch 10


def test_weighted_shares_give_the_whole_batch_gradient():
    """Σ_r (|B_r|·N/|B|)·mean(B_r) / N = mean(B), also when the shares differ in size."""
    from lmrec.train.trainer import Trainable, _rank_loss

    class Mean(Trainable):
        supports_distributed = True

        def __init__(self):
            self.w = torch.nn.Parameter(torch.tensor(2.0))

        def loss(self, batch):
            return (self.w * batch[0].float()).pow(2).mean()

    model, batch = Mean(), (torch.arange(7),)
    model.loss(batch).backward()
    expected = model.w.grad.clone()
    total = torch.zeros(())
    for rank in range(3):
        model.w.grad = None
        _rank_loss(model, batch, World(rank, 3)).backward()
        total += model.w.grad / 3
    torch.testing.assert_close(total, expected)
