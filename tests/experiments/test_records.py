"""Records of finished runs: a reproduction goes on from another machine's records, with the same tables, and a
record counts only for the settings and data it was made with."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from helpers import planted_data, single_thread  # noqa: F401
from lmrec import cli
from lmrec.data.registry import DataRef
from lmrec.errors import LmrecError
from lmrec.experiments import reproduce
from lmrec.experiments.compare import RunSpec, run_comparison
from lmrec.experiments.records import matching_record, save_record, train_again
from lmrec.models.cf.pop import Popularity
from lmrec.models.torch_base import TorchRecommender
from lmrec.run import Run, per_user_test_values, planned_manifest, read_manifest

FAST = {"epochs": 2, "eval_every": 1, "patience": 2, "batch_size": 128, "progress": False}
TABLES = {
    "01-comparison.toml": '''title = "Comparison"
experiment = "compare"
[run]
datasets = ["p"]
focus = "lightgcn"
train = { epochs = 3, eval_every = 1, patience = 3, batch_size = 128 }
[run.models]
pop = {}
mf = { set = { emb_dim = 8 }, grid = { lr = [1e-3, 1e-2] } }
lightgcn = { set = { emb_dim = 8 } }
''',
    "02-convergence.toml": 'title = "Convergence"\nexperiment = "convergence"\n[run]\nruns = "01-comparison"\n',
}


@pytest.fixture
def planted(monkeypatch):
    datasets = {"p": planted_data(0, name="p")}
    monkeypatch.setattr(DataRef, "load", lambda self: datasets[self.dataset])
    return datasets


def packed_runs(report) -> list[str]:
    """The runs a report's packed records hold (``dataset/run``), and that none holds weights."""
    import gzip

    lines = gzip.decompress((report / "records" / "01-comparison.jsonl.gz").read_bytes()).decode().splitlines()
    records = [json.loads(line) for line in lines if line]
    assert all(set(r) == {"where", "manifest", "metrics", "log"} for r in records)
    return sorted(r["where"] for r in records)


def no_training(monkeypatch):
    for cls in (TorchRecommender, Popularity):
        monkeypatch.setattr(cls, "fit", lambda *a, **k: pytest.fail("a recorded run was trained again"))


def test_a_reproduction_goes_on_from_the_records_of_another(tmp_path, planted, monkeypatch, capsys):
    configs = tmp_path / "configs" / "alpharec"
    configs.mkdir(parents=True)
    for name, text in TABLES.items():
        (configs / name).write_text(text)
    first = tmp_path / "machine-1"
    published = tmp_path / "docs" / "report"
    assert cli.main(["reproduce", "alpharec", "--configs", str(tmp_path / "configs"), "--out", str(first),
                     "--publish", str(published)]) == 0
    assert sorted(p.name for p in (published / "records").iterdir()) == [  # packed: two files per runs folder
        "01-comparison.jsonl.gz", "01-comparison.values.safetensors.gz"]
    assert packed_runs(published) == ["p/lightgcn", "p/mf_lr-0.001", "p/mf_lr-0.01", "p/pop"]
    capsys.readouterr()

    fit = TorchRecommender.fit
    no_training(monkeypatch)  # another machine: no run folder, only the published records
    second = tmp_path / "machine-2"
    assert cli.main(["reproduce", "alpharec", "--configs", str(tmp_path / "configs"), "--out", str(second),
                     "--reuse", str(published)]) == 0
    printed = capsys.readouterr().out
    assert "4/4 p / lightgcn: valid recall@20" in printed and printed.count("(recorded run)") == 4
    assert not (second / "01-comparison" / "p").exists()
    tables = [json.loads((out / "report" / "tables" / "01-comparison.json").read_text()) for out in (first, second)]
    assert tables[0] == tables[1]  # every mean, SE, epoch and the paired test
    assert tables[1]["p"]["focus"]["best_baseline"] in ("pop", "mf~lr=0.001", "mf~lr=0.01")
    convergence = [json.loads((out / "report" / "tables" / "02-convergence.json").read_text()) for out in
                   (first, second)]
    assert convergence[0] == convergence[1]
    chosen = set(tables[1]["p"]["selected"].values()) - {"pop"}  # pop has no training log
    assert {row["model"] for row in convergence[1]} == chosen and len(chosen) == 2  # one mf grid point of two
    assert packed_runs(second / "report") == packed_runs(published)  # the new report carries them on

    (configs / "01-comparison.toml").write_text(TABLES["01-comparison.toml"].replace("mf = { set = { emb_dim = 8 }",
                                                                                      "mf = { set = { emb_dim = 16 }"))
    trained = []
    monkeypatch.setattr(TorchRecommender, "fit", lambda self, *a, **k: trained.append(self.name) or fit(self, *a, **k))
    lines = []
    reproduce.reproduce("alpharec", tmp_path / "configs", tmp_path / "machine-3", reuse=published, log=lines.append)
    assert trained == ["mf", "mf"]  # both mf grid points have other settings now; pop and lightgcn are recorded
    assert sum("(its record not used: recorded with other model_config)" in line for line in lines) == 2
    capsys.readouterr()
    assert cli.main(["reproduce", "alpharec", "--configs", str(tmp_path / "configs"), "--out", str(tmp_path / "m4"),
                     "--publish", str(published)]) == 2
    assert "report: exists; publish into a new folder" in capsys.readouterr().err
    assert not (tmp_path / "m4").exists()  # refused before anything ran
    with pytest.raises(LmrecError, match=r"--reuse .*configs: no records/, answers/ or rta-tables/ folder"):
        reproduce.reproduce("alpharec", tmp_path / "configs", tmp_path / "x", reuse=tmp_path / "configs",
                            log=lambda _: None)


def test_a_record_counts_only_for_its_settings_and_data(tmp_path, planted, monkeypatch):
    spec = RunSpec("mf", "mf", {"emb_dim": 8}, FAST)
    run_comparison([spec], ["p"], tmp_path / "a", focus=None, records=tmp_path / "records")
    record = tmp_path / "records" / "p" / "mf"
    wanted, _ = planned_manifest("mf", DataRef("p"), FAST, emb_dim=8)
    assert matching_record(record, wanted) == (True, "same settings and data")
    other, _ = planned_manifest("mf", DataRef("p"), FAST, emb_dim=16)
    assert matching_record(record, other) == (False, "recorded with other model_config")
    assert matching_record(tmp_path / "nothing", wanted) == (False, "no record")
    assert matching_record(record, {**wanted, "data_checksum": "other"}) == (False,
                                                                             "recorded with other data_checksum")
    with pytest.raises(ValueError, match="not a finished run"):
        save_record(tmp_path / "nothing", tmp_path / "r")
    unfinished = shutil.copytree(record, tmp_path / "unfinished")
    manifest = read_manifest(unfinished)
    (unfinished / "manifest.json").write_text(json.dumps({**manifest, "status": "training"}))
    assert matching_record(unfinished, wanted) == (False, "the record is not of a finished run")

    no_training(monkeypatch)
    again = run_comparison([spec], ["p"], tmp_path / "b", focus=None, reuse=tmp_path / "records")
    first = json.loads((tmp_path / "a" / "results.json").read_text())
    assert again["p"]["models"]["mf"]["test"] == first["p"]["models"]["mf"]["test"]


def test_a_record_trains_again_into_the_same_run(tmp_path, planted, single_thread):  # noqa: F811
    run_comparison([RunSpec("lgcn", "lightgcn", {"emb_dim": 8}, FAST)], ["p"], tmp_path / "a", focus=None,
                   records=tmp_path / "records")
    record = tmp_path / "records" / "p" / "lgcn"
    with pytest.raises(LmrecError, match=r"lgcn: a record of a finished run \(its numbers, no model.safetensors\)"):
        Run.load(record)
    train_again(record, tmp_path / "again")
    assert (tmp_path / "again" / "model.safetensors").exists()
    assert json.loads((tmp_path / "again" / "metrics.json").read_text()) == \
        json.loads((record / "metrics.json").read_text())
    users, values = per_user_test_values(tmp_path / "again")
    assert np.array_equal(users, per_user_test_values(record)[0])
    assert np.array_equal(values["recall@20"], per_user_test_values(record)[1]["recall@20"])
