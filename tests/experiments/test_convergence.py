"""Convergence table and plot from run folders (hand-made logs with known answers)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lmrec import cli
from lmrec.errors import LmrecError
from lmrec.experiments import convergence as C


def write_run(folder: Path, valid: dict[int, float], seconds: float = 2.0, n_epochs: int | None = None,
              finished: bool = True, model: str | None = None, dataset: str | None = None,
              train: dict | None = None, label: str | None = None, threads: int | None = None) -> None:
    folder.mkdir(parents=True)
    lines = [json.dumps({"epoch": e, "loss": 1.0, "seconds": seconds, "steps": 4,
                         "valid": {"recall@20": valid[e], "ndcg@20": 0.0} if e in valid else None})
             for e in range(1, (n_epochs or max(valid)) + 1)]
    (folder / "log.jsonl").write_text("\n".join(lines) + "\n")
    manifest = {"format": "lmrec-run", "version": 1, "status": "complete" if finished else "training",
                "model": model or folder.name, "data": {"dataset": dataset or folder.parent.name},
                "train_config": {"metric": "recall@20", "epochs": 100, "eval_every": 5, "patience": 2,
                                 "max_minutes": None, **(train or {})}} | ({"label": label} if label else {}) \
        | ({"fit": {"threads": threads}} if threads else {})
    (folder / "manifest.json").write_text(json.dumps(manifest))


@pytest.fixture
def runs(tmp_path: Path) -> Path:
    root = tmp_path / "table"
    write_run(root / "ds1" / "alpharec", {5: 0.10, 10: 0.19, 15: 0.20, 20: 0.18}, seconds=3.0,
              train={"patience": 1})
    write_run(root / "ds1" / "lightgcn", {5: 0.05, 10: 0.10, 15: 0.15, 20: 0.20, 25: 0.21}, seconds=1.0, n_epochs=27,
              train={"max_minutes": 1})
    write_run(root / "ds1" / "mf", {5: 0.02, 10: 0.04}, finished=False)
    (root / "ds1" / "pop").mkdir()
    (root / "ds1" / "pop" / "manifest.json").write_text(json.dumps(
        {"format": "lmrec-run", "version": 1, "status": "complete", "model": "pop", "train_config": None}))
    write_run(root / "ds2" / "alpharec", {1: 0.3, 2: 0.3}, seconds=0.5, train={"epochs": 2}, threads=1)
    return root


def test_summary_counts_epochs_and_training_seconds(runs):
    rows = {(r["dataset"], r["model"]): r for r in (c.summary() for c in C.find_curves(runs))}
    a = rows["ds1", "alpharec"]
    assert (a["best_valid"], a["epoch_to_best"], a["seconds_to_best"]) == (0.20, 15, 45.0)
    assert a["steps_to_best"] == 60  # 15 epochs of 4 optimizer steps
    assert (a["epoch_to_95pct"], a["seconds_to_95pct"]) == (10, 30.0)  # 0.19 >= 0.95 * 0.20
    assert (a["epochs_run"], a["seconds_run"], a["seconds_per_epoch"]) == (20, 60.0, 3.0)
    g = rows["ds1", "lightgcn"]
    assert (g["epoch_to_best"], g["seconds_to_best"], g["epoch_to_95pct"], g["epochs_run"]) == (25, 25.0, 20, 27)
    assert rows["ds2", "alpharec"]["epoch_to_best"] == 1  # the first epoch reaching the best
    assert [rows[k]["stop"] for k in (("ds1", "alpharec"), ("ds1", "lightgcn"), ("ds1", "mf"), ("ds2", "alpharec"))] \
        == ["early stop", "time budget", "running", "max epochs"]
    assert not rows["ds1", "mf"]["finished"] and rows["ds1", "mf"]["dataset"] == "ds1"
    assert ("ds1", "pop") not in rows  # no training loop, no curve
    assert rows["ds2", "alpharec"]["threads"] == 1 and rows["ds1", "alpharec"]["threads"] is None  # as recorded
    table = C.markdown(list(rows.values()))
    assert "| 0.50 (1 thread) |" in table and "| 3.00 |" in table  # s/epoch, with the threads where recorded


def test_focus_model_first_within_a_dataset(runs):
    order = [(c.dataset, c.model) for c in C.find_curves(runs)]
    assert order == [("ds1", "alpharec"), ("ds1", "lightgcn"), ("ds1", "mf"), ("ds2", "alpharec")]


def test_run_convergence_writes_table_and_plot(runs, tmp_path):
    out = tmp_path / "out"
    C.run_convergence(runs, out)
    text = (out / "convergence.md").read_text(encoding="utf-8")
    assert "### ds1" in text and "### ds2" in text
    assert "| alpharec | 0.2000 | 15 | 60 | 45 | 10 | 30 | 20 | early stop | 3.00 |" in text
    assert "mf (still training)" in text
    assert (out / "convergence.png").read_bytes()[:4] == b"\x89PNG"
    assert len(json.loads((out / "convergence.json").read_text())) == 4


def test_log_without_validation_points(tmp_path):
    folder = tmp_path / "r" / "d" / "m"
    folder.mkdir(parents=True)
    (folder / "log.jsonl").write_text(json.dumps({"epoch": 1, "loss": 1.0, "seconds": 1.0, "valid": None}) + "\n")
    (row,) = [c.summary() for c in C.find_curves(tmp_path / "r")]
    assert row["evaluations"] == 0 and row["epochs_run"] == 1
    assert "| m (still training) | - |" in C.markdown([row])


def test_empty_or_missing_folder_is_a_clean_error(tmp_path, capsys):
    with pytest.raises(LmrecError, match="no run folder"):
        C.find_curves(tmp_path)
    assert cli.main(["convergence", str(tmp_path / "nope"), "--out", str(tmp_path / "o")]) == 2
    assert "not a folder" in capsys.readouterr().err


def test_cli_convergence(runs, tmp_path, capsys):
    assert cli.main(["convergence", str(runs), "--out", str(tmp_path / "o")]) == 0
    assert "epoch to best" in capsys.readouterr().out


def test_reads_a_run_folder_written_by_fit(tmp_path):
    import lmrec
    from helpers import planted_data

    run = lmrec.fit("mf", planted_data(), {"epochs": 4, "eval_every": 2, "progress": False},
                    out=tmp_path / "runs" / "planted" / "mf", emb_dim=8)
    (curve,) = C.find_curves(tmp_path / "runs")
    row = curve.summary()
    assert (curve.dataset, curve.model, row["finished"], row["epochs_run"]) == ("planted", "mf", True, 4)
    assert row["epoch_to_best"] == run.manifest["fit"]["best_epoch"] and row["stop"] == "max epochs"


def test_a_runs_setting_is_its_label_without_the_training_seed():
    assert C.setting("alpharec~tau=0.2,seed=2025") == "alpharec~tau=0.2"
    assert C.setting("alpharec~seed=2025") == "alpharec"
    assert C.setting("alpharec~tau=0.2") == "alpharec~tau=0.2" and C.setting("seedless") == "seedless"
    assert C.setting("alpharec_tau-0.2_seed-2025") == "alpharec_tau-0.2"  # a folder name (no label)
    assert C.setting("alpharec~data_seed=3") == "alpharec~data_seed=3"


def test_runs_of_one_setting_at_several_seeds_get_a_row_over_the_seeds(tmp_path):
    root = tmp_path / "table"
    for folder, label, best in (("alpharec_tau-0.2", "alpharec~tau=0.2", 10),
                                ("alpharec_tau-0.2_seed-2025", "alpharec~tau=0.2,seed=2025", 15),
                                ("alpharec_tau-0.2_seed-2026", "alpharec~tau=0.2,seed=2026", 20),
                                ("alpharec", "alpharec", 5),  # a grid point the comparison did not choose
                                ("lightgcn", "lightgcn", 5), ("lightgcn_seed-2025", "lightgcn~seed=2025", 10)):
        # 2 s and 4 steps an epoch; lightgcn's runs stop at their epoch budget (the last validation)
        write_run(root / "ds" / folder, {5: 0.1, best: 0.3}, label=label,
                  train={"epochs": best} if folder.startswith("lightgcn") else None)
    (root / "results.json").write_text(json.dumps(
        {"ds": {"selected": {"alpharec": "alpharec~tau=0.2", "lightgcn": "lightgcn"}}}))
    rows = [c.summary() for c in C.find_curves(root)]
    assert sorted(r["model"] for r in rows) == ["alpharec~tau=0.2", "alpharec~tau=0.2,seed=2025",
                                                "alpharec~tau=0.2,seed=2026", "lightgcn", "lightgcn~seed=2025"]
    seeds = {r["model"]: r for r in C.over_seeds(rows)}
    a = seeds["alpharec~tau=0.2"]
    assert a["seeds"] == 3 and a["epoch_to_best"]["mean"] == 15
    assert a["epoch_to_best"]["se"] == pytest.approx(5 / 3**0.5)  # epochs 10, 15, 20: SD 5
    assert (a["steps_to_best"]["mean"], a["seconds_to_best"]["mean"]) == (60, 30) and a["at_budget"] == 0
    assert seeds["lightgcn"]["at_budget"] == 2
    assert seeds["lightgcn"]["epoch_to_best"] == pytest.approx({"mean": 7.5, "se": 2.5, "n": 2})
    text = C.markdown(rows)
    assert "| alpharec~tau=0.2 | 3 | 0 | 0.3000 ± 0.0000 | 15 ± 3 | 60 ± 12 | 30 ± 6 |" in text
    assert "| lightgcn | 2 | 2 | 0.3000 ± 0.0000 | 8 ± 2 | 30 ± 10 | 15 ± 5 |" in text
    C.run_convergence(root, tmp_path / "out")
    assert json.loads((tmp_path / "out" / "convergence-seeds.json").read_text()) == json.loads(
        json.dumps(C.over_seeds(rows)))
