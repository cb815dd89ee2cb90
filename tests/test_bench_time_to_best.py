"""bench/time_to_best.py on a tiny synthetic dataset: its runs report progress while they train, the table is
written, and a second call with the same settings reads the finished runs back instead of training again; its
seconds to a common score by hand; a cut lmrec run goes on from its checkpoint as if never cut; and the workers it
shares with recbole_compare.py load the dataset they are given."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from lmrec.data.registry import load_dataset
from lmrec.data.synth import synthesize

BENCH = Path(__file__).resolve().parents[1] / "bench" / "time_to_best.py"
sys.path.insert(0, str(BENCH.parent))
from recbole_compare import write_atomic_files  # noqa: E402
from time_to_best import (  # noqa: E402
    RUN_CODE,
    code_hash,
    common_scores,
    partial_folder,
    seconds_to_reach,
    stopped_by,
    validation_curve,
)


def test_seconds_to_reach_counts_each_epoch_and_each_validation_before_the_score() -> None:
    run = {"epoch_s_all": [1.0, 2.0, 3.0, 4.0], "eval_s": 0.5,
           "valid_log": [{"epoch": 2, "recall@20": 0.1}, {"epoch": 4, "recall@20": 0.3}]}
    assert seconds_to_reach(run, 0.1) == 1 + 2 + 0.5  # two epochs, one validation
    assert seconds_to_reach(run, 0.2) == 1 + 2 + 3 + 4 + 2 * 0.5  # first reached at the second validation
    assert seconds_to_reach(run, 0.31) is None
    assert validation_curve(run) == [(1 + 2 + 0.5, 0.1), (1 + 2 + 3 + 4 + 2 * 0.5, 0.3)]


def test_the_code_hash_follows_the_code_that_makes_a_librarys_runs_and_nothing_else(tmp_path: Path) -> None:
    for name in RUN_CODE["recbole"]:
        path = tmp_path / name / "__init__.py" if name == "src/lmrec" else tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"# {name}\n")
    (tmp_path / "bench" / "time_to_best.py").write_text("# the table\n")
    first = {library: code_hash(library, tmp_path) for library in RUN_CODE}
    (tmp_path / "bench" / "time_to_best.py").write_text("# another table\n")
    (tmp_path / "src" / "lmrec" / "__pycache__").mkdir()
    (tmp_path / "src" / "lmrec" / "__pycache__" / "x.pyc").write_bytes(b"compiled")
    assert {library: code_hash(library, tmp_path) for library in RUN_CODE} == first
    (tmp_path / "src" / "lmrec" / "models.py").write_text("# a new module\n")  # the data and lmrec: both
    second = {library: code_hash(library, tmp_path) for library in RUN_CODE}
    (tmp_path / "bench" / "recbole_worker.py").write_text("# another worker\n")  # RecBole's runs only
    third = {library: code_hash(library, tmp_path) for library in RUN_CODE}
    assert len({first["lmrec"], second["lmrec"]}) == 2 and third["lmrec"] == second["lmrec"]
    assert len({first["recbole"], second["recbole"], third["recbole"]}) == 3


def test_a_run_that_the_budget_ended_is_marked_unconverged() -> None:
    def run(best: int, last: int) -> dict:
        return {"best_epoch": best, "valid_log": [{"epoch": e} for e in range(5, last + 1, 5)],
                "settings": {"budget": 500, "patience": 20}}

    assert stopped_by(run(495, 500)) == "budget (unconverged)"
    assert stopped_by(run(80, 180)) == "patience"  # 20 validations after the best
    assert stopped_by(run(400, 500)) == "patience"  # patience ran out at the budget's last epoch
    assert stopped_by(run(405, 500)) == "budget (unconverged)"  # 19 after the best


def test_the_common_score_is_the_lowest_best_of_each_dataset() -> None:
    runs = [{"dataset": "a", "best_valid_recall@20": 0.3}, {"dataset": "a", "best_valid_recall@20": 0.2},
            {"dataset": "b", "best_valid_recall@20": 0.4}]
    assert common_scores(runs) == {"a": 0.2, "b": 0.4}


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
    assert "alpharec" in table and "lightgcn" in table and "s to common" in table and "kept from" not in table
    assert out.with_suffix(".png").stat().st_size > 10_000 and "ttb.png" in table
    assert sorted(p.name for p in out.with_name("ttb.runs").iterdir()) == ["tiny-lmrec-alpharec.json",
                                                                          "tiny-lmrec-lightgcn.json"]

    again = subprocess.run(command + ["--quiet"], capture_output=True, text=True, env=env, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "train alpharec" not in again.stderr  # nothing trained again
    assert again.stdout.count("kept from an earlier call with the same settings") == 2
    assert "Runs read back from an earlier call" in out.with_suffix(".md").read_text()


def test_a_worker_loads_the_registered_dataset_not_the_folder_of_its_name_beside_it(tmp_path: Path) -> None:
    """The benches run their workers in a folder that holds RecBole's copy of the data under the dataset's name
    (ids only, no titles): a worker given a registered name must load the registered dataset."""
    decoy = tmp_path / "tiny"
    synthesize(decoy, interactions=300, users=20, items=15, seed=1)
    write_atomic_files(load_dataset(decoy), tmp_path / "movielens-latest-small", "movielens-latest-small")
    command = [sys.executable, str(BENCH.with_name("recbole_compare.py")), "movielens-latest-small", "--worker",
               "lightgcn", "--epochs", "1", "--eval-repeats", "1", "--threads", "1"]
    done = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    run = json.loads(done.stdout.strip().splitlines()[-1])
    assert run["dataset"] == "movielens-latest-small" and run["users"] == 610  # not the 20 users beside it


def worker_run(data: Path, epochs: int, folder: Path) -> dict:
    command = [sys.executable, str(BENCH.with_name("recbole_compare.py")), str(data), "--worker", "lightgcn",
               "--epochs", str(epochs), "--eval-every", "1", "--eval-repeats", "1", "--threads", "1",
               "--folder", str(folder)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_a_cut_worker_run_goes_on_from_its_checkpoint_as_if_never_cut(tmp_path: Path) -> None:
    """A run cut after 3 epochs (its budget then) and called again with 6 resumes at epoch 3 and validates as a
    6-epoch run that was never cut; its clock goes on from the checkpoint's."""
    data = tmp_path / "tiny"
    synthesize(data, interactions=1500, users=60, items=50, seed=3)
    cut = worker_run(data, 3, tmp_path / "cut")
    resumed = worker_run(data, 6, tmp_path / "cut")
    whole = worker_run(data, 6, tmp_path / "whole")
    assert cut["resumed_at"] is None and whole["resumed_at"] is None and resumed["resumed_at"] == 3
    assert resumed["seconds_before_resume"] > 0 and resumed["total_seconds"] > resumed["seconds_before_resume"]
    assert [v["epoch"] for v in resumed["valid_log"]] == list(range(1, 7))
    assert resumed["valid_log"] == whole["valid_log"] and resumed["recall@20"] == whole["recall@20"]
    assert resumed["epoch_s_all"][:3] == cut["epoch_s_all"]  # the cut run's epochs, as they were measured


RECBOLE_PYTHON = BENCH.parents[1] / ".venv-recbole" / "bin" / "python"


def recbole_process(data_path: Path, epochs: int, folder: Path, *flags: str) -> subprocess.CompletedProcess:
    command = [str(RECBOLE_PYTHON), str(BENCH.with_name("recbole_worker.py")), "--data-path", str(data_path),
               "--dataset", "tiny", "--model", "LightGCN", "--epochs", str(epochs), "--eval-every", "1",
               "--eval-repeats", "1", "--threads", "1", "--folder", str(folder), *flags]
    return subprocess.run(command, cwd=data_path, capture_output=True, text=True, timeout=600)


def recbole_run(data_path: Path, epochs: int, folder: Path) -> dict:
    done = recbole_process(data_path, epochs, folder)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not RECBOLE_PYTHON.exists(), reason="RecBole's environment is not set up (bash "
                    "bench/setup_recbole.sh): the RecBole worker cannot run")
def test_a_cut_recbole_run_goes_on_from_its_checkpoint_as_if_never_cut(tmp_path: Path) -> None:
    """recbole_worker.py restores the model, Adam and every random stream RecBole draws from (its loader's
    generator, numpy's negatives): cut at 3 epochs and resumed to 6, it validates as a 6-epoch run never cut."""
    data = tmp_path / "tiny"
    synthesize(data, interactions=1500, users=60, items=50, seed=3)
    write_atomic_files(load_dataset(data), tmp_path / "atomic" / "tiny", "tiny")
    cut = recbole_run(tmp_path / "atomic", 3, tmp_path / "cut")
    resumed = recbole_run(tmp_path / "atomic", 6, tmp_path / "cut")
    whole = recbole_run(tmp_path / "atomic", 6, tmp_path / "whole")
    assert cut["resumed_at"] is None and whole["resumed_at"] is None and resumed["resumed_at"] == 3
    assert resumed["seconds_before_resume"] > 0 and resumed["total_seconds"] > resumed["seconds_before_resume"]
    assert [v["epoch"] for v in resumed["valid_log"]] == list(range(1, 7))
    assert resumed["valid_log"] == whole["valid_log"] and resumed["recall@20"] == whole["recall@20"]
    assert resumed["epoch_s_all"][:3] == cut["epoch_s_all"]
    assert sorted(p.name for p in (tmp_path / "cut").iterdir()) == ["checkpoint.safetensors"]  # no temporary file
    other = recbole_process(tmp_path / "atomic", 8, tmp_path / "cut", "--lr", "0.01")  # not this checkpoint's run
    assert other.returncode != 0 and "made under other settings (lr: [0.001], asked [0.01])" in other.stderr


def test_a_partial_run_folder_made_under_other_settings_is_removed(tmp_path: Path) -> None:
    kept = tmp_path / "ttb.runs" / "tiny-lmrec-alpharec.json"
    folder = partial_folder(kept, {"budget": 500})
    (folder / "checkpoint").write_text("epoch 5")
    assert partial_folder(kept, {"budget": 500}) == folder and (folder / "checkpoint").exists()  # same: kept
    partial_folder(kept, {"budget": 400})
    assert not (folder / "checkpoint").exists()
    assert json.loads((folder / "settings.json").read_text()) == {"budget": 400}
