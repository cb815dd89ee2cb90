"""`lmrec demo` (the README's main job) end to end, on small data so it runs in seconds."""

from __future__ import annotations

from helpers import planted_data, single_thread, write_lightgcn_folder  # noqa: F401
from lmrec.experiments.demo import run_demo


def test_demo_trains_compares_and_recommends(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("LMREC_CACHE", str(tmp_path / "cache"))
    folder = write_lightgcn_folder(planted_data(), tmp_path / "planted")
    run_demo(tmp_path / "runs", str(folder), user="3")
    out = capsys.readouterr().out
    assert "pop" in out and "lightgcn" in out and "alpharec" in out
    assert "AlphaRec - LightGCN recall@20:" in out and "AlphaRec's top 10 for user 3" in out
    assert {p.name for p in (tmp_path / "runs").iterdir()} == {"pop", "lightgcn", "alpharec"}
    run_demo(tmp_path / "runs", str(folder), user="3")  # a second demo replaces the runs (--overwrite)
