"""The density experiment: one comparison per share of the training items, a summary table and a plot."""

from __future__ import annotations

import json

import pytest

from helpers import planted_data
from lmrec.data.registry import DataRef
from lmrec.data.splits import thin_train
from lmrec.errors import LmrecError
from lmrec.experiments import density, reproduce

CONFIG = '''title = "Density"
experiment = "density"
[run]
dataset = "p"
shares = [1.0, 0.5]
focus = "mf"
train = { epochs = 2, eval_every = 1, patience = 2, batch_size = 128 }
[run.models]
pop = {}
mf = { set = { emb_dim = 8 } }
'''


def test_entries_name_each_share_and_thin_the_split():
    assert density.entries("ml", [1, 0.25], "ratio:0.4,0.3,0.3") == [
        {"name": "ml", "dataset": "ml", "split": "ratio:0.4,0.3,0.3"},
        {"name": "ml, train 25%", "dataset": "ml", "split": "ratio:0.4,0.3,0.3+thin:0.25"}]
    names = [e["name"] for e in density.entries("data/ml", [0.004, 0.001])]  # distinct, and no folder in them
    assert names == ["ml, train 0.4%", "ml, train 0.1%"]
    with pytest.raises(ValueError, match=r"shares must be in \(0, 1\], got \[1.5\]"):
        density.entries("ml", [1.5])


def test_a_density_table_compares_every_share(tmp_path, monkeypatch):
    planted = planted_data(0, name="p")
    monkeypatch.setattr(DataRef, "load", lambda ref: thin_train(planted, float(ref.split.rpartition("+thin:")[2]))
                        if "+thin:" in ref.split else planted)
    (tmp_path / "configs" / "alpharec").mkdir(parents=True)
    (tmp_path / "configs" / "alpharec" / "01-density.toml").write_text(CONFIG)
    report = reproduce.reproduce("alpharec", tmp_path / "configs", tmp_path / "out", log=lambda _: None)
    rows = json.loads((tmp_path / "out" / "01-density" / "density.json").read_text())
    assert [r["dataset"] for r in rows] == ["p", "p, train 50%"]
    assert rows[1]["train"] < rows[0]["train"] and rows[1]["density"] < rows[0]["density"]
    assert rows[0]["density"] == pytest.approx(planted.train.nnz / (planted.n_users * planted.n_items))
    assert set(rows[0]["models"]) == {"pop", "mf"} and rows[0]["focus"]["best_baseline"] == "pop"
    text = (report / "report.md").read_text(encoding="utf-8")
    assert "| p, train 50% | " in text and "vs pop (p = " in text
    assert "figures/01-density--density.png" in text and (report / "figures" / "01-density--density.png").exists()
    from lmrec.experiments.records import unpack_records

    unpacked = unpack_records(report / "records", tmp_path / "unpacked")
    assert (unpacked / "01-density" / "p_train-50pct" / "mf" / "per-user.safetensors").exists()


def test_a_density_config_is_checked_before_anything_runs(tmp_path):
    path = tmp_path / "01-density.toml"
    path.write_text(CONFIG.replace("shares = [1.0, 0.5]", "shares = [0]"))
    with pytest.raises(LmrecError, match=r"01-density.toml: \[run\]: shares must be in \(0, 1\]"):
        reproduce.load_table(path)
    path.write_text(CONFIG.replace('dataset = "p"', 'datasets = ["p"]'))
    with pytest.raises(LmrecError, match=r"unknown \[run\] setting datasets; the \[run\] settings of DensitySettings"):
        reproduce.load_table(path)
