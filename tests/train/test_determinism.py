"""Training on CPU with two threads gives the same numbers on every run of one seed (lmrec.train.determinism)."""

import pytest
import torch

from helpers import planted_data
from lmrec.models.cf.lightgcn import LightGCN
from lmrec.train.determinism import deterministic_kernels

# batches of 4,096 rows: torch's default backward of an index adds their gradient rows on several threads at once
TRAIN = dict(epochs=3, lr=0.01, batch_size=4096, eval_every=1, patience=20, progress=False, seed=7)


@pytest.fixture
def two_threads():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


def training_numbers(data) -> list:
    """Per epoch: the mean loss and the validation metrics, to the last bit."""
    model = LightGCN()
    log = model.fit(data, TRAIN)
    return [(record.loss, record.valid) for record in log.records]


def test_two_runs_of_one_seed_are_identical_on_two_threads(two_threads):
    data = planted_data()
    assert training_numbers(data) == training_numbers(data)


def test_training_steps_run_in_deterministic_kernels_on_cpu(monkeypatch):
    """Torch's default kernels race (bench/determinism.py shows the drift; a race is too rare on test-sized data to
    assert here), so what is checked is that every training step runs in the deterministic ones, and that the
    caller's mode is back afterwards."""
    seen, loss = [], LightGCN.loss

    def recording_loss(self, batch):
        seen.append(torch.are_deterministic_algorithms_enabled())
        return loss(self, batch)

    monkeypatch.setattr(LightGCN, "loss", recording_loss)
    torch.use_deterministic_algorithms(False)
    LightGCN().fit(planted_data(), TRAIN)
    assert seen and all(seen)
    assert not torch.are_deterministic_algorithms_enabled()


def test_the_mode_is_restored_after_training_and_left_alone_off_cpu():
    torch.use_deterministic_algorithms(False)
    with deterministic_kernels(torch.device("cpu")):
        assert torch.are_deterministic_algorithms_enabled()
        assert torch.is_deterministic_algorithms_warn_only_enabled()
    assert not torch.are_deterministic_algorithms_enabled()
    with deterministic_kernels(torch.device("meta")):
        assert not torch.are_deterministic_algorithms_enabled()
