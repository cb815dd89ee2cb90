"""Full ranking: tie policy, masking, batch invariance and the error cases."""

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from helpers import make_split, planted_data, single_thread  # noqa: F401
from lmrec.errors import LmrecError
from lmrec.eval.ranking import CHUNK, evaluate, largest, mask_matrix, tie_break_keys, top_k


def table_scorer(table: np.ndarray):
    """Scorer reading a fixed (n_users, n_items) score table."""
    t = torch.as_tensor(table)
    return lambda users: t[torch.as_tensor(users, dtype=torch.long)]


def constant_scorer(n_items: int):
    return lambda users: torch.zeros(len(users), n_items)


def random_target_data(n_users=400, n_items=200, n_targets=5, seed=0):
    rng = np.random.default_rng(seed)
    valid = [(u, int(i)) for u in range(n_users) for i in rng.choice(n_items, n_targets, replace=False)]
    return make_split([], valid, [], n_users, n_items)


# -- tie policy: a constant scorer is at random level ------------------------------------------------------
def test_constant_scorer_is_at_random_level():
    data = random_target_data()
    result = evaluate(constant_scorer(200), data, "valid", ks=(20,), metrics=("recall",))
    est = result.summary()["recall@20"]
    assert est.n == 400
    assert abs(est.mean - 20 / 200) < 4 * est.se
    assert 0.05 < est.mean < 0.15


@pytest.mark.parametrize("where", ["lowest", "highest"])
def test_constant_scorer_random_level_independent_of_item_order(where):
    """All targets at the lowest (or highest) item indices: tie-breaking by index would give recall 1 (or 0)."""
    n_items = 200
    targets = range(5) if where == "lowest" else range(n_items - 5, n_items)
    data = make_split([], [(0, i) for i in targets], [], 1, n_items)
    values = np.array([
        evaluate(
            constant_scorer(n_items), data, "valid", ks=(20,), metrics=("recall",), seed=s
        ).per_user["recall@20"][0]
        for s in range(300)
    ])
    # one seed = one hypergeometric draw: E = 20/200, sd of recall ~0.133
    se = values.std(ddof=1) / np.sqrt(len(values))
    assert abs(values.mean() - 0.1) < 4 * se
    assert len(np.unique(values)) > 2  # varies with the seed


def test_constant_scorer_top_k_is_not_item_order():
    scores = torch.zeros(1, 200)
    for seed in range(3):
        priority = torch.rand(200, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
        top = top_k(scores, 20, priority)[0].numpy()
        assert set(top) != set(range(20)) and set(top) != set(range(180, 200))
        np.testing.assert_array_equal(top, torch.argsort(priority, descending=True)[:20].numpy())


def test_results_do_not_depend_on_batch_size():
    data = planted_data()
    rng = np.random.default_rng(3)
    table = np.round(rng.random((data.n_users, data.n_items)) * 3).astype(np.float32)  # many ties
    results = [evaluate(table_scorer(table), data, "test", ks=(5, 20), metrics=("recall", "ndcg", "hr", "mrr"),
                        batch_size=b) for b in (1, 7, 1024)]
    for other in results[1:]:
        np.testing.assert_array_equal(other.users, results[0].users)
        assert other.per_user.keys() == results[0].per_user.keys()
        for name in results[0].per_user:
            np.testing.assert_array_equal(other.per_user[name], results[0].per_user[name])


def test_seed_changes_only_tie_breaking():
    data = planted_data()
    rng = np.random.default_rng(4)
    distinct = rng.random((data.n_users, data.n_items)).astype(np.float32)
    a, b = (evaluate(table_scorer(distinct), data, "valid", ks=(5,), seed=s) for s in (0, 1))
    for name in a.per_user:
        np.testing.assert_array_equal(a.per_user[name], b.per_user[name])
    tied = np.zeros_like(distinct)
    a, b = (evaluate(table_scorer(tied), data, "valid", ks=(5,), metrics=("recall",), seed=s) for s in (0, 1))
    assert not np.array_equal(a.per_user["recall@5"], b.per_user["recall@5"])


# -- tie_break_keys ----------------------------------------------------------------------------------------
def test_tie_break_keys_keep_order_of_adjacent_float32_values():
    bases = np.array([-3e38, -1e30, -2.0, -1.5, -1.0, -1e-30, -np.float32(2**-126), 0.0,
                      1e-45, 1e-30, 2**-126, 0.5, 1.0, 1.5, 2.0, 1e30, 3e38], dtype=np.float32)
    ups = np.nextafter(bases, np.float32(np.inf), dtype=np.float32)
    downs = np.nextafter(bases, np.float32(-np.inf), dtype=np.float32)
    values = np.unique(np.concatenate([bases, ups, downs]))  # sorted, distinct float32 values
    assert (np.diff(values) > 0).all()
    scores = torch.from_numpy(values)[None, :]
    n = len(values)
    # adversarial priorities: the smaller value of each adjacent pair gets the largest priority
    for priority in (torch.linspace(0.999999, 0.0, n, dtype=torch.float64), torch.rand(n, dtype=torch.float64)):
        keys = tie_break_keys(scores, priority)[0]
        assert (keys[1:] > keys[:-1]).all()
        np.testing.assert_array_equal(top_k(scores, n, priority)[0].numpy(), np.arange(n)[::-1])


def test_tie_break_keys_break_exact_ties_by_priority():
    for value in (-2.5, -0.0, 0.0, 1e-40, 7.0):
        scores = torch.full((1, 4), value)
        priority = torch.tensor([0.1, 0.9, 0.5, 0.3], dtype=torch.float64)
        assert top_k(scores, 4, priority)[0].tolist() == [1, 2, 3, 0]
    # ties among a larger set do not overtake a strictly larger neighbour
    scores = torch.tensor([[1.0, 1.0, np.nextafter(np.float32(1.0), np.float32(2.0)), 1.0]])
    priority = torch.tensor([0.99, 0.98, 0.0, 0.97], dtype=torch.float64)
    assert top_k(scores, 4, priority)[0].tolist() == [2, 0, 1, 3]


def test_minus_inf_scores_rank_last():
    scores = torch.tensor([[1.0, -torch.inf, 0.5, 2.0]])
    priority = torch.tensor([0.5, 0.5, 0.5, 0.5], dtype=torch.float64)
    assert top_k(scores, 2, priority)[0].tolist() == [3, 0]


def test_evaluate_with_minus_inf_scores():
    data = make_split([], [(0, 0)], [], 1, 30)
    table = np.zeros((1, 30), np.float32)
    table[0, 0] = 1.0  # the target is the single best finite score
    table[0, 5] = -np.inf  # e.g. an item the scorer rules out
    result = evaluate(table_scorer(table), data, "valid", ks=(1,), metrics=("hr",))
    assert result.per_user["hr@1"][0] == 1.0


def test_plus_inf_scores_rank_first():
    scores = torch.tensor([[1.0, torch.inf, 0.5, 2.0]])
    priority = torch.rand(4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    assert top_k(scores, 2, priority)[0].tolist() == [1, 3]


# -- masking -----------------------------------------------------------------------------------------------
def masking_data():
    """User 0: train {0, 1, 2}, valid {3, 4}, test {5}; user 1: train {6}, valid {7}, test {6 (also train!), 8}."""
    train = [(0, 0), (0, 1), (0, 2), (1, 6)]
    valid = [(0, 3), (0, 4), (1, 7)]
    test = [(0, 5), (1, 6), (1, 8)]
    return make_split(train, valid, test, 2, 30)


def ladder_scorer(data):
    """Train items score 3, valid items 2, test items 1, the rest 0: masked splits must disappear from the top."""
    table = (3 * data.train.toarray() + 2 * data.valid.toarray() + 1 * data.test.toarray()).astype(np.float32)
    table = np.minimum(table, 3)
    return table_scorer(table), table


def test_mask_matrix_content():
    data = masking_data()
    exclude, used = mask_matrix(data, "test", None)
    assert used == ("train", "valid")
    expected = {(0, 0), (0, 1), (0, 2), (0, 3), (0, 4), (1, 7)}  # (1, 6) is a test target: not masked
    assert set(zip(*exclude.nonzero())) == expected
    exclude, used = mask_matrix(data, "valid", None)
    assert used == ("train",) and set(zip(*exclude.nonzero())) == {(0, 0), (0, 1), (0, 2), (1, 6)}
    assert mask_matrix(data, "test", ()) == (None, ())


def test_masking_valid_removes_train_items():
    data = masking_data()
    scorer, _ = ladder_scorer(data)
    result = evaluate(scorer, data, "valid", ks=(1, 2), metrics=("recall", "hr"))
    np.testing.assert_array_equal(result.users, [0, 1])
    np.testing.assert_allclose(result.per_user["recall@2"], [1.0, 1.0])  # valid items right after masked train
    assert result.protocol["masked"] == ["train"]
    unmasked = evaluate(scorer, data, "valid", ks=(1,), metrics=("hr",), mask=())
    np.testing.assert_array_equal(unmasked.per_user["hr@1"], [0.0, 0.0])  # train items (score 3) on top
    assert unmasked.protocol["masked"] == []


def test_masking_test_removes_train_and_valid_but_never_a_target():
    data = masking_data()
    scorer, _ = ladder_scorer(data)
    result = evaluate(scorer, data, "test", ks=(1, 2), metrics=("recall", "hr", "mrr"))
    # user 0: the only unmasked item above 0 is test item 5; user 1: item 6 is train AND test, it stays
    np.testing.assert_array_equal(result.per_user["hr@1"], [1.0, 1.0])
    np.testing.assert_allclose(result.per_user["recall@2"], [1.0, 1.0])
    assert result.protocol["masked"] == ["train", "valid"]
    only_train = evaluate(scorer, data, "test", ks=(1,), metrics=("hr",), mask=("train",))
    assert only_train.per_user["hr@1"][0] == 0.0  # valid items (score 2) now outrank the test item


@pytest.mark.parametrize("levels", [3, 50, None])  # heavy ties, some ties, continuous scores
def test_fast_path_equals_the_exact_key_ranking(levels):
    """The float topk shortcut (rows whose k + 1 best scores are distinct) changes no row's top k or order."""
    rng = np.random.default_rng(levels or 0)
    n_users, n_items, k = 300, 60, 10
    raw = rng.random((n_users, n_items))
    table = torch.from_numpy((np.floor(raw * levels) if levels else raw).astype(np.float32))
    table[0] = -torch.inf  # a row of -inf ties
    exclude = sp.random(n_users, n_items, density=0.2, format="lil", random_state=1)
    exclude[1, :] = 1.0  # a row with every item masked
    exclude = exclude.tocsr()
    priority = torch.rand(n_items, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    keys = tie_break_keys(table, priority)
    dense = torch.from_numpy(exclude.toarray() > 0)
    keys[dense] = torch.iinfo(torch.int64).min
    expected = torch.topk(keys, k, dim=1).indices
    assert torch.equal(top_k(table, k, priority, exclude), expected)


@pytest.mark.parametrize("levels", [3, 50, None])
@pytest.mark.parametrize("n_items", [CHUNK * 130, CHUNK * 130 + 17])  # the chunked selection, with a shorter last chunk
def test_largest_returns_the_k_largest_values_of_wide_rows(levels, n_items):
    """The two-stage selection gives torch.topk's values (equal values: any of them) at the right items."""
    rng = np.random.default_rng(7)
    raw = rng.standard_normal((64, n_items))
    x = torch.from_numpy((np.floor(raw * levels) if levels else raw).astype(np.float32))
    x[0] = -torch.inf  # every entry equal
    x[1, :100] = -torch.inf
    x[2, -3:] = torch.inf  # the largest in the last, shorter chunk
    x[3, 5::CHUNK] = 1e6  # one large entry in every chunk: the chunk maxima tie
    values, items = largest(x, 21)
    expected = torch.topk(x, 21, dim=1).values
    assert torch.equal(values, expected)
    assert torch.equal(torch.gather(x, 1, items), values)  # each index holds its value
    assert all(len(set(row)) == 21 for row in items.tolist())  # 21 distinct items per row
    if levels is None:  # distinct values: the very indices of torch.topk
        assert torch.equal(items[4:], torch.topk(x, 21, dim=1).indices[4:])


def test_largest_is_the_same_on_any_thread_count():
    x = torch.randn(1000, CHUNK * 90 + 5)
    before = torch.get_num_threads()
    try:
        results = []
        for threads in (1, 3):
            torch.set_num_threads(threads)
            results.append(largest(x, 21))
    finally:
        torch.set_num_threads(before)
    assert all(torch.equal(a, b) for a, b in zip(*results))


@pytest.mark.parametrize("levels", [3, 50, None])
def test_fast_path_equals_the_exact_key_ranking_on_a_wide_catalog(levels):
    """As above on rows wide enough for the chunked selection (:func:`largest`)."""
    rng = np.random.default_rng(levels or 0)
    n_users, n_items, k = 80, CHUNK * 100 + 9, 20
    raw = rng.random((n_users, n_items))
    table = torch.from_numpy((np.floor(raw * levels) if levels else raw).astype(np.float32))
    table[0] = -torch.inf
    exclude = sp.random(n_users, n_items, density=0.05, format="lil", random_state=1)
    exclude[1, :] = 1.0
    exclude[2, : n_items - 5] = 1.0  # fewer than k items left
    exclude = exclude.tocsr()
    priority = torch.rand(n_items, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    keys = tie_break_keys(table, priority)
    keys[torch.from_numpy(exclude.toarray() > 0)] = torch.iinfo(torch.int64).min
    assert torch.equal(top_k(table, k, priority, exclude), torch.topk(keys, k, dim=1).indices)


@pytest.mark.parametrize("n_items", [60, CHUNK * 100 + 9])  # torch.topk, the chunked selection
@pytest.mark.parametrize("where", ["masked", "unmasked", "last chunk"])
def test_a_nan_anywhere_is_found_without_a_pass_of_its_own(n_items, where):
    table = torch.rand(5, n_items)
    exclude = sp.lil_matrix((5, n_items))
    exclude[3, 7] = 1.0
    table[3, {"masked": 7, "unmasked": 8, "last chunk": n_items - 2}[where]] = torch.nan
    priority = torch.rand(n_items, dtype=torch.float64)
    with pytest.raises(LmrecError, match="NaN scores \\(batch row 3\\)"):
        top_k(table, 10, priority, exclude.tocsr())


def test_fresh_scores_are_masked_in_place_and_others_copied():
    """A scorer marked fresh_scores gives its tensor away (masked in place); any other scorer's is left as it was;
    the results are the same."""
    from lmrec.eval.ranking import fresh_scores

    data = planted_data()
    table = torch.from_numpy(np.random.default_rng(2).random((data.n_users, data.n_items)).astype(np.float32))
    kept = table.clone()
    shared = lambda users: table[: len(users)] if len(users) == data.n_users else table[users]  # noqa: E731
    given = fresh_scores(lambda users: table[torch.as_tensor(users)].clone())
    users = np.arange(data.n_users)
    a = evaluate(shared, data, "test", users=users, batch_size=data.n_users)
    b = evaluate(given, data, "test", users=users, batch_size=data.n_users)
    assert torch.equal(table, kept)  # the shared table was not masked
    assert all(np.array_equal(a.per_user[m], b.per_user[m]) for m in a.per_user)
    out = given(users)
    top_k(out, 5, torch.rand(data.n_items, dtype=torch.float64), mask_matrix(data, "test", None)[0], owned=True)
    assert torch.isinf(out).any()  # given away: masked in place


def test_masked_items_never_in_top_k():
    data = planted_data()
    rng = np.random.default_rng(5)
    table = rng.random((data.n_users, data.n_items)).astype(np.float32)
    table += 10 * (data.train.toarray() + data.valid.toarray())  # masked items score highest
    exclude, _ = mask_matrix(data, "test", None)
    priority = torch.rand(data.n_items, dtype=torch.float64)
    users = np.arange(data.n_users)
    top = top_k(torch.from_numpy(table), 20, priority, exclude[users]).numpy()
    masked = exclude.toarray() > 0
    assert not np.take_along_axis(masked, top, axis=1).any()


# -- perfect scorer, errors, protocol ----------------------------------------------------------------------
def test_perfect_scorer():
    n_items = 50
    rng = np.random.default_rng(6)
    test = [(u, int(i)) for u in range(8) for i in rng.choice(n_items, u + 1, replace=False)]
    data = make_split([], [], test, 8, n_items)
    truth = data.test.toarray()
    scorer = table_scorer(truth.astype(np.float32) + 0.01 * rng.random(truth.shape).astype(np.float32))
    result = evaluate(scorer, data, "test", ks=(1, 3, 5), metrics=("recall", "ndcg", "hr", "mrr", "precision"))
    n_t = np.arange(1, 9)
    for k in (1, 3, 5):
        np.testing.assert_allclose(result.per_user[f"recall@{k}"], np.minimum(k, n_t) / n_t)
        np.testing.assert_allclose(result.per_user[f"ndcg@{k}"], 1.0)
        np.testing.assert_allclose(result.per_user[f"precision@{k}"], np.minimum(k, n_t) / k)
        np.testing.assert_array_equal(result.per_user[f"hr@{k}"], 1.0)
        np.testing.assert_array_equal(result.per_user[f"mrr@{k}"], 1.0)


def test_worst_scorer_scores_zero():
    data = planted_data()
    table = -(data.valid.toarray()).astype(np.float32)  # targets get the lowest scores
    result = evaluate(table_scorer(table), data, "valid", ks=(20,), metrics=("recall", "ndcg", "hr"))
    for values in result.per_user.values():
        np.testing.assert_array_equal(values, 0.0)


def test_nan_scores_raise():
    data = planted_data()
    table = np.zeros((data.n_users, data.n_items), np.float32)
    table[3, 7] = np.nan
    with pytest.raises(LmrecError, match="NaN"):
        evaluate(table_scorer(table), data, "test")


def test_top_k_masks_a_transposed_score_tensor():
    scores = torch.arange(12, dtype=torch.float32).reshape(3, 4).T  # (4, 3), not contiguous
    exclude = sp.csr_matrix(np.array([[0, 0, 1], [0, 1, 0], [1, 0, 0], [0, 0, 0]], np.float32))
    top = top_k(scores, 1, torch.arange(3, dtype=torch.float64), exclude)
    assert top[:, 0].tolist() == [1, 2, 2, 2]  # each row's best item that is not excluded
    with pytest.raises(ValueError, match="shape"):
        top_k(scores, 1, torch.arange(3, dtype=torch.float64), exclude[:, :2])


def test_plus_and_minus_inf_are_ranked_not_taken_for_nan():
    """Their sum is NaN (the fast check's alarm), yet no score is NaN: the ranking goes on, +inf first."""
    scores = torch.zeros(2, 6)
    scores[0, 4], scores[0, 1], scores[1, 2] = torch.inf, -torch.inf, torch.inf
    top = top_k(scores, 2, torch.arange(6, dtype=torch.float64))
    assert top[0, 0] == 4 and top[1, 0] == 2 and 1 not in top[0].tolist()


@pytest.mark.parametrize("make", [lambda b: torch.zeros(b, 39), lambda b: torch.zeros(b + 1, 40),
                                  lambda b: torch.zeros(40)])
def test_wrong_scorer_shape_raises(make):
    data = planted_data()
    with pytest.raises(LmrecError, match="shape"):
        evaluate(lambda users: make(len(users)), data, "test")


def test_k_larger_than_catalog_raises():
    data = planted_data()
    with pytest.raises(ValueError, match="catalog size 40"):
        evaluate(constant_scorer(40), data, "test", ks=(41,))


def test_only_users_with_targets_are_evaluated_and_users_subset():
    data = make_split([(0, 1), (1, 2), (2, 3)], [], [(0, 4), (2, 5)], 3, 25)
    result = evaluate(constant_scorer(25), data, "test", ks=(20,))
    np.testing.assert_array_equal(result.users, [0, 2])
    subset = evaluate(constant_scorer(25), data, "test", ks=(20,), users=np.array([1, 2]))
    np.testing.assert_array_equal(subset.users, [2])
    assert subset.protocol["users"] == 1


def test_protocol_and_to_dict():
    data = planted_data()
    result = evaluate(constant_scorer(40), data, "test", ks=(10, 20), metrics=("recall", "ndcg"), seed=7)
    p = result.protocol
    assert p["split"] == "test" and p["masked"] == ["train", "valid"] and p["seed"] == 7
    assert p["users"] == 30 and p["items"] == 40 and "random" in p["ties"]
    out = result.to_dict()
    assert set(out) == {"recall@10", "recall@20", "ndcg@10", "ndcg@20"}
    assert set(out["recall@20"]) == {"mean", "se", "n"} and out["recall@20"]["n"] == 30
    assert out["recall@20"]["mean"] == pytest.approx(result.per_user["recall@20"].mean())


def test_empty_exclude_matrix_and_sparse_input_types():
    data = make_split([], [(0, 1)], [], 1, 25)
    exclude = sp.csr_matrix((1, 25), dtype=np.float32)
    scores = torch.arange(25, dtype=torch.float32)[None, :]
    top = top_k(scores, 3, torch.zeros(25, dtype=torch.float64), exclude)
    assert top[0].tolist() == [24, 23, 22]
    result = evaluate(lambda u: scores.expand(len(u), -1), data, "valid", ks=(20,))
    assert result.per_user["recall@20"][0] == 0.0  # item 1 is ranked 24th


def test_hit_matrix_by_hand():
    from lmrec.eval.ranking import hit_matrix

    targets = sp.csr_matrix(np.array([[0, 1, 0, 1], [0, 0, 0, 0], [1, 0, 0, 0]], dtype=np.float32))
    top = np.array([[1, 0], [3, 2], [2, 0]])  # rows: users 0, 1, 2 in this order
    expected = np.array([[True, False], [False, False], [False, True]])
    np.testing.assert_array_equal(hit_matrix(targets, np.array([0, 1, 2]), top), expected)
    np.testing.assert_array_equal(hit_matrix(targets, np.array([2]), np.array([[0, 3]])), [[True, False]])
    assert not hit_matrix(targets, np.array([1]), np.array([[0, 1]])).any()  # a user without targets
