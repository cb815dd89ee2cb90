"""lmrec tune: a search on validation (test read only afterwards), its folder, pruning, resuming, the command."""

import csv
import json

import optuna
import pytest
from fastapi.testclient import TestClient

import lmrec
import lmrec.eval.ranking as ranking_module
import lmrec.tuning as tuning_module
from helpers import planted_data, single_thread, write_lightgcn_folder  # noqa: F401
from lmrec.cli import main
from lmrec.errors import LmrecError
from lmrec.search_space import Choice
from lmrec.serve import create_app

FAST = {"epochs": 4, "eval_every": 1, "batch_size": 256}


@pytest.fixture(scope="module")
def data():
    return planted_data()


@pytest.fixture(scope="module")
def searched(data, tmp_path_factory):
    """(the result, the folder, every evaluation's split in order) of a 4-trial search of MF."""
    out = tmp_path_factory.mktemp("tune") / "mf"
    splits = []
    with pytest.MonkeyPatch.context() as patch:
        real = ranking_module.evaluate  # every ranking of a split goes through it (training and the run's)
        patch.setattr(ranking_module, "evaluate", lambda scorer, d, split="test", _real=real, **kw: (
            splits.append(split), _real(scorer, d, split, **kw))[1])
        result = lmrec.tune("mf", data, trials=4, fixed=FAST, out=out, log=None)
    return result, out, splits


def read_trials(out):
    with open(out / "trials.csv", newline="") as f:
        return list(csv.DictReader(f))


def test_a_search_writes_its_folder_and_a_loadable_best_run(searched, data):
    result, out, _ = searched
    rows = read_trials(out)
    assert [int(r["trial"]) for r in rows] == [0, 1, 2, 3]
    assert rows[0]["note"] == "default settings" and rows[0]["lr"] == "0.0005" and rows[0]["reg"] == "1e-05"
    assert set(rows[0]) == {"trial", "state", "lr", "reg", "valid recall@20", "best epoch", "epochs", "seconds", "note"}
    complete = [r for r in rows if r["state"] == "complete"]
    best = max(complete, key=lambda r: float(r["valid recall@20"]))
    assert result.best_params == {"lr": float(best["lr"]), "reg": float(best["reg"])}
    assert len(result.trials) == 4 and list(result.trials["trial"]) == [0, 1, 2, 3]
    run = lmrec.Run.load(out / "best", data=data)
    assert run.manifest["label"] == f"mf trial {best['trial']}" and run.manifest["status"] == "complete"
    assert {"valid", "test"} <= set(run.metrics)
    assert run.metrics["valid"]["recall@20"]["mean"] == pytest.approx(float(best["valid recall@20"]))
    assert len(run.recommend(user="u3", k=3)) == 3
    client = TestClient(create_app({"best": run}))
    assert client.post("/models/best/recommend", json={"user": "u3", "k": 2}).status_code == 200
    text = (out / "trials.md").read_text()
    assert f"Best on validation: trial {best['trial']}" in text and result.comparison in text
    assert "default settings" in result.comparison
    assert (out / "study.db").exists() and json.loads((out / "tune.json").read_text())["model"] == "mf"


def test_the_test_split_is_read_only_after_the_search(searched):
    result, out, splits = searched
    last_valid = max(i for i, s in enumerate(splits) if s == "valid")
    assert "test" in splits and all(s == "test" for s in splits[last_valid + 1:])
    assert 1 <= splits.count("test") <= 2  # the best trial and the default settings' trial, once each
    for row in read_trials(out):  # trial folders other than those two keep no test metrics
        if row["state"] != "complete":
            continue
        metrics = json.loads((out / "trials" / row["trial"] / "metrics.json").read_text())
        assert ("test" in metrics) == (row["trial"] in {"0", result.best.manifest["label"].split()[-1]})


class PruneFromTrialOne(optuna.pruners.BasePruner):
    """Prunes every trial after the first at its second validation."""

    def prune(self, study, trial):
        return trial.number > 0 and len(trial.intermediate_values) >= 2


def test_pruned_trials_stop_early_and_are_marked(data, tmp_path):
    out = tmp_path / "pruned"
    lines = []
    result = lmrec.tune("mf", data, trials=3, fixed=FAST, out=out, pruner=PruneFromTrialOne(), log=lines.append)
    rows = read_trials(out)
    assert [r["state"] for r in rows] == ["complete", "pruned", "pruned"]
    assert [r["epochs"] for r in rows] == ["4", "2", "2"]
    for n in (1, 2):
        folder = out / "trials" / str(n)
        assert len((folder / "log.jsonl").read_text().splitlines()) == 2  # stopped at epoch 2 of 4
        assert json.loads((folder / "manifest.json").read_text())["status"] == "pruned"
        assert not (folder / "checkpoint.safetensors").exists()
        with pytest.raises(LmrecError, match="was pruned"):
            lmrec.Run.load(folder, data=data)
    assert result.best.manifest["label"] == "mf trial 0" and "were best" in result.comparison
    assert sum("pruned at epoch 2" in line for line in lines) == 2


class PruneAtTheEnd(optuna.pruners.BasePruner):
    """Would prune every trial after the first at the last epoch of the budget (4)."""

    def prune(self, study, trial):
        return trial.number > 0 and max(trial.intermediate_values) >= 4


def test_the_last_epoch_is_never_pruned(data, tmp_path):
    lmrec.tune("mf", data, trials=2, fixed=FAST, out=tmp_path / "late", pruner=PruneAtTheEnd(), log=None)
    assert [r["state"] for r in read_trials(tmp_path / "late")] == ["complete", "complete"]


def test_the_median_pruner_prunes_a_trial_behind_the_others(data, tmp_path):
    """A constructed case for the default pruner: trials 0 and 1 learn (the defaults); trial 2's weight decay of
    1000 holds every embedding at 0, so its validation curve stays far below theirs."""
    real = optuna.Study.optimize

    def queued(study, *args, **kwargs):  # the points are fixed, not drawn by the sampler
        study.enqueue_trial({"weight_decay": 0.0})
        study.enqueue_trial({"weight_decay": 1e3})
        return real(study, *args, **kwargs)

    fixed = {"epochs": 12, "eval_every": 3, "batch_size": 64, "lr": 0.1, "metric": "ndcg@10"}
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(optuna.Study, "optimize", queued)
        lmrec.tune("lightgcn", data, trials=3, fixed=fixed, space={"weight_decay": Choice((0.0, 1e3))},
                   out=tmp_path / "median", log=None)
    rows = read_trials(tmp_path / "median")
    assert [r["state"] for r in rows] == ["complete", "complete", "pruned"] and rows[2]["weight_decay"] == "1000.0"
    assert int(rows[2]["epochs"]) < 12


def test_a_killed_search_goes_on_and_refuses_other_settings(data, tmp_path, monkeypatch):
    out = tmp_path / "resumed"
    lmrec.tune("mf", data, trials=2, fixed=FAST, out=out, log=None, pruner=optuna.pruners.NopPruner())
    created = {n: json.loads((out / "trials" / n / "manifest.json").read_text())["created"] for n in ("0", "1")}
    real, calls = tuning_module.fit, []

    def ctrl_c(epoch, metrics):
        raise KeyboardInterrupt

    def interrupted(*args, **kwargs):  # Ctrl-C in the second new trial, during its training
        calls.append(kwargs["out"].name)
        if len(calls) == 2:
            kwargs["on_validation"] = ctrl_c
        return real(*args, **kwargs)

    monkeypatch.setattr(tuning_module, "fit", interrupted)
    with pytest.raises(KeyboardInterrupt):
        lmrec.tune("mf", data, trials=5, fixed=FAST, out=out, log=None, pruner=optuna.pruners.NopPruner())
    monkeypatch.setattr(tuning_module, "fit", real)
    study = optuna.load_study(study_name="lmrec-tune", storage=f"sqlite:///{out / 'study.db'}")
    study.ask()  # a trial left running, as by a killed process
    lines = []
    lmrec.tune("mf", data, trials=5, fixed=FAST, out=out, log=lines.append, pruner=optuna.pruners.NopPruner())
    rows = read_trials(out)
    states = {int(r["trial"]): r["state"] for r in rows}
    assert states == {0: "complete", 1: "complete", 2: "complete", 3: "failed", 4: "failed", 5: "complete",
                      6: "complete"}
    assert "tried again as trial 5" in rows[3]["note"] and "tried again as trial 6" in rows[4]["note"]
    assert rows[5]["lr"] == rows[3]["lr"]  # the interrupted trial's settings, tried again
    assert any("trial 3 was interrupted" in line for line in lines)
    assert json.loads((out / "trials" / "3" / "manifest.json").read_text())["status"] == "failed"
    for n in ("0", "1"):  # finished trials are kept, not trained again
        assert json.loads((out / "trials" / n / "manifest.json").read_text())["created"] == created[n]
    with pytest.raises(LmrecError, match=r"other settings \(epochs: saved 4, requested 5\)"):
        lmrec.tune("mf", data, trials=5, fixed={**FAST, "epochs": 5}, out=out, log=None)
    with pytest.raises(LmrecError, match="model: saved 'mf', requested 'lightgcn'"):
        lmrec.tune("lightgcn", data, trials=5, fixed=FAST, out=out, log=None)


def test_training_never_imports_optuna():
    import subprocess
    import sys

    code = "import sys, lmrec, lmrec.train, lmrec.run, lmrec.models.cf; print('optuna' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "False"


def test_a_diverged_trial_fails_and_the_search_goes_on(data, tmp_path, monkeypatch):
    real = tuning_module.fit

    def nan_loss(epoch, metrics):
        raise FloatingPointError("loss became nan at epoch 1; lower the learning rate")

    def diverging(*args, **kwargs):  # trial 1's loss diverges
        if kwargs["out"].name == "1":
            kwargs["on_validation"] = nan_loss
        return real(*args, **kwargs)

    monkeypatch.setattr(tuning_module, "fit", diverging)
    lines = []
    lmrec.tune("mf", data, trials=3, fixed=FAST, out=tmp_path / "nan", log=lines.append)
    rows = read_trials(tmp_path / "nan")
    assert [r["state"] for r in rows] == ["complete", "failed", "complete"]
    assert "loss became nan" in rows[1]["note"] and "failed: loss became nan" in lines[1]
    assert json.loads((tmp_path / "nan" / "trials" / "1" / "manifest.json").read_text())["status"] == "failed"


# -- the command -----------------------------------------------------------------------------------------------
def test_the_command_writes_a_best_run_that_loads_on_its_own(data, tmp_path, capsys):
    folder = write_lightgcn_folder(data, tmp_path / "planted")
    out = tmp_path / "cli"
    argv = ["tune", "mf", "--dataset", str(folder), "--format", "lightgcn", "--trials", "2", "--epochs", "2",
            "--eval-every", "1", "--set", "batch_size=256", "--set", "emb_dim=8", "--out", str(out)]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "trial 0 (default settings): lr=0.0005, reg=1e-05 · valid recall@20" in printed and "trial 1: " in printed
    run = lmrec.Run.load(out / "best")  # the data from its manifest
    assert run.model.config.emb_dim == 8 and run.manifest["train_config"]["epochs"] == 2
    assert main(argv) == 0  # the same command again: the search is done, nothing is trained
    assert "trial" not in capsys.readouterr().out.split("test (read")[0]


@pytest.mark.parametrize("args, match", [
    (["pop"], "pop is fitted from the data, not trained: it has no settings to tune"),
    (["nope"], "unknown model 'nope'"),
    (["sasrec"], "sasrec is a conversational .CRS. model"),
    (["mf", "--set", "emb_dim=abc"], "--set emb_dim=abc: mf setting emb_dim='abc'"),
    (["mf", "--set", "embdim=3"], "--set embdim=3: unknown setting embdim"),
    (["mf", "--set", "emb_dim"], "--set 'emb_dim': expected KEY=VALUE"),
    (["mf", "--set", "seed=1"], "--set seed=1: seed: give the search's seed"),
    (["mf", "--set", "epochs=3", "--epochs", "4"], "--epochs and --set epochs=...: give it once"),
    (["mf", "--metric", "auc"], "--metric: training setting metric='auc'"),
    (["mf", "--set", "lr=0.1", "--set", "reg=0.1"], "every setting of the search space is fixed"),
])
def test_command_errors_name_what_is_wrong(args, match, tmp_path, capsys):
    code = main(["tune", *args, "--dataset", "nowhere", "--trials", "2", "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("lmrec: error: ") and len(err.splitlines()) == 1
    assert __import__("re").search(match, err), err
    assert not (tmp_path / "out").exists()
