"""Split protocols on small synthetic logs: ratios, disjointness, determinism, temporal order, k-core."""

import numpy as np
import pytest

from lmrec.data.catalog import ItemCatalog
from lmrec.data.interactions import Interactions
from lmrec.data.splits import (
    carve_validation,
    kcore,
    leave_one_out,
    parse_split,
    ratio_split,
    temporal_global_split,
    temporal_user_split,
    thin_train,
)

N_USERS, N_ITEMS = 30, 60


def synthetic(seed: int = 0, repeats: bool = False) -> Interactions:
    """User u has 1 + 2u distinct items (capped at N_ITEMS), with distinct random timestamps."""
    rng = np.random.default_rng(seed)
    users, items = [], []
    for u in range(N_USERS):
        chosen = rng.choice(N_ITEMS, size=min(1 + 2 * u, N_ITEMS), replace=False)
        users += [u] * len(chosen)
        items += chosen.tolist()
    if repeats:  # every user re-interacts with their first item
        users += list(range(N_USERS))
        items += [items[users.index(u)] for u in range(N_USERS)]
    times = rng.permutation(len(users)) * 10
    catalog = ItemCatalog([f"i{i}" for i in range(N_ITEMS)], [f"Item {i}" for i in range(N_ITEMS)])
    return Interactions(users, items, [f"u{u}" for u in range(N_USERS)], catalog, timestamps=times, name="toy")


def per_user(matrix) -> np.ndarray:
    return np.diff(matrix.indptr)


def item_sets(matrix) -> list[set[int]]:
    return [set(matrix.indices[matrix.indptr[u] : matrix.indptr[u + 1]].tolist()) for u in range(matrix.shape[0])]


def check_partition(data, split):
    """The three splits are disjoint and together hold every distinct (user, item) pair."""
    assert split.train.multiply(split.valid).nnz == 0
    assert split.train.multiply(split.test).nnz == 0
    assert split.valid.multiply(split.test).nnz == 0
    assert (split.train + split.valid + split.test != data.to_csr()).nnz == 0


SPLITTERS = {
    "ratio": lambda d: ratio_split(d, (0.4, 0.3, 0.3), seed=1),
    "temporal-user": lambda d: temporal_user_split(d, (0.8, 0.1, 0.1)),
    "temporal-global": lambda d: temporal_global_split(d, (0.8, 0.1, 0.1)),
    "loo": leave_one_out,
}


@pytest.mark.parametrize("name", list(SPLITTERS))
@pytest.mark.parametrize("repeats", [False, True])
def test_disjoint_and_complete(name, repeats):
    data = synthetic(repeats=repeats)
    check_partition(data, SPLITTERS[name](data))


@pytest.mark.parametrize("name", ["ratio", "temporal-user", "loo"])
def test_every_user_keeps_a_training_item(name):
    split = SPLITTERS[name](synthetic())
    assert (per_user(split.train) >= 1).all()


@pytest.mark.parametrize("ratios", [(0.4, 0.3, 0.3), (0.8, 0.1, 0.1), (4, 3, 3)])
def test_ratio_split_rounds_the_training_part_first(ratios):
    data = synthetic()
    split = ratio_split(data, ratios, seed=5)
    sizes = per_user(data.to_csr())
    r_train, r_valid, _ = (r / sum(ratios) for r in ratios)
    n_train = np.maximum(np.floor(sizes * r_train + 0.5), 1)
    n_valid = np.minimum(np.floor(sizes * r_valid + 0.5), sizes - n_train)
    assert (per_user(split.train) == n_train).all()
    assert (per_user(split.valid) == n_valid).all()
    assert (per_user(split.test) == sizes - n_train - n_valid).all()
    assert per_user(split.test)[0] == 0 and per_user(split.train)[0] == 1  # a single item stays in train


@pytest.mark.parametrize(("n", "expected"), [(107, (43, 32, 32)), (19, (8, 6, 5)), (5, (2, 2, 1)), (2, (1, 1, 0))])
def test_ratio_split_matches_the_official_alpharec_counts(n, expected):
    """papers.md 2.1: the released 4:3:3 files hold 43/32/32 of 107 items and 8/6/5 of 19."""
    catalog = ItemCatalog([f"i{i}" for i in range(n)], [f"Item {i}" for i in range(n)])
    data = Interactions([0] * n, list(range(n)), ["u0"], catalog, name="one user")
    split = ratio_split(data, (0.4, 0.3, 0.3), seed=3)
    assert (split.train.nnz, split.valid.nnz, split.test.nnz) == expected


def test_temporal_user_split_rounds_the_held_out_parts_first():
    """Hold-out first: a 5-item user at 8:1:1 keeps a test and a validation item (3/1/1)."""
    catalog = ItemCatalog([f"i{i}" for i in range(5)], [f"Item {i}" for i in range(5)])
    data = Interactions([0] * 5, list(range(5)), ["u0"], catalog, timestamps=list(range(5)), name="one user")
    split = temporal_user_split(data, (0.8, 0.1, 0.1))
    assert (split.train.nnz, split.valid.nnz, split.test.nnz) == (3, 1, 1)


def test_ratio_split_determinism():
    data = synthetic()
    a, b, c = ratio_split(data, seed=7), ratio_split(data, seed=7), ratio_split(data, seed=8)
    for label in ("train", "valid", "test"):
        assert (a.split(label) != b.split(label)).nnz == 0
    assert (a.test != c.test).nnz > 0
    assert a.checksum() == b.checksum() != c.checksum()


def test_leave_one_out_takes_the_latest():
    data = synthetic()
    split = leave_one_out(data)
    tests, valids = item_sets(split.test), item_sets(split.valid)
    for u in range(N_USERS):
        mine = np.flatnonzero(data.users == u)
        ordered = data.items[mine[np.argsort(data.timestamps[mine])]]
        if len(ordered) >= 2:
            assert tests[u] == {ordered[-1]}
        if len(ordered) >= 3:
            assert valids[u] == {ordered[-2]}
        assert item_sets(split.train)[u] == set(ordered[: max(1, len(ordered) - 2)].tolist())


def _times(data, matrix):
    """Per user, the timestamps of the pairs in ``matrix`` (the log has one row per pair here)."""
    lookup = {(u, i): t for u, i, t in zip(data.users, data.items, data.timestamps)}
    coo = matrix.tocoo()
    out = [[] for _ in range(matrix.shape[0])]
    for u, i in zip(coo.row, coo.col):
        out[u].append(lookup[(u, i)])
    return out


def test_temporal_user_split_never_trains_on_the_future():
    data = synthetic()
    split = temporal_user_split(data, (0.6, 0.2, 0.2))
    train, valid, test = (_times(data, split.split(s)) for s in ("train", "valid", "test"))
    for u in range(N_USERS):
        if test[u]:
            assert max(train[u] + valid[u]) < min(test[u])
        if valid[u]:
            assert max(train[u]) < min(valid[u])


def test_temporal_global_split_cuts_by_time():
    data = synthetic()
    split = temporal_global_split(data, (0.8, 0.1, 0.1))
    train, valid, test = ([t for ts in _times(data, split.split(s)) for t in ts] for s in ("train", "valid", "test"))
    assert max(train) < min(valid) and max(valid) < min(test)
    assert len(train) == round(0.8 * len(data))


def test_temporal_split_needs_timestamps():
    data = synthetic()
    data.timestamps = None
    with pytest.raises(ValueError, match="timestamps"):
        leave_one_out(data)


@pytest.mark.parametrize("k", [2, 5, 10])
def test_kcore(k):
    data = synthetic(repeats=True)
    core = kcore(data, k, k)
    assert len(core) > 0
    assert (np.bincount(core.users, minlength=core.n_users) >= k).all()
    assert (np.bincount(core.items, minlength=core.n_items) >= k).all()
    assert len(np.unique(core.users * core.n_items + core.items)) == len(core)  # repeated pairs counted once
    kept = {(core.user_ids[u], core.catalog.ids[i]) for u, i in zip(core.users, core.items)}
    original = {(data.user_ids[u], data.catalog.ids[i]) for u, i in zip(data.users, data.items)}
    assert kept <= original


def test_carve_validation():
    split = ratio_split(synthetic(), (0.7, 0.0, 0.3), seed=2)
    assert split.valid.nnz == 0
    carved = carve_validation(split, 0.25, seed=4)
    assert (carved.train + carved.valid != split.train).nnz == 0
    assert carved.train.multiply(carved.valid).nnz == 0 and (carved.test != split.test).nnz == 0
    assert (per_user(carved.train) >= 1).all()
    assert np.allclose(
        per_user(carved.valid), np.minimum(np.floor(per_user(split.train) * 0.25 + 0.5), per_user(split.train) - 1)
    )


@pytest.mark.parametrize(
    "spec, protocol",
    [("ratio:0.4,0.3,0.3", "per-user random 0.4:0.3:0.3 (seed 11)"), ("ratio", "per-user random 0.8:0.1:0.1 (seed 11)"),
     ("temporal-user:0.8,0.1,0.1", "per-user temporal 0.8:0.1:0.1"), ("temporal-global", "global temporal 0.8:0.1:0.1"),
     ("loo", "leave-one-out (temporal)")],
)
def test_parse_split(spec, protocol):
    assert parse_split(spec, synthetic(), seed=11).protocol == protocol


def test_parse_split_unknown():
    with pytest.raises(ValueError, match="unknown split"):
        parse_split("random:0.5", synthetic())


@pytest.mark.parametrize("spec", ["ratio:0.4,0.3", "ratio:a,b,c", "loo:0.5", "ratio:0,0.5,0.5", "nope"])
def test_parse_split_rejects_bad_specs_naming_them(spec):
    from lmrec.data.splits import parse_split

    users = np.repeat(np.arange(3), 4)
    items = np.tile(np.arange(4), 3)
    data = Interactions(users, items, ["a", "b", "c"], ItemCatalog([str(i) for i in range(4)], ["t"] * 4))
    with pytest.raises(ValueError, match=spec.split(":")[0]):
        parse_split(spec, data)


def test_thin_train_keeps_a_share_of_each_users_training_items_and_nothing_else_changes():
    split = ratio_split(synthetic(), (0.4, 0.3, 0.3), seed=1)
    thin = thin_train(split, 0.25, seed=3)
    n = per_user(split.train)
    # max(1, round(0.25·n)), round(x) = ⌊x + ½⌋
    assert np.array_equal(per_user(thin.train), np.where(n > 0, np.maximum(1, np.floor(n * 0.25 + 0.5)), 0))
    kept = dict(zip(n.tolist(), per_user(thin.train).tolist(), strict=True))  # training items -> kept
    assert {k: kept[k] for k in (1, 2, 3, 4, 6, 10, 24)} == {1: 1, 2: 1, 3: 1, 4: 1, 6: 2, 10: 3, 24: 6}
    assert all(t <= s for t, s in zip(item_sets(thin.train), item_sets(split.train), strict=True))
    assert (thin.valid != split.valid).nnz == 0 and (thin.test != split.test).nnz == 0
    assert thin.user_ids == split.user_ids and thin.checksum() != split.checksum()
    assert thin.protocol == "per-user random 0.4:0.3:0.3 (seed 1); training thinned to 0.25 per user (seed 3)"
    assert (thin_train(split, 0.25, seed=3).train != thin.train).nnz == 0  # deterministic
    assert (thin_train(split, 1.0).train != split.train).nnz == 0
    with pytest.raises(ValueError, match=r"in \(0, 1\], got 0"):
        thin_train(split, 0)


def test_parse_split_thins_after_the_split():
    data = synthetic()
    thin = parse_split("ratio:0.4,0.3,0.3+thin:0.5", data, seed=11)
    assert (thin.train != thin_train(ratio_split(data, (0.4, 0.3, 0.3), seed=11), 0.5, seed=11).train).nnz == 0
    for bad in ("ratio:0.4,0.3,0.3+thin:x", "ratio:0.4,0.3,0.3+keep:0.5"):
        with pytest.raises(ValueError, match=r"expected thin:<share kept>, e.g. ratio:0.4,0.3,0.3\+thin:0.1"):
            parse_split(bad, data)
