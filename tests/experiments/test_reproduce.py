"""`lmrec reproduce`: resumable steps, comparison run reuse, table configs, and whole reports on planted data
(AlphaRec side) and on a tiny INSPIRED-format dataset with a tiny random Llama (RTA side)."""

from __future__ import annotations

import functools
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import torch

from helpers import planted_data, single_thread, write_inspired, write_tiny_llm  # noqa: F401
from lmrec import cli
from lmrec.data.registry import DataRef
from lmrec.data.splits import thin_train
from lmrec.errors import LmrecError
from lmrec.eval.crs_analysis import probe_delta
from lmrec.experiments import reproduce, rta_table
from lmrec.experiments.compare import RunSpec, grid_specs, markdown, run_comparison, slug
from lmrec.experiments.schemas import table_settings
from lmrec.experiments.steps import cached_step
from lmrec.models.cf.pop import Popularity
from lmrec.models.torch_base import TorchRecommender

FAST = {"epochs": 2, "eval_every": 1, "patience": 2, "batch_size": 128, "progress": False}


@pytest.fixture
def planted(monkeypatch):
    datasets = {"p": planted_data(0, name="p"), "q": planted_data(1, name="q")}
    monkeypatch.setattr(DataRef, "load", lambda self: datasets[self.dataset])
    return datasets


def test_cached_step_reuses_reruns_after_failure_and_refuses_other_settings(tmp_path):
    calls = []
    assert cached_step(tmp_path / "s", {"a": 1, "b": (1, 2)}, lambda: calls.append(1)) is True
    assert cached_step(tmp_path / "s", {"a": 1, "b": [1, 2]}, lambda: calls.append(2)) is False
    assert calls == [1]
    with pytest.raises(LmrecError, match=r"s was made with other settings \(a: saved 1, requested 2\)"):
        cached_step(tmp_path / "s", {"a": 2, "b": [1, 2]}, lambda: calls.append(3))

    def crash():
        raise RuntimeError("interrupted")

    with pytest.raises(RuntimeError):
        cached_step(tmp_path / "t", {"a": 1}, crash)
    assert not (tmp_path / "t" / "spec.json").exists()
    assert cached_step(tmp_path / "t", {"a": 1}, lambda: calls.append(4)) is True and calls == [1, 4]


def test_comparison_reuses_finished_runs_and_refuses_changed_settings(tmp_path, planted, monkeypatch):
    specs = ["pop", RunSpec("lgcn-2", "lightgcn", {"emb_dim": 8}, FAST)]
    first = run_comparison(specs, ["p"], tmp_path, focus="lgcn-2")
    assert list(first["p"]["models"]) == ["pop", "lgcn-2"] and first["p"]["models"]["lgcn-2"]["model"] == "lightgcn"
    assert first["p"]["focus"]["best_baseline"] == "pop" and first["p"]["checksum"] == planted["p"].checksum()
    for cls in (TorchRecommender, Popularity):
        monkeypatch.setattr(cls, "fit", lambda *a, **k: pytest.fail("a finished run was retrained"))
    again = run_comparison(specs, ["p"], tmp_path, focus="lgcn-2")
    assert again["p"]["models"]["lgcn-2"]["test"] == first["p"]["models"]["lgcn-2"]["test"]
    changed = [RunSpec("lgcn-2", "lightgcn", {"emb_dim": 16}, FAST)]
    with pytest.raises(LmrecError, match=r"lgcn-2: holds a run made with other settings \(model_config: saved "
                                         r"\{'emb_dim': 8,.*requested \{'emb_dim': 16,"):
        run_comparison(changed, ["p"], tmp_path)
    with pytest.raises(LmrecError, match=r"train_config: saved \{'epochs': 2,.*requested \{'epochs': 3,"):
        run_comparison([RunSpec("lgcn-2", "lightgcn", {}, {**FAST, "epochs": 3})], ["p"], tmp_path)
    dropped = [RunSpec("lgcn-2", "lightgcn", {"emb_dim": 8}, {k: v for k, v in FAST.items() if k != "epochs"})]
    with pytest.raises(LmrecError, match=r"train_config: saved \{'epochs': 2,.*requested \{'epochs': 500,"):
        run_comparison(dropped, ["p"], tmp_path)  # back to the default
    with pytest.raises(ValueError, match="unique"):
        run_comparison(["pop", RunSpec("pop", "mf")], ["p"], tmp_path)


def test_grid_points_compete_for_one_row_on_validation(tmp_path, planted):
    specs = ["pop", *grid_specs("lgcn", "lightgcn", {"emb_dim": 8}, FAST, {"lr": [5e-4, 0.05], "n_layers": [2]})]
    assert [s.name for s in specs[1:]] == ["lgcn", "lgcn~lr=0.05"]  # the entry's own values: the plain name
    assert specs[2].train_overrides["lr"] == 0.05 and specs[2].model_overrides == {"emb_dim": 8, "n_layers": 2}
    results = run_comparison(specs, ["p"], tmp_path, focus="lgcn")["p"]
    rows = results["models"]
    best = max(("lgcn", "lgcn~lr=0.05"), key=lambda n: rows[n]["valid"]["recall@20"]["mean"])
    assert results["selected"] == {"pop": "pop", "lgcn": best}
    assert results["focus"]["focus_run"] == best and results["focus"]["best_baseline"] == "pop"
    table = markdown({"p": results})
    assert "Grid points" in table and f"{best.partition('~')[2] or 'defaults'} ✓" in table
    assert all(not s.edges for s in specs[1:])  # two values: no inside, no edge
    # three or more numeric values: the smallest and the largest are the grid's edges, and a row chosen there says so
    three = grid_specs("lgcn", "lightgcn", {}, FAST, {"lr": [1e-3, 5e-4, 2e-3], "n_layers": [1, 2, 3]})
    edges = {(s.train_overrides["lr"], s.model_overrides["n_layers"]): s.edges for s in three}
    assert edges[1e-3, 2] == () and edges[1e-3, 1] == ("n_layers",) and edges[5e-4, 2] == ("lr",)
    assert edges[2e-3, 3] == ("lr", "n_layers") and len(edges) == 9
    results["models"][best]["grid_edges"] = ["lr"]
    table = markdown({"p": results})
    assert " ‡ |" in table and "‡ the point chosen on validation is at the edge of its grid (lr)" in table
    with pytest.raises(ValueError, match="'tau' is neither a lightgcn setting nor a training setting"):
        grid_specs("lgcn", "lightgcn", {}, {}, {"tau": [0.1]})
    with pytest.raises(ValueError, match="non-empty list"):
        grid_specs("lgcn", "lightgcn", {}, {}, {"lr": 0.1})


def test_dataset_training_settings_sit_between_the_global_and_the_run_settings(tmp_path, planted):
    run_comparison([RunSpec("mf", "mf", {}, {"epochs": 1})], ["p", "q"], tmp_path, {**FAST, "epochs": 3},
                   dataset_train_overrides={"p": {"epochs": 2, "eval_every": 2}, "q": {"eval_every": 2}})
    saved = {d: json.loads((tmp_path / d / "mf" / "manifest.json").read_text())["train_config"] for d in ("p", "q")}
    assert saved["p"]["epochs"] == saved["q"]["epochs"] == 1 and saved["p"]["eval_every"] == 2


def write_config(folder: Path, name: str, text: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text(text, encoding="utf-8")
    return folder / name


def test_table_config_quick_replaces_keys_and_bad_configs_name_the_file(tmp_path):
    path = write_config(tmp_path, "01-x.toml", 'title = "T"\nexperiment = "compare"\n[run]\ndatasets = ["a", "b"]\n'
                                               'models = { pop = {} }\n[quick]\ndatasets = ["a"]\n')
    assert reproduce.load_table(path).settings.datasets == ["a", "b"]
    assert reproduce.load_table(path, quick=True).settings.datasets == ["a"]
    assert list(reproduce.load_table(path).settings.models) == ["pop"]
    bad = write_config(tmp_path, "02-y.toml", 'experiment = "compare"\nrun_settings = {}\n')
    with pytest.raises(LmrecError, match=r"02-y.toml: unknown key\(s\) \['run_settings'\]"):
        reproduce.load_table(bad)
    bad.write_text('experiment = "train-everything"\n')
    with pytest.raises(LmrecError, match="02-y.toml: experiment must be one of"):
        reproduce.load_table(bad)
    bad.write_text("experiment = \n")
    with pytest.raises(LmrecError, match="02-y.toml: not valid TOML"):
        reproduce.load_table(bad)
    bad.unlink()
    with pytest.raises(LmrecError, match=r"--only \['nothing'\]"):
        reproduce.select(reproduce.load_tables(tmp_path), only=["nothing"])
    bad.write_text('experiment = "compare"\n[run]\ndatasets = ["a"]\nmodels = { mf = { sett = {} } }\n')
    with pytest.raises(LmrecError, match=r"02-y.toml: unknown \[run\] setting models.mf.sett"):
        reproduce.load_table(bad)
    bad.write_text('experiment = "crs"\n[run]\ndataset = "inspired"\nreindex = { aggregator = "gru", lrr = 1 }\n')
    with pytest.raises(LmrecError, match=r"02-y.toml: \[run.reindex\].*lrr"):
        reproduce.load_table(bad)
    bad.write_text('experiment = "intention"\n[run]\nalpha = 0.5\n')
    with pytest.raises(LmrecError, match=r"02-y.toml: missing \[run\] setting run \(IntentionSettings\)"):
        reproduce.load_table(bad)


ALPHAREC_TABLES = {
    "01-comparison.toml": '''title = "Comparison"
experiment = "compare"
paper = "| Model | X |\\n|---|---|\\n| AlphaRec | .1221 |"
[run]
datasets = ["p"]
train = { epochs = 3, eval_every = 1, patience = 3, batch_size = 128 }
[run.models]
pop = {}
"mf (8-d)" = { model = "mf", set = { emb_dim = 8 } }
lightgcn = { set = { emb_dim = 8 } }
[quick]
train = { epochs = 2, eval_every = 1, patience = 2, batch_size = 128 }
''',
    "02-convergence.toml": 'title = "Convergence"\nexperiment = "convergence"\n[run]\nruns = "01-comparison"\n',
}


def test_reproduce_writes_a_report_and_publishes_it(tmp_path, planted, capsys):
    for name, text in ALPHAREC_TABLES.items():
        write_config(tmp_path / "configs" / "alpharec", name, text)
    out = tmp_path / "out"
    code = cli.main(["reproduce", "alpharec", "--quick", "--configs", str(tmp_path / "configs"), "--out", str(out),
                     "--publish", str(tmp_path / "docs" / "report")])
    printed = capsys.readouterr().out
    assert code == 0 and "report:" in printed
    # a line per run as it finishes: count, dataset / run, validation score, epochs
    assert re.search(r"\[01-comparison\] 3/3 p / lightgcn: valid recall@20 [0-9.]+, best / run \d / 2", printed)
    report = (out / "report" / "report.md").read_text(encoding="utf-8")
    assert "## Comparison" in report and "### The paper" in report and "| AlphaRec | .1221 |" in report
    assert "| mf (8-d) |" in report and "±" in report and "## Convergence" in report
    assert "figures/02-convergence--convergence.png" in report
    env = json.loads((out / "report" / "environment.json").read_text())
    assert env["mode"] == "quick" and env["data_checksums"] == {"p": planted["p"].checksum()}
    assert env["versions"]["torch"] == torch.__version__ and "commit" in env["git"]
    published = tmp_path / "docs" / "report"
    assert (published / "configs" / "01-comparison.toml").exists()
    assert (published / "figures" / "02-convergence--convergence.png").stat().st_size > 0
    assert json.loads((published / "tables" / "01-comparison.json").read_text())["p"]["models"]["pop"]
    with pytest.raises(LmrecError, match="exists"):
        reproduce.publish(out / "report", published)
    # --only reruns one table; the report keeps every finished table's section
    reproduce.reproduce("alpharec", tmp_path / "configs", out, quick=True, only=["convergence"], log=lambda _: None)
    assert "## Comparison" in (out / "report" / "report.md").read_text(encoding="utf-8")


def test_models_splits_a_table_between_calls_and_the_whole_table_reuses_the_part(tmp_path, planted, capsys):
    for name, text in ALPHAREC_TABLES.items():
        write_config(tmp_path / "configs" / "alpharec", name, text)
    configs, part = tmp_path / "configs", tmp_path / "part"
    assert cli.main(["reproduce", "alpharec", "--quick", "--configs", str(configs), "--out", str(part),
                     "--models", "lightgcn"]) == 0
    printed = capsys.readouterr().out
    assert "1/1 p / lightgcn" in printed and "mf" not in printed and "[02-convergence]" not in printed  # no entries
    report = (part / "report" / "report.md").read_text(encoding="utf-8")
    assert "Partial run: 1 of its 3 models (lightgcn)" in report and "| lightgcn |" in report
    assert [p.name for p in (part / "01-comparison" / "p").iterdir() if p.is_dir()] == ["lightgcn"]
    # another machine: the whole table, going on from the part's report; lightgcn is not trained again
    whole = tmp_path / "whole"
    reproduce.reproduce("alpharec", configs, whole, quick=True, reuse=part / "report", log=lambda _: None)
    trained = {p.name for p in (whole / "01-comparison" / "p").iterdir() if (p / "manifest.json").exists()}
    assert len(trained) == 2 and "pop" in trained and "lightgcn" not in trained, trained
    assert "| lightgcn |" in (whole / "report" / "report.md").read_text(encoding="utf-8")
    with pytest.raises(LmrecError, match=r"--models \['nothing'\]: no such model entry"):
        reproduce.reproduce("alpharec", configs, whole, quick=True, models=["nothing"], log=lambda _: None)


def tiny_inspired_and_llm(tmp_path, monkeypatch, repeat: bool = False) -> None:
    """A tiny INSPIRED under tmp_path/data (``repeat``: with turns that only repeat an item) and a tiny LLM under
    tmp_path/llm, found through the environment."""
    write_inspired(tmp_path / "data", repeat)
    write_tiny_llm(tmp_path / "llm")
    monkeypatch.setenv("LMREC_DATA", str(tmp_path / "data"))
    monkeypatch.setenv("LMREC_CACHE", str(tmp_path / "cache"))


TINY_PREPARE = '''[run.prepare]
llm = "{llm}"
dtype = "float32"
max_new_tokens = 6
max_samples = {{ train = 8 }}
max_generate = {{ test = 3 }}
'''  # the tiny LLM answers a few turns: every RTA table test prepares the same way

RTA_TABLE = '''title = "Tiny INSPIRED"
experiment = "crs"
[run]
dataset = "inspired"
baseline_train = "both"
baselines = {{ pop = {{}}, fism = {{ train = {{ epochs = 2 }} }} }}
reindex = {{ aggregator = "weighted", label_source = "both", train = {{ lr = 1e-2, epochs = 2, eval_every = 1 }} }}
adapt = {{ "+ gate FISM" = {{ variant = "gate-fism", train = {{ epochs = 2 }} }} }}
reindex_variants = {{ "real labels" = {{ label_source = "ground_truth", valid_labels = "ground_truth" }} }}
probe = {{ models = ["reindexed (weighted)", "best reindexed", "fism (24 train turns)"], modes = ["mask"] }}
''' + TINY_PREPARE


def test_reproduce_rta_table_on_a_tiny_llm(tmp_path, monkeypatch):
    tiny_inspired_and_llm(tmp_path, monkeypatch)
    write_config(tmp_path / "configs" / "rta", "01-inspired.toml", RTA_TABLE.format(llm=tmp_path / "llm"))
    out = tmp_path / "out"
    lines: list[str] = []
    reproduce.reproduce("rta", tmp_path / "configs", out, log=lines.append)
    table = json.loads((out / "01-inspired" / "table.json").read_text())
    rows = table["rows"]
    assert list(rows) == ["pop", "fism (24 train turns)", "fism (8 train turns)", "zero-shot LLM",
                          "reindexed (weighted)", "reindexed (weighted) real labels", "+ gate FISM"]
    progress = [line for line in lines if ": valid hr@10" in line or "best / run" in line]  # a line per row, in order
    assert [line.split(": ")[0] for line in progress] == [f"[01-inspired] {row}" for row in rows]
    assert re.search(r"\[01-inspired\] fism \(24 train turns\): valid hr@10 [0-9.]+, best / run \d+ / 2", progress[1])
    assert rows["reindexed (weighted) real labels"]["train_turns"] == 8 == rows["fism (8 train turns)"]["train_turns"]
    assert table["llm_label_turns"]["answered"] == 8 >= table["llm_label_turns"]["labelled"]
    assert table["turns"] == {"train": 8, "valid": 6, "test": 6} and table["generated_test_turns"] == 3
    assert table["generated_test_contexts"] == 3
    assert table["loader_skipped"] == {"empty_conversation": 0, "empty_title": 0}
    assert 3 <= rows["zero-shot LLM"]["test"]["hr@10"]["n"] <= 6  # only the 3 answered turns (1 or 2 targets each)
    assert all(rows[r]["test"]["hr@10"]["n"] == 9 for r in rows if r != "zero-shot LLM")
    assert rows["pop"]["distinct_top10"] == 10 and rows["zero-shot LLM"]["distinct_top10"] is None
    assert [b["bucket"] for b in table["buckets"]] == ["cold", "warm", "popular"]
    assert sum(b["pairs"] for b in table["buckets"]) == 9
    probe = {p["model"]: p for p in table["probe"]}
    reindexed = ["reindexed (weighted)", "reindexed (weighted) real labels"]
    best = max(reindexed, key=lambda r: rows[r]["valid"]["hr@10"]["mean"])  # ties: the first, as max() in the table
    assert len(probe) == len(table["probe"])  # "best reindexed" named by its row, and once
    assert set(probe) == {"reindexed (weighted)", best, "fism (24 train turns)"}
    assert rows["+ gate FISM"]["train_turns"] == 8  # adapt learns from every training turn's targets
    assert probe["fism (24 train turns)"]["delta"]["mean"] == 0.0  # item-based: the context text is not read
    assert probe["reindexed (weighted)"]["changed_samples"] > 0
    assert "Popularity buckets" in (out / "report" / "report.md").read_text(encoding="utf-8")
    assert (out / "report" / "figures" / "01-inspired--buckets.png").exists()
    baselines = sorted(p.name for p in (out / "01-inspired").glob("baseline-*"))
    assert baselines == ["baseline-fism", "baseline-fism-prepared", "baseline-pop"]
    manifests = {b: (out / "01-inspired" / b / "manifest.json").read_bytes() for b in baselines}
    # a second reproduction reuses every step (baseline run folders, the probe, spec.json) and gives the same table
    with monkeypatch.context() as patched:
        patched.setattr(rta_table, "probe_delta", lambda *a, **k: pytest.fail("the probe ran again"))
        reproduce.reproduce("rta", tmp_path / "configs", out, log=lambda _: None)
    assert json.loads((out / "01-inspired" / "table.json").read_text())["probe"] == table["probe"]
    assert json.loads((out / "01-inspired" / "table.json").read_text())["rows"] == rows
    assert {b: (out / "01-inspired" / b / "manifest.json").read_bytes() for b in baselines} == manifests
    # a probed model trained again with the same settings (its folder removed): the probe runs again
    shutil.rmtree(out / "01-inspired" / "baseline-fism")
    probed = []
    with monkeypatch.context() as patched:
        patched.setattr(rta_table, "probe_delta", lambda *a, **k: probed.append(a[0]) or probe_delta(*a, **k))
        reproduce.reproduce("rta", tmp_path / "configs", out, log=lambda _: None)
    assert len(probed) == len(table["probe"])  # every (model, mode) again
    # other probe settings: the probe runs again (a derived result, replaced) and the runs are reused
    config = tmp_path / "configs" / "rta" / "01-inspired.toml"
    config.write_text(config.read_text().replace('modes = ["mask"]', 'modes = ["replace"]'))
    reproduce.reproduce("rta", tmp_path / "configs", out, log=lambda _: None)
    again = json.loads((out / "01-inspired" / "table.json").read_text())
    assert {p["mode"] for p in again["probe"]} == {"replace"} and again["rows"] == rows
    # other settings for a finished baseline: an error naming its folder, nothing overwritten
    text = config.read_text()
    config.write_text(text.replace("fism = { train = { epochs = 2 } }", "fism = { train = { epochs = 3 } }"))
    assert config.read_text() != text
    with pytest.raises(LmrecError, match="baseline-fism was made with other settings"):
        reproduce.reproduce("rta", tmp_path / "configs", out, log=lambda _: None)


PAPER_PIPELINE = '''title = "Tiny INSPIRED, the paper's pipeline"
experiment = "crs"
[run]
dataset = "inspired"
targets = ["new", "all"]
zero_shot = {{ title_match = "nearest" }}
baselines = {{ pop = {{}} }}
reindex_variants = {{ "real labels" = {{ label_source = "ground_truth" }} }}
adapt_base = "reindex"
[run.reindex]
aggregator = "weighted"
label_source = "both"
title_match = "nearest"
train = {{ lr = 1e-2, epochs = 2, eval_every = 1 }}
[run.adapt]
"+ b" = {{ variant = "b", train = {{ epochs = 1 }} }}
"+ b, trainable" = {{ variant = "b", freeze_aggregator = false, train = {{ epochs = 1 }} }}
[run.paper_hr10]
pop = ".103 ± .021"
"+ b, trainable" = ".174"
"UniCRS" = ".132 ± .019"
''' + TINY_PREPARE


def test_rta_paper_pipeline_tables_per_target_definition(tmp_path, monkeypatch):
    """One prepare, a table per target definition (new targets first); the reindex on LLM labels mapped to the
    nearest title learns from every answered training turn that names anything; adapt builds on it as asked;
    dialogue-bootstrap SEs beside the per-pair ones (the zero-shot row's over its generated turns); the paper's HR@10
    beside ours. Some training turns name only an item mentioned before: samples under "all", none under "new"."""
    from lmrec.data.registry import load_dataset
    from lmrec.inputs.store import load_features

    tiny_inspired_and_llm(tmp_path, monkeypatch, repeat=True)
    write_config(tmp_path / "configs" / "rta", "01-inspired.toml", PAPER_PIPELINE.format(llm=tmp_path / "llm"))
    out = tmp_path / "out"
    reproduce.reproduce("rta", tmp_path / "configs", out, log=lambda _: None)
    folder = out / "01-inspired"
    table = json.loads((folder / "table.json").read_text())
    assert list(table["targets"]) == ["new", "all"] and sorted(p.name for p in folder.glob("prepare*")) == ["prepare"]
    new, every = table["targets"]["new"], table["targets"]["all"]
    features = load_features(folder / "prepare", load_dataset("inspired"))
    test_all = features.samples["test"]
    pairs = lambda samples: sum(len(s.targets) for s in samples)
    assert every["rows"]["pop"]["test"]["hr@10"]["n"] == pairs(test_all)
    n_new = sum(sum(s.target_is_new) for s in test_all)
    assert new["rows"]["pop"]["test"]["hr@10"]["n"] == n_new < pairs(test_all)  # the fixture repeats an item
    assert new["turns"]["test"] == sum(any(s.target_is_new) for s in test_all)
    answered = features.generated_samples("train")
    named = [s for s in answered if features.generations["train"][s.context].titles]  # the tiny LLM writes dots
    assert every["llm_label_turns"] == {"answered": len(answered), "labelled": len(named)}
    # an answer naming a title far from every catalog title: fuzzy gives no label, nearest the closest title
    record = features.generations["train"][answered[0].context]
    record.titles, record.items = ["The Matrixx Reloaded"], []
    labels = {s.context: s.targets for s in features.llm_label_samples("train", title_match="nearest")}
    assert labels[answered[0].context] == [features.data.catalog.titles.index("The Matrix (1999)")]
    assert answered[0].context not in {s.context for s in features.llm_label_samples("train")}
    rows = every["rows"]
    assert list(rows) == ["pop", "zero-shot LLM", "reindexed (weighted)", "reindexed (weighted) real labels",
                          "+ b", "+ b, trainable"]
    adapt = json.loads((folder / "targets-all" / "adapt-b" / "spec.json").read_text())
    assert adapt["reindex"]["label_source"] == "both" and adapt["reindex"]["title_match"] == "nearest"
    by_dialogue = rows["pop"]["test_by_dialogue"]["hr@10"]
    assert by_dialogue["n"] == every["test_dialogues"] == len({s.conv_id for s in test_all})
    assert by_dialogue["mean"] == pytest.approx(rows["pop"]["test"]["hr@10"]["mean"])
    text = (folder / "table.md").read_text(encoding="utf-8")
    assert text.index("#### Targets: only the items") < text.index("#### Targets: every item")
    assert "HR@10 by dialogue" in text and "bootstrap over the" in text
    assert new["turns"]["test"] < every["turns"]["test"]  # a test turn only repeats an item
    zero_shot = every["rows"]["zero-shot LLM"]["test_by_dialogue"]["hr@10"]
    assert zero_shot["n"] == len({s.conv_id for s in features.generated_samples("test")})
    assert every["zero_shot_mapping"]["title_match"] == "nearest"
    assert "by nearest matching" in text and "| paper HR@10 |" in text
    pop_line = next(line for line in text.splitlines() if line.startswith("| pop |"))
    assert "| .103 ± .021 |" in pop_line and "Paper rows that name no row of this table: UniCRS." in text


def test_distinct_top_items_counts_catalog_coverage():
    from lmrec.experiments.rta_table import distinct_top_items

    samples = list(range(30))
    constant = lambda batch: torch.arange(50.0).expand(len(batch), -1)
    rotating = lambda batch: torch.stack([torch.roll(torch.arange(50.0), 3 * s) for s in batch])
    assert distinct_top_items(constant, samples, k=10, batch_size=7) == 10
    assert distinct_top_items(rotating, samples, k=10, batch_size=7) == 50


def test_compare_with_two_jobs_gives_the_same_table(tmp_path):
    """Independent runs in two worker processes: the same rows as one after the other (each run is seeded)."""
    from helpers import planted_data, write_lightgcn_folder
    from lmrec.experiments.compare import run_comparison

    folder = str(write_lightgcn_folder(planted_data(), tmp_path / "planted"))
    train = {"epochs": 2, "eval_every": 1, "progress": False}
    one = run_comparison(["pop", "mf", "lightgcn"], [folder], tmp_path / "one", train, focus=None)
    lines: list[str] = []
    two = run_comparison(["pop", "mf", "lightgcn"], [folder], tmp_path / "two", train, focus=None, jobs=2,
                         log=lines.append)
    assert sorted(line.split(" ")[0] for line in lines) == ["1/3", "2/3", "3/3"]  # a line as each run finishes
    assert sorted(line.split(": ")[0].split(" / ")[-1] for line in lines) == ["lightgcn", "mf", "pop"]
    strip = lambda r: {  # noqa: E731
        m: {k: v for k, v in row.items() if k != "fit_seconds"} for m, row in r[folder]["models"].items()
    }
    assert strip(one) == strip(two)
    fits = lambda out: [json.loads(m.read_text())["fit"] for m in out.rglob("manifest.json")]  # noqa: E731
    threads = lambda out: sorted(fit["threads"] for fit in fits(out) if fit["trained"])  # noqa: E731
    assert threads(tmp_path / "one") == [torch.get_num_threads()] * 2  # mf, lightgcn (pop trains nothing)
    assert threads(tmp_path / "two") == [max(1, (os.cpu_count() or 1) // 2)] * 2  # each worker's share


def test_a_failed_run_stops_a_comparison_with_two_jobs(tmp_path):
    """The worker's error reaches the caller, and the runs still queued are not started."""
    from helpers import planted_data, write_lightgcn_folder
    from lmrec.experiments.compare import RunSpec, run_comparison

    folder = str(write_lightgcn_folder(planted_data(), tmp_path / "planted"))
    specs = [RunSpec("bad", "mf", {"emb_dim": -1}), *(RunSpec(f"mf{i}", "mf") for i in range(16))]
    with pytest.raises(Exception, match="emb_dim"):
        run_comparison(specs, [folder], tmp_path / "out", {"epochs": 2, "progress": False}, focus=None, jobs=2)
    started = list((tmp_path / "out" / "planted").glob("mf*"))
    assert len(started) < 16  # (those already handed to a worker when the error arrived do run)


def test_reindex_variants_update_the_base_reindex_settings():
    from lmrec.experiments.rta_table import reindex_variants

    settings = {"reindex": {"aggregator": "gru", "train": {"lr": 1e-3, "epochs": 60}},
                "reindex_variants": {"+ item prompts": {"item_prompts": True, "train": {"epochs": 80}}}}
    variants = reindex_variants(settings)
    assert variants[""] == settings["reindex"]
    assert variants["+ item prompts"] == {"aggregator": "gru", "item_prompts": True,
                                          "train": {"lr": 1e-3, "epochs": 80}}
    config = {"dataset": "inspired", **settings, "reindex_variants": {"bad": {"aggregator": "lstm"}}}
    with pytest.raises(LmrecError, match=r"\[run.reindex_variants\] 'bad'.*aggregator"):
        table_settings("crs", config)


def test_comparison_rows_say_why_training_stopped():
    from lmrec.eval.report import epochs_summary as _epochs

    row = {"best_epoch": 40, "epochs_run": 140, "converged": True}
    assert (_epochs({**row, "stopped": "early stop: no validation improvement in 20 evaluations"})
            == "40 / 140, patience")
    assert _epochs({**row, "best_epoch": 140, "converged": False, "stopped": "max epochs"}) == "140 / 140 †, budget"
    assert _epochs({**row, "stopped": "time budget of 8 minutes"}) == "40 / 140, time"
    assert _epochs({**row, "stopped": None}) == "40 / 140" and _epochs({**row, "best_epoch": None}) == "-"


def test_a_comparison_dataset_may_carry_its_own_split(tmp_path, planted, monkeypatch):
    thin = {"name": "p, half the training", "dataset": "p", "split": "ratio:0.4,0.3,0.3+thin:0.5"}
    loaded = []

    def load(ref):  # the planted data, thinned as the split says (the registry applies it to real data)
        loaded.append(ref.split)
        return thin_train(planted[ref.dataset], 0.5) if ref.split else planted[ref.dataset]

    monkeypatch.setattr(DataRef, "load", load)
    results = run_comparison(["pop"], ["p", thin], tmp_path, focus=None)
    assert list(results) == ["p", "p, half the training"]
    assert set(loaded) == {None, "ratio:0.4,0.3,0.3+thin:0.5"}
    assert (tmp_path / "p_half-the-training" / "pop" / "manifest.json").exists()
    manifest = json.loads((tmp_path / "p_half-the-training" / "pop" / "manifest.json").read_text())
    assert manifest["data"]["split"] == "ratio:0.4,0.3,0.3+thin:0.5"
    checksums = reproduce.environment([], tmp_path, quick=False)["data_checksums"]
    assert checksums == {"p": results["p"]["checksum"],
                         "p (split ratio:0.4,0.3,0.3+thin:0.5)": results["p, half the training"]["checksum"]}
    assert checksums["p"] != checksums["p (split ratio:0.4,0.3,0.3+thin:0.5)"]
    with pytest.raises(ValueError, match=r"expected name, dataset and optionally split \(unknown \['splt'\]\)"):
        run_comparison(["pop"], [{"name": "x", "dataset": "p", "splt": "loo"}], tmp_path)
    with pytest.raises(ValueError, match="no '/' in it"):
        run_comparison(["pop"], [{"name": "a/b", "dataset": "p"}], tmp_path)


def test_rta_report_counts_answered_contexts_and_the_turns_that_share_them() -> None:
    from lmrec.experiments.rta_table import _generated_test

    assert _generated_test({"generated_test_turns": 3, "generated_test_contexts": 3}) == "the LLM answered 3 test turns"
    assert _generated_test({"generated_test_turns": 518, "generated_test_contexts": 511}) == (
        "the LLM answered 511 distinct test contexts, the context of 518 test turns")
    assert _generated_test({"generated_test_turns": 4}) == "the LLM answered 4 test turns"  # a table of before


# -- seeds, widening and folder names ---------------------------------------------------------------------------
def test_labels_become_plain_folder_names():
    from lmrec.experiments.compare import slug

    assert slug("alpharec~tau=0.2,seed=2025") == "alpharec_tau-0.2_seed-2025"
    assert slug("movielens-100k, train 10%") == "movielens-100k_train-10pct"
    assert slug("mf~lr=0.001") == "mf_lr-0.001"
    with pytest.raises(ValueError, match="no letters or digits"):
        slug("~=,")


def test_next_grid_value_follows_the_grids_own_step():
    from lmrec.experiments.compare import next_value

    assert next_value([0.1, 0.15, 0.2], upward=True) == 0.25  # arithmetic
    assert next_value([0.1, 0.15, 0.2], upward=False) == 0.05
    assert next_value([0.05, 0.1, 0.15], upward=False) == 0.025  # 0 would leave the range: halved
    assert next_value([5e-4, 1e-3, 2e-3], upward=True) == 4e-3  # geometric
    assert next_value([5e-4, 1e-3, 2e-3], upward=False) == 2.5e-4
    assert next_value([0.05, 0.07, 0.1], upward=True) == 0.14  # uneven steps: geometric, two digits


def test_seeds_replicate_each_chosen_point_and_widening_leaves_no_edge(tmp_path, planted):
    specs = [*grid_specs("mf", "mf", {"emb_dim": 8}, FAST, {"lr": [1e-4, 2e-4, 4e-4]}),
             *grid_specs("lgcn", "lightgcn", {"emb_dim": 8}, FAST, {"lr": [1e-4, 2e-4, 4e-4]}), "pop"]
    lines = []
    results = run_comparison(specs, ["p"], tmp_path, focus="lgcn", seeds=[1, 2], focus_seeds=[3], widen=True,
                             log=lines.append)["p"]
    rows, selected = results["models"], results["selected"]
    tuning = {n: r for n, r in rows.items() if r["point"] == n}
    assert sum(r["family"] == "lgcn" for r in tuning.values()) > 3  # its first choice sat at an edge: widened
    best = max(r["valid"]["recall@20"]["mean"] for r in tuning.values())
    for name in selected.values():  # the rule: no edge left within 10% of the best
        assert not rows[name]["grid_edges"] or rows[name]["valid"]["recall@20"]["mean"] < 0.9 * best
    replicates = results["replicates"]
    assert [rows[n]["seed"] for n in replicates["lgcn"]] == [1, 2, 3]  # the focus: seeds and focus seeds
    best = results["focus"]["best_family"]
    assert len(replicates["pop"]) == 1  # untrained: nothing random to replicate
    assert len(replicates["mf"]) == (3 if best == "mf" else 2)
    assert all(rows[n]["point"] == selected["lgcn"] for n in replicates["lgcn"])
    assert results["focus"]["seeds"] == [1, 2, 3] and len(results["focus"]["per_seed"]) == 3
    assert "seed_welch_pvalue" in results["focus"] or best == "pop"
    text = markdown({"p": results})
    assert "over the training seeds" in text and "(u ± " in text and "Per seed: seed 1 " in text
    assert (tmp_path / "p" / f"{selected['lgcn'].replace('~', '_').replace('=', '-')}_seed-3" / "manifest.json"
            ).exists()
    again = run_comparison(specs, ["p"], tmp_path, focus="lgcn", seeds=[1, 2], focus_seeds=[3], widen=True)["p"]
    assert again["models"] == rows  # every run finished already: the same decisions, nothing trained


def test_every_family_reaches_the_tables_seeds_before_the_focus_pair_gets_its_extra_seeds(tmp_path, planted):
    specs = [RunSpec("lgcn", "lightgcn", {"emb_dim": 8}, FAST), RunSpec("mf", "mf", {"emb_dim": 8}, FAST)]
    lines: list[str] = []
    run_comparison(specs, ["p"], tmp_path, focus="lgcn", seeds=[1, 2], focus_seeds=[3], log=lines.append)
    order = [re.search(r"p / (\w+)~seed=(\d)", line).groups() for line in lines if "~seed=" in line]
    assert order == [("lgcn", "2"), ("mf", "2"), ("lgcn", "3"), ("mf", "3")]


def test_finished_only_reports_the_finished_seeds_lists_the_rest_and_trains_nothing(tmp_path, planted, monkeypatch):
    specs = [RunSpec("lgcn", "lightgcn", {"emb_dim": 8}, FAST), RunSpec("mf", "mf", {"emb_dim": 8}, FAST)]
    run_comparison(specs[:1], ["p"], tmp_path, focus="lgcn", seeds=[1])  # one seed of one model, finished
    (tmp_path / "p" / "mf").mkdir(parents=True)  # begun elsewhere and not finished: not read, not resumed
    monkeypatch.setattr(TorchRecommender, "fit", lambda *a, **k: pytest.fail("--finished-only trained a run"))
    lines = []
    block = run_comparison(specs, ["p"], tmp_path, focus="lgcn", seeds=[1, 2], finished_only=True,
                           log=lines.append)["p"]
    assert list(block["models"]) == ["lgcn"] and block["replicates"] == {"lgcn": ["lgcn"]}
    lgcn_seconds = block["models"]["lgcn"]["fit_seconds"]
    assert block["missing"] == [{"run": "mf", "family": "mf", "estimated_seconds": None},  # no finished mf run
                                {"run": "lgcn~seed=2", "family": "lgcn", "estimated_seconds": lgcn_seconds}]
    assert "focus" not in block  # mf's seed 2 is never planned: mf has no row to choose
    assert "p / mf: not finished, left out (nothing is trained)" in lines
    text = markdown({"p": block})
    assert "| lgcn |" in text and (f"Not finished yet, so left out (2 planned runs; ≈ {lgcn_seconds / 3600:.1f} h for "
                                   f"the 1 whose model has finished runs, at their mean fit time): mf, lgcn~seed=2 "
                                   f"(≈ {lgcn_seconds / 3600:.1f} h).") in text
    nothing = run_comparison(specs[1:], ["p"], tmp_path / "other", focus=None, finished_only=True)["p"]
    assert nothing["models"] == {} and "### p\n\nNot finished yet, so left out (1 planned runs): mf." in markdown(
        {"p": nothing})


def test_reproduce_finished_only_reports_a_partial_table_from_another_machine(tmp_path, planted, capsys):
    for name, text in ALPHAREC_TABLES.items():
        write_config(tmp_path / "configs" / "alpharec", name, text)
    configs, part = tmp_path / "configs", tmp_path / "part"
    reproduce.reproduce("alpharec", configs, part, quick=True, models=["lightgcn"], log=lambda _: None)
    progress = tmp_path / "progress"
    assert cli.main(["reproduce", "alpharec", "--quick", "--configs", str(configs), "--out", str(progress),
                     "--reuse", str(part / "report"), "--finished-only"]) == 0
    printed = capsys.readouterr().out
    assert "[02-convergence]" not in printed  # not a comparison: left out
    report = (progress / "report" / "report.md").read_text(encoding="utf-8")
    assert "**Finished runs only** (`--finished-only`)" in report and "| lightgcn |" in report
    assert "(quick, finished runs only)" in report and "made without training on" in report
    assert "torch threads" not in report  # this process trained nothing: its thread count says nothing of the runs
    assert "(2 planned runs): pop, mf (8-d)." in report and "## Convergence" not in report
    assert not any((progress / "01-comparison" / "p").glob("*/manifest.json"))  # nothing trained here
    with pytest.raises(LmrecError, match="--finished-only reports comparison tables"):
        reproduce.reproduce("alpharec", configs, progress, quick=True, only=["convergence"], finished_only=True,
                            log=lambda _: None)


def test_records_from_before_a_setting_existed_match_only_what_they_did(tmp_path, planted):
    from lmrec.run import settings_differ

    spec = RunSpec("lgcn", "lightgcn", {"emb_dim": 8}, FAST)
    run_comparison([spec], ["p"], tmp_path, focus=None)
    saved = json.loads((tmp_path / "p" / "lgcn" / "manifest.json").read_text())
    old = {**saved, "train_config": {k: v for k, v in saved["train_config"].items() if k != "streams"},
           "model_config": {k: v for k, v in saved["model_config"].items() if k != "n_layers"}}
    assert settings_differ(old, saved) == ["train_config"]  # written before streams: they were shared
    shared = {**saved, "train_config": {**saved["train_config"], "streams": "shared"}}
    assert settings_differ(old, shared) == []  # a model setting added since is at its default


SHIPPED = sorted((Path(__file__).resolve().parents[2] / "configs").glob("*/*.toml"))


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_every_shipped_table_config_is_valid_in_full_and_quick(path: Path) -> None:
    for quick in (False, True):
        assert reproduce.load_table(path, quick=quick).settings is not None


def test_git_state_names_the_commit_and_what_changed(tmp_path: Path) -> None:
    from lmrec.environment import git_state

    assert git_state(tmp_path) == {"commit": None}  # not a checkout
    git = lambda *args: subprocess.run(["git", *args], cwd=tmp_path, check=True, capture_output=True)  # noqa: E731
    git("init", "-q")
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "a.py").write_text("x = 1\n")
    (tmp_path / "notes.md").write_text("n\n")
    git("add", ".")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "c")
    clean = git_state(tmp_path)
    assert len(str(clean["commit"])) == 40 and clean["dirty"] is False
    (tmp_path / "notes.md").write_text("changed\n")
    assert git_state(tmp_path)["dirty"] is True and git_state(tmp_path, ("src",))["dirty"] is False
    (tmp_path / "src" / "new.py").write_text("y = 2\n")  # untracked: counted only when asked
    assert git_state(tmp_path, ("src",))["dirty"] is False
    assert git_state(tmp_path, ("src",), untracked=True)["dirty"] is True


RTA_ANSWERING = '''title = "Tiny INSPIRED: the reindex on the LLM's answers and the real targets"
experiment = "crs"
[run]
dataset = "inspired"
zero_shot = false
reindex = {{ aggregator = "weighted", label_source = "both", train = {{ epochs = 1, eval_every = 1 }} }}
''' + TINY_PREPARE + "generate_batch_size = 2\n"


def test_an_rta_table_stopped_while_answering_keeps_its_answers_and_another_machine_goes_on(tmp_path, monkeypatch):
    """The LLM's answers are the long part of an RTA table: what a stopped reproduction answered reaches its report,
    and a reproduction elsewhere with --reuse on that report generates only the rest, with the same answers."""
    from lmrec.inputs.store import read_generations
    from lmrec.llm import CausalLM

    tiny_inspired_and_llm(tmp_path, monkeypatch)
    configs = tmp_path / "configs"
    write_config(configs / "rta", "01-inspired.toml", RTA_ANSWERING.format(llm=tmp_path / "llm"))
    generate = CausalLM.generate
    asked: list[str] = []

    def stopped_after_two_batches(self, prompts, *args, **kwargs):
        if len(asked) == 4:
            raise KeyboardInterrupt  # the session ends
        asked.extend(prompts)
        return generate(self, prompts, *args, **kwargs)

    with monkeypatch.context() as patched:
        patched.setattr(CausalLM, "generate", stopped_after_two_batches)
        with pytest.raises(KeyboardInterrupt):
            reproduce.reproduce("rta", configs, tmp_path / "first", log=lambda _: None)
    answers = tmp_path / "first" / "report" / "answers" / "01-inspired"
    assert [p.name for p in answers.iterdir()] == ["generations-train.jsonl.gz"]
    first = read_generations(answers / "generations-train.jsonl.gz")
    assert len(first) == 4  # the two batches that finished of the 8 training turns
    # the report's answers are merged, not replaced: a prepare folder made again loses none of them
    shutil.rmtree(tmp_path / "first" / "01-inspired" / "prepare")
    with monkeypatch.context() as patched:
        patched.setattr(CausalLM, "generate", stopped_after_two_batches)  # stops before its first batch now
        with pytest.raises(KeyboardInterrupt):
            reproduce.reproduce("rta", configs, tmp_path / "first", log=lambda _: None)
    assert read_generations(answers / "generations-train.jsonl.gz") == first

    again: list[str] = []

    def counted(self, prompts, *args, **kwargs):
        again.extend(prompts)
        return generate(self, prompts, *args, **kwargs)

    with monkeypatch.context() as patched:
        patched.setattr(CausalLM, "generate", counted)
        reproduce.reproduce("rta", configs, tmp_path / "second", reuse=tmp_path / "first" / "report",
                            log=lambda _: None)
    prepared = json.loads((tmp_path / "second" / "01-inspired" / "prepare" / "prepare.json").read_text())
    train = prepared["splits"]["train"]["generation"]
    # 8 turns, 7 distinct contexts: 4 answers taken, 3 generated, none in the new folder before
    assert (train["answers"], train["cached"], train["taken_from_earlier"], train["generated_now"]) == (7, 0, 4, 3)
    assert not set(asked) & set(again)  # no turn answered twice
    # the answers taken are those the LLM gives: a reproduction answering every turn itself has the same ones
    reproduce.reproduce("rta", configs, tmp_path / "third", log=lambda _: None)
    answered = {}
    for out in ("second", "third"):
        packed = tmp_path / out / "report" / "answers" / "01-inspired"
        answered[out] = {split: {k: (r.completion, r.items) for k, r in read_generations(
            packed / f"generations-{split}.jsonl.gz").items()} for split in ("train", "valid", "test")}
    assert answered["second"] == answered["third"]
    assert {k: (r.completion, r.items) for k, r in first.items()}.items() <= answered["second"]["train"].items()
    with pytest.raises(LmrecError, match="no records/, answers/ or rta-tables/ folder"):
        reproduce.reproduce("rta", configs, tmp_path / "fourth", reuse=tmp_path, log=lambda _: None)


def test_sigterm_stops_lmrec_reproduce_through_its_finally_blocks(tmp_path):
    """``kill`` (SIGTERM) at the end of a session: the process exits through ``finally`` as on Ctrl-C (where a
    reproduction packs its records and answers), with status 143."""
    import signal
    import sys

    script = ("import pathlib, time\nfrom lmrec.cli.experiments import stop_like_ctrl_c\n"
              "with stop_like_ctrl_c():\n    try:\n        print('ready', flush=True)\n        time.sleep(60)\n"
              f"    finally:\n        pathlib.Path({str(tmp_path / 'packed')!r}).write_text('yes')\n")
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 128 + signal.SIGTERM
    assert (tmp_path / "packed").read_text() == "yes"
    from lmrec.cli.experiments import stop_like_ctrl_c

    before = signal.getsignal(signal.SIGTERM)
    with stop_like_ctrl_c():
        assert signal.getsignal(signal.SIGTERM) is not before
    assert signal.getsignal(signal.SIGTERM) is before  # in-process callers (tests, notebooks) get theirs back


def test_a_finished_definition_table_is_carried_to_another_machine(tmp_path, monkeypatch):
    """A table per target definition is hours of fitting on a CPU: one finished before a reproduction stopped
    reaches the report (rta-tables/), and --reuse on that report takes it elsewhere instead of fitting it again."""
    tiny_inspired_and_llm(tmp_path, monkeypatch, repeat=True)
    configs = tmp_path / "configs"
    write_config(configs / "rta", "01-inspired.toml", PAPER_PIPELINE.format(llm=tmp_path / "llm"))
    definition_table = rta_table._definition_table
    fitted: list[str] = []

    def stopped_at_all(dataset, features, folder, settings, log):
        fitted.append(features.data.targets)
        if features.data.targets == "all":
            raise KeyboardInterrupt  # the session ends while the second definition is being fitted
        return definition_table(dataset, features, folder, settings, log)

    with monkeypatch.context() as patched:
        patched.setattr(rta_table, "_definition_table", stopped_at_all)
        with pytest.raises(KeyboardInterrupt):
            reproduce.reproduce("rta", configs, tmp_path / "first", log=lambda _: None)
    carried = tmp_path / "first" / "report" / "rta-tables" / "01-inspired"
    assert sorted(p.name for p in (carried / "targets-new").iterdir()) == sorted(rta_table.FINISHED_FILES)
    assert not (carried / "targets-all").exists()
    fitted.clear()
    counted = lambda *a: fitted.append(a[1].data.targets) or definition_table(*a)  # noqa: E731
    lines: list[str] = []
    with monkeypatch.context() as patched:
        patched.setattr(rta_table, "_definition_table", counted)
        reproduce.reproduce("rta", configs, tmp_path / "second", reuse=tmp_path / "first" / "report",
                            log=lines.append)
    assert fitted == ["all"]  # "new" was taken from the first machine's report
    assert any("the table finished in" in line for line in lines)
    table = json.loads((tmp_path / "second" / "01-inspired" / "table.json").read_text())
    first_new = json.loads((carried / "targets-new" / "table.json").read_text())
    assert table["targets"]["new"] == first_new and list(table["targets"]) == ["new", "all"]
    assert (tmp_path / "second" / "report" / "rta-tables" / "01-inspired" / "targets-all" / "table-spec.json").exists()
    # other settings: the carried table is not taken
    config = configs / "rta" / "01-inspired.toml"
    config.write_text(config.read_text().replace('pop = ".103 ± .021"', 'pop = ".104 ± .021"'))
    fitted.clear()
    with monkeypatch.context() as patched:
        patched.setattr(rta_table, "_definition_table", counted)
        reproduce.reproduce("rta", configs, tmp_path / "third", reuse=tmp_path / "first" / "report",
                            log=lambda _: None)
    assert fitted == ["new", "all"]


def test_an_intention_table_takes_the_grid_point_its_comparison_selected(tmp_path, planted):
    specs = grid_specs("lgcn", "lightgcn", {"emb_dim": 8}, FAST, {"lr": [1e-4, 2e-4, 4e-4]})
    chosen = run_comparison(specs, ["p"], tmp_path / "01-comparison", focus="lgcn")["p"]["selected"]["lgcn"]
    logged: list[str] = []
    pick = functools.partial(reproduce.selected_run, tmp_path, log=logged.append)
    run = pick("01-comparison/p/lgcn")  # the family: the folder of its selected point
    assert run == f"01-comparison/p/{slug(chosen)}" and (tmp_path / run / "manifest.json").exists()
    assert pick("01-comparison/p/lgcn_lr-0.0001") == "01-comparison/p/lgcn_lr-0.0001"  # a point: itself
    assert pick("01-comparison/q/lgcn") == "01-comparison/q/lgcn"  # no selection for that dataset
    assert not logged
    assert pick("02-other/p/lgcn") == "02-other/p/lgcn" and "selection is unknown" in logged[0]
