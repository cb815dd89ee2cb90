"""The run folder and the Run API: one format for every model, moved folders load, nothing silently replaced,
recommendation for known users, new users (items or titles), intentions, and clear errors."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

import lmrec
from helpers import planted_data, planted_features, single_thread  # noqa: F401
from lmrec import clock
from lmrec.clock import ManualClock
from lmrec.models.queries import KnownUsers
from lmrec.run import per_user_test_values, read_manifest

TRAIN = {"epochs": 3, "eval_every": 1, "progress": False}


@pytest.fixture(scope="module")
def data():
    return planted_data()


@pytest.fixture(scope="module")
def alpharec(data, tmp_path_factory):
    model = lmrec.get_model("alpharec")(mlp_ratio=1.0, features=planted_features())
    return lmrec.fit(model, data, TRAIN, out=tmp_path_factory.mktemp("runs") / "alpharec")


def test_public_api_names():
    assert {"load_dataset", "get_model", "list_models", "TrainConfig", "fit", "evaluate", "Run"} <= set(lmrec.__all__)
    assert {"alpharec", "lightgcn", "rta_adapt", "fism"} <= set(lmrec.list_models())
    assert "rta_adapt" not in lmrec.list_models("cf") and "pop" in lmrec.list_models("crs")


def test_manifest_records_everything_with_relative_paths(alpharec):
    manifest = read_manifest(alpharec.folder)
    assert manifest["format"] == "lmrec-run" and manifest["version"] == 1 and manifest["status"] == "complete"
    assert manifest["task"] == "cf" and manifest["model"] == "alpharec"
    assert manifest["model_config"]["mlp_ratio"] == 1.0 and manifest["train_config"]["epochs"] == 3
    assert manifest["data_checksum"] == alpharec.data.checksum()
    assert str(alpharec.folder) not in json.dumps(manifest)  # no absolute path to the folder itself
    assert sorted(p.name for p in alpharec.folder.iterdir()) == ["data", "log.jsonl", "manifest.json", "metrics.json",
                                                                 "model.safetensors", "per-user.safetensors"]


def test_the_test_values_per_user_are_kept_and_average_to_the_metrics(alpharec):
    users, values = per_user_test_values(alpharec.folder)
    metrics = json.loads((alpharec.folder / "metrics.json").read_text())["test"]
    per_user_metrics = {name for name in metrics if not name.startswith("coverage@")}  # one number per catalog
    assert set(values) == per_user_metrics and len(users) == metrics["recall@20"]["n"]
    assert {"novelty@20", "arp@20", "aplt@20", "coverage@20"} <= set(metrics)  # beyond accuracy, every CF run
    for name in per_user_metrics:
        assert values[name].mean() == pytest.approx(metrics[name]["mean"], abs=1e-6)
    fresh = alpharec.evaluate("test")
    assert np.array_equal(users, fresh.users) and np.allclose(values["ndcg@10"], fresh.per_user["ndcg@10"])


def test_a_folder_without_values_per_user_gets_them_from_its_weights(alpharec, data, tmp_path):
    old = shutil.copytree(alpharec.folder, tmp_path / "old")
    (old / "per-user.safetensors").unlink()
    users, values = per_user_test_values(old, data)
    assert (old / "per-user.safetensors").exists()
    assert np.array_equal(users, per_user_test_values(alpharec.folder)[0])
    assert np.array_equal(values["recall@20"], per_user_test_values(alpharec.folder)[1]["recall@20"])


def test_a_moved_folder_loads_and_scores_identically(alpharec, data, tmp_path):
    moved = shutil.copytree(alpharec.folder, tmp_path / "somewhere" / "else")
    loaded = lmrec.Run.load(moved, data=data)
    users = np.arange(data.n_users)
    assert torch.equal(loaded.model.score(KnownUsers(users)), alpharec.model.score(KnownUsers(users)))
    assert loaded.recommend(user="u3", k=5) == alpharec.recommend(user="u3", k=5)


def test_no_pickle_anywhere(alpharec):
    data = (alpharec.folder / "model.safetensors").read_bytes()
    header_length = int.from_bytes(data[:8], "little")
    header = json.loads(data[8 : 8 + header_length])
    assert {k.split(".")[0] for k in header if k != "__metadata__"} == {"state", "artifacts"}


def test_old_foreign_incomplete_and_missing_folders_are_clear_errors(alpharec, tmp_path):
    old = tmp_path / "old"
    old.mkdir()
    (old / "config.json").write_text("{}")
    (old / "model.pt").write_bytes(b"not a pickle")
    with pytest.raises(lmrec.LmrecError, match="old lmrec run folder"):
        lmrec.Run.load(old)
    foreign = shutil.copytree(alpharec.folder, tmp_path / "foreign")
    (foreign / "manifest.json").write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(lmrec.LmrecError, match="not an lmrec run manifest"):
        lmrec.Run.load(foreign)
    newer = shutil.copytree(alpharec.folder, tmp_path / "newer")
    manifest = json.loads((newer / "manifest.json").read_text())
    (newer / "manifest.json").write_text(json.dumps({**manifest, "version": 99}))
    with pytest.raises(lmrec.LmrecError, match="version 99"):
        lmrec.Run.load(newer)
    incomplete = shutil.copytree(alpharec.folder, tmp_path / "incomplete")
    (incomplete / "manifest.json").write_text(json.dumps({**manifest, "status": "training"}))
    with pytest.raises(lmrec.LmrecError, match="incomplete"):
        lmrec.Run.load(incomplete)
    (incomplete / "model.safetensors").write_bytes(b"garbage")
    (incomplete / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(lmrec.LmrecError, match="not a safetensors file"):
        lmrec.Run.load(incomplete, data=alpharec.data)
    with pytest.raises(lmrec.LmrecError, match="no such run folder"):
        lmrec.Run.load(tmp_path / "nothing")


def test_other_data_is_refused_by_checksum(alpharec):
    with pytest.raises(lmrec.LmrecError, match="checksum"):
        lmrec.Run.load(alpharec.folder, data=planted_data(seed=1))


def test_a_run_folder_is_never_silently_replaced_or_mixed(data, tmp_path):
    out = tmp_path / "run"
    lmrec.fit("pop", data, out=out)
    with pytest.raises(lmrec.LmrecError, match="--overwrite"):
        lmrec.fit("pop", data, out=out)
    lmrec.fit("mf", data, TRAIN, out=out, overwrite=True)
    assert read_manifest(out)["model"] == "mf"
    user_folder = tmp_path / "mine"
    user_folder.mkdir()
    (user_folder / "notes.txt").write_text("keep me")
    for overwrite in (False, True):
        with pytest.raises(lmrec.LmrecError, match="not an lmrec run folder"):
            lmrec.fit("pop", data, out=user_folder, overwrite=overwrite)
    assert (user_folder / "notes.txt").read_text() == "keep me"
    a_file = tmp_path / "file"
    a_file.write_text("x")
    with pytest.raises(lmrec.LmrecError, match="not a folder"):
        lmrec.fit("pop", data, out=a_file)


def test_resume_reuses_a_complete_run_and_refuses_other_settings(data, tmp_path):
    out = tmp_path / "mf"
    first = lmrec.fit("mf", data, TRAIN, out=out)
    again = lmrec.fit("mf", data, TRAIN, out=out, resume=True)  # loaded, not retrained
    assert again.manifest["created"] == first.manifest["created"] and again.metrics == first.metrics
    with pytest.raises(lmrec.LmrecError, match="emb_dim"):
        lmrec.fit("mf", data, TRAIN, out=out, resume=True, emb_dim=8)
    with pytest.raises(lmrec.LmrecError, match="train_config"):
        lmrec.fit("mf", data, {**TRAIN, "lr": 0.5}, out=out, resume=True)


def test_a_fit_without_test_never_evaluates_it_until_asked(data, tmp_path, monkeypatch):
    import lmrec.eval.ranking as run_module  # where a run's evaluation ranks

    splits = []
    real = run_module.evaluate
    monkeypatch.setattr(run_module, "evaluate", lambda scorer, d, split, **kw: (splits.append(split),
                                                                                 real(scorer, d, split, **kw))[1])
    out = tmp_path / "mf"
    lmrec.fit("mf", data, TRAIN, out=out, test=False)
    assert set(splits) == {"valid"}  # every validation of training, then the run's
    run = lmrec.Run.load(out, data=data)
    assert set(run.metrics) == {"valid"} and "test" in run.manifest["evaluation"]["not_evaluated"]
    n = len(splits)
    run.add_test()
    assert splits[n:] == ["test"]
    again = lmrec.Run.load(out, data=data)
    assert again.metrics["test"] == run.metrics["test"] and "not_evaluated" not in again.manifest["evaluation"]
    users, values = per_user_test_values(out, data)
    assert np.isclose(values["recall@20"].mean(), again.metrics["test"]["recall@20"]["mean"])


def test_recommend_known_user_leaves_out_everything_they_have(alpharec, data):
    user = data.user_index("u4")
    have = {data.catalog.ids[i] for s in ("train", "valid", "test")
            for i in data.split(s).indices[data.split(s).indptr[user] : data.split(s).indptr[user + 1]]}
    top = alpharec.recommend(user="u4", k=10)
    assert len(top) == 10 and not have & {r.item_id for r in top}
    kept = alpharec.recommend(user="u4", k=40, exclude_seen=False)
    assert have <= {r.item_id for r in kept}
    excluded = alpharec.recommend(user="u4", k=10, exclude=[top[0].item_id])
    assert top[0].item_id not in {r.item_id for r in excluded}


def test_recommend_for_a_new_user_from_items_or_titles(alpharec, data):
    """Cluster 0 is items 4-9: a new user who liked two of them gets the rest of their cluster first."""
    by_ids = alpharec.recommend(items=["i4", "i5"], k=4)
    by_titles = alpharec.recommend(titles=["Movie number 4", "movie number 5"], k=4)
    assert by_ids == by_titles
    assert {r.item_id for r in by_ids} <= {f"i{i}" for i in range(10)} - {"i4", "i5"}
    with pytest.raises(lmrec.LmrecError, match="no title .* matches 'Casablanca'"):
        alpharec.recommend(titles=["Casablanca"])


def test_intent_steers_the_ranking(alpharec, data):
    """An intention whose LM vector is cluster 3's direction pulls cluster 3's items up, more with a larger alpha."""
    features = planted_features()
    cluster3 = features[4 + 3 * 6 : 4 + 4 * 6].mean(0)
    alpharec.model.encode_texts = lambda texts: torch.from_numpy(np.tile(cluster3, (len(texts), 1)))
    try:
        ranks = []
        for alpha in (0.0, 1.0):
            top = alpharec.recommend(user="u0", intent="something like cluster 3", alpha=alpha, k=10)
            ranks.append(sum(r.item_id in {f"i{i}" for i in range(22, 28)} for r in top))
        assert ranks[1] > ranks[0]
        new_user = alpharec.recommend(items=["i4"], intent="something like cluster 3", alpha=1.0, k=6)
        assert sum(r.item_id in {f"i{i}" for i in range(22, 28)} for r in new_user) >= 3
    finally:
        del alpharec.model.encode_texts


def _cosines(run, item: str, history: list[str]) -> dict[str, float]:
    vectors = run.model.item_vectors().detach().numpy()
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    row = unit[run.catalog.index(item)]
    return {h: float(unit[run.catalog.index(h)] @ row) for h in history}


def test_every_recommendation_names_the_history_items_nearest_to_it(alpharec, data):
    history = ["i4", "i5", "i30", "i0"]
    top = alpharec.recommend(items=history, k=6)
    for r in top:
        cosines = _cosines(alpharec, r.item_id, history)
        expected = sorted(history, key=lambda h: -cosines[h])[:3]
        assert [b.item_id for b in r.because] == expected
        assert [b.title for b in r.because] == [data.catalog.titles[data.catalog.index(h)] for h in expected]
        np.testing.assert_allclose([b.similarity for b in r.because], [cosines[h] for h in expected], atol=1e-3)
        assert r.intent is None and r.reason.startswith("because you liked " + r.because[0].title)
    known = alpharec.recommend(user="u7", k=5)  # a known user: the training items the model learned them from
    train = {data.catalog.ids[i] for i in data.train_items(data.user_index("u7"))}
    assert all(1 <= len(r.because) <= 3 and {b.item_id for b in r.because} <= train for r in known)


def test_the_intention_is_the_reason_for_the_items_it_brought_in(alpharec, data):
    features = planted_features()
    cluster3 = features[4 + 3 * 6 : 4 + 4 * 6].mean(0)
    alpharec.model.encode_texts = lambda texts: torch.from_numpy(np.tile(cluster3, (len(texts), 1)))
    try:
        plain = {r.item_id for r in alpharec.recommend(user="u0", k=8)}
        steered = alpharec.recommend(user="u0", intent="cluster three", alpha=1.0, k=8)
    finally:
        del alpharec.model.encode_texts
    brought = {r.item_id for r in steered} - plain
    assert brought and {r.item_id for r in steered if r.intent == "cluster three"} == brought
    assert all(r.reason.startswith("for your intention \u201ccluster three\u201d") for r in steered if r.intent)
    assert all(r.intent is None and r.reason.startswith("because you liked") for r in steered
               if r.item_id not in brought)
    with pytest.raises(lmrec.LmrecError, match=r"alpha=0.3 weighs a stated intention: pass intent="):
        alpharec.recommend(user="u0", alpha=0.3)


def test_a_model_without_an_item_space_names_no_reason_item(data):
    top = lmrec.fit("pop", data).recommend(user="u3", k=3)
    assert all(r.because == () and r.reason == "pop has no item space to compare it with your history" for r in top)


def test_nearest_orders_by_cosine_and_never_names_the_item_itself():
    from lmrec.run.reasons import nearest

    space = np.array([[1, 0], [0, 1], [1, 1], [1, 0.1], [-1, 0]], dtype=np.float32)
    # item 2: 1 and 0 tie at cosine 0.707: the earlier in the history first
    assert [[j for j, _ in row] for row in nearest(space, [1, 2, 3, 4, 0], [0, 2], n=2)] == [[3, 2], [3, 1]]
    np.testing.assert_allclose([c for _, c in nearest(space, [4], [0])[0]], [-1.0])
    assert nearest(space, [], [0, 1]) == [[], []]


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"user": "u0", "k": 0}, "k=0"),
    ({"user": "u0", "k": 41}, "k=41"),
    ({"user": "u0", "intent": "x", "alpha": 2}, "alpha=2"),
    ({"user": "u0", "intent": "  "}, "intent is empty"),
    ({"user": "u0", "items": ["i1"]}, "either user"),
    ({}, "nothing to recommend for"),
    ({"conversation": "User: hi"}, "collaborative-filtering"),
])
def test_recommend_bad_requests(alpharec, kwargs, match):
    with pytest.raises(lmrec.LmrecError, match=match):
        alpharec.recommend(**kwargs)


def test_intent_needs_an_alpharec_model(data):
    run = lmrec.fit("pop", data)
    with pytest.raises(lmrec.LmrecError, match="AlphaRec-family"):
        run.recommend(user="u0", intent="a comedy")
    with pytest.raises(lmrec.LmrecError, match="cannot score a user it was not trained on"):
        lmrec.fit("mf", data, TRAIN).recommend(items=["i1"])


def test_device_setting_is_checked(data):
    with pytest.raises(lmrec.LmrecError, match="device"):
        lmrec.fit("mf", data, {**TRAIN, "device": "gpu"})
    if not torch.cuda.is_available():
        with pytest.raises(lmrec.LmrecError, match="no CUDA GPU"):
            lmrec.fit("mf", data, {**TRAIN, "device": "cuda"})


def test_results_lost_after_training_need_no_retraining(data, tmp_path, monkeypatch):
    """A full disk when the results are written: the error names the file; --resume then trains nothing again."""
    import errno

    import lmrec.run.run as run_module  # where a run folder is written

    out = tmp_path / "mf"
    real = run_module.save_tensors

    def full_disk(path, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(run_module, "save_tensors", full_disk)
    with pytest.raises(OSError, match="No space left"):
        lmrec.fit("mf", data, TRAIN, out=out)
    assert read_manifest(out)["status"] == "training" and (out / "checkpoint.safetensors").exists()
    monkeypatch.setattr(run_module, "save_tensors", real)
    epochs_trained = []
    monkeypatch.setattr(lmrec.get_model("mf"), "batches",
                        lambda self, rng, size: epochs_trained.append(1) or iter(()))
    with clock.use(ManualClock()):  # no time passes in this process
        resumed = lmrec.fit("mf", data, TRAIN, out=out, resume=True)
    assert epochs_trained == [] and resumed.manifest["fit"]["resumed_at"] == 3
    # the seconds of the fit are those spent before the resume (the checkpoint's), not this process's none
    assert resumed.manifest["fit"]["seconds"] == resumed.log.seconds_before_resume > 0
    assert read_manifest(out)["status"] == "complete" and not (out / "checkpoint.safetensors").exists()


def test_a_model_that_does_not_train_takes_the_run_settings(tmp_path):
    """pop: the seed breaks its (many) ties, the device is checked, training settings are left aside (a comparison
    passes one set to every model); another seed in the same folder is another run."""
    data = planted_data()
    first = lmrec.fit("pop", data, {"seed": 1, "progress": False, "lr": 0.5}, out=tmp_path / "pop")
    assert first.manifest["eval_seed"] == 1 and first.manifest["train_config"] is None
    assert lmrec.fit("pop", data, {"seed": 1}).metrics == first.metrics
    assert lmrec.fit("pop", data).manifest["eval_seed"] == 2024  # the data seed, as before
    seeds = {json.dumps(lmrec.fit("pop", data, {"seed": seed}).metrics["test"]["ndcg@10"]) for seed in range(4)}
    assert len(seeds) > 1  # the tie-breaking follows the seed
    with pytest.raises(lmrec.LmrecError, match="resume it with the same settings"):
        lmrec.fit("pop", data, {"seed": 2}, out=tmp_path / "pop", resume=True)
    if not torch.cuda.is_available():
        with pytest.raises(lmrec.LmrecError, match="device='cuda': torch sees no CUDA GPU"):
            lmrec.fit("pop", data, {"device": "cuda"})


def test_empty_splits_are_errors_or_counted_notes_never_nan(tmp_path):
    from helpers import make_split

    empty_train = make_split([], [(0, 1)], [(0, 2)], 2, 5)
    with pytest.raises(lmrec.LmrecError, match="training split is empty"):
        lmrec.fit("pop", empty_train)
    no_test = make_split([(0, 1), (1, 2)], [(0, 3)], [(1, 4)], 3, 5)  # user 1's test item... and user 2 is cold
    cold_only = make_split([(0, 1), (1, 2)], [(0, 3)], [(2, 4)], 3, 5)
    run = lmrec.fit("pop", cold_only, out=tmp_path / "pop")
    assert set(run.metrics) == {"valid"}
    assert "no user has test items and training items" in run.manifest["evaluation"]["not_evaluated"]["test"]
    assert "NaN" not in (tmp_path / "pop" / "metrics.json").read_text()
    assert set(lmrec.fit("pop", no_test).metrics) == {"valid", "test"}
