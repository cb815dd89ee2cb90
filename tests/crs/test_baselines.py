"""CRS baselines: popularity, FISM, SASRec, the dense retriever and the shared training loop."""

import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from helpers import single_thread  # noqa: F401
from lmrec.data.catalog import ItemCatalog
from lmrec.data.conversations import Conversation, CRSData, CRSSample, Turn, training_mentions
from lmrec.errors import LmrecError
from lmrec.eval.crs import evaluate_crs
from lmrec.models.base import get_model
from lmrec.models.crs.dense import DenseRetriever
from lmrec.models.crs.fism import FISM, FISMRecommender
from lmrec.models.crs.pop import CRSPopularity
from lmrec.models.crs.sasrec import SASRec, SASRecRecommender
from lmrec.models.crs.training import (
    CRS_TRAIN_DEFAULTS,
    PAD,
    fit_crs_module,
    history_tensor,
    item_tokens,
    sampled_cross_entropy,
)
from lmrec.models.queries import Conversations, turn_scorer
from lmrec.text import EmbeddingCache
from lmrec.train import TrainConfig

# -- planted data: 4 "blockbusters" everybody mentions first; 10 groups (seed A_g -> answer B_g) ------------------
N_POP, N_GROUPS = 4, 10
POPULAR = list(range(N_POP))
SEED = [N_POP + 2 * g for g in range(N_GROUPS)]
ANSWER = [N_POP + 2 * g + 1 for g in range(N_GROUPS)]
N_ITEMS = N_POP + 2 * N_GROUPS


def planted_crs(n_train: int = 16, n_eval: int = 3, seed: int = 0) -> CRSData:
    """Each conversation: the user names a blockbuster, then seed A_g; the system answers B_g (the target).
    Popularity cannot tell the B_g apart (and ranks the blockbusters first); A_g -> B_g is learnable."""
    rng = np.random.default_rng(seed)
    titles = [f"Blockbuster {p} (2001)" for p in POPULAR]
    for g in range(N_GROUPS):
        titles += [f"Seed {g} (1990)", f"Answer {g} (1995)"]
    catalog = ItemCatalog([f"m{i}" for i in range(N_ITEMS)], titles)

    def conv(cid: str, g: int) -> Conversation:
        p = int(rng.integers(N_POP))
        return Conversation(cid, [
            Turn("user", f"I watched {titles[p]}", [p]),
            Turn("system", "Nice. What else do you like?"),
            Turn("user", f"I love {titles[SEED[g]]}", [SEED[g]]),
            Turn("system", f"Then try {titles[ANSWER[g]]}", [ANSWER[g]]),
        ])

    split = {name: [conv(f"{name}{g}_{k}", g) for g in range(N_GROUPS) for k in range(n)]
             for name, n in (("train", n_train), ("valid", n_eval), ("test", n_eval))}
    return CRSData("planted", catalog, split["train"], split["valid"], split["test"])


@pytest.fixture(scope="module")
def data() -> CRSData:
    return planted_crs()


def crs_train(**kw) -> TrainConfig:
    """A TrainConfig with the CRS defaults (the official adapt schedule) replaced by ``kw``."""
    return TrainConfig(**{**CRS_TRAIN_DEFAULTS, **kw})


def quick(epochs: int = 40, **kw) -> TrainConfig:
    """Small batches; selection on validation HR@1 (HR@10 saturates on the planted data)."""
    return crs_train(**{"epochs": epochs, "batch_size": 32, "patience": 8, "metric": "hr@1", "progress": False, **kw})


def hr(model, samples, k: int = 1) -> float:
    return evaluate_crs(turn_scorer(model.score), samples, N_ITEMS, ks=(k,)).summary()[f"hr@{k}"].mean


# -- popularity ------------------------------------------------------------------------------------------------
def test_pop_counts_only_training_mentions(data):
    pop = CRSPopularity()
    pop.fit(data)
    expected = training_mentions(data.train, N_ITEMS)
    assert pop.counts.tolist() == expected.astype(float).tolist()
    assert pop.counts[SEED[0]] == 16 and pop.counts[ANSWER[0]] == 16  # 16 training conversations per group
    assert pop.counts[POPULAR].sum() == 16 * N_GROUPS  # one blockbuster per training conversation
    scores = pop.score(Conversations(tuple(data.samples("test")[:3])))
    assert scores.shape == (3, N_ITEMS) and torch.equal(scores[0], scores[2])


def test_pop_ignores_valid_and_test_mentions():
    cat = ItemCatalog(["a", "b", "c"], ["A", "B", "C"])
    train = [Conversation("t", [Turn("user", "A", [0]), Turn("system", "B", [1])])]
    test = [Conversation("x", [Turn("user", "C", [2]), Turn("system", "C and C", [2])] * 3)]
    pop = CRSPopularity()
    pop.fit(CRSData("d", cat, train, test, test))
    assert pop.counts.tolist() == [1.0, 1.0, 0.0]


# -- history encoding and the modules ---------------------------------------------------------------------------
def test_history_tensor_keeps_the_last_items_right_padded():
    h = history_tensor([[1, 2, 3, 4], [], [7]], max_len=3)
    assert h.tolist() == [[2, 3, 4], [PAD, PAD, PAD], [7, PAD, PAD]]
    assert history_tensor([[], []]).shape == (2, 0)
    tokens = item_tokens(torch.tensor([[2, PAD]]), n_items=5)
    assert tokens.tolist() == [[5, 2, 6]]  # [CLS] = n_items, [PAD] = n_items + 1
    with pytest.raises(ValueError, match="outside"):
        item_tokens(torch.tensor([[5]]), n_items=5)


def test_fism_formula_by_hand():
    torch.manual_seed(0)
    m = FISM(6, dim=4, alpha=0.5)
    with torch.no_grad():
        m.bias.copy_(torch.arange(6.0) / 10)
    E = m.embedding.weight.detach()
    cls = 6
    logits = m(history_tensor([[1, 3], []]))
    u = (E[cls] + E[1] + E[3]) / math.sqrt(3)
    assert torch.allclose(logits[0], u @ E[:6].T + m.bias.detach(), atol=1e-6)
    assert torch.allclose(logits[1], E[cls] @ E[:6].T + m.bias.detach(), atol=1e-6)  # empty: [CLS] / 1
    assert torch.equal(E[7], torch.zeros(4))  # the pad row is zero and stays out of the sum
    assert E[:6].std().item() == pytest.approx(0.01, rel=0.5)


@pytest.mark.parametrize("cls", [FISM, SASRec])
def test_padding_does_not_change_scores(cls):
    torch.manual_seed(0)
    m = cls(9).eval()
    histories = [[], [3], [1, 2, 5, 8]]
    batch = m(history_tensor(histories))
    assert batch.shape == (3, 9) and torch.isfinite(batch).all()
    for row, h in zip(batch, histories, strict=True):
        assert torch.allclose(row, m(history_tensor([h]))[0], atol=1e-5)


def test_sasrec_empty_history_and_order():
    torch.manual_seed(0)
    m = SASRec(7, max_len=4).eval()
    out = m(history_tensor([[]]))
    assert out.shape == (1, 7) and torch.isfinite(out).all()
    out = m(torch.empty(2, 0, dtype=torch.long))  # no column at all: [CLS] only
    assert torch.allclose(out[0], out[1])
    # a causal model: order matters
    assert not torch.allclose(m(history_tensor([[1, 2]])), m(history_tensor([[2, 1]])))
    with pytest.raises(ValueError, match="max_len"):
        m(history_tensor([[1, 2, 3, 4, 5]], max_len=5))


def test_sasrec_gradients_flow_in_train_mode():
    torch.manual_seed(0)
    m = SASRec(7).train()
    loss = F.cross_entropy(m(history_tensor([[1, 2], []])), torch.tensor([3, 4]))
    loss.backward()
    assert m.embedding.weight.grad is not None and m.bias.grad is not None


# -- loss and training loop -------------------------------------------------------------------------------------
def test_sampled_cross_entropy():
    logits = torch.tensor([[2.0, 0.5, -1.0, 0.0], [0.0, 1.0, 3.0, -2.0]])
    targets = torch.tensor([0, 2])
    assert torch.allclose(sampled_cross_entropy(logits, targets, None), F.cross_entropy(logits, targets))
    assert torch.allclose(sampled_cross_entropy(logits, targets, 3), F.cross_entropy(logits, targets))
    g = torch.Generator().manual_seed(1)
    neg = torch.randperm(4, generator=torch.Generator().manual_seed(1))[:2]
    got = sampled_cross_entropy(logits, targets, 2, g)
    expected = []
    for row, t in zip(logits, targets.tolist(), strict=True):
        negs = [int(j) for j in neg if int(j) != t]  # a negative equal to the target is masked
        expected.append(torch.logsumexp(row[[t, *negs]], 0) - row[t])
    assert got.item() == pytest.approx(torch.stack(expected).mean().item(), abs=1e-6)


class Toy(torch.nn.Module):
    """The same logits for every history: item 1 starts on top, training on target 0 overtakes it."""

    def __init__(self):
        super().__init__()
        self.logits = torch.nn.Parameter(torch.tensor([0.0, 1.0, -1.0, -1.0]))

    def forward(self, history):
        return self.logits.expand(len(history), -1)


def test_fit_restores_the_best_validation_state(tmp_path: Path):
    train = [CRSSample(f"t{i}", 1, "", [], [0], [True]) for i in range(8)]
    valid = [CRSSample("v", 1, "", [], [1], [True])]  # validation wants item 1: best after epoch 1, then worse
    module = Toy()
    inputs = lambda s: (history_tensor([x.mentioned for x in s]),)  # noqa: E731
    config = crs_train(epochs=10, lr=0.3, batch_size=8, patience=2, metric="hr@1", progress=False)
    log = fit_crs_module(module, inputs, train, valid, 4, config, folder=tmp_path)
    assert [r.valid["hr@1"] for r in log.records] == [1.0, 0.0, 0.0]
    assert (log.best_epoch, log.best_score) == (1, 1.0) and log.stopped.startswith("early stop")
    assert int(module.logits.argmax()) == 1  # the epoch-1 state is back
    assert len((tmp_path / "log.jsonl").read_text().splitlines()) == 3
    with pytest.raises(LmrecError, match="no training"):
        fit_crs_module(module, inputs, [], valid, 4, config)
    no_valid = fit_crs_module(Toy(), inputs, train, [], 4, crs_train(epochs=3, lr=0.3, progress=False))
    assert no_valid.best_epoch == 0 and len(no_valid.records) == 3  # no selection: the last state is kept


@pytest.mark.parametrize("cls,kw", [(FISMRecommender, {"lr": 0.05}), (SASRecRecommender, {"lr": 0.01})])
def test_history_models_beat_popularity_on_planted_data(data, cls, kw):
    test = data.samples("test")
    pop = CRSPopularity()
    pop.fit(data)
    model = cls()
    model.fit(data, quick(**kw))  # learns from data.samples("train"), selects on data.samples("valid")
    # popularity ranks the 4 blockbusters first, then 20 equally counted seeds/answers
    assert hr(pop, test, 5) == pytest.approx(1 / 20)
    assert hr(model, test, 1) >= 0.9
    assert hr(model, test, 1) > hr(pop, test, 1) + 0.5


def test_history_recommenders_are_registered_and_sampled_negatives_train(data):
    assert get_model("fism", "crs") is FISMRecommender and get_model("sasrec", "crs") is SASRecRecommender
    assert get_model("pop", "crs") is CRSPopularity and get_model("dense", "crs") is DenseRetriever
    assert get_model("fism") is FISMRecommender  # one task: no need to say which
    with pytest.raises(LmrecError, match="several tasks"):
        get_model("pop")  # CF and CRS popularity share the name
    model = FISMRecommender(n_negatives=5)
    model.fit(data, quick(lr=0.05))
    assert hr(model, data.samples("test"), 1) >= 0.9
    with pytest.raises(LmrecError, match="fit"):
        SASRecRecommender().score(Conversations(tuple(data.samples("test"))))


# -- dense retriever --------------------------------------------------------------------------------------------
class BagOfWords:
    """A fake encoder: counts of a few words."""

    VOCAB = ("space", "horse", "love", "war")
    identity = "fake-bag-of-words"
    dim = len(VOCAB)

    def __init__(self):
        self.seen: list[str] = []

    def encode(self, texts, batch_size=64, progress=False):
        self.seen += list(texts)
        return np.array([[t.lower().count(w) + 0.01 for w in self.VOCAB] for t in texts], dtype=np.float32)


def test_dense_ranks_the_most_similar_title_first(tmp_path):
    titles = ["Love Actually (2003)", "Space Odyssey (1968)", "War Horse (2011)", "The Horse Whisperer (1998)"]
    cat = ItemCatalog([str(i) for i in range(4)], titles)
    data = CRSData("d", cat, [], [], [])
    enc = BagOfWords()
    model = DenseRetriever(encoder=enc, cache=EmbeddingCache(tmp_path), context_chars=41)
    model.fit(data)
    assert enc.seen == titles  # the catalog went through the (empty) cache
    s = CRSSample("c", 1, "User: a horse story?\nSystem: sure\nUser: something set in space", [], [1], [True])
    scores = model.score(Conversations(tuple([s])))
    assert scores.shape == (1, 4)
    assert int(scores[0].argmax()) == 1  # only the most recent 41 characters are encoded: "space"
    assert model.context_text(s) == "System: sure\nUser: something set in space"
    wide = DenseRetriever(encoder=BagOfWords(), cache=EmbeddingCache(tmp_path), context_chars=1000)
    wide.fit(data)
    s2 = CRSSample("c", 1, "User: a horse movie about war", [], [2], [True])
    assert int(wide.score(Conversations(tuple([s2])))[0].argmax()) == 2  # "War Horse" has both words
    assert float(wide.score(Conversations(tuple([s2])))[0].max()) <= 1.0 + 1e-6  # cosine
    # contexts go through the cache too: a turn scored again (another block, a rerun) is not encoded again
    again = DenseRetriever(encoder=BagOfWords(), cache=EmbeddingCache(tmp_path), context_chars=1000)
    again.fit(data)
    torch.testing.assert_close(again.score(Conversations(tuple([s2]))), wide.score(Conversations(tuple([s2]))))
    assert again.encoder.seen == []


# -- real data --------------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_fism_beats_popularity_on_inspired(real_dataset):
    from lmrec.data.loaders.inspired import load_inspired

    data = load_inspired(real_dataset("inspired"))
    test = data.samples("test")
    n = len(data.catalog)
    pop = CRSPopularity()
    pop.fit(data)
    fism = FISMRecommender()
    fism.fit(data, crs_train(epochs=15, patience=15, progress=False))
    hr_pop = evaluate_crs(turn_scorer(pop.score), test, n).summary()["hr@10"]
    hr_fism = evaluate_crs(turn_scorer(fism.score), test, n).summary()["hr@10"]
    print(f"INSPIRED test HR@10: pop {hr_pop}, FISM {hr_fism}")
    assert hr_fism.mean > hr_pop.mean
