"""Tiny synthetic datasets with planted structure for the eval / train / model / CLI tests.

``planted_data()``: 30 users x 40 items. Items 0-3 are "blockbusters" that most users see; items 4-39 form
6 clusters of 6 items, and users form 6 clusters of 5 users: each user sees 5 of the 6 items of their
cluster (and some blockbusters). Each user's items are shuffled and cut into 2 test, 2 valid, the rest
train, so a model that learns the clusters (or popularity) ranks valid/test items far above random.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from lmrec.data.catalog import ItemCatalog  # noqa: E402
from lmrec.data.interactions import SplitData, to_csr  # noqa: E402
from lmrec.models.queries import KnownUsers

N_USERS, N_ITEMS, N_POPULAR, N_CLUSTERS = 30, 40, 4, 6
CLUSTER_ITEMS = (N_ITEMS - N_POPULAR) // N_CLUSTERS  # 6
CLUSTER_USERS = N_USERS // N_CLUSTERS  # 5


def user_cluster(user: int) -> int:
    return user // CLUSTER_USERS


def item_cluster(item: int) -> int:
    """-1 for a blockbuster, else the cluster of the item."""
    return -1 if item < N_POPULAR else (item - N_POPULAR) // CLUSTER_ITEMS


def catalog(n_items: int) -> ItemCatalog:
    return ItemCatalog([f"i{i}" for i in range(n_items)], [f"Movie number {i}" for i in range(n_items)])


def make_split(train, valid, test, n_users: int, n_items: int, name: str = "synthetic") -> SplitData:
    """SplitData from three lists of (user, item) pairs (or dense 0/1 arrays)."""

    def matrix(pairs) -> sp.csr_matrix:
        if isinstance(pairs, np.ndarray) and pairs.shape == (n_users, n_items):
            return sp.csr_matrix(pairs, dtype=np.float32)
        pairs = np.asarray(list(pairs), dtype=np.int64).reshape(-1, 2)
        return to_csr(pairs[:, 0], pairs[:, 1], n_users, n_items)

    return SplitData(name, [f"u{u}" for u in range(n_users)], catalog(n_items),
                     matrix(train), matrix(valid), matrix(test), "synthetic")


def planted_data(seed: int = 0, name: str = "planted") -> SplitData:
    rng = np.random.default_rng(seed)
    splits: list[list[tuple[int, int]]] = [[], [], []]
    for u in range(N_USERS):
        c = user_cluster(u)
        own = N_POPULAR + c * CLUSTER_ITEMS + rng.permutation(CLUSTER_ITEMS)[: CLUSTER_ITEMS - 1]
        popular = np.flatnonzero(rng.random(N_POPULAR) < 0.6)
        items = rng.permutation(np.concatenate([own, popular]))
        for part, chunk in ((2, items[:2]), (1, items[2:4]), (0, items[4:])):
            splits[part] += [(u, int(i)) for i in chunk]
    return make_split(*splits, N_USERS, N_ITEMS, name=name)


def planted_features(dim: int = 16, noise: float = 0.1, seed: int = 0) -> np.ndarray:
    """(N_ITEMS, dim) item 'LM features': a cluster direction plus noise (blockbusters get their own direction)."""
    rng = np.random.default_rng(seed)
    directions = rng.normal(size=(N_CLUSTERS + 1, dim))
    rows = [directions[item_cluster(i) + 1] for i in range(N_ITEMS)]
    return (np.array(rows) + noise * rng.normal(size=(N_ITEMS, dim))).astype(np.float32)


def random_level(data: SplitData, split: str, k: int) -> float:
    """Expected mean recall@k of a random ranking under the default masks (k / number of candidates per user)."""
    masks = {"valid": ("train",), "test": ("train", "valid")}[split]
    targets = data.split(split)
    masked = sum(data.split(m) for m in masks)
    values = []
    for u in np.flatnonzero(np.diff(targets.indptr)):
        seen = set(masked[u].indices) - set(targets[u].indices)
        values.append(min(1.0, k / (data.n_items - len(seen))))
    return float(np.mean(values))


def fit_specs(specs: dict, data: SplitData, root: Path) -> dict:
    """``{key: Run}``: each spec ``(label, make_model, train_settings)`` fitted once, its run folder under ``root``."""
    import lmrec

    return {key: lmrec.fit(make(), data, train, out=root / key) for key, (_, make, train) in specs.items()}


def all_scores(model, data: SplitData) -> torch.Tensor:
    """(n_users, n_items) scores of a CF model."""
    return model.score(KnownUsers(np.arange(data.n_users))).detach().clone()


def write_lightgcn_folder(data: SplitData, folder: Path) -> Path:
    """Write ``data`` as a LightGCN text folder (train/valid/test.txt with items.tsv titles)."""
    folder.mkdir(parents=True, exist_ok=True)
    for split in ("train", "valid", "test"):
        m = data.split(split)
        lines = [" ".join(str(x) for x in [u, *m[u].indices]) for u in range(data.n_users)]
        (folder / f"{split}.txt").write_text("\n".join(lines) + "\n")
    rows = ["item_id\ttext"] + [f"{i}\t{t}" for i, t in enumerate(data.catalog.titles)]
    (folder / "items.tsv").write_text("\n".join(rows) + "\n")
    return folder


@pytest.fixture(autouse=True, scope="module")
def single_thread():
    """Import into a test module to run its torch code on one thread (the test machines are shared)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# -- conversational data and a tiny LLM (lmrec crs end to end in seconds) ----------------------------------
MOVIES = ["Toy Story (1995)", "Heat (1995)", "The Matrix (1999)", "Alien (1979)", "Jaws (1975)",
          "Up (2009)", "Inception (2010)", "Titanic (1997)", "Ronin (1998)", "Fargo (1996)"]
WORDS = ["User", "System", "I", "like", "watch", "try", "movies", "action", "you", "should", "what", "about"]


def dialog(k: int, repeat: bool = False) -> list[dict]:
    """A tiny INSPIRED dialogue; ``repeat``: a last recommending turn that names only an item mentioned before."""
    a, b, c = MOVIES[k % 10], MOVIES[(k + 3) % 10], MOVIES[(k + 5) % 10]
    return [
        {"text": "Hi! what movies do you like?", "role": "RECOMMENDER", "movie": []},
        {"text": f"I like {a} and action", "role": "SEEKER", "movie": [a]},
        {"text": f"you should watch {b}", "role": "RECOMMENDER", "movie": [b]},
        {"text": "what about another?", "role": "SEEKER", "movie": []},
        {"text": f"try {c} or {a}", "role": "RECOMMENDER", "movie": [c, a]},
    ] + ([{"text": "which one?", "role": "SEEKER", "movie": []},
          {"text": f"{b}, really", "role": "RECOMMENDER", "movie": [b]}] if repeat else [])


def write_inspired(root: Path, repeat: bool = False) -> None:
    """Tiny INSPIRED (12 / 3 / 3 dialogues); ``repeat``: every other dialogue ends on a turn naming only an item
    mentioned before (a sample under "all" targets, none under "new")."""
    folder = root / "inspired" / "unicrs_processed"
    folder.mkdir(parents=True)
    for split, ks in (("train", range(12)), ("valid", range(12, 15)), ("test", range(15, 18))):
        with open(folder / f"{split}_data_dbpedia.jsonl", "w", encoding="utf-8") as f:
            for k in ks:
                f.write(json.dumps(dialog(k, repeat and k % 2 == 0)) + "\n")


def write_tiny_llm(folder: Path) -> None:
    """A 1-layer, 16-d random Llama with a whitespace word-level tokenizer (no chat template: Llama-2 prompt)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    vocab: dict[str, int] = {"[UNK]": 0, "[PAD]": 1, "</s>": 2, "<s>": 3}
    for word in WORDS + [w for m in MOVIES for w in re.findall(r"\w+|[^\w\s]+", m)] + ["1", ".", "2", ":"]:
        vocab.setdefault(word, len(vocab))
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", eos_token="</s>",
                                   bos_token="<s>")
    fast.save_pretrained(folder)
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(vocab), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=1024,
                         bos_token_id=3, eos_token_id=2, pad_token_id=1, tie_word_embeddings=True)
    LlamaForCausalLM(config).save_pretrained(folder)
