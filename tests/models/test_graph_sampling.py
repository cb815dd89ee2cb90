"""LightGCN graph normalization and propagation (custom backward), the training sampler, the losses."""

import math

import numpy as np
import pytest
import scipy.sparse as sp
import torch

import lmrec.models.nn.losses as losses
from helpers import planted_data, single_thread  # noqa: F401
from lmrec.errors import LmrecError
from lmrec.models.nn.graph import normalized_adjacency, propagate
from lmrec.models.nn.losses import bpr_loss, info_nce, row_scores
from lmrec.models.nn.sampling import Sampler

R = sp.csr_matrix(np.array([[1, 1, 0], [0, 1, 1]], dtype=np.float32))  # 2 users x 3 items


# -- normalized adjacency ------------------------------------------------------------------------------------
def test_normalized_adjacency_by_hand():
    # degrees: u0 = 2, u1 = 2, i0 = 1, i1 = 2, i2 = 1; nodes ordered u0, u1, i0, i1, i2
    a = 1 / math.sqrt(2 * 1)
    b = 1 / math.sqrt(2 * 2)
    expected = np.array([
        [0, 0, a, b, 0],
        [0, 0, 0, b, a],
        [a, 0, 0, 0, 0],
        [b, b, 0, 0, 0],
        [0, a, 0, 0, 0],
    ])
    adj = normalized_adjacency(R)
    assert adj.layout == torch.sparse_csr and adj.shape == (5, 5)
    assert adj.crow_indices().dtype == adj.col_indices().dtype == torch.int32  # int32 while nnz < 2³¹
    dense = adj.to_dense().numpy()
    np.testing.assert_allclose(dense, expected, rtol=1e-6)
    np.testing.assert_array_equal(dense, dense.T)


def test_normalized_adjacency_symmetric_with_isolated_nodes():
    data = planted_data()
    train = data.train.tolil()
    train[3, :] = 0  # an isolated user
    train[:, 11] = 0  # an isolated item
    train = sp.csr_matrix(train)
    train.eliminate_zeros()
    dense = normalized_adjacency(train).to_dense().numpy()
    n_users = data.n_users
    np.testing.assert_allclose(dense, dense.T, atol=1e-7)
    assert np.isfinite(dense).all()
    assert not dense[3].any() and not dense[:, 3].any()
    assert not dense[n_users + 11].any() and not dense[:, n_users + 11].any()
    # entry (u, i) = 1 / sqrt(deg u * deg i)
    deg_u = np.asarray(train.sum(axis=1)).ravel()
    deg_i = np.asarray(train.sum(axis=0)).ravel()
    u, i = train.nonzero()
    np.testing.assert_allclose(dense[u, n_users + i], 1 / np.sqrt(deg_u[u] * deg_i[i]), rtol=1e-6)
    assert not dense[:n_users, :n_users].any() and not dense[n_users:, n_users:].any()  # bipartite, no self-loops


# -- propagation ---------------------------------------------------------------------------------------------
def dense_propagate(adj: torch.Tensor, x: torch.Tensor, n_layers: int) -> torch.Tensor:
    layers = [x]
    for _ in range(n_layers):
        layers.append(adj @ layers[-1])
    return torch.stack(layers).mean(dim=0)


def test_propagate_forward_matches_dense():
    adj = normalized_adjacency(planted_data().train)
    x = torch.randn(adj.shape[0], 8, generator=torch.Generator().manual_seed(0))
    for n_layers in (0, 1, 3):
        torch.testing.assert_close(propagate(adj, x, n_layers), dense_propagate(adj.to_dense(), x, n_layers))
    assert torch.equal(propagate(adj, x, 0), x)


def test_propagate_backward_matches_autograd_on_dense_matrix():
    adj = normalized_adjacency(planted_data().train)
    gen = torch.Generator().manual_seed(1)
    x0 = torch.randn(adj.shape[0], 4, generator=gen)
    weights = torch.randn(adj.shape[0], 4, generator=gen)
    x_sparse = x0.clone().requires_grad_(True)
    x_dense = x0.clone().requires_grad_(True)
    (propagate(adj, x_sparse, 3) * weights).sum().backward()
    (dense_propagate(adj.to_dense(), x_dense, 3) * weights).sum().backward()
    torch.testing.assert_close(x_sparse.grad, x_dense.grad)


def test_propagate_gradcheck_float64():
    adj32 = normalized_adjacency(R)
    adj = torch.sparse_csr_tensor(adj32.crow_indices(), adj32.col_indices(), adj32.values().double(),
                                  size=adj32.shape, check_invariants=True)
    x = torch.randn(5, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: propagate(adj, t, 2), (x,))


def test_isolated_node_keeps_a_scaled_layer0_embedding():
    train = sp.csr_matrix(np.array([[1, 0, 0], [0, 0, 0]], dtype=np.float32))  # user 1, items 1 and 2 isolated
    adj = normalized_adjacency(train)
    x = torch.randn(5, 2)
    out = propagate(adj, x, 2)
    for node in (1, 3, 4):
        torch.testing.assert_close(out[node], x[node] / 3)


# -- sampler -------------------------------------------------------------------------------------------------
def test_negatives_are_never_training_items():
    data = planted_data()
    sampler = Sampler(data.train)
    rng = np.random.default_rng(0)
    users = np.repeat(np.arange(data.n_users), 20)
    negatives = sampler.negatives(users, 30, rng)
    assert negatives.shape == (len(users), 30)
    train = data.train.toarray() > 0
    assert not train[users[:, None], negatives].any()
    assert negatives.min() >= 0 and negatives.max() < data.n_items
    # valid/test items are allowed as negatives (only train is known), and every unseen item appears
    assert set(np.unique(negatives[users == 0])) == set(np.flatnonzero(~train[0]))


def test_negatives_raise_when_a_user_has_every_item():
    dense = np.zeros((3, 6), np.float32)
    dense[0, :2] = 1
    dense[1, :] = 1  # user 1 has every item
    sampler = Sampler(sp.csr_matrix(dense))
    rng = np.random.default_rng(0)
    assert sampler.negatives(np.array([0, 2]), 4, rng).shape == (2, 4)
    with pytest.raises(LmrecError, match=r"\[1\]"):
        sampler.negatives(np.array([0, 1, 2]), 4, rng)


def test_empty_training_matrix_raises():
    with pytest.raises(LmrecError, match="empty"):
        Sampler(sp.csr_matrix((3, 4), dtype=np.float32))


def test_user_positive_returns_training_pairs_with_users_uniform():
    rng = np.random.default_rng(0)
    dense = np.zeros((10, 50), np.float32)
    for u in range(8):  # very different activity: user u has 1 + 5u items; users 8, 9 have none
        dense[u, rng.choice(50, 1 + 5 * u, replace=False)] = 1
    sampler = Sampler(sp.csr_matrix(dense))
    n = 40000
    users, items = sampler.user_positive(n, np.random.default_rng(1))
    assert users.dtype == np.int64 and items.dtype == np.int64
    assert (dense[users, items] == 1).all()  # only training pairs
    counts = np.bincount(users, minlength=10)
    assert counts[8] == counts[9] == 0
    expected = n / 8
    chi2 = ((counts[:8] - expected) ** 2 / expected).sum()
    assert chi2 < 30  # 7 degrees of freedom: P(chi2 > 30) ~ 1e-4; per-interaction sampling gives ~1e4
    # positives uniform among the user's items: the most active user's items all appear about equally
    heavy = items[users == 7]
    item_counts = np.bincount(heavy, minlength=50)[dense[7] > 0]
    assert item_counts.min() > 0.5 * item_counts.mean()


def test_seen_matches_the_matrix():
    data = planted_data()
    sampler = Sampler(data.train)
    users = np.arange(data.n_users)
    items = np.tile(np.arange(data.n_items), (data.n_users, 1))
    np.testing.assert_array_equal(sampler.seen(users, items), data.train.toarray() > 0)


# -- losses --------------------------------------------------------------------------------------------------
def test_bpr_loss_by_hand():
    pos, neg = torch.tensor([2.0, 0.0]), torch.tensor([1.0, 0.0])
    expected = (-math.log(1 / (1 + math.exp(-1))) + math.log(2)) / 2
    assert bpr_loss(pos, neg).item() == pytest.approx(expected)
    many = torch.tensor([[1.0, 3.0], [0.0, 0.0]])  # (b, n) negatives are averaged
    expected = (math.log1p(math.exp(-1)) + math.log1p(math.exp(1)) + 2 * math.log(2)) / 4
    assert bpr_loss(pos, many).item() == pytest.approx(expected)


def test_info_nce_by_hand_and_mask():
    pos = torch.tensor([1.0])
    neg = torch.tensor([[0.0, 2.0]])
    tau = 0.5
    expected = -math.log(math.exp(2) / (math.exp(2) + math.exp(0) + math.exp(4)))
    assert info_nce(pos, neg, tau).item() == pytest.approx(expected)
    masked = info_nce(pos, neg, tau, torch.tensor([[True, False]]))  # the second negative does not count
    assert masked.item() == pytest.approx(-math.log(math.exp(2) / (math.exp(2) + 1)))
    none = info_nce(pos, neg, tau, torch.tensor([[False, False]]))
    assert none.item() == pytest.approx(0.0)


def test_row_scores_equal_the_gathered_score_table_in_value_and_gradient(monkeypatch):
    """Each row against its own items (the items' gradient added in chunks of rows: here 3 rows a chunk, the last
    one short), with items repeated within and across rows: the values and gradients of gather(u·Eᵀ, index)."""
    monkeypatch.setattr(losses, "ROW_CHUNK_BYTES", 3 * 4 * 5 * 8)  # 3 rows of 4 items × 5 float64 dims
    gen = torch.Generator().manual_seed(0)
    users = torch.randn(8, 5, dtype=torch.float64, generator=gen, requires_grad=True)
    items = torch.randn(6, 5, dtype=torch.float64, generator=gen, requires_grad=True)
    index = torch.randint(0, 6, (8, 4), generator=gen)
    index[0] = torch.tensor([2, 2, 5, 2])
    weights = torch.randn(8, 4, dtype=torch.float64, generator=gen)

    def value_and_grads(scores):
        s = scores()
        return (s.detach(), *torch.autograd.grad((s * weights).sum(), (users, items)))

    ours = value_and_grads(lambda: row_scores(users, items, index))
    expected = value_and_grads(lambda: torch.gather(users @ items.T, 1, index))
    for got, want in zip(ours, expected, strict=True):
        torch.testing.assert_close(got, want)
    assert torch.autograd.gradcheck(lambda u, e: row_scores(u, e, index), (users, items))
    many = torch.randint(0, 6, (8, 9), generator=gen)  # more draws a row than items: from the score table
    monkeypatch.setattr(losses._RowScores, "apply", None)  # the sparse form must not be called
    torch.testing.assert_close(row_scores(users, items, many), torch.gather(users @ items.T, 1, many))


def test_row_scores_and_view_info_nce_refuse_a_second_derivative():
    """Their backwards are written by hand once: a gradient of a gradient through them raises (torch checks where the
    gradient coming in depends on the inputs, as here; a constant one, a loss's own, is not caught)."""
    from lmrec.models.nn.contrastive import view_info_nce

    users, items = torch.randn(4, 3, requires_grad=True), torch.randn(6, 3, requires_grad=True)
    index = torch.randint(0, 6, (4, 2))
    for loss in (row_scores(users, items, index).square().sum(), view_info_nce(users, items, 0.2).square()):
        (grad,) = torch.autograd.grad(loss, users, create_graph=True)
        with pytest.raises(RuntimeError, match="once_differentiable"):
            grad.sum().backward()


def test_row_scores_run_in_float32_under_autocast():
    gen = torch.Generator().manual_seed(1)
    users = torch.randn(5, 4, generator=gen, requires_grad=True)
    items = torch.randn(9, 4, generator=gen, requires_grad=True)
    index = torch.randint(0, 9, (5, 3), generator=gen)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        scores = row_scores(users, items, index)
        grads = torch.autograd.grad(scores.sum(), (users, items))
    assert scores.dtype == torch.float32 and all(g.dtype == torch.float32 for g in grads)
    torch.testing.assert_close(scores, torch.gather(users @ items.T, 1, index).detach())


def test_bitset_membership_equals_the_sorted_key_search():
    import lmrec.models.nn.sampling as sampling

    data = planted_data()
    fast = sampling.Sampler(data.train)
    assert fast._bits is not None
    slow = sampling.Sampler(data.train)
    slow._bits = None  # the binary search over the sorted keys
    rng = np.random.default_rng(0)
    users = rng.integers(0, data.n_users, 500)
    items = rng.integers(0, data.n_items, (500, 7))
    assert np.array_equal(fast.seen(users, items), slow.seen(users, items))
    dense = data.train.toarray() > 0
    assert np.array_equal(fast.seen(users, items), dense[users[:, None], items])
