"""Every registered model: learns the planted structure, saves and loads, recommends; model-specific checks."""

import dataclasses
import json

import numpy as np
import pytest
import scipy.sparse as sp
import torch

import lmrec
import lmrec.models.nn.lm_inputs as lm_inputs
from helpers import (  # noqa: F401
    N_ITEMS,
    all_scores,
    fit_specs,
    make_split,
    planted_data,
    planted_features,
    random_level,
    single_thread,
)
from lmrec.errors import EmbeddingError, LmrecError
from lmrec.eval.ranking import evaluate
from lmrec.models.base import get_model, list_models
from lmrec.models.cf.alpharec import AlphaRec, IntentScorer, LinearMap
from lmrec.models.cf.lightgcn import MF, LightGCN
from lmrec.models.cf.pop import Popularity
from lmrec.models.nn.lm_inputs import user_profiles, users_via_items
from lmrec.models.queries import KnownUsers, user_scorer
from lmrec.settings import SettingsError

BPR = dict(epochs=60, lr=0.05, eval_every=10, batch_size=256, progress=False)
NCE = dict(epochs=20, lr=0.01, eval_every=5, batch_size=256, progress=False)
RANDOM_FEATURES = np.random.default_rng(1).normal(size=(N_ITEMS, 24)).astype(np.float32)

# name -> (registered name, model factory, train config)
SPECS = {
    "pop": ("pop", lambda: Popularity(), None),
    "mf": ("mf", lambda: MF(emb_dim=16), BPR),
    "lightgcn": ("lightgcn", lambda: LightGCN(emb_dim=16), BPR),
    "alpharec": ("alpharec", lambda: AlphaRec(features=planted_features(), n_negatives=32), NCE),
    "alpharec-shared": ("alpharec", lambda: AlphaRec(features=planted_features(), n_negatives=32,
                                                     negatives="shared"), NCE),
    "alpharec-random-features": ("alpharec", lambda: AlphaRec(features=RANDOM_FEATURES, n_negatives=32), NCE),
    # wide features: many users per edge, so embed() takes the users through the items' first layer
    "alpharec-via-items": ("alpharec", lambda: AlphaRec(features=planted_features(dim=512), n_negatives=32), NCE),
    "linear_map": ("linear_map", lambda: LinearMap(features=planted_features(), n_negatives=32), NCE),
}
LEARNERS = ["pop", "mf", "lightgcn", "alpharec", "alpharec-shared", "alpharec-via-items", "linear_map"]


@pytest.fixture(scope="module")
def data():
    return planted_data()


@pytest.fixture(scope="module")
def runs(data, tmp_path_factory):
    """Each spec fitted once on the planted data, its run folder written."""
    return fit_specs(SPECS, data, tmp_path_factory.mktemp("runs"))


@pytest.fixture(scope="module")
def fitted(runs):
    """Each spec's fitted model."""
    return {key: run.model for key, run in runs.items()}



# -- registry ------------------------------------------------------------------------------------------------
def test_registry_lists_the_five_models():
    names = list_models("cf")
    assert {"alpharec", "lightgcn", "linear_map", "mf", "pop"} <= set(names) and names == sorted(names)
    assert get_model("lightgcn") is LightGCN and get_model("linear_map") is LinearMap
    assert get_model("pop", "cf") is Popularity
    for key, (name, make, _) in SPECS.items():
        assert isinstance(make(), get_model(name, "cf")) and make().name == name, key
    with pytest.raises(LmrecError, match="no_such_model.*alpharec"):
        get_model("no_such_model")


# -- learning ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("key", LEARNERS)
def test_model_beats_random_on_valid(key, fitted, data):
    result = evaluate(user_scorer(fitted[key].score), data, "valid", ks=(5,), metrics=("recall",))
    recall = result.summary()["recall@5"].mean
    chance = random_level(data, "valid", 5)  # ~0.135
    assert recall > chance + 0.08 and recall > 1.5 * chance, (key, recall, chance)


@pytest.mark.parametrize("key", list(SPECS))
def test_scores_shape_and_finite(key, fitted, data):
    scores = all_scores(fitted[key], data)
    assert scores.shape == (data.n_users, data.n_items)
    assert torch.isfinite(scores).all()
    sub = fitted[key].score(KnownUsers(np.array([4, 2])))
    torch.testing.assert_close(sub, scores[[4, 2]])


def test_alpharec_scores_are_cosines(fitted, data):
    for key in ("alpharec", "linear_map"):
        scores = all_scores(fitted[key], data)
        assert scores.abs().max() <= 1 + 1e-5


# -- persistence ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("key", list(SPECS))
def test_save_load_gives_identical_scores(key, runs, data):
    run = runs[key]
    assert (run.folder / "manifest.json").exists() and (run.folder / "model.safetensors").exists()
    loaded = lmrec.Run.load(run.folder, data=data).model
    assert type(loaded) is type(run.model) and loaded.config == run.model.config
    assert torch.equal(all_scores(loaded, data), all_scores(run.model, data))


def test_alpharec_features_travel_with_the_model(runs, data):
    loaded = lmrec.Run.load(runs["alpharec-random-features"].folder, data=data).model
    np.testing.assert_array_equal(loaded.features, RANDOM_FEATURES)


@pytest.mark.parametrize("key", ["pop", "mf", "alpharec"])
def test_load_on_different_data_raises(key, runs, data):
    other = planted_data(seed=1)
    assert other.checksum() != data.checksum()
    with pytest.raises(LmrecError, match="checksum"):
        lmrec.Run.load(runs[key].folder, data=other)


# -- recommend -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("key", ["pop", "mf", "lightgcn", "alpharec"])
def test_recommend_excludes_seen_and_never_minus_inf(key, fitted, data):
    model = fitted[key]
    run = lmrec.Run(model, data, {})
    for user in (0, 7, 29):
        seen = set(data.user_items(user).tolist())  # everything the user has, in any split
        recs = run.recommend(data.user_ids[user], k=data.n_items)
        items = [data.catalog.index(r.item_id) for r in recs]
        assert len(recs) == data.n_items - len(seen)  # the -inf (seen) entries are dropped
        assert not seen & set(items) and len(set(items)) == len(items)
        values = [r.score for r in recs]
        assert all(np.isfinite(values)) and values == sorted(values, reverse=True)
        scores = all_scores(model, data)[user]
        assert [r.score for r in run.recommend(data.user_ids[user], k=5)] == pytest.approx(values[:5], abs=1e-6)
        np.testing.assert_allclose([scores[i].item() for i in items], values, atol=1e-6)
        assert len(run.recommend(data.user_ids[user], k=data.n_items, exclude_seen=False)) == data.n_items


# -- popularity ----------------------------------------------------------------------------------------------
def test_popularity_counts_come_from_train_only():
    # item 9 is in every user's test (and item 8 in every valid), item 3 in two users' train
    train = [(0, 3), (1, 3), (2, 5)]
    valid = [(u, 8) for u in range(4)]
    test = [(u, 9) for u in range(4)]
    data = make_split(train, valid, test, 4, 25)
    model = Popularity()
    model.fit(data)
    scores = model.score(KnownUsers(np.arange(4)))
    assert scores[0, 3] == 2 and scores[0, 5] == 1 and scores[0, 9] == 0 and scores[0, 8] == 0
    assert (scores == scores[0]).all()  # one ranking for everyone
    run = lmrec.Run(model, data, {})
    assert [(r.item_id, r.score) for r in run.recommend("u2", k=1)] == [("i3", 2.0)]
    assert [r.item_id for r in run.recommend("u0", k=1)] == ["i5"]  # item 3 is user 0's own training item


# -- AlphaRec inputs -----------------------------------------------------------------------------------------
def test_user_features_are_mean_of_training_item_features():
    rng = np.random.default_rng(0)
    dense = (rng.random((5, 12)) < 0.4).astype(np.float32)
    dense[2] = 0  # a user without training items
    dense[4, :] = 0
    dense[4, 7] = 1  # a user with a single item
    items = rng.normal(size=(12, 6)).astype(np.float32)
    z = user_profiles(sp.csr_matrix(dense), items)
    assert z.shape == (5, 6) and z.dtype == np.float32
    for u in range(5):
        expected = items[dense[u] > 0].mean(axis=0) if dense[u].any() else np.zeros(6)
        np.testing.assert_allclose(z[u], expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(z[2], 0.0)
    np.testing.assert_allclose(z[4], items[7], rtol=1e-6)


def test_alpharec_user_inputs_use_train_only(data):
    model = AlphaRec(features=planted_features(), n_negatives=8)
    model.prepare(data)
    expected = user_profiles(data.train, planted_features())
    np.testing.assert_allclose(model.z_users.numpy(), expected)


@pytest.mark.parametrize("name, settings", [("alpharec", {"mapping": "mlp", "n_negatives": 8}),
                                            ("alpharec", {"mapping": "linear", "n_negatives": 8}),
                                            ("kar", {}), ("rlmrec", {})])
def test_users_layers_through_the_items_equal_the_dense_ones(name, settings, data, monkeypatch):
    """Every LM-input model's users' affine layers on the items only (users_affine, many users per edge): the same
    loss and gradients as the dense layers over z_users = P z_items, users without training items (z_u = 0: the
    bias alone) included."""
    train = data.train.tolil()
    train[3, :] = 0  # a user without training items
    data = dataclasses.replace(data, train=train.tocsr())
    model = get_model(name, "cf")(features=planted_features(), **settings)
    model.prepare(data, seed=0)
    assert not data.train[3].nnz and model.z_users[3].abs().sum() == 0
    for module in model.net.modules():  # nonzero biases (the default zero would hide a missing one)
        if isinstance(module, torch.nn.Linear) and module.bias is not None:
            torch.nn.init.normal_(module.bias)
    batch = next(iter(model.batches(np.random.default_rng(0), 64)))
    products = []
    sparse_product = lm_inputs.sparse_product
    monkeypatch.setattr(lm_inputs, "sparse_product", lambda *args: products.append(1) or sparse_product(*args))

    def loss_and_grads(via_items: bool):
        model.users_via_items = via_items
        model.net.zero_grad()
        torch.manual_seed(0)  # XSimGCL's noise (KAR, RLMRec) the same both ways
        loss = model.loss(batch)
        users = model.embed()[0]  # every user's vector, user 3 included
        (loss + (users * torch.arange(users.numel()).reshape(users.shape).sin()).sum()).backward()
        return loss.detach(), users.detach(), [p.grad.clone() for p in model.net.parameters() if p.grad is not None]

    # the affine layers that read z_users, compared alone too: KAR's final vectors leave out layer 0, so an
    # isolated user's input layers reach neither its vector nor the loss
    layers = {"alpharec": lambda: [model.net.first_and_rest()[0]], "kar": lambda: model.net.adaptor.input_layers(0),
              "rlmrec": lambda: [model.net.mlp[0]]}[name]()
    with torch.no_grad():
        outputs = {}
        for via_items in (True, False):
            model.users_via_items = via_items
            outputs[via_items] = torch.cat(model.users_affine(layers), dim=1)
    torch.testing.assert_close(outputs[True], outputs[False], rtol=1e-5, atol=1e-5)
    fast = loss_and_grads(True)
    assert products  # the items' route took the sparse product
    products.clear()
    dense = loss_and_grads(False)
    assert not products
    for a, b in zip(fast[:2], dense[:2], strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    assert len(fast[2]) == len(dense[2])
    for a, b in zip(fast[2], dense[2], strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_users_via_items_rule():
    """Amazon Games and Industrial (many users per edge) through the items, MovieLens-sized data dense; the line
    moves with the edges per user, and not with the precision (a run loads on the route it trained on)."""
    games = dict(n_users=50546, n_items=16859, nnz=173545, d=384)
    industrial = dict(n_users=8317, n_items=24000, nnz=22824, d=384)
    ml1m = dict(n_users=6040, n_items=3260, nnz=501938, d=384)
    ml100k = dict(n_users=943, n_items=1682, nnz=40000, d=384)
    assert users_via_items(**games) and users_via_items(**industrial)
    assert not users_via_items(**ml1m) and not users_via_items(**ml100k)
    wide = dict(n_users=50546, n_items=16859, nnz=400000, d=384)
    assert users_via_items(**wide) and not users_via_items(**{**wide, "nnz": 1_000_000})
    # a model that does not compute the items' layer anyway (KAR, RLMRec) pays for it: ML-1M-sized wide data
    # goes through the items only when they are
    mid = dict(n_users=20000, n_items=16000, nnz=150000, d=384)
    assert users_via_items(**mid) and not users_via_items(**mid, items_at_hand=False)
    assert users_via_items(**games, items_at_hand=False)
    assert users_via_items(n_users=8317, n_items=4344, nnz=22824, d=384, items_at_hand=False)  # Industrial


def test_alpharec_takes_the_items_route_with_many_users_per_edge(fitted):
    """Wide (512-d) features on the planted data: embed() takes the items' route; the intent scorer, which maps
    z_u through the MLP directly, gives the same user vectors (α = 0: nothing mixed in)."""
    model = fitted["alpharec-via-items"]
    assert model.users_via_items and not fitted["alpharec"].users_via_items
    model.set_training(False)
    with torch.no_grad():
        users, _ = model.embed()
    scorer = IntentScorer(model)
    for u in (0, 3, 7):
        torch.testing.assert_close(scorer.user_vector(u, torch.zeros(model.config.emb_dim), 0.0), users[u],
                                   rtol=1e-4, atol=1e-5)


def test_alpharec_nan_features_name_the_item(data):
    features = planted_features()
    features[17, 3] = np.nan
    with pytest.raises(EmbeddingError, match="'i17'"):
        AlphaRec(features=features).fit(data, dict(NCE, epochs=1))
    features = planted_features()
    features[5, 0] = np.inf
    with pytest.raises(EmbeddingError, match="'i5'"):
        AlphaRec(features=features).fit(data, dict(NCE, epochs=1))


@pytest.mark.parametrize("shape", [(N_ITEMS - 1, 16), (N_ITEMS + 1, 16), (N_ITEMS,)])
def test_alpharec_wrong_feature_shape(shape, data):
    with pytest.raises(EmbeddingError, match=str(N_ITEMS)):
        AlphaRec(features=np.zeros(shape, np.float32)).fit(data, dict(NCE, epochs=1))


def test_linear_map_is_a_bias_free_linear_map_without_graph(fitted):
    model = fitted["linear_map"]
    assert model.config.mapping == "linear" and model.config.n_layers == 0
    layers = list(model.net.modules())
    linears = [m for m in layers if isinstance(m, torch.nn.Linear)]
    assert len(linears) == 1 and linears[0].bias is None and linears[0].out_features == model.config.emb_dim
    # score = cos(W z_u, W z_i)
    w = linears[0].weight.detach()
    u = torch.nn.functional.normalize(model.z_users @ w.T, dim=-1)
    i = torch.nn.functional.normalize(model.z_items @ w.T, dim=-1)
    torch.testing.assert_close(model.score(KnownUsers(np.arange(5))), (u @ i.T)[:5])


def test_alpharec_mlp_width_rule():
    from lmrec.models.cf.alpharec import AlphaRecConfig, _Mapper

    def hidden(dim, **kw):
        return _Mapper(dim, AlphaRecConfig(**kw)).f[0].out_features

    assert hidden(768) == 8 * 768 and hidden(3072) == 1536 and hidden(384) == 768
    assert hidden(384, mlp_ratio=0.5) == 192
    with pytest.raises(SettingsError, match="mapping"):
        AlphaRec(mapping="conv")


def test_mf_scores_are_dot_products_of_its_embeddings(fitted, data):
    model = fitted["mf"]
    expected = model.net.users.detach() @ model.net.items.detach().T
    torch.testing.assert_close(all_scores(model, data), expected)


def test_lightgcn_loss_uses_training_pairs_and_decreases(data):
    model = LightGCN(emb_dim=8)
    log = model.fit(data, dict(BPR, epochs=30, eval_every=30))
    losses = [r.loss for r in log.records]
    assert losses[-1] < losses[0] < np.log(2) + 0.01  # BPR starts near log 2 with small init


@pytest.mark.parametrize("mode", ["per_row", "shared"])
def test_alpharec_negative_batches(mode, data):
    model = AlphaRec(features=planted_features(), n_negatives=16, negatives=mode)
    model.prepare(data)
    batches = list(model.batches(np.random.default_rng(0), 64))
    assert len(batches) == round(data.train.nnz / 64)
    users, pos, neg, keep = (t.numpy() if t is not None else None for t in batches[0])
    train = data.train.toarray() > 0
    assert train[users, pos].all()  # positives are training pairs
    if mode == "per_row":
        assert keep is None and neg.shape == (64, 16)
        assert not train[users[:, None], neg].any()  # each row's own unseen items
    else:
        assert neg.shape == (16,) and keep.shape == (64, 16)
        np.testing.assert_array_equal(keep, ~train[users][:, neg])  # a user's own items are masked out
    loss = model.loss(tuple(torch.from_numpy(a) if a is not None else None for a in (users, pos, neg, keep)))
    assert torch.isfinite(loss) and loss.requires_grad


def test_load_names_unknown_saved_settings(data, tmp_path):
    folder = tmp_path / "run"
    lmrec.fit(MF(emb_dim=8), data, dict(epochs=1, eval_every=1, progress=False), out=folder)
    path = folder / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest["model_config"]["retired_setting"] = 1
    path.write_text(json.dumps(manifest))
    with pytest.raises(LmrecError, match="retired_setting"):
        lmrec.Run.load(folder, data=data)


def test_alpharec_intent_with_features_its_encoder_did_not_make_is_a_clear_error(fitted):
    """Planted 16-d features, MiniLM (384-d) as the encoder: the intention cannot be mapped; say so, not a 500."""
    with pytest.raises(LmrecError, match="16-d.*'minilm' gives 384-d"):
        fitted["alpharec"].score(KnownUsers(np.array([0]), intent="something dark and tense"))
