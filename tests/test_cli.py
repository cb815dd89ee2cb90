"""The lmrec command line: train / evaluate / recommend / data stats / models, and its error handling."""

import json
import re
from pathlib import Path

import pytest

from helpers import planted_data, single_thread, write_lightgcn_folder  # noqa: F401
from lmrec.cli import main
from lmrec.data.registry import load_dataset
from lmrec.run import Run

FIXTURES = Path(__file__).resolve().parent / "data" / "fixtures"
METRIC_NAMES = {f"{m}@{k}" for m in ("recall", "ndcg", "hr", "mrr") for k in (10, 20)}


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    """The planted data as a LightGCN text folder, plus user 30 with test items but no training items."""
    path = write_lightgcn_folder(planted_data(), tmp_path_factory.mktemp("cli") / "planted")
    with open(path / "train.txt", "a") as f:
        f.write("30\n")
    with open(path / "test.txt", "a") as f:
        f.write("30 5 6\n")
    return path


@pytest.fixture(scope="module")
def run(folder, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("runs") / "lightgcn"
    code = main(["train", "lightgcn", "--dataset", str(folder), "--format", "lightgcn", "--epochs", "2",
                 "--eval-every", "1", "--no-progress", "--out", str(out)])
    assert code == 0
    return out


def table_cells(text: str) -> dict[str, dict[str, str]]:
    """{split: {column: cell}} of a metrics table printed by the CLI."""
    lines = [line for line in text.splitlines() if line.strip()]
    header = lines[0].split()
    rows = {}
    for line in lines[2:]:
        parts = re.split(r"\s{2,}", line.strip())
        if parts[0] in ("valid", "test"):
            rows[parts[0]] = dict(zip(header, parts))
    return rows


# -- train ---------------------------------------------------------------------------------------------------
def test_train_writes_metrics_json(run, folder):
    metrics = json.loads((run / "metrics.json").read_text())
    assert set(metrics) == {"valid", "test"}
    beyond = {f"{m}@{k}" for m in ("coverage", "novelty", "arp", "aplt") for k in (10, 20)}
    assert set(metrics["test"]) == METRIC_NAMES | beyond and set(metrics["valid"]) == METRIC_NAMES
    for split, n_users in (("valid", 30), ("test", 30)):  # user 30 has no training items: left out, counted
        for name in METRIC_NAMES:
            value = metrics[split][name]
            assert set(value) == {"mean", "se", "n"}, name
            assert 0 <= value["mean"] <= 1 and value["se"] >= 0 and value["n"] == n_users
    assert metrics["test"]["coverage@20"]["se"] is None and metrics["test"]["novelty@20"]["mean"] > 0


def test_train_writes_the_manifest(run, folder):
    config = json.loads((run / "manifest.json").read_text())
    assert config["evaluation"]["excluded_cold_users"] == {"test": 1}
    data = load_dataset(folder, format="lightgcn")
    assert config["model"] == "lightgcn"
    assert config["data_checksum"] == data.checksum()
    assert config["data"]["dataset"] == str(folder) and config["data"]["format"] == "lightgcn"
    assert config["train_config"]["epochs"] == 2 and config["train_config"]["eval_every"] == 1
    assert config["train_config"]["progress"] is False
    assert config["model_config"]["n_layers"] == 2
    assert {"lmrec", "torch", "numpy", "scipy", "python"} <= set(config["versions"])
    assert config["fit"]["best_epoch"] in (1, 2) and config["fit"]["epochs_run"] == 2
    assert config["evaluation"]["test_masks"] == ["train", "valid"]
    assert config["format"] == "lmrec-run" and config["status"] == "complete" and config["task"] == "cf"
    assert config["data_stats"]["users"] == 31 and config["data_stats"]["items"] == 40


def test_train_writes_log_and_loadable_model(run, folder):
    lines = (run / "log.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [1, 2]
    assert all(json.loads(line)["valid"] for line in lines)
    loaded = Run.load(run)
    assert loaded.model.name == "lightgcn" and not (run / "checkpoint.safetensors").exists()
    assert (run / "model.safetensors").exists() and not list(run.glob("*.pt"))


def test_train_prints_the_metrics_table(folder, tmp_path, capsys):
    assert main(["train", "pop", "--dataset", str(folder), "--out", str(tmp_path / "pop")]) == 0
    out = capsys.readouterr().out
    rows = table_cells(out)
    metrics = json.loads((tmp_path / "pop" / "metrics.json").read_text())
    for split in ("valid", "test"):
        m = metrics[split]["recall@20"]
        assert rows[split]["recall@20"] == f"{m['mean']:.4f} ± {m['se']:.4f}"
    assert "best epoch" not in out and str(tmp_path / "pop") in out


def test_train_overrides_reach_the_model(folder, tmp_path):
    out = tmp_path / "mf"
    assert main(["train", "mf", "--dataset", str(folder), "--epochs", "1", "--no-progress", "--emb-dim", "8",
                 "--init-std", "0.5", "--metric", "ndcg@10", "--out", str(out)]) == 0
    config = json.loads((out / "manifest.json").read_text())
    assert config["model_config"]["emb_dim"] == 8 and config["model_config"]["init_std"] == 0.5
    assert config["train_config"]["metric"] == "ndcg@10" and config["train_config"]["epochs"] == 1


# -- evaluate / recommend ------------------------------------------------------------------------------------
def test_evaluate_prints_a_table_matching_metrics_json(run, capsys):
    assert main(["evaluate", str(run)]) == 0
    out = capsys.readouterr().out
    rows = table_cells(out)
    assert set(rows) == {"test"}
    metrics = json.loads((run / "metrics.json").read_text())["test"]
    for name in METRIC_NAMES:  # LightGCN scores have no ties, so the tie seed does not matter
        assert rows["test"][name] == f"{metrics[name]['mean']:.4f} ± {metrics[name]['se']:.4f}"
    assert "full ranking over 40 items" in out and "masked: train, valid" in out


def test_evaluate_valid_with_other_ks(run, capsys):
    assert main(["evaluate", str(run), "--split", "valid", "--k", "5,10", "--batch-size", "3"]) == 0
    out = capsys.readouterr().out
    rows = table_cells(out)
    assert set(rows) == {"valid"} and {"recall@5", "ndcg@10", "mrr@5"} <= set(rows["valid"])
    assert "recall@20" not in out and "masked: train;" in out


def test_evaluate_reproduces_metrics_json_with_ties(folder, tmp_path, capsys):
    out = tmp_path / "pop"
    assert main(["train", "pop", "--dataset", str(folder), "--out", str(out)]) == 0
    capsys.readouterr()
    assert main(["evaluate", str(out)]) == 0
    rows = table_cells(capsys.readouterr().out)
    metrics = json.loads((out / "metrics.json").read_text())["test"]
    for name in METRIC_NAMES:
        assert rows["test"][name] == f"{metrics[name]['mean']:.4f} ± {metrics[name]['se']:.4f}", name



def test_evaluate_beyond_accuracy_metrics(run, tmp_path, monkeypatch, capsys):
    import numpy as np

    import lmrec.text

    class NumberEncoder:  # "Movie number i" -> (1, i % 3): a stand-in for the default text encoder
        identity, dim = "test:movie-numbers", 2

        def encode(self, texts, batch_size=64, progress=False):
            return np.array([[1.0, int(t.split()[-1]) % 3] for t in texts], np.float32)

    monkeypatch.setenv("LMREC_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(lmrec.text, "get_encoder", lambda spec, **kw: NumberEncoder())
    assert main(["evaluate", str(run), "--k", "5", "--metrics", "recall,coverage,novelty,arp,aplt,ild"]) == 0
    out = capsys.readouterr().out
    rows = table_cells(out)["test"]
    expected = Run.load(run).evaluate("test", ks=(5,), metrics=("recall", "coverage", "novelty", "arp", "aplt",
                                                                "ild")).to_dict()
    assert set(rows) == {"split", *expected}
    for name, value in expected.items():
        cell = f"{value['mean']:.4f}" + ("" if value["se"] is None else f" ± {value['se']:.4f}")
        assert rows[name] == cell, name
    assert "±" not in rows["coverage@5"] and "coverage@5: one number for the catalog (no SE)" in out
    assert "popularity from the training split" in out


def test_evaluate_unknown_metric_names_the_allowed_ones(run, capsys):
    assert main(["evaluate", str(run), "--metrics", "recall,gini"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("lmrec: error: --metrics") and "gini" in err and "Traceback" not in err
    for name in ("recall", "ndcg", "hr", "mrr", "precision", "coverage", "novelty", "arp", "aplt", "ild"):
        assert name in err.split("expected", 1)[1], name


def test_recommend_prints_titles_not_seen(run, folder, capsys):
    assert main(["recommend", str(run), "--user", "3", "-k", "5"]) == 0
    out = capsys.readouterr().out.splitlines()
    data = load_dataset(folder, format="lightgcn")
    seen = {data.catalog.ids[i] for i in data.train_items(data.user_index("3"))}
    assert out[0].startswith("user 3: 3 training items") and "Movie number" in out[0]
    recs = [re.match(r"\s*(\d+)\. (.+)  \[(\w+)\]  (-?[\d.]+)  \(because you liked (.+)\)$", line) for line in out[1:]]
    assert len(recs) == 5 and all(recs)
    assert [int(m.group(1)) for m in recs] == [1, 2, 3, 4, 5]
    for m in recs:
        assert m.group(2) == f"Movie number {m.group(3)}"  # the title, with the id beside it
        assert m.group(3) not in seen
        assert set(m.group(5).replace(" and ", ", ").split(", ")) <= {f"Movie number {i}" for i in seen}
    scores = [float(m.group(4)) for m in recs]
    assert scores == sorted(scores, reverse=True)


def test_recommend_unknown_user(run, capsys):
    assert main(["recommend", str(run), "--user", "99999"]) == 2
    err = capsys.readouterr().err
    assert "99999" in err and "unknown user" in err and "Traceback" not in err


def test_recommend_user_without_training_items(run, capsys):
    assert main(["recommend", str(run), "--user", "30"]) == 2
    err = capsys.readouterr().err
    assert "'30'" in err and "no training interactions" in err


def test_recommend_missing_run_folder(tmp_path, capsys):
    assert main(["recommend", str(tmp_path / "nothing"), "--user", "1"]) == 2
    err = capsys.readouterr().err
    assert "nothing" in err and "no such run folder" in err


# -- errors --------------------------------------------------------------------------------------------------
def test_unknown_flag_is_refused_by_the_parser(folder, tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["train", "lightgcn", "--dataset", str(folder), "--no-such-field", "1", "--out", str(tmp_path / "x")])
    assert exc.value.code == 2
    assert "--no-such-field" in capsys.readouterr().err


def test_misspelt_choice_names_the_key_and_the_choices(folder, tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["train", "alpharec", "--dataset", str(folder), "--negatives", "per-row", "--out", str(tmp_path / "x")])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "--negatives" in err and "per-row" in err and "'per_row'" in err and "'shared'" in err


@pytest.mark.parametrize(("flags", "words"), [
    (["--emb-dim", "0"], ["--emb-dim 0:", "greater than 0"]),
    (["--n-layers", "-1"], ["--n-layers -1:", "greater than or equal to 0"]),
    (["--init-std", "abc"], ["--init-std abc:", "valid number"]),
    (["--lr", "-1"], ["--lr -1:", "greater than or equal to 0"]),
    (["--metric", "recal@20"], ["--metric recal@20:"]),
])
def test_invalid_setting_values_name_the_flag_before_any_work(folder, tmp_path, capsys, flags, words):
    out = tmp_path / "x"
    assert main(["train", "lightgcn", "--dataset", str(folder), *flags, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("lmrec: error: ") and all(w in err for w in words), err
    assert f"{flags[0][2:].replace('-', '_')}=" not in err  # the flag, not the Python keyword
    assert "Traceback" not in err and not out.exists()  # checked before the data is loaded or a folder made


def test_eval_every_zero_is_a_clean_error(folder, tmp_path, capsys):
    code = main(["train", "mf", "--dataset", str(folder), "--epochs", "1", "--eval-every", "0", "--no-progress",
                 "--out", str(tmp_path / "x")])
    assert code == 2
    assert "--eval-every 0:" in capsys.readouterr().err


def test_unknown_model_and_dataset(folder, tmp_path, capsys):
    assert main(["train", "no_such_model", "--dataset", str(folder), "--out", str(tmp_path / "x")]) == 2
    assert "no_such_model" in capsys.readouterr().err
    assert main(["train", "mf", "--dataset", str(tmp_path / "missing"), "--out", str(tmp_path / "y")]) == 2
    assert "missing" in capsys.readouterr().err


@pytest.mark.parametrize(("fmt", "expected"), [
    ("unisrec", "the unisrec format needs exactly one *.train.inter file, found none"),
    ("movielens-latest", "no movies.csv, which the movielens-latest format needs"),
    ("movielens-100k", "no u.item, which the movielens-100k format needs"),
    ("movielens-1m", "no movies.dat, which the movielens-1m format needs"),
    ("lcrec", "the lcrec format needs exactly one *.item.json[.gz] file, found none"),
    ("amazon-2018", "the Amazon review format needs one review file"),
])
def test_data_stats_of_a_folder_without_the_files_of_its_format(fmt, expected, capsys):
    """Issue 25: a FileNotFoundError traceback (exit 1) for a folder of another format."""
    folder = FIXTURES / "lightgcn"
    assert main(["data", "stats", str(folder), "--format", fmt]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"lmrec: error: {folder}: {expected}") and err.count("\n") == 1, err


def test_format_detection_and_split_errors_name_the_flags(tmp_path, capsys):
    """Issue 25: format detection told a command-line user to "pass format=" (the Python keyword)."""
    assert main(["data", "stats", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"lmrec: error: {tmp_path}: cannot tell the format from its files (none); pass --format "
                          "one of lightgcn, ") and "format=" not in err
    assert main(["data", "stats", str(FIXTURES / "ml-100k"), "--split", "fixed"]) == 2
    err = capsys.readouterr().err
    assert err == ("lmrec: error: format 'movielens-100k' has no split of its own: use e.g. "
                   "--split ratio:0.4,0.3,0.3\n"), err
    assert main(["data", "stats", str(FIXTURES / "ml-100k"), "--split", "ratio:0.5"]) == 2
    assert capsys.readouterr().err.startswith("lmrec: error: --split ratio:0.5: expected three non-negative ratios")
    assert main(["data", "stats", str(FIXTURES / "lightgcn"), "--format", "csv"]) == 2
    assert capsys.readouterr().err.startswith("lmrec: error: --format csv: expected one of lightgcn, ")
    assert main(["data", "stats", str(FIXTURES / "recbole-rows"), "--split", "fixed"]) == 2  # said "split=" before
    err = capsys.readouterr().err
    assert err.endswith("the files carry no split; choose one with --split (e.g. ratio:0.8,0.1,0.1)\n"), err


def test_recommend_errors_name_the_flags(run, capsys):
    assert main(["recommend", str(run), "--user", "3", "--item", "4"]) == 2
    assert capsys.readouterr().err == ("lmrec: error: pass either --user (a known user) or --item / --title "
                                       "(a new user), not both\n")
    assert main(["recommend", str(run), "--user", "3", "--intent", "x", "--alpha", "2"]) == 2
    assert capsys.readouterr().err == "lmrec: error: --alpha 2.0: expected a number between 0 and 1\n"
    assert main(["recommend", str(run), "--user", "3", "-k", "41"]) == 2
    assert capsys.readouterr().err.startswith("lmrec: error: -k 41: expected an integer between 1 and ")


def test_a_parser_error_is_one_line_naming_the_flag(folder, tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["train", "lightgcn", "--dataset", str(folder), "--nproc", "0", "--out", str(tmp_path / "x")])
    assert exc.value.code == 2
    assert capsys.readouterr().err == ("lmrec: error: argument --nproc: expected a positive integer, got 0 "
                                       "(`lmrec train --help` lists the flags)\n")


def test_the_run_flags_go_with_every_model(folder, tmp_path, capsys):
    """Issue 25: a script looping over models with the same run flags broke on pop ("unrecognized arguments")."""
    from helpers import write_inspired

    write_inspired(tmp_path / "data")
    datasets = {"pop": folder, "mf": folder, "fism": tmp_path / "data" / "inspired"}
    run_flags = ["--seed", "1", "--no-progress", "--device", "cpu", "--threads", "1"]
    for model, dataset in [*datasets.items(), ("pop", tmp_path / "data" / "inspired")]:
        out = tmp_path / "runs" / f"{model}-{dataset.name}"
        assert main(["train", model, "--dataset", str(dataset), *run_flags, "--out", str(out)]) == 0, model
        assert main(["train", model, "--dataset", str(dataset), *run_flags, "--resume", "--out", str(out)]) == 0
        assert main(["train", model, "--dataset", str(dataset), *run_flags, "--overwrite", "--out", str(out)]) == 0
        manifest = json.loads((out / "manifest.json").read_text())
        assert manifest["eval_seed"] == 1 and manifest["status"] == "complete"
    assert "Traceback" not in capsys.readouterr().err


@pytest.mark.parametrize(("flags", "error"), [
    (["--lr", "0.1"], "pop does not train: --lr does not apply"),
    (["--epochs", "3", "--patience", "2", "--seed", "1"], "pop does not train: --epochs, --patience do not apply"),
])
def test_training_settings_for_a_model_that_does_not_train_are_refused(folder, tmp_path, capsys, flags, error):
    out = tmp_path / "pop"
    assert main(["train", "pop", "--dataset", str(folder), *flags, "--out", str(out)]) == 2
    assert capsys.readouterr().err == f"lmrec: error: {error}\n" and not out.exists()


def test_the_help_of_a_model_that_does_not_train_lists_the_run_flags_only(capsys):
    with pytest.raises(SystemExit):
        main(["train", "pop", "--help"])
    text = capsys.readouterr().out
    assert "run settings:" in text and "--seed" in text and "--no-progress" in text and "--device" in text
    assert "--lr" not in text and "--epochs" not in text and "training settings" not in text


def test_cut_offs_are_capped_at_a_small_catalog(tmp_path):
    out = tmp_path / "x"
    code = main(["train", "pop", "--dataset", str(FIXTURES / "lightgcn"), "--out", str(out)])
    assert code == 0
    test = json.loads((out / "metrics.json").read_text())["test"]
    assert "recall@6" in test and "recall@20" not in test  # 6 items: K=10 and K=20 become K=6
    assert test["hr@6"]["mean"] == 1.0  # every item is ranked, so every user with a target is hit


def test_missing_required_argument_exits_2():
    with pytest.raises(SystemExit) as exc:
        main(["train", "mf"])
    assert exc.value.code == 2


# -- data stats / models -------------------------------------------------------------------------------------
def test_data_stats_on_fixture(capsys):
    assert main(["data", "stats", str(FIXTURES / "lightgcn")]) == 0
    lines = dict(re.split(r"\s{2,}", line.strip(), maxsplit=1) for line in capsys.readouterr().out.splitlines())
    data = load_dataset(FIXTURES / "lightgcn")
    assert lines["users"] == "4" and lines["items"] == "6"
    assert lines["train"] == str(data.train.nnz) and lines["test"] == str(data.test.nnz)
    assert lines["checksum"] == data.checksum()
    assert lines["protocol"].startswith("fixed files")


def test_data_stats_with_split(capsys):
    assert main(["data", "stats", str(FIXTURES / "ml-100k"), "--split", "loo"]) == 0
    out = capsys.readouterr().out
    assert "leave-one-out" in out and re.search(r"users\s+3\b", out)


def test_models_lists_the_registered_models(capsys):
    assert main(["models"]) == 0
    rows = [line.split()[:2] for line in capsys.readouterr().out.splitlines()]
    assert {("cf", "alpharec"), ("cf", "lightgcn"), ("cf", "pop"), ("crs", "pop"), ("crs", "rta_adapt")} <= {
        tuple(r) for r in rows}
    assert rows == sorted(rows)


# -- real data -----------------------------------------------------------------------------------------------
def test_train_mf_on_real_movielens_100k(real_dataset, tmp_path, capsys):
    folder = real_dataset("movielens-100k")
    out = tmp_path / "mf"
    assert main(["train", "mf", "--dataset", str(folder), "--epochs", "1", "--no-progress", "--out", str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    config = json.loads((out / "manifest.json").read_text())
    assert config["data_stats"]["users"] == 943 and config["data_stats"]["items"] == 1682
    assert config["data"]["split"] is None and "0.4:0.3:0.3" in config["data_stats"]["protocol"]
    n_test = config["data_stats"]["users_with_test"]
    assert metrics["test"]["recall@20"]["n"] == n_test > 900
    assert 0 < metrics["test"]["recall@20"]["mean"] < 1
    assert table_cells(capsys.readouterr().out)["test"]["recall@20"].startswith(
        f"{metrics['test']['recall@20']['mean']:.4f}")


def test_the_output_survives_a_locale_that_cannot_encode_it(folder, tmp_path):
    """An ASCII locale (no UTF-8 mode): "±" is escaped; a finished run is not reported as an encoding error."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "LC_ALL": "C", "LANG": "C", "PYTHONUTF8": "0", "PYTHONCOERCECLOCALE": "0"}
    result = subprocess.run([sys.executable, "-m", "lmrec", "train", "pop", "--dataset", str(folder),
                             "--out", str(tmp_path / "pop")], env=env, capture_output=True)
    assert result.returncode == 0 and result.stderr == b"", result.stderr
    assert b" \\xb1 " in result.stdout and b"wrote" in result.stdout


def test_the_command_keeps_freed_memory_in_the_process(monkeypatch, capsys):
    """`lmrec` sets glibc's allocator to reuse large blocks (lmrec.allocator), which this Linux machine supports."""
    import subprocess
    import sys

    import lmrec.cli as cli

    calls = []
    monkeypatch.setattr(cli, "keep_freed_memory", lambda: calls.append(True))
    assert cli.main(["models"]) == 0 and calls == [True]
    code = "from lmrec.allocator import keep_freed_memory; print(keep_freed_memory())"
    applied = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert applied.strip() == ("True" if sys.platform.startswith("linux") else "False")
