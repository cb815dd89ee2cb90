"""The AlphaRec paper's remaining CF baselines: MultVAE, SGL, XSimGCL, BC Loss, KAR, RLMRec.

Each learns the planted structure, saves and loads, is registered; plus model-specific checks.
"""

import math

import numpy as np
import pytest
import scipy.sparse as sp
import torch

import lmrec
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
from lmrec.errors import EmptyUserError
from lmrec.eval.ranking import evaluate
from lmrec.models.base import get_model, list_models
from lmrec.models.cf.bc_loss import BCLoss, popularity_index
from lmrec.models.cf.kar import KAR
from lmrec.models.cf.lightgcn import LightGCN
from lmrec.models.cf.multvae import MultVAE
from lmrec.models.cf.rlmrec import RLMRec
from lmrec.models.cf.sgl import SGL
from lmrec.models.cf.xsimgcl import XSimGCL
from lmrec.models.nn.augment import edge_dropout, propagate_layers, uniform_noise
from lmrec.models.nn.contrastive import view_info_nce
from lmrec.models.nn.graph import normalized_adjacency, propagate
from lmrec.models.nn.lm_inputs import user_profiles
from lmrec.models.queries import KnownUsers, user_scorer
from lmrec.settings import SettingsError

BPR = dict(epochs=30, lr=0.05, eval_every=10, batch_size=256, progress=False)
VAE = dict(epochs=60, lr=0.01, eval_every=10, batch_size=16, progress=False)
RANDOM_FEATURES = np.random.default_rng(1).normal(size=(N_ITEMS, 24)).astype(np.float32)

# key -> (registered name, model factory, train config)
SPECS = {
    "multvae": ("multvae", lambda: MultVAE(), VAE),
    "sgl": ("sgl", lambda: SGL(emb_dim=16), BPR),
    "sgl-all": ("sgl", lambda: SGL(emb_dim=16, ssl_negatives="all", n_layers=2), dict(BPR, epochs=10)),
    "xsimgcl": ("xsimgcl", lambda: XSimGCL(emb_dim=16), BPR),
    # τ₁ = 0.07 (the default) overfits 30 users within a few epochs; a softer τ₁ keeps the check robust
    "bc_loss": ("bc_loss", lambda: BCLoss(emb_dim=16, n_negatives=16, tau1=0.2), dict(BPR, lr=0.02)),
    "kar": ("kar", lambda: KAR(emb_dim=16, features=planted_features()), BPR),
    "rlmrec": ("rlmrec", lambda: RLMRec(emb_dim=16, features=RANDOM_FEATURES), BPR),
}
LEARNERS = ["multvae", "sgl", "xsimgcl", "bc_loss", "kar", "rlmrec"]


@pytest.fixture(scope="module")
def data():
    return planted_data()


@pytest.fixture(scope="module")
def runs(data, tmp_path_factory):
    """Each spec fitted once on the planted data, its run folder written."""
    return fit_specs(SPECS, data, tmp_path_factory.mktemp("runs"))


@pytest.fixture(scope="module")
def fitted(runs):
    return {key: run.model for key, run in runs.items()}



# -- registry, learning, persistence -------------------------------------------------------------------------
def test_baselines_are_registered():
    names = list_models()
    for key, (name, make, _) in SPECS.items():
        assert name in names, key
        assert isinstance(make(), get_model(name)) and make().name == name
        assert get_model(name).__doc__.strip()  # `lmrec models` prints the first line


@pytest.mark.parametrize("key", LEARNERS)
def test_baseline_beats_random_on_valid(key, fitted, data):
    recall = evaluate(user_scorer(fitted[key].score), data, "valid", ks=(5,),
                      metrics=("recall",)).summary()["recall@5"].mean
    chance = random_level(data, "valid", 5)  # ~0.135
    assert recall > chance + 0.08 and recall > 1.5 * chance, (key, recall, chance)


@pytest.mark.parametrize("key", list(SPECS))
def test_scores_shape_and_finite(key, fitted, data):
    scores = all_scores(fitted[key], data)
    assert scores.shape == (data.n_users, data.n_items) and torch.isfinite(scores).all()
    torch.testing.assert_close(fitted[key].score(KnownUsers(np.array([4, 2]))), scores[[4, 2]])


@pytest.mark.parametrize("key", list(SPECS))
def test_save_load_gives_identical_scores(key, runs, data):
    run = runs[key]
    assert (run.folder / "manifest.json").exists() and (run.folder / "model.safetensors").exists()
    loaded = lmrec.Run.load(run.folder, data=data).model
    assert type(loaded) is type(run.model) and loaded.config == run.model.config
    assert torch.equal(all_scores(loaded, data), all_scores(run.model, data))


@pytest.mark.parametrize("key", ["kar", "rlmrec"])
def test_lm_features_travel_with_the_model(key, runs, data):
    loaded = lmrec.Run.load(runs[key].folder, data=data).model
    np.testing.assert_array_equal(loaded.features, runs[key].model.features)


# -- shared pieces -------------------------------------------------------------------------------------------
def test_edge_dropout_keeps_a_subset_of_training_edges(data):
    view = edge_dropout(data.train, 0.1, np.random.default_rng(0))
    assert view.shape == data.train.shape and view.nnz == int(data.train.nnz * 0.9)
    assert (view.multiply(data.train) != view).nnz == 0  # every kept edge is a training edge
    assert set(np.unique(view.data)) == {1.0}
    other = edge_dropout(data.train, 0.1, np.random.default_rng(1))
    assert (view != other).nnz > 0
    with pytest.raises(ValueError, match="ratio"):
        edge_dropout(data.train, 1.0, np.random.default_rng(0))


def test_view_info_nce_formula():
    gen = torch.Generator().manual_seed(0)
    a, p, c = (torch.randn(5, 4, generator=gen) for _ in range(3))
    c = torch.cat([p, c])
    norm = torch.nn.functional.normalize
    order = torch.randperm(10, generator=gen)
    for candidates, targets in ((p, None), (c[order], torch.argsort(order)[:5])):  # p's rows, then shuffled in c
        logits = norm(a, dim=-1) @ norm(candidates, dim=-1).T / 0.2
        pos = (norm(a, dim=-1) * norm(p, dim=-1)).sum(-1) / 0.2
        expected = (torch.logsumexp(logits, 1) - pos).mean()
        torch.testing.assert_close(view_info_nce(a, candidates, 0.2, targets), expected)
    # in-batch: identical views with orthogonal rows give the minimum, log(1 + (b-1)·e^0/e^{1/τ})
    eye = torch.eye(4)
    torch.testing.assert_close(view_info_nce(eye, eye, 0.5), torch.tensor(math.log(1 + 3 * math.exp(-2.0))))


@pytest.mark.parametrize("tau", [0.2, 0.01])  # one shift for every row; below τ 0.025 each row's own maximum
def test_view_info_nce_gradients_match_autograd_of_the_formula(tau):
    gen = torch.Generator().manual_seed(1)
    a = torch.randn(6, 5, dtype=torch.float64, generator=gen, requires_grad=True)
    c = torch.randn(9, 5, dtype=torch.float64, generator=gen, requires_grad=True)
    targets = torch.tensor([0, 3, 3, 8, 1, 3])  # a candidate that is several rows' positive
    ours = torch.autograd.grad(view_info_nce(a, c, tau, targets), (a, c))
    norm = torch.nn.functional.normalize
    logits = norm(a, dim=-1) @ norm(c, dim=-1).T / tau
    expected = torch.autograd.grad(torch.nn.functional.cross_entropy(logits, targets), (a, c))
    for got, want in zip(ours, expected):
        torch.testing.assert_close(got, want)
    assert torch.autograd.gradcheck(lambda x, y: view_info_nce(x, y, tau, targets), (a, c))


def test_view_info_nce_runs_in_float32_under_autocast():
    """Inside a bf16 autocast region (a model's dense products) the loss and its gradients are float32's."""
    gen = torch.Generator().manual_seed(2)
    a, c = (torch.randn(7, 4, generator=gen, requires_grad=True) for _ in range(2))
    expected = view_info_nce(a, c, 0.2)
    expected_grads = torch.autograd.grad(expected, (a, c))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = view_info_nce(a.to(torch.bfloat16), c, 0.2)
        grads = torch.autograd.grad(loss, (a, c))
    assert loss.dtype == torch.float32 and all(g.dtype == torch.float32 for g in grads)
    torch.testing.assert_close(loss, expected, rtol=1e-2, atol=1e-2)  # a's bf16 copy rounds the input
    for got, want in zip(grads, expected_grads, strict=True):
        torch.testing.assert_close(got, want, rtol=5e-2, atol=5e-2)


def test_uniform_noise_has_norm_eps_and_sign_of_x():
    x = torch.randn(50, 8)
    noise = uniform_noise(x, 0.2)
    torch.testing.assert_close(noise.norm(dim=1), torch.full((50,), 0.2))
    assert ((noise * x) >= 0).all()


def test_propagate_layers_without_noise_matches_lightgcn(data):
    adj = normalized_adjacency(data.train)
    x = torch.randn(data.n_users + data.n_items, 6)
    layers = propagate_layers(adj, x, 2)
    torch.testing.assert_close(torch.stack([x, *layers]).mean(0), propagate(adj, x, 2))


# -- MultVAE -------------------------------------------------------------------------------------------------
def test_multvae_scores_are_decoder_logits_of_the_training_row(fitted, data):
    model = fitted["multvae"]
    net = model.net
    x = torch.from_numpy(data.train.toarray())
    with torch.no_grad():
        mu, _ = net.encode(net.enc_in(torch.nn.functional.normalize(x, dim=1)))
        logits = net.dec_out(net.decoder_hidden(mu))
    torch.testing.assert_close(all_scores(model, data), logits, rtol=1e-4, atol=1e-5)


def test_multvae_user_with_empty_training_row(data):
    train = data.train.tolil()
    train.rows[3], train.data[3] = [], []
    split = make_split(sp.csr_matrix(train).toarray(), data.valid.toarray(), data.test.toarray(),
                       data.n_users, data.n_items)
    model = MultVAE(hidden=32, latent=8)
    model.fit(split, dict(VAE, epochs=2, eval_every=1))
    scores = all_scores(model, split)
    assert torch.isfinite(scores).all()
    # a user without training interactions gets a clear error from the Run API (the model knows nothing of them)
    with pytest.raises(EmptyUserError, match="no training interactions"):
        lmrec.Run(model, split, {}).recommend(split.user_ids[3], k=5)


def test_multvae_loss_over_sparse_rows_is_the_dense_form(data):
    """The loss over the batch's sparse rows: the dense −mean_u Σ_i x_ui log π_ui + β·KL with π from
    W₄ tanh(W₃μ + b₃) + b₄ and μ from W₁ (x_u/‖x_u‖) + b₁, in value and in every gradient (no dropout, z = μ)."""
    model = MultVAE(hidden=16, latent=4, dropout=0.0, total_anneal_steps=10)
    model.prepare(data, seed=0)
    model.set_training(False)  # z = μ: nothing drawn
    model.net.updates += 3  # β = 0.3 capped at 0.2: the KL term counts
    users = torch.tensor([0, 5, 2, 11, 7])
    net = model.net
    model.net.zero_grad()
    model.loss(users).backward()
    sparse = {name: p.grad.clone() for name, p in net.named_parameters()}
    x = torch.from_numpy(data.train[users.numpy()].toarray())
    mu, logvar = net.encode(net.enc_in(torch.nn.functional.normalize(x, dim=1)))
    log_pi = torch.log_softmax(net.dec_out(net.decoder_hidden(mu)), dim=1)
    kl = -0.5 * (1 + logvar - mu.pow(2) - logvar.exp()).sum(dim=1).mean()
    dense = -(log_pi * x).sum(dim=1).mean() + 0.2 * kl
    model.net.zero_grad()
    dense.backward()
    torch.testing.assert_close(model.loss(users), dense.detach())
    for name, p in net.named_parameters():
        torch.testing.assert_close(sparse[name], p.grad, rtol=1e-5, atol=1e-6, msg=name)


def test_multvae_dropout_keeps_or_scales_each_training_item(data):
    """x̃ = dropout(x/‖x‖) on the rows' items: each is 0 or (x/‖x‖)/(1 − p), about 1 − p of them kept; the
    transpose holds the same values."""
    model = MultVAE(hidden=16, latent=4, dropout=0.5)
    model.prepare(data, seed=0)
    model.set_training(True)
    rows = data.train[np.arange(20)]
    torch.manual_seed(0)
    row_of = np.repeat(np.arange(20), np.diff(rows.indptr))
    m, m_t = model._input_rows(rows, row_of, model.row_scale[:20])
    normalized = torch.nn.functional.normalize(torch.from_numpy(rows.toarray()), dim=1)
    got = m.to_dense()
    assert torch.equal(got, m_t.to_dense().T)
    kept = got[normalized > 0] != 0
    torch.testing.assert_close(got[normalized > 0][kept], 2 * normalized[normalized > 0][kept])
    assert got[normalized == 0].abs().sum() == 0 and 0.3 < kept.float().mean() < 0.7
    model.set_training(False)
    torch.testing.assert_close(model._input_rows(rows, row_of, model.row_scale[:20])[0].to_dense(), normalized)


def test_multvae_kl_annealing(data):
    model = MultVAE(hidden=16, latent=4, total_anneal_steps=10, anneal_cap=0.2)
    model.fit(data, dict(VAE, epochs=3, eval_every=3))  # 2 batches per epoch -> 6 updates
    assert int(model.net.updates) == 6 and model.beta() == pytest.approx(0.2)
    model = MultVAE(hidden=16, latent=4, total_anneal_steps=100)
    model.fit(data, dict(VAE, epochs=3, eval_every=3))
    assert model.beta() == pytest.approx(0.06)
    assert MultVAE.Config().anneal_cap == 0.2 and MultVAE.Config().total_anneal_steps == 200_000


# -- SGL -----------------------------------------------------------------------------------------------------
def test_sgl_views_are_training_subgraphs_redrawn_each_epoch(data):
    model = SGL(emb_dim=8)
    model.prepare(data)
    rng = np.random.default_rng(0)
    next(model.batches(rng, 64))
    first = [v.copy() for v in model.views]
    assert len(first) == 2 and (first[0] != first[1]).nnz > 0
    for view in first:
        assert view.nnz == int(data.train.nnz * 0.9) and (view != data.train).nnz > 0
        assert (view.multiply(data.train) != view).nnz == 0  # only training edges
        assert (view.multiply(data.valid)).nnz == 0 and (view.multiply(data.test)).nnz == 0
    next(model.batches(rng, 64))  # the next epoch
    assert all((a != b).nnz > 0 for a, b in zip(first, model.views, strict=True))
    # the view adjacencies are the normalized subgraphs
    dense = model.view_adjs[0].to_dense()
    torch.testing.assert_close(dense, normalized_adjacency(model.views[0]).to_dense())


def test_sgl_is_lightgcn_plus_contrastive_term(data):
    model = SGL(emb_dim=8, ssl_weight=0.0)
    model.prepare(data)
    rng = np.random.default_rng(0)
    batch = next(model.batches(rng, 64))
    torch.testing.assert_close(model.loss(batch), LightGCN.loss(model, batch))
    model.config.ssl_weight = 0.1
    assert model.loss(batch) > LightGCN.loss(model, batch)
    with pytest.raises(SettingsError, match="ssl_negatives"):
        SGL(ssl_negatives="some")


# -- XSimGCL -------------------------------------------------------------------------------------------------
def test_xsimgcl_noise_only_in_training(data):
    model = XSimGCL(emb_dim=8)
    model.prepare(data)
    model.set_training(False)
    a, b = model.embed(), model.embed()
    assert torch.equal(a[0], b[0])  # deterministic at inference
    # inference = mean of layers 1..L (layer 0 left out)
    ego = torch.cat([model.net.users, model.net.items]).detach()
    layers = propagate_layers(model.adj, ego, 2)
    torch.testing.assert_close(a[1].detach(), ((layers[0] + layers[1]) / 2)[data.n_users :])
    model.set_training(True)
    c = model._propagated()
    assert not torch.allclose(c[0], a[0])
    with pytest.raises(ValueError, match="cl_layer"):
        XSimGCL(cl_layer=3).prepare(data)


# -- BC Loss -------------------------------------------------------------------------------------------------
def test_popularity_index_is_dense_rank_of_degree():
    index, n = popularity_index(np.array([3, 1, 3, 7, 0]))
    assert n == 4 and index.tolist() == [2, 1, 2, 3, 0]


def test_bc_loss_popularity_branch_first_then_frozen(data):
    model = BCLoss(emb_dim=8, n_negatives=4, freeze_epochs=2)
    model.prepare(data)
    start = {k: v.detach().clone() for k, v in model.net.state_dict().items()}
    from lmrec.train import TrainConfig, Trainer

    Trainer(TrainConfig(epochs=2, lr=0.05, eval_every=2, batch_size=64, progress=False)).run(model, None)
    after_warmup = {k: v.detach().clone() for k, v in model.net.state_dict().items()}
    assert torch.equal(after_warmup["users"], start["users"]) and torch.equal(after_warmup["items"], start["items"])
    assert not torch.equal(after_warmup["user_pop"], start["user_pop"])
    Trainer(TrainConfig(epochs=1, lr=0.05, eval_every=1, batch_size=64, progress=False)).run(model, None)
    assert torch.equal(model.net.user_pop, after_warmup["user_pop"])  # frozen
    assert not torch.equal(model.net.users, after_warmup["users"])


def test_bc_loss_margins():
    model = BCLoss(margin="angle")
    theta = torch.tensor([0.5, 2.9, 1.0])
    pop_cos = torch.tensor([math.cos(0.3), math.cos(0.8), 1.0])
    expected = torch.tensor([0.3, math.pi - 2.9, 0.0])  # min(θ̂, π − θ)
    torch.testing.assert_close(model.margin(theta, pop_cos, torch.zeros(3)), expected, atol=1e-3, rtol=0)
    model = BCLoss(margin="sigmoid")
    torch.testing.assert_close(model.margin(theta, pop_cos, torch.zeros(3)), torch.full((3,), 0.5))


@pytest.mark.parametrize("margin", ["sigmoid", "angle"])
def test_bc_loss_main_phase_formula(data, margin):
    model = BCLoss(emb_dim=8, n_negatives=6, freeze_epochs=0, reg=0.01, margin=margin)
    model.prepare(data)
    users, pos, neg, warmup = next(model.batches(np.random.default_rng(0), 32))
    assert not warmup
    norm = torch.nn.functional.normalize
    with torch.no_grad():
        loss = model.loss((users, pos, neg, warmup))
        user_emb, item_emb = model._propagated()
        u, i, j = norm(user_emb[users], dim=-1), norm(item_emb[pos], dim=-1), norm(item_emb[neg], dim=-1)
        theta = torch.arccos((u * i).sum(-1))
        pu, pi = model.net.user_pop[model.user_pop[users]], model.net.item_pop[model.item_pop[pos]]
        if margin == "sigmoid":  # the released code: 1 − σ(raw p_u·p_i)
            m = 1 - torch.sigmoid((pu * pi).sum(-1))
        else:  # the paper: min(θ̂, π − θ)
            m = torch.minimum(torch.arccos((norm(pu, dim=-1) * norm(pi, dim=-1)).sum(-1).clamp(-1, 1)), math.pi - theta)
        logits = torch.cat([torch.cos(theta + m)[:, None], torch.einsum("bd,bnd->bn", u, j)], 1) / 0.07
        bc = (torch.logsumexp(logits, 1) - logits[:, 0]).mean()
        net = model.net
        l2 = net.users[users].pow(2).sum() + net.items[pos].pow(2).sum() + net.items[neg].pow(2).sum()
        expected = 0.5 * bc + 0.01 * l2 / (2 * len(users))
    torch.testing.assert_close(loss, expected, rtol=1e-4, atol=1e-5)


def test_bc_loss_scores_by_dot_product_or_cosine(data):
    dot, cosine = BCLoss(emb_dim=8), BCLoss(emb_dim=8, pred_norm=True)
    for model in (dot, cosine):
        model.prepare(data, seed=3)
    users, items = dot._propagated()
    torch.testing.assert_close(all_scores(dot, data), users @ items.T)
    assert all_scores(cosine, data).abs().max() <= 1 + 1e-5
    assert not torch.allclose(all_scores(cosine, data), all_scores(dot, data))


# -- KAR and RLMRec ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("cls", [KAR, RLMRec])
def test_lm_inputs_use_train_only(cls, data):
    model = cls(emb_dim=8, features=RANDOM_FEATURES)
    model.prepare(data)
    np.testing.assert_allclose(model.z_users.numpy(), user_profiles(data.train, RANDOM_FEATURES))
    np.testing.assert_array_equal(model.z_items.numpy(), RANDOM_FEATURES)


def test_kar_adaptor_output_is_fused_into_layer0(data):
    model = KAR(emb_dim=8, features=RANDOM_FEATURES)
    model.prepare(data)
    r_users, r_items = model._knowledge()
    assert r_users.shape == (data.n_users, 32) and r_items.shape == (data.n_items, 32)
    adaptor = model.net.adaptor
    for side, (ours, x) in enumerate(zip(model._knowledge(), (model.z_users, model.z_items), strict=True)):
        # HEA written out: r = Σ_k softmax(W x + b)_k · expert_k(x), each expert run whole
        experts = torch.stack([expert(x) for expert in (*adaptor.shared, *adaptor.specific[side])], dim=1)
        plain = (torch.softmax(adaptor.gates[side](x), dim=-1)[:, :, None] * experts).sum(1)
        torch.testing.assert_close(ours, plain, rtol=1e-5, atol=1e-6)
    model.set_training(False)
    users, items = model.embed()
    assert users.shape == (data.n_users, 8 + 32)
    gates = [g.out_features for g in model.net.adaptor.gates]
    assert gates == [2 + 5, 2 + 5]
    added = KAR(emb_dim=32, fusion="add", features=RANDOM_FEATURES)
    added.prepare(data)
    assert added.embed()[0].shape == (data.n_users, 32)
    with pytest.raises(ValueError, match="emb_dim"):
        KAR(emb_dim=16, fusion="add", features=RANDOM_FEATURES).prepare(data)


def test_rlmrec_alignment_term(data):
    model = RLMRec(emb_dim=8, features=RANDOM_FEATURES, kd_weight=0.0)
    model.prepare(data)
    batch = next(model.batches(np.random.default_rng(0), 64))
    torch.manual_seed(5)  # the XSimGCL backbone's noise
    loss = model.loss(batch)
    torch.manual_seed(5)
    torch.testing.assert_close(loss, XSimGCL.loss(model, batch))
    model.config.kd_weight = 1.0
    loss = model.loss(batch)
    loss.backward()
    assert model.net.mlp[0].weight.grad is not None and model.net.mlp[0].weight.grad.abs().sum() > 0
