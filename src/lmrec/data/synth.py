"""Synthetic interaction data with the shape of real data, seeded, at any size: ``lmrec data synth``.

Items fall into clusters (``items / 500``, at least 10); an item's popularity follows a power law over a random
ranking (weight ∝ (rank + 1)^-``item_exponent``). A user's number of interactions is log-normal (at least
``min_per_user``; the mean is set by ``interactions / users``), and each interaction is drawn, with probability
``focus``, from the user's two favourite clusters, else from the whole catalog, always by popularity; repeated
pairs collapse, so the count written is a little below the one asked for (both are reported). Titles are built
from a vocabulary: two random words and a theme word of the item's cluster (so text carries the cluster, as
AlphaRec needs). Written in the LightGCN text format (``train.txt``, ``valid.txt``, ``test.txt``, ``items.tsv``),
each user's items split at random by ``ratios``; or (``csv=True``) as a shop's raw files would be, with text ids and
no split: ``interactions.csv`` (user_id ``c000042``, item_id ``SKU-000017``, a rating 1-5, a timestamp; rows in time
order) and ``items.csv`` (item_id, title, description), for ``lmrec data import``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lmrec.errors import LmrecError
from lmrec.io import atomic_write

ADJECTIVES = ("silent quiet broken golden hidden last lost bright dark endless frozen burning distant wild hollow "
              "secret crimson silver final little great northern southern restless gentle bitter sweet iron "
              "paper glass stone velvet electric lonely brave strange ancient modern sleeping rising falling").split()
NOUNS = ("river city garden mirror winter summer letter road kingdom island machine promise shadow voice harbor "
         "forest engine signal circle tower window bridge station horizon ocean desert valley storm echo lantern "
         "compass anthem portrait journey").split()
THEMES = ("love war crime space magic music family sport horror comedy history science mystery western animation "
          "romance heist spy disaster zombie robot pirate samurai detective vampire dragon ghost alien monster "
          "courtroom prison").split()


@dataclass
class SynthStats:
    users: int
    items: int
    interactions_asked: int
    interactions: int
    train: int
    valid: int
    test: int


def synthesize(out: Path, interactions: int, users: int | None = None, items: int | None = None, seed: int = 0,
               ratios: tuple[float, float, float] = (0.8, 0.1, 0.1), item_exponent: float = 0.8,
               focus: float = 0.8, min_per_user: int = 5, csv: bool = False) -> SynthStats:
    """Write a synthetic dataset into the folder ``out`` (see the module docstring); returns its counts."""
    users = users or max(10, interactions // 50)
    items = items or max(20, interactions // 200)
    if interactions < users * min_per_user:
        raise LmrecError(f"{interactions} interactions cannot give {users} users {min_per_user} items each")
    rng = np.random.default_rng(seed)
    n_clusters = max(10, items // 500)
    cluster = rng.integers(0, n_clusters, items)
    weight = (rng.permutation(items) + 1.0) ** -item_exponent  # popularity by a random rank
    order = np.lexsort((np.arange(items), cluster))  # items grouped by cluster
    bounds = np.searchsorted(cluster[order], np.arange(n_clusters + 1))
    cumulative = np.cumsum(weight[order])  # per cluster: a slice of this, offset by the cluster's start
    global_cdf = np.cumsum(weight) / weight.sum()

    mean = interactions / users
    sigma = 1.0
    counts = np.maximum(min_per_user, np.round(rng.lognormal(np.log(mean) - sigma**2 / 2, sigma, users))).astype(
        np.int64)
    counts = np.maximum(min_per_user, np.round(counts * interactions / counts.sum())).astype(np.int64)
    user_of = np.repeat(np.arange(users, dtype=np.int64), counts)
    favourite = rng.integers(0, n_clusters, (users, 2))
    in_cluster = rng.random(len(user_of)) < focus
    picks = np.empty(len(user_of), dtype=np.int64)
    chosen = favourite[user_of[in_cluster], rng.integers(0, 2, int(in_cluster.sum()))]
    lo, hi = bounds[chosen], bounds[chosen + 1]
    base = np.where(lo > 0, cumulative[np.maximum(lo - 1, 0)], 0.0)
    target = base + rng.random(len(chosen)) * (cumulative[hi - 1] - base)
    picks[in_cluster] = order[np.minimum(np.searchsorted(cumulative, target), hi - 1)]
    picks[~in_cluster] = np.minimum(np.searchsorted(global_cdf, rng.random(int((~in_cluster).sum()))), items - 1)
    keys = np.unique(user_of * items + picks)  # repeated pairs collapse; sorted by user
    u, i = keys // items, keys % items

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if csv:
        return _write_csv(out, u, i, cluster, rng, SynthStats(users, items, interactions, len(keys), len(keys), 0, 0))
    part = _split(u, ratios, rng)
    sizes = []
    for p, name in enumerate(("train", "valid", "test")):
        mask = part == p
        sizes.append(int(mask.sum()))
        _write_rows(out / f"{name}.txt", u[mask], i[mask], users)
    titles = _titles(cluster, rng)
    atomic_write(out / "items.tsv", lambda f: f.write("item_id\ttext\n" + "".join(
        f"{j}\t{t}\n" for j, t in enumerate(titles))))
    return SynthStats(users, items, interactions, len(keys), *sizes)


def _write_csv(out: Path, users: np.ndarray, items: np.ndarray, cluster: np.ndarray, rng: np.random.Generator,
               stats: SynthStats) -> SynthStats:
    """``interactions.csv`` and ``items.csv`` with text ids (see the module docstring)."""
    import pandas as pd

    order = np.argsort(rng.random(len(users)), kind="stable")  # the log's rows in time order
    times = 1_600_000_000 + np.sort(rng.integers(0, 3 * 365 * 86400, len(users)))
    log = pd.DataFrame({"user_id": np.char.add("c", np.char.zfill(users[order].astype(str), 6)),
                        "item_id": np.char.add("SKU-", np.char.zfill(items[order].astype(str), 6)),
                        "rating": rng.integers(1, 6, len(users)), "timestamp": times})
    titles = _titles(cluster, rng)
    catalog = pd.DataFrame({"item_id": [f"SKU-{j:06d}" for j in range(len(cluster))], "title": titles,
                            "description": [f"{t.split(': a ')[1].capitalize()}, in the catalog since "
                                            f"{2000 + j % 20}." for j, t in enumerate(titles)]})
    atomic_write(out / "interactions.csv", lambda f: log.to_csv(f, index=False))
    atomic_write(out / "items.csv", lambda f: catalog.to_csv(f, index=False))
    return stats


def _split(users: np.ndarray, ratios: tuple[float, float, float], rng: np.random.Generator) -> np.ndarray:
    """0 / 1 / 2 (train / valid / test) per row: each user's rows in a random order, cut by ``ratios``; every user
    keeps at least one training row."""
    total = sum(ratios)
    n = np.bincount(users)
    start = np.concatenate([[0], np.cumsum(n)[:-1]])
    position = np.empty(len(users), dtype=np.int64)
    noise = rng.random(len(users))
    order = np.lexsort((noise, users))  # rows of each user in a random order
    position[order] = np.arange(len(users)) - np.repeat(start, n)
    size = n[users]
    n_test = np.minimum(np.floor(size * ratios[2] / total + 0.5), size - 1)
    n_valid = np.minimum(np.floor(size * ratios[1] / total + 0.5), size - 1 - n_test)
    return np.where(position < size - n_valid - n_test, 0, np.where(position < size - n_test, 1, 2))


def _write_rows(path: Path, users: np.ndarray, items: np.ndarray, n_users: int) -> None:
    """``user item item ...`` lines (users sorted), written in chunks."""
    bounds = np.searchsorted(users, np.arange(n_users + 1))

    def write(f) -> None:
        for start in range(0, n_users, 10_000):
            lines = []
            for user in range(start, min(start + 10_000, n_users)):
                row = items[bounds[user] : bounds[user + 1]]
                lines.append(f"{user} " + " ".join(map(str, row.tolist())) if len(row) else str(user))
            f.write("\n".join(lines) + "\n")

    atomic_write(path, write)


def _titles(cluster: np.ndarray, rng: np.random.Generator) -> list[str]:
    themes = np.array(THEMES)[rng.integers(0, len(THEMES), (cluster.max() + 1, 2))]
    adjectives = np.array(ADJECTIVES)[rng.integers(0, len(ADJECTIVES), len(cluster))]
    nouns = np.array(NOUNS)[rng.integers(0, len(NOUNS), len(cluster))]
    theme = themes[cluster, rng.integers(0, 2, len(cluster))]
    return [f"The {a.title()} {n.title()}: a {t} story" for a, n, t in zip(adjectives, nouns, theme, strict=True)]
