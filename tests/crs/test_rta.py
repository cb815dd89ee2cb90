"""RTA: aggregators (shapes, masking), the reindex loss and training on a planted problem, the adapt variants."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from pydantic import ValidationError
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from lmrec.data.catalog import ItemCatalog
from lmrec.data.conversations import CRSData, CRSSample
from lmrec.errors import LmrecError
from lmrec.inputs import ModelInputs
from lmrec.inputs.lookup import ContextFeatures
from lmrec.inputs.prepare import subsample
from lmrec.inputs.store import TitleTokens
from lmrec.models.crs.rta.adapt import AdaptConfig, AdaptModule, RTAAdapt
from lmrec.models.crs.rta.aggregators import AGGREGATORS, build_aggregator
from lmrec.models.crs.rta.reindex import (
    ItemIndexer,
    ReindexConfig,
    RTAReindex,
    negative_mask,
    sample_negatives,
    sampled_softmax_loss,
)
from lmrec.models.crs.training import history_tensor
from lmrec.models.queries import Conversations, turn_scorer
from lmrec.settings import SettingsError
from lmrec.train import TrainConfig

D = 16


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny tensors: one intra-op thread is faster, and far faster on a CPU shared with other jobs."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def random_tokens(n_items: int = 30, vocab: int = 50, width: int = 6, seed: int = 0) -> TitleTokens:
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(1, width + 1, (n_items,), generator=g)
    ids = torch.randint(0, vocab, (n_items, width), generator=g)
    ids = ids.masked_fill(torch.arange(width)[None, :] >= lengths[:, None], 0)
    return TitleTokens(ids, lengths, torch.randn(vocab, D, generator=g), torch.arange(vocab))


def sample(i: int, targets: list[int], mentioned: list[int] | None = None) -> CRSSample:
    mentioned = mentioned or []
    return CRSSample(f"c{i}", 1, f"context {i}", mentioned, targets, [t not in mentioned for t in targets])


# -- aggregators -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", list(AGGREGATORS))
def test_aggregator_output_shape(name: str) -> None:
    agg = build_aggregator(name, D, max_tokens=8).eval()
    out = agg(torch.randn(5, 8, D), torch.tensor([1, 3, 8, 2, 5]))
    assert out.shape == (5, D)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("name", list(AGGREGATORS))
def test_padding_never_changes_the_result(name: str) -> None:
    torch.manual_seed(0)
    agg = build_aggregator(name, D, max_tokens=32).eval()
    title = torch.randn(3, D)
    others = torch.randn(2, 5, D)
    results = []
    for width in (8, 32):
        tokens = torch.randn(3, width, D) * 100  # garbage in the padding
        tokens[0, :3] = title
        tokens[1:, :5] = others
        with torch.no_grad():
            results.append(agg(tokens, torch.tensor([3, 5, 5]))[0])
    torch.testing.assert_close(results[0], results[1], rtol=1e-5, atol=1e-5)


def test_sum_equals_the_manual_masked_sum() -> None:
    tokens = torch.randn(4, 6, D)
    lengths = torch.tensor([1, 6, 3, 2])
    out = build_aggregator("sum", D)(tokens, lengths)
    for i, n in enumerate(lengths.tolist()):
        torch.testing.assert_close(out[i], tokens[i, :n].sum(0))


def test_gru_aggregator_equals_the_bidirectional_gru_at_the_last_token() -> None:
    """The shortcut (forward GRU + one backward step) gives nn.GRU(bidirectional)'s packed output at len − 1, and
    the same gradients."""
    torch.manual_seed(0)
    agg = build_aggregator("gru", D)
    tokens, lengths = torch.randn(6, 7, D), torch.tensor([1, 7, 3, 2, 7, 4])

    def reference() -> torch.Tensor:
        packed = pack_padded_sequence(tokens, lengths, batch_first=True, enforce_sorted=False)
        out, _ = pad_packed_sequence(agg.gru(packed)[0], batch_first=True)
        return agg.proj(out[torch.arange(len(tokens)), lengths - 1])

    grads = []
    for forward in (reference, lambda: agg(tokens, lengths)):
        agg.zero_grad()
        out = forward()
        (out * torch.linspace(-1, 1, D)).sum().backward()
        grads.append((out.detach(), [torch.zeros_like(p) if p.grad is None else p.grad for p in agg.parameters()]))
    torch.testing.assert_close(grads[0][0], grads[1][0])
    for expected, got in zip(grads[0][1], grads[1][1], strict=True):
        torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)
    agg.eval()
    with torch.no_grad():
        torch.testing.assert_close(agg(tokens, lengths), reference())


def test_aggregator_bad_input() -> None:
    with pytest.raises(ValueError, match="unknown aggregator"):
        build_aggregator("mean", D)
    with pytest.raises(ValueError, match="lengths"):
        build_aggregator("sum", D)(torch.randn(2, 4, D), torch.tensor([0, 2]))
    with pytest.raises(ValueError, match="nhead"):
        build_aggregator("transformer", 20)  # 8 heads do not divide 20


# -- reindex -----------------------------------------------------------------------------------------------
def test_negatives_never_equal_the_positive() -> None:
    negatives = sample_negatives(10, 10, torch.Generator().manual_seed(0))
    assert sorted(negatives.tolist()) == list(range(10))  # without replacement
    positives = torch.tensor([3, 7])
    mask = negative_mask(positives, negatives)
    assert mask.sum(1).tolist() == [1, 1]
    assert (negatives[mask[0]] == 3).all() and (negatives[mask[1]] == 7).all()

    table = torch.randn(10, D)
    q = torch.randn(2, D)
    loss = sampled_softmax_loss(q, positives, negatives, lambda items: table[items])
    scores = q @ table.T
    manual = torch.stack([
        -F.log_softmax(torch.cat([scores[r, p : p + 1], scores[r, [i for i in negatives.tolist() if i != p]]]), 0)[0]
        for r, p in enumerate(positives.tolist())
    ]).mean()
    torch.testing.assert_close(loss, manual)
    # the official behaviour keeps the collision: the positive also appears among the negatives
    unfiltered = sampled_softmax_loss(q, positives, negatives, lambda items: table[items], filter_collisions=False)
    assert unfiltered > loss


def planted_problem(n_items: int = 30, n_train: int = 400, n_valid: int = 60, seed: int = 0):
    """q = A·mean(title tokens of the label) + noise: an aggregator that learns A's transpose ranks the label first."""
    g = torch.Generator().manual_seed(seed)
    tokens = random_tokens(n_items, seed=seed)
    mean = torch.stack([tokens.table[tokens.ids[i, : tokens.lengths[i]]].mean(0) for i in range(n_items)])
    mix = torch.randn(D, D, generator=g)
    labels = torch.randint(0, n_items, (n_train + n_valid,), generator=g)
    q = (mean[labels] @ mix.T) + 0.05 * torch.randn(n_train + n_valid, D, generator=g)
    samples = [sample(i, [int(labels[i])]) for i in range(n_train + n_valid)]
    source = ContextFeatures(q_table={s.context: q[i] for i, s in enumerate(samples)})
    return tokens, source, samples[:n_train], samples[n_train:]


class PlantedFeatures:
    """In memory, what ``fit(data, train, features=...)`` reads from a prepared folder (:class:`LLMFeatures`): the
    title tokens, the prepared turns per split and their q vectors; the planted labels are the turns' targets."""

    def __init__(self, tokens: TitleTokens, source: ContextFeatures, samples: dict[str, list[CRSSample]]):
        self.tokens, self.source, self.samples = tokens, source, samples
        self.meta: dict = {"config": {}}  # the default PrepareConfig (its LLM is never loaded: every q is known)

    def q_table(self) -> dict[str, torch.Tensor]:
        return dict(self.source.q_table)

    def completions(self) -> dict[str, str]:
        return {}

    def llm_label_samples(self, split: str, top_k: int = 5, label_source: str = "llm",
                          title_match: str = "fuzzy") -> list[CRSSample]:
        return list(self.samples.get(split, []))

    def title_tokens(self, year: bool = True) -> TitleTokens:
        self.year_asked = year
        return self.tokens


def planted_features(tokens: TitleTokens, source: ContextFeatures, train, valid) -> PlantedFeatures:
    return PlantedFeatures(tokens, source, {"train": list(train), "valid": list(valid)})


def catalog_data(n_items: int = 30) -> CRSData:
    """A dataset with just the catalog (the samples come from the features)."""
    return CRSData("planted", ItemCatalog([str(i) for i in range(n_items)], [f"t{i}" for i in range(n_items)]),
                   [], [], [])


def quiet(**kw) -> dict:
    return {"progress": False, **kw}


def hit_at_1(model, samples) -> float:
    scores = model.score(Conversations(tuple(samples)))
    return float((scores.argmax(1) == torch.tensor([s.targets[0] for s in samples])).float().mean())


def test_reindex_learns_to_rank_the_planted_item_first() -> None:
    tokens, source, train, valid = planted_problem(n_train=300)
    config = ReindexConfig(aggregator="weighted", n_negatives=10)
    train_config = quiet(lr=2e-2, epochs=30, eval_every=10, batch_size=100, patience=100)
    untrained = RTAReindex(config)
    untrained.build(tokens, TrainConfig().seed)  # the initial state fit starts from
    untrained.context = source
    before = hit_at_1(untrained, valid)
    model = RTAReindex(config)
    log = model.fit(catalog_data(), train_config,
                    inputs=ModelInputs(features=planted_features(tokens, source, train, valid)))
    after = hit_at_1(model, valid)
    assert after > 0.8 > before + 0.5
    assert log.best_epoch > 0 and log.records[log.best_epoch - 1].valid is not None
    # the ranking is one matrix product with the item table
    torch.testing.assert_close(model.score(Conversations(tuple(valid[:3]))),
                               source.q([s.context for s in valid[:3]]) @ model.item_table().T)


def test_reindex_restores_the_best_validation_state() -> None:
    tokens, source, train, valid = planted_problem(n_train=200, n_valid=40, seed=1)
    model = RTAReindex(aggregator="weighted", n_negatives=10)
    log = model.fit(catalog_data(), quiet(lr=5e-2, epochs=12, eval_every=1, batch_size=64),
                    inputs=ModelInputs(features=planted_features(tokens, source, train, valid)))
    best = max(r.valid["hr@10"] for r in log.records if r.valid)
    from lmrec.eval.crs import evaluate_crs

    final = evaluate_crs(turn_scorer(model.score), valid, model.n_items, ks=(10,)).summary()["hr@10"].mean
    assert final == pytest.approx(best)


def test_sum_aggregator_has_nothing_to_train() -> None:
    tokens, source, train, valid = planted_problem(n_train=20, n_valid=5)
    model = RTAReindex(ReindexConfig(aggregator="sum"))
    log = model.fit(catalog_data(), quiet(),
                    inputs=ModelInputs(features=planted_features(tokens, source, train, valid)))
    assert "no parameters" in log.stopped
    manual = torch.stack([tokens.table[tokens.ids[i, : tokens.lengths[i]]].sum(0) for i in range(30)])
    torch.testing.assert_close(model.item_table(), manual)


# -- adapt -------------------------------------------------------------------------------------------------
def indexer(n_items: int = 30, name: str = "gru") -> ItemIndexer:
    torch.manual_seed(0)
    return ItemIndexer(random_tokens(n_items), build_aggregator(name, D))


def reindexed(name: str, n_items: int = 30) -> RTAReindex:
    """An (untrained) rta_reindex model over random title tokens: the ``base`` that rta_adapt adapts."""
    base = RTAReindex(aggregator=name)
    base.build(random_tokens(n_items), seed=0)
    return base


@pytest.mark.parametrize("variant", ["b", "gW", "gW+b"])
def test_bias_init_leaves_scores_unchanged(variant: str) -> None:
    idx = indexer()
    module = AdaptModule(idx, variant).eval()
    q = torch.randn(4, D)
    torch.testing.assert_close(module(q, history_tensor([[]] * 4)), q @ idx.item_table().T)


@pytest.mark.parametrize("kind", ["fism", "sasrec"])
def test_gate_at_zero_is_the_average_of_llm_and_recsys(kind: str) -> None:
    from lmrec.models.crs.rta.adapt import build_recsys

    idx = indexer()
    module = AdaptModule(idx, f"gate-{kind}", recsys=build_recsys(kind, 30)).eval()
    assert float(module.gate.detach()) == 0.0
    q = torch.randn(3, D)
    history = history_tensor([[1, 2], [], [5]])
    with torch.no_grad():
        expected = 0.5 * (q @ idx.item_table().T) + 0.5 * module.recsys(history)
        torch.testing.assert_close(module(q, history), expected)


def test_frozen_aggregator_does_not_change_while_bias_and_gate_train() -> None:
    base = reindexed("gru")
    frozen = {k: v.clone() for k, v in base.indexer.aggregator.state_dict().items()}
    tokens, source, train, valid = planted_problem(n_train=120, n_valid=20, seed=2)
    history = {s.context: [i % 30, (i * 7) % 30] for i, s in enumerate(train + valid)}
    train = [CRSSample(s.conv_id, s.turn_id, s.context, history[s.context], s.targets, [True]) for s in train]
    valid = [CRSSample(s.conv_id, s.turn_id, s.context, history[s.context], s.targets, [True]) for s in valid]
    for variant in ("gW+b", "gate-fism"):
        model = RTAAdapt(AdaptConfig(variant=variant, n_negatives=None, llm_scale="learned"))
        model.fit(catalog_data(), quiet(epochs=3, lr=1e-2),
                  inputs=ModelInputs(features=planted_features(tokens, source, train, valid), base=base))
        for key, value in model.module.indexer.aggregator.state_dict().items():
            assert torch.equal(value, frozen[key]), key
        trained = model.module.bias if variant == "gW+b" else model.module.gate
        assert not torch.all(trained == (0.0 if variant == "gW+b" else 0.0))


def test_trainable_aggregator_changes() -> None:
    base = reindexed("weighted")
    before = {k: v.clone() for k, v in base.indexer.aggregator.state_dict().items()}
    tokens, source, train, valid = planted_problem(n_train=64, n_valid=8, seed=3)
    model = RTAAdapt(variant="b", freeze_aggregator=False)
    model.fit(catalog_data(), quiet(epochs=2, lr=1e-2),
              inputs=ModelInputs(features=planted_features(tokens, source, train, valid), base=base))
    assert any(not torch.equal(v, before[k]) for k, v in model.module.indexer.aggregator.state_dict().items())
    # the adapted model trains its own copy: the reindex run it started from is left as it was
    assert all(torch.equal(v, before[k]) for k, v in base.indexer.aggregator.state_dict().items())


def test_head_lr_gives_the_adapt_parameters_their_own_rate() -> None:
    from lmrec.models.crs.rta.adapt import build_recsys

    module = AdaptModule(indexer(), "gate-fism", recsys=build_recsys("fism", 30), llm_scale="learned", head_lr=0.5)
    recsys_group, head_group = module.param_groups(1e-3)
    assert recsys_group["lr"] == 1e-3 and head_group["lr"] == 0.5
    assert {id(p) for p in head_group["params"]} == {id(module.gate), id(module.log_scale)}
    assert {id(p) for p in recsys_group["params"]} == {id(p) for p in module.recsys.parameters()}
    plain = AdaptModule(indexer(), "gW+b")  # frozen aggregator: only the head trains, at the training lr
    assert [g["lr"] for g in plain.param_groups(1e-4)] == [1e-4]


def test_standardized_llm_scale_starts_the_llm_logits_at_unit_spread() -> None:
    tokens, source, train, valid = planted_problem(n_train=64, n_valid=8, seed=4)
    features = planted_features(tokens, source, train, valid)
    model = RTAAdapt(variant="gate-fism", llm_scale="standardized")
    model.fit(catalog_data(), quiet(epochs=1, lr=1e-9),
              inputs=ModelInputs(features=features, base=reindexed("gru")))  # ~no step
    with torch.no_grad():
        spread = model.module.llm_logits(source.q([s.context for s in train])).std()
    assert float(spread) == pytest.approx(1.0, rel=0.05)


def test_adapt_config_validation() -> None:
    with pytest.raises(ValidationError, match="gate-fism"):  # the allowed variants are listed
        AdaptConfig(variant="gate-gru")
    with pytest.raises(SettingsError, match="variant='gate-gru'"):
        RTAAdapt(variant="gate-gru")
    with pytest.raises(ValueError, match="unknown adapt variant"):
        AdaptModule(indexer(), "gate-gru")
    assert RTAAdapt.train_config(None, AdaptConfig(variant="gate-fism")).lr == 1e-3
    assert RTAAdapt.train_config(None, AdaptConfig(variant="gW+b")).lr == 1e-4
    assert RTAAdapt.train_config({"lr": 0.5}, AdaptConfig(variant="gW+b")).lr == 0.5  # a given lr wins


def test_subsample_is_seeded_and_sorted() -> None:
    a, b = subsample(100, 10, 5), subsample(100, 10, 5)
    assert a.tolist() == b.tolist() == sorted(a.tolist()) and len(set(a.tolist())) == 10
    assert subsample(5, None, 0).tolist() == list(range(5))


def test_context_features_without_cache_encodes_every_new_context(tmp_path) -> None:
    """cache=False: the LLM gets cache=None (nothing read or written); an EmbeddingCache is passed through."""
    from lmrec.text.cache import EmbeddingCache

    class FakeLM:
        def __init__(self):
            self.caches = []

        def encode_contexts(self, contexts, cache=None, **_):
            self.caches.append(cache)
            return torch.ones(len(contexts), D)

    lm = FakeLM()
    assert ContextFeatures(lm_loader=lambda: lm, cache=False).q(["a", "b"]).shape == (2, D)
    store = EmbeddingCache(tmp_path)
    ContextFeatures(lm_loader=lambda: lm, cache=store).q(["a"])
    assert lm.caches == [None, store]


# -- self-supervised item prompts ----------------------------------------------------------------------------
class PromptLM:
    """What prepare_features asks of the LLM, without one: q of a context = its length in every dimension."""

    identity, hidden_size = "fake-lm", D

    def __init__(self):
        self.last_encoding: dict = {}
        self.reuse: list = []

    def encode_contexts(self, contexts, reuse_kv=False, **_):
        self.reuse.append(reuse_kv)
        return torch.stack([torch.full((D,), float(len(c))) for c in contexts])

    def tokenize_titles(self, titles, max_tokens=32):
        return torch.tensor([[i % 7 + 1, 2] for i in range(len(titles))]), torch.full((len(titles),), 2)

    def token_embeddings(self):
        return torch.randn(10, D, generator=torch.Generator().manual_seed(0))


def test_prepare_makes_one_item_prompt_turn_per_item(tmp_path, monkeypatch) -> None:
    from lmrec.inputs import prepare as rta_features
    from lmrec.inputs.config import PrepareConfig
    from lmrec.inputs.prepare import prepare_features
    from lmrec.inputs.store import load_features
    from lmrec.text.cache import EmbeddingCache

    data = catalog_data(12)
    config = PrepareConfig(item_prompt="User: I want to watch {title}.", generate_splits=())
    lm = PromptLM()
    monkeypatch.setattr(rta_features, "ENCODE_CHUNK", 5)  # item prompts are encoded in chunks, with progress lines
    lines: list[str] = []
    prepare_features(data, lm, tmp_path, config, cache=EmbeddingCache(tmp_path / "cache"), log=lines.append)
    progress = [line.split(" (")[0].strip() for line in lines if "item prompts (" in line]
    assert progress == ["encoded 5/12 item prompts", "encoded 10/12 item prompts", "encoded 12/12 item prompts"]
    assert len(lm.reuse) >= 3  # one call per chunk
    features = load_features(tmp_path, data)  # through the folder: safetensors + JSON
    turns = features.item_prompt_samples()
    assert [(s.context, s.targets) for s in turns[:2]] == [("User: I want to watch t0.", [0]),
                                                            ("User: I want to watch t1.", [1])]
    table = features.q_table()
    assert table["User: I want to watch t11."][0] == len("User: I want to watch t11.")
    assert lm.reuse[-1] is True  # KV reuse is the default
    plain = prepare_features(data, PromptLM(), tmp_path / "none", PrepareConfig(generate_splits=()),
                             cache=EmbeddingCache(tmp_path / "cache"), progress=False)
    with pytest.raises(LmrecError, match="no item prompts"):
        plain.item_prompt_samples()


def test_item_prompts_alone_teach_the_reindexer_every_item() -> None:
    """Training only on item prompts (q of "I want to watch <title>" ~ the title's tokens) ranks held-out
    conversation turns about those items: every item gets a signal without being mentioned in training."""
    tokens, source, _, valid = planted_problem(n_train=0, n_valid=60, seed=2)
    g = torch.Generator().manual_seed(3)
    mean = torch.stack([tokens.table[tokens.ids[i, : tokens.lengths[i]]].mean(0) for i in range(30)])
    mix = torch.randn(D, D, generator=torch.Generator().manual_seed(2))  # planted_problem's mix for seed 2
    prompts = [CRSSample("item-prompt", i, f"want {i}", [], [i], [True]) for i in range(30)] * 10
    for k, s in enumerate(prompts):
        source.q_table[f"{s.context}#{k}"] = mean[s.targets[0]] @ mix.T + 0.05 * torch.randn(D, generator=g)
    prompts = [CRSSample(s.conv_id, k, f"{s.context}#{k}", [], s.targets, [True]) for k, s in enumerate(prompts)]

    class WithPrompts(PlantedFeatures):
        def item_prompt_samples(self):
            return prompts

    features = WithPrompts(tokens, source, {"train": [], "valid": list(valid)})
    model = RTAReindex(aggregator="weighted", n_negatives=10, item_prompts=True)
    model.fit(catalog_data(), quiet(lr=2e-2, epochs=30, eval_every=10, batch_size=100, patience=100),
              inputs=ModelInputs(features=features))
    assert hit_at_1(model, valid) > 0.6


def test_center_q_scores_with_the_training_mean_removed() -> None:
    tokens, source, train, valid = planted_problem(n_train=100, n_valid=10, seed=5)
    model = RTAReindex(aggregator="weighted", n_negatives=10, center_q=True)
    model.fit(catalog_data(), quiet(epochs=2, eval_every=1, batch_size=50),
              inputs=ModelInputs(features=planted_features(tokens, source, train, valid)))
    mean = source.q([s.context for s in train]).mean(0)
    torch.testing.assert_close(model.indexer.q_mean, mean)
    q = source.q([s.context for s in valid[:3]])
    torch.testing.assert_close(model.score(Conversations(tuple(valid[:3]))), (q - mean) @ model.item_table().T)
    adapt = AdaptModule(model.indexer, "gW+b")  # adapt scores with the same centring
    torch.testing.assert_close(adapt.llm_logits(q), (q - mean) @ model.item_table().T)
    plain = RTAReindex(aggregator="weighted", n_negatives=10)
    plain.fit(catalog_data(), quiet(epochs=1, batch_size=50),
              inputs=ModelInputs(features=planted_features(tokens, source, train, valid)))
    assert not plain.indexer.q_mean.any()  # the paper's raw q


def test_indexer_state_without_q_mean_still_loads() -> None:
    """Run folders written before ``center_q`` existed have no q_mean: it loads as zeros (the raw q)."""
    old = {k: v for k, v in indexer().state_dict().items() if k != "q_mean"}
    fresh = indexer()
    fresh.q_mean.fill_(3.0)
    fresh.load_state_dict(old)
    assert not fresh.q_mean.any()


def test_prepare_keeps_the_titles_with_and_without_the_year(tmp_path) -> None:
    """Both token sets are prepared; the reindex step picks one with title_year (the year by default)."""
    from lmrec.inputs.config import PrepareConfig
    from lmrec.inputs.prepare import prepare_features
    from lmrec.inputs.store import load_features
    from lmrec.text.cache import EmbeddingCache

    class TitleLM(PromptLM):
        def tokenize_titles(self, titles, max_tokens=32):  # a token per word, id = word length
            words = [t.split() for t in titles]
            width = max(len(w) for w in words)
            ids = torch.tensor([[len(x) for x in w] + [0] * (width - len(w)) for w in words])
            return ids, torch.tensor([len(w) for w in words])

    data = CRSData("years", ItemCatalog(["a", "b"], ["Heat (1995)", "Se7en"]), [], [], [])
    prepare_features(data, TitleLM(), tmp_path, PrepareConfig(generate_splits=()),
                     cache=EmbeddingCache(tmp_path / "cache"), progress=False)
    features = load_features(tmp_path, data)
    year, plain = features.title_tokens(), features.title_tokens(year=False)
    assert year.lengths.tolist() == [2, 1] and plain.lengths.tolist() == [1, 1]
    assert year.vocab[year.ids[0, :2]].tolist() == [4, 6] and plain.vocab[plain.ids[0, :1]].tolist() == [4]
    # a folder of an older version has one set: the year-less one if it was prepared with title_year = false
    from lmrec.inputs.store import LLMFeatures

    payload = {"identity": "fake-lm", "splits": {}, "tokens": plain}
    old = LLMFeatures(tmp_path, data, payload, {"config": {"title_year": False}})
    assert old.title_tokens(year=False) is plain
    with pytest.raises(LmrecError, match="with the year"):
        old.title_tokens()
    with pytest.raises(LmrecError, match="without the year"):
        LLMFeatures(tmp_path, data, {**payload, "tokens": year}, {"config": {}}).title_tokens(year=False)


def test_a_folder_opens_under_new_targets_when_a_system_turn_only_repeats_items(tmp_path) -> None:
    """A system turn naming only items already mentioned is a sample under "all" targets and none under "new"; the
    folder, which indexes the turns of every target, opens under both (prepared under either), "new" keeping the
    turns that name something new with their own q rows."""
    from lmrec.data.conversations import Conversation, Turn
    from lmrec.inputs.config import PrepareConfig
    from lmrec.inputs.prepare import prepare_features
    from lmrec.inputs.store import load_features
    from lmrec.text.cache import EmbeddingCache

    turns = [Turn("user", "I like t0", [0]), Turn("system", "try t1", [1]), Turn("user", "more?"),
             Turn("system", "t0 again", [0]), Turn("user", "and?"), Turn("system", "t2", [2])]
    every = CRSData("repeats", ItemCatalog(["a", "b", "c"], ["t0", "t1", "t2"]), [Conversation("c", turns)], [], [])
    new = every.with_targets("new")
    for prepared_with in (every, new):
        folder = tmp_path / prepared_with.targets
        made = prepare_features(prepared_with, PromptLM(), folder, PrepareConfig(generate_splits=()),
                                cache=EmbeddingCache(tmp_path / "cache"), progress=False)
        assert [s.turn_id for s in made.samples["train"]] == [s.turn_id for s in prepared_with.samples("train")]
        for data, turn_ids in ((every, [1, 3, 5]), (new, [1, 5])):
            features = load_features(folder, data)
            samples = features.samples["train"]
            assert [s.turn_id for s in samples] == turn_ids and features.data.targets == data.targets
            assert features.q["train"][:, 0].tolist() == [len(s.context) for s in samples]  # PromptLM: q = length


def test_strip_year() -> None:
    from lmrec.inputs.prepare import strip_year

    assert strip_year("Heat (1995)") == "Heat" and strip_year("Se7en") == "Se7en"
    assert strip_year("1984 (1984)") == "1984" and strip_year("(2019)") == "(2019)"  # never emptied


def test_init_from_tokens_starts_at_the_mean_token_row() -> None:
    tokens = random_tokens()
    model = RTAReindex(aggregator="gru", init_from_tokens=True)
    model.build(tokens, seed=0)
    mean = torch.stack([tokens.table[tokens.ids[i, : tokens.lengths[i]]].mean(0) for i in range(30)])
    torch.testing.assert_close(model.item_table(), mean)
    state = model.state()
    again = RTAReindex(aggregator="gru")  # the flag travels with the saved indexer
    again.load_state(state)
    torch.testing.assert_close(again.indexer.item_table(), mean)
    with pytest.raises(LmrecError, match="final projection"):
        RTAReindex(aggregator="sum", init_from_tokens=True).build(tokens, seed=0)


def test_valid_labels_ground_truth_selects_on_the_real_targets_whatever_trains() -> None:
    tokens, source, train, valid = planted_problem(n_train=20, n_valid=5)
    asked: list[tuple[str, str]] = []

    class Recording(PlantedFeatures):
        def llm_label_samples(self, split: str, top_k: int = 5, label_source: str = "llm",
                              title_match: str = "fuzzy") -> list[CRSSample]:
            asked.append((split, label_source))
            return super().llm_label_samples(split, top_k, label_source, title_match)

    features = Recording(tokens, source, {"train": list(train), "valid": list(valid)})
    RTAReindex(n_negatives=5).fit(catalog_data(), quiet(epochs=1), inputs=ModelInputs(features=features))
    assert asked == [("train", "llm"), ("valid", "llm")]  # the official behaviour: validation on the same source
    asked.clear()
    RTAReindex(n_negatives=5, valid_labels="ground_truth").fit(catalog_data(), quiet(epochs=1),
               inputs=ModelInputs(features=features))
    assert asked == [("train", "llm"), ("valid", "ground_truth")]
    assert features.year_asked is True
    RTAReindex(n_negatives=5, title_year=False).fit(catalog_data(), quiet(epochs=1),
               inputs=ModelInputs(features=features))
    assert features.year_asked is False


def test_prepare_config_of_an_older_version_drops_settings_that_moved() -> None:
    """Runs saved before title_year moved to the reindex step record it with their LLM settings; they still load."""
    from lmrec.inputs.config import prepare_config

    config = prepare_config({"llm": "smollm2-135m", "title_year": False, "max_new_tokens": 7})
    assert config.max_new_tokens == 7 and not hasattr(config, "title_year")
