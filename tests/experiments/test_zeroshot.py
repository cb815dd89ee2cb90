"""Zero-shot transfer: the mixed union, in-domain negatives, per-source validation, the zero-shot scorer and
the ``lmrec zeroshot`` command, on planted data with injected features (no LM is loaded)."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from helpers import N_ITEMS, N_USERS, planted_data, planted_features, random_level, single_thread  # noqa: F401
from lmrec import cli
from lmrec.errors import LmrecError
from lmrec.eval.ranking import evaluate
from lmrec.experiments import zeroshot as Z
from lmrec.models.nn.lm_inputs import user_profiles
from lmrec.models.queries import KnownUsers
from lmrec.train import TrainConfig

FAST = {"epochs": 6, "eval_every": 2, "patience": 5, "batch_size": 64, "lr": 1e-2, "progress": False}


@pytest.fixture(scope="module")
def mixed() -> Z.MixedData:
    return Z.mix_datasets([planted_data(0, name="a"), planted_data(1, name="b")])


@pytest.fixture(scope="module")
def fitted(mixed):
    model = Z.MixedAlphaRec(mixed, features=np.concatenate([planted_features()] * 2), n_negatives=16)
    log = Z.fit_mixed(model, TrainConfig(**FAST))
    return model, log


def test_union_has_disjoint_ranges_and_block_diagonal_splits(mixed):
    data = mixed.data
    assert (data.n_users, data.n_items) == (2 * N_USERS, 2 * N_ITEMS)
    assert mixed.user_offsets.tolist() == [0, N_USERS, 2 * N_USERS]
    assert mixed.item_offsets.tolist() == [0, N_ITEMS, 2 * N_ITEMS]
    for split in ("train", "valid", "test"):
        m = data.split(split).tocoo()
        assert (mixed.user_domain[m.row] == mixed.item_domain[m.col]).all()
        for s, source in enumerate(mixed.sources):
            block = data.split(split)[s * N_USERS:(s + 1) * N_USERS, s * N_ITEMS:(s + 1) * N_ITEMS]
            assert (block != source.split(split)).nnz == 0
    assert data.catalog.ids[0] == "a:i0" and data.catalog.ids[N_ITEMS] == "b:i0"
    assert data.user_ids[N_USERS] == "b:u0"
    assert data.catalog.titles == mixed.sources[0].catalog.titles + mixed.sources[1].catalog.titles


def test_mix_rejects_duplicate_or_no_sources():
    with pytest.raises(ValueError, match="distinct"):
        Z.mix_datasets([planted_data(0, name="a"), planted_data(1, name="a")])
    with pytest.raises(ValueError, match="at least one"):
        Z.mix_datasets([])


@pytest.mark.parametrize("mode", ["shared", "per_row"])
def test_negatives_stay_in_the_users_domain(mixed, mode):
    model = Z.MixedAlphaRec(mixed, features=np.concatenate([planted_features()] * 2), n_negatives=16,
                            negatives=mode)
    model.prepare(mixed.data)
    rng = np.random.default_rng(0)
    for users, _, neg, keep in model.batches(rng, 50):
        d = mixed.user_domain[users.numpy()]
        if mode == "shared":
            # one set per domain; a row keeps only its own domain's unseen items
            assert keep.shape == (len(users), 2 * 16)
            allowed = mixed.item_domain[neg.numpy()][None, :] == d[:, None]
            assert not (keep.numpy() & ~allowed).any()
            assert keep.numpy()[allowed].mean() > 0.5
            seen = model.sampler.seen(users.numpy(), np.broadcast_to(neg.numpy(), keep.shape))
            assert not (keep.numpy() & seen).any()
        else:
            assert keep is None
            assert (mixed.item_domain[neg.numpy()] == d[:, None]).all()
            assert not model.sampler.seen(users.numpy(), neg.numpy()).any()


def test_validation_is_the_unweighted_mean_of_per_source_values(fitted, mixed):
    model, log = fitted
    values = Z.mixed_validation(model, mixed)
    for s, source in enumerate(mixed.sources):
        own = evaluate(lambda u, s=s: model.score(KnownUsers(u + s * N_USERS))[:, s * N_ITEMS:(s + 1) * N_ITEMS],
                       source,
                       "valid", metrics=("recall",)).summary()["recall@20"].mean
        assert values[f"{source.name}/recall@20"] == pytest.approx(own)
    assert values["recall@20"] == pytest.approx((values["a/recall@20"] + values["b/recall@20"]) / 2)
    assert log.best_epoch in (2, 4, 6)
    assert log.best_score == pytest.approx(max(r.valid["recall@20"] for r in log.records if r.valid))


def test_mixed_training_learns_each_source(fitted, mixed):
    model, _ = fitted
    values = Z.mixed_validation(model, mixed, ks=(5,))
    for source in mixed.sources:
        assert values[f"{source.name}/recall@5"] > 2 * random_level(source, "valid", 5)


def test_zero_shot_scorer_uses_the_frozen_model_on_the_target_graph(fitted):
    model, _ = fitted
    target = planted_data(2, name="c")
    before = {k: v.clone() for k, v in model.state().items()}
    scorer = Z.zero_shot_scorer(model, target, planted_features())
    assert all(torch.equal(before[k], v) for k, v in model.state().items())
    users = np.arange(target.n_users)
    scores = scorer(users)
    assert scores.shape == (target.n_users, target.n_items)
    # same as AlphaRec's own representation of the target inputs: z_u = mean of TRAINING item features
    z_items = torch.from_numpy(planted_features())
    z_users = torch.from_numpy(user_profiles(target.train, planted_features()))
    from lmrec.models.nn.graph import normalized_adjacency

    u, i = model.represent(z_users, z_items, normalized_adjacency(target.train))
    torch.testing.assert_close(scores, (u @ i.T).detach())
    recall = evaluate(scorer, target, "test").summary()["recall@20"].mean
    assert recall > 1.5 * random_level(target, "test", 20)


def test_zero_shot_scorer_checks_feature_rows(fitted):
    with pytest.raises(ValueError, match="rows"):
        Z.zero_shot_scorer(fitted[0], planted_data(2), planted_features()[:10])


def test_random_scorer_is_at_random_level():
    target = planted_data(2)
    recalls = [evaluate(Z.random_scorer(N_ITEMS, seed), target, "test").summary()["recall@20"].mean
               for seed in range(5)]
    assert np.mean(recalls) == pytest.approx(random_level(target, "test", 20), abs=0.06)


def _features(data, config):
    return planted_features()


def test_titles_in_sources_counts_target_titles_any_source_has_after_normalizing():
    catalog = lambda *titles: SimpleNamespace(catalog=SimpleNamespace(titles=list(titles)))  # noqa: E731
    sources = [catalog("Heat (1995)", "Jaws"), catalog("Toy Story (1995)")]
    # case, punctuation and a trailing year do not matter: "Toy Story" (a game) meets "Toy Story (1995)"
    assert Z.titles_in_sources(sources, catalog("heat 1995", "JAWS!", "Alien", "Toy Story")) == 3
    assert Z.titles_in_sources(sources, catalog("Fire Emblem", "Mega Man")) == 0


def test_run_zeroshot_writes_metrics_and_comparison(tmp_path):
    sources = [planted_data(0, name="a"), planted_data(1, name="b")]
    target = planted_data(2, name="c")
    out = tmp_path / "zs"
    comparison = Z.run_zeroshot(sources, target, out, FAST, {"n_negatives": 16},
                                {"epochs": 4, "eval_every": 2, "batch_size": 64}, features=_features)
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics) == {"valid", "test"}
    assert metrics["test"]["recall@20"]["n"] == target.stats()["users_with_test"]
    assert metrics["test"] == comparison["rows"]["AlphaRec zero-shot"]
    names = list(comparison["rows"])
    assert names[:3] == ["AlphaRec zero-shot", "Pop (target train)", "Random"] and names[3].startswith("LightGCN")
    text = (out / "comparison.md").read_text(encoding="utf-8")
    assert "a + b -> c" in text and "±" in text and "LightGCN" in text
    shared = comparison["target"]["titles_in_sources"]  # the planted sets share their titles
    assert shared == N_ITEMS and f"{shared} of its {N_ITEMS} item titles (100%) are also titles of source items" in text
    training = comparison["training"]  # both trainings in the table's "best / run" form, † when best is last
    assert f"best / run {training['best_epoch']} / {training['epochs_run']}" in text
    assert (" †" in text.split("\n")[2]) == (not training["converged"])
    lightgcn = comparison["lightgcn_fit"]
    assert f"patience 20 (selection on valid recall@20); best / run {lightgcn['best_epoch']} / 4" in text
    config = json.loads((out / "experiment.json").read_text())
    assert config["target"]["dataset"] == "c" and len(config["sources"]) == 2
    assert not (out / "config.json").exists() and not (out / "model.pt").exists()
    assert (out / "model.safetensors").exists() and (out / "log.jsonl").exists()
    assert (out / "lightgcn" / "metrics.json").exists() and (out / "lightgcn" / "manifest.json").exists()
    with pytest.raises(ValueError, match="unseen"):
        Z.run_zeroshot([target], target, tmp_path / "x", FAST, features=_features)


def test_transfers_from_the_same_sources_train_the_mixed_model_once(tmp_path, monkeypatch):
    """A mixed folder keeps the mixed training's finished checkpoint: a second target from the same sources gets
    the same model (its best state) without a training step."""
    from lmrec.tensorfile import load_tensors

    sources = [planted_data(0, name="a"), planted_data(1, name="b")]
    lightgcn = {"epochs": 2, "eval_every": 1, "batch_size": 64}
    mixed = tmp_path / "mixed"
    first = Z.run_zeroshot(sources, planted_data(2, name="c"), tmp_path / "c", FAST, {"n_negatives": 16}, lightgcn,
                           features=_features, mixed_folder=mixed)
    assert (mixed / "log.jsonl").exists() and not (tmp_path / "c" / "log.jsonl").exists()
    monkeypatch.setattr(Z.MixedAlphaRec, "loss", lambda *a: pytest.fail("the mixed model was trained again"))
    second = Z.run_zeroshot(sources, planted_data(3, name="d"), tmp_path / "d", FAST, {"n_negatives": 16}, lightgcn,
                            features=_features, mixed_folder=mixed)
    untimed = lambda training: {k: v for k, v in training.items() if "seconds" not in k}  # noqa: E731
    assert untimed(second["training"]) == untimed(first["training"])
    weights = [load_tensors(tmp_path / t / "model.safetensors")[0] for t in ("c", "d")]
    assert weights[0].keys() == weights[1].keys()
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])


ZEROSHOT_TABLE = """title = "Zero-shot"
experiment = "zeroshot"
[run]
train = { epochs = 4, eval_every = 2, batch_size = 64, lr = 1e-2 }
set = { n_negatives = 16 }
lightgcn = { epochs = 2, eval_every = 1, batch_size = 64 }
transfers = [{ train = ["p"], target = "q" }, { train = ["p"], target = "r" }]
"""


def test_reproduce_trains_one_mixed_model_for_the_transfers_from_the_same_sources(tmp_path, monkeypatch):
    from lmrec.data.registry import DataRef
    from lmrec.experiments import reproduce

    datasets = {name: planted_data(k, name=name) for k, name in enumerate("pqr")}
    monkeypatch.setattr(DataRef, "load", lambda self: datasets[self.dataset])
    monkeypatch.setattr(Z, "lm_features", _features)
    trained: list[Z.MixedAlphaRec] = []  # the models that took a step, kept alive (an id could be reused)
    loss = Z.MixedAlphaRec.loss

    def counted(self, batch):
        if not any(m is self for m in trained):
            trained.append(self)
        return loss(self, batch)

    monkeypatch.setattr(Z.MixedAlphaRec, "loss", counted)
    (tmp_path / "configs" / "alpharec").mkdir(parents=True)
    (tmp_path / "configs" / "alpharec" / "01-zeroshot.toml").write_text(ZEROSHOT_TABLE)
    out = tmp_path / "out"
    reproduce.reproduce("alpharec", tmp_path / "configs", out, log=lambda _: None)
    assert len(trained) == 1  # the second transfer's model took the first one's finished training
    folder = out / "01-zeroshot"
    assert sorted(p.name for p in folder.iterdir() if p.is_dir()) == ["mixed-p", "q-from-p", "r-from-p"]
    report = (out / "report" / "report.md").read_text(encoding="utf-8")
    assert "p -> q" in report and "p -> r" in report
    (tmp_path / "configs" / "alpharec" / "01-zeroshot.toml").write_text(ZEROSHOT_TABLE.replace(
        'transfers = [{ train = ["p"], target = "q" }, ', "seed = 7\ntransfers = [").replace(
        '"r" }]', '"r" }]\n'))
    with pytest.raises(LmrecError, match="mixed-p was made with other settings"):  # not a model of other settings
        reproduce.reproduce("alpharec", tmp_path / "configs", out, log=lambda _: None)


def test_cli_zeroshot(tmp_path, monkeypatch, capsys):
    datasets = {"a": planted_data(0, name="a"), "b": planted_data(1, name="b"), "c": planted_data(2, name="c")}
    monkeypatch.setattr(Z.DataRef, "load", lambda self: datasets[self.dataset])
    monkeypatch.setattr(Z, "lm_features", _features)
    code = cli.main(["zeroshot", "--train", "a,b", "--target", "c", "--out", str(tmp_path / "run"), "--epochs", "4",
                     "--eval-every", "2", "--lightgcn-epochs", "4", "--n-negatives", "16", "--batch-size",
                     "64", "--no-progress"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "AlphaRec zero-shot" in printed and "Random" in printed
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["test"]["recall@20"]["n"] > 0
