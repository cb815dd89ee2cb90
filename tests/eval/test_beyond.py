"""Beyond-accuracy metrics (coverage, novelty, ARP, APLT, ILD) on hand-computed top-K lists, through the full
ranking (masking, seeded ties), and from a run."""

import math

import numpy as np
import pytest
import scipy.sparse as sp
import torch

import lmrec
from helpers import make_split, planted_data, planted_features, single_thread  # noqa: F401
from lmrec.eval import beyond as B
from lmrec.eval.ranking import evaluate
from lmrec.eval.report import estimate_cell
from lmrec.models.queries import user_scorer

LOG2 = math.log2


def table_scorer(table):
    t = torch.as_tensor(np.asarray(table, dtype=np.float32))
    return lambda users: t[torch.as_tensor(users, dtype=torch.long)]


# -- the functions on hand-made lists -----------------------------------------------------------------------
TOP = np.array([[0, 3, 1], [3, 4, 0], [0, 1, 5]])  # 3 users' top-3 lists over 6 items
POP = np.array([4, 2, 1, 1, 0, 0])  # training users per item; |U_train| = 4


def test_popularity_counts_distinct_training_users():
    train = sp.csr_matrix(np.array([[1, 1, 0, 0], [1, 0, 0, 0], [0, 0, 0, 0], [3, 0, 1, 0]], dtype=np.float32))
    np.testing.assert_array_equal(B.item_popularity(train), [3, 1, 1, 0])  # a weight of 3 is one user
    assert B.training_users(train) == 3  # user 2 has no training item
    dup = sp.csr_matrix((np.ones(3), ([0, 0, 1], [2, 2, 2])), shape=(2, 3))  # user 0 has item 2 twice
    np.testing.assert_array_equal(B.item_popularity(dup), [0, 0, 2])


def test_coverage_by_hand():
    assert B.coverage(TOP, 1, 6) == pytest.approx(2 / 6)  # {0, 3}
    assert B.coverage(TOP, 2, 6) == pytest.approx(4 / 6)  # {0, 1, 3, 4}
    assert B.coverage(TOP, 3, 6) == pytest.approx(5 / 6)  # item 2 never recommended


def test_novelty_by_hand_and_unseen_items_count_as_one_user():
    bits = {0: 0.0, 1: 1.0, 2: 2.0, 3: 2.0, 4: 2.0, 5: 2.0}  # -log2(max(pop, 1) / 4)
    expected = [np.mean([bits[i] for i in row]) for row in TOP]
    np.testing.assert_allclose(B.novelty(TOP, 3, POP, 4), expected)
    np.testing.assert_allclose(B.novelty(TOP, 1, POP, 4), [0.0, 2.0, 0.0])
    assert np.isfinite(B.novelty(np.array([[4, 5]]), 2, POP, 4)).all()
    assert B.novelty(np.array([[4, 5]]), 2, POP, 4)[0] == pytest.approx(LOG2(4))  # as rare as an item with one user


def test_arp_by_hand():
    np.testing.assert_allclose(B.arp(TOP, 3, POP), [(4 + 1 + 2) / 3, (1 + 0 + 4) / 3, (4 + 2 + 0) / 3])
    np.testing.assert_allclose(B.arp(TOP, 2, POP), [2.5, 0.5, 3.0])


def test_long_tail_head_is_the_smallest_popular_set_holding_20_percent():
    # 8 interactions: 20% = 1.6; item 0 alone holds 4 -> head {0}; items without training users are tail
    np.testing.assert_array_equal(B.long_tail(POP), [False, True, True, True, True, True])
    # the boundary exactly at 20% ("at least"): 35 interactions, item 0 holds 7 = 20%: the head is item 0 alone
    pop = np.array([7, 5, 5, 5, 5, 4, 4])
    assert pop.sum() == 35
    np.testing.assert_array_equal(B.long_tail(pop), [False, True, True, True, True, True, True])
    # one interaction short of 20% at the first value: the next popularity level joins the head
    pop = np.array([6, 5, 5, 5, 5, 5, 4])
    assert pop.sum() == 35
    np.testing.assert_array_equal(B.long_tail(pop), [False, False, False, False, False, False, True])


def test_long_tail_ties_at_the_boundary_all_go_to_the_head():
    # 10 interactions, 20% = 2: the boundary item (pop 2) is tied with two others, all three are head
    pop = np.array([1, 2, 2, 1, 2, 0, 1, 1])
    np.testing.assert_array_equal(B.long_tail(pop), [True, False, False, True, False, True, True, True])
    # the result does not depend on item ids: a permutation of the items permutes the tail
    perm = np.array([7, 3, 0, 5, 1, 6, 2, 4])
    np.testing.assert_array_equal(B.long_tail(pop[perm]), B.long_tail(pop)[perm])
    assert B.long_tail(np.zeros(3, dtype=int)).all()  # no training interaction: everything is tail


def test_aplt_by_hand():
    tail = B.long_tail(POP)  # head {0}
    np.testing.assert_allclose(B.aplt(TOP, 3, tail), [2 / 3, 2 / 3, 2 / 3])
    np.testing.assert_allclose(B.aplt(TOP, 1, tail), [0.0, 1.0, 0.0])


EMB = np.array([[1, 0], [1, 1], [3, 0], [0, 2], [-1, 0], [0, 1]], dtype=np.float32)  # not unit rows


def test_ild_by_hand():
    unit = B.check_embeddings(EMB, 6)
    d = 1 - 1 / math.sqrt(2)  # cosine distance at 45 degrees
    # [0, 1, 2]: d(0,1) = d, d(0,2) = 0 (same direction), d(1,2) = d -> mean 2d / 3
    # [3, 4, 0]: d(3,4) = 1, d(3,0) = 1, d(4,0) = 2 -> 4 / 3; [5, 1]: d
    top = np.array([[0, 1, 2], [3, 4, 0], [5, 1, 4]])
    np.testing.assert_allclose(B.ild(top, 3, unit)[:2], [2 * d / 3, 4 / 3])
    np.testing.assert_allclose(B.ild(top, 2, unit), [d, 1.0, d])
    # the chunked computation equals the pairwise definition on random vectors
    rng = np.random.default_rng(0)
    emb = rng.normal(size=(30, 5))
    lists = np.stack([rng.permutation(30)[:6] for _ in range(50)])
    u = emb / np.linalg.norm(emb, axis=1, keepdims=True)
    pairwise = [np.mean([1 - u[a] @ u[b] for i, a in enumerate(row) for b in row[i + 1:]]) for row in lists]
    np.testing.assert_allclose(B.ild(lists, 6, B.check_embeddings(emb, 30), chunk=7), pairwise)


def test_ild_errors_name_the_problem():
    with pytest.raises(ValueError, match="ild@1"):
        B.ild(TOP, 1, B.check_embeddings(EMB, 6))
    with pytest.raises(ValueError, match="item_embeddings"):
        B.check_embeddings(None, 6)
    with pytest.raises(ValueError, match=r"\(6, d\)"):
        B.check_embeddings(EMB[:5], 6)
    zero = EMB.copy()
    zero[4] = 0
    with pytest.raises(ValueError, match="row 4"):
        B.check_embeddings(zero, 6)


# -- through the full ranking: masked items, ties --------------------------------------------------------------
def hand_data():
    """4 users, 6 items. Train: u0 {0, 1}, u1 {0, 2}, u2 {1, 3}, u3 {2}: pop = [2, 2, 2, 1, 0, 0], 7 interactions,
    |U_train| = 4; 20% = 1.4, so the head is {0, 1, 2} (all tied at pop 2), the tail {3, 4, 5}. Test: u0 {4},
    u1 {5}, u2 {4}, u3 {3}; no valid items."""
    train = [(0, 0), (0, 1), (1, 0), (1, 2), (2, 1), (2, 3), (3, 2)]
    test = [(0, 4), (1, 5), (2, 4), (3, 3)]
    return make_split(train, [], test, 4, 6)


# the masked (training) items score highest; u0 has tied pairs {2, 3} and {4, 5}, u1 the tied pair {3, 4} on top
SCORES = [[5, 5, 1, 1, 0, 0],  # masked 0, 1 -> top-2 {2, 3}
          [9, 0, 9, 3, 3, 0],  # masked 0, 2 -> {3, 4}
          [0, 9, 1, 9, 2, 0],  # masked 1, 3 -> [4, 2]
          [1, 2, 9, 0, 0, 0]]  # masked 2    -> [1, 0]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_evaluate_beyond_metrics_by_hand(seed):
    result = evaluate(table_scorer(SCORES), hand_data(), "test", ks=(2,), seed=seed, item_embeddings=EMB,
                      metrics=("recall", "coverage", "novelty", "arp", "aplt", "ild"))
    v = result.per_user
    np.testing.assert_array_equal(result.users, [0, 1, 2, 3])
    np.testing.assert_allclose(v["recall@2"], [0, 0, 1, 0])
    assert result.catalog == {"coverage@2": pytest.approx(5 / 6)}  # item 5 is never recommended
    # bits -log2(pop / 4): items 0-2 1 bit, item 3 2 bits, items 4-5 (no training user: pop 1) 2 bits
    np.testing.assert_allclose(v["novelty@2"], [1.5, 2.0, 1.5, 1.0])
    np.testing.assert_allclose(v["arp@2"], [1.5, 0.5, 1.0, 2.0])
    np.testing.assert_allclose(v["aplt@2"], [0.5, 1.0, 0.5, 0.0])
    np.testing.assert_allclose(v["ild@2"], [1.0, 1.0, 2.0, 1 - 1 / math.sqrt(2)])
    assert result.protocol["head_items"] == 3
    assert "coverage@2" not in v  # one number for the catalog, not a value per user


def test_unmasked_ranking_changes_the_lists():
    result = evaluate(table_scorer(SCORES), hand_data(), "test", ks=(2,), mask=(), metrics=("coverage", "arp"))
    # the training items now lead: u0 {0, 1}, u1 {0, 2}, u2 {1, 3}, u3 {2, 1}
    assert result.catalog["coverage@2"] == pytest.approx(4 / 6)
    np.testing.assert_allclose(result.per_user["arp@2"], [2.0, 2.0, 1.5, 2.0])


def test_a_tie_cut_at_k_follows_the_seeded_priority():
    """All items tie for u0 (items 0, 1 masked): top-1 is the unmasked item with the highest seeded priority."""
    data = hand_data()
    for seed in range(5):
        result = evaluate(table_scorer(np.zeros((4, 6))), data, "test", ks=(1,), seed=seed, metrics=("arp",))
        priority = torch.rand(6, generator=torch.Generator().manual_seed(seed), dtype=torch.float64).numpy()
        pop = np.array([2, 2, 2, 1, 0, 0])
        masked = [{0, 1}, {0, 2}, {1, 3}, {2}]
        best = [max(set(range(6)) - m, key=lambda i: priority[i]) for m in masked]
        np.testing.assert_allclose(result.per_user["arp@1"], pop[best])


@pytest.mark.parametrize("seed", [0, 1])
def test_beyond_metrics_rank_the_same_lists_as_accuracy(seed):
    """Every user's test targets are exactly the tail items they have not trained on: with the same lists (ties,
    masks) APLT@K equals precision@K for every user."""
    base = planted_data()
    tail = B.long_tail(B.item_popularity(base.train))
    assert 0 < tail.sum() < base.n_items
    test = np.where(tail[None, :] & (base.train.toarray() == 0), 1, 0)
    data = make_split(base.train.toarray() > 0, np.zeros_like(test), test, base.n_users, base.n_items)
    table = np.floor(np.random.default_rng(seed).random((base.n_users, base.n_items)) * 3)  # many ties
    result = evaluate(table_scorer(table), data, "test", ks=(5, 10), seed=seed, metrics=("precision", "aplt"))
    for k in (5, 10):
        np.testing.assert_allclose(result.per_user[f"aplt@{k}"], result.per_user[f"precision@{k}"])


def test_evaluate_errors_before_ranking():
    data = hand_data()

    def never(users):
        raise AssertionError("ranked although the request is invalid")

    with pytest.raises(ValueError, match="ild.*item_embeddings"):
        evaluate(never, data, "test", ks=(2,), metrics=("recall", "ild"))
    with pytest.raises(ValueError, match="ild@1"):
        evaluate(never, data, "test", ks=(1, 2), metrics=("ild",), item_embeddings=EMB)
    with pytest.raises(ValueError, match=r"'gini'.*coverage.*ild"):
        evaluate(never, data, "test", ks=(2,), metrics=("recall", "gini"))


def test_coverage_is_reported_without_se():
    result = evaluate(table_scorer(SCORES), hand_data(), "test", ks=(2,), metrics=("recall", "coverage"))
    out = result.to_dict()
    assert out["coverage@2"] == {"mean": pytest.approx(5 / 6), "se": None, "n": 4}
    assert set(out["recall@2"]) == {"mean", "se", "n"} and out["recall@2"]["se"] is not None
    assert estimate_cell(out["coverage@2"]) == "0.8333" and str(result.summary()["coverage@2"]) == "0.8333"


# -- from a run ------------------------------------------------------------------------------------------------
def test_run_evaluate_uses_the_saved_lm_features(tmp_path):
    data = planted_data()
    model = lmrec.get_model("alpharec")(mlp_ratio=1.0, features=planted_features())
    run = lmrec.fit(model, data, {"epochs": 1, "progress": False}, out=tmp_path / "ar")
    loaded = lmrec.Run.load(run.folder, data=data)
    got = loaded.evaluate("test", ks=(10,), metrics=("recall", "ild", "coverage"))
    want = evaluate(user_scorer(loaded.model.score), data, "test", ks=(10,), metrics=("recall", "ild", "coverage"),
                    seed=loaded.manifest["eval_seed"], cold_users="exclude", item_embeddings=planted_features())
    np.testing.assert_allclose(got.per_user["ild@10"], want.per_user["ild@10"])
    np.testing.assert_allclose(got.per_user["recall@10"], want.per_user["recall@10"])
    assert got.catalog == want.catalog
    assert set(loaded.evaluate("test").per_user) == {f"{m}@{k}" for m in ("recall", "ndcg", "hr", "mrr")
                                                     for k in (10, 20)}  # the default is unchanged


def test_run_evaluate_encodes_titles_without_lm_features(tmp_path, monkeypatch):
    import lmrec.text

    class TitleEncoder:  # a vector per title: "Movie number i" -> one-hot of i % 4 plus a constant
        identity, dim = "test:title-numbers", 5

        def encode(self, texts, batch_size=64, progress=False):
            rows = np.zeros((len(texts), 5), np.float32)
            for r, text in enumerate(texts):
                rows[r, int(text.split()[-1]) % 4] = 1.0
                rows[r, 4] = 1.0
            return rows

    specs = []
    monkeypatch.setenv("LMREC_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(lmrec.text, "get_encoder", lambda spec, **kw: specs.append(spec) or TitleEncoder())
    data = planted_data()
    run = lmrec.fit("pop", data, out=tmp_path / "pop")
    got = run.evaluate("test", ks=(5,), metrics=("ild",))
    assert specs == [B.DEFAULT_ENCODER]
    emb = TitleEncoder().encode(data.catalog.titles)
    want = evaluate(user_scorer(run.model.score), data, "test", ks=(5,), metrics=("ild",),
                    seed=run.manifest["eval_seed"],
                    cold_users="exclude", item_embeddings=emb)
    np.testing.assert_allclose(got.per_user["ild@5"], want.per_user["ild@5"])
    assert ((got.per_user["ild@5"] >= 0) & (got.per_user["ild@5"] <= 0.5 + 1e-12)).all()  # cos ≥ 1/2 here
