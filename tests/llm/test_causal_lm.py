"""CausalLM on the real SmolLM2-135M-Instruct: q, token embeddings, title tokens, greedy generation."""

import numpy as np
import pytest
import torch

from lmrec.llm import CausalLM, parse_titles, resolve_dtype

SCIFI = (
    "USER: Hi! I'm looking for a good movie to watch tonight.\nSYSTEM: Sure, what kind of movies do you like?\n"
    "USER: I love science fiction, like The Matrix and Inception. Something mind-bending.\n"
)
ROMCOM = "USER: Any romantic comedy like Notting Hill?\n"


def test_identity_and_sizes(smollm2):
    assert "smollm2-135m" in smollm2.identity and "dtype=float32" in smollm2.identity
    assert smollm2.hidden_size == 576 and smollm2.tokenizer.padding_side == "left"


def test_encode_contexts_shape_and_batch_independence(smollm2):
    alone = smollm2.encode_contexts([ROMCOM])
    batch = smollm2.encode_contexts([SCIFI * 3, ROMCOM, SCIFI], batch_size=3)  # ROMCOM is left-padded here
    assert batch.shape == (3, 576) and batch.dtype == torch.float32 and torch.isfinite(batch).all()
    torch.testing.assert_close(batch[1], alone[0], rtol=1e-4, atol=1e-4)
    assert not torch.allclose(batch[1], batch[2], atol=1e-2)  # different contexts, different q
    assert torch.nn.functional.cosine_similarity(batch[1], batch[2], dim=0) < 0.999


def test_q_is_the_final_normed_state_at_the_dot_of_1(smollm2):
    """q = model.model(...).last_hidden_state[:, -1] (after the final RMSNorm): the LM head applied to q gives the
    model's next-token logits there, and it equals output_hidden_states[-1] (post-norm in transformers 5)."""
    text = smollm2.encoding_texts([ROMCOM])[0]
    assert text == smollm2.prompt(ROMCOM) + "1."
    q = smollm2.encode_contexts([ROMCOM])
    ids = smollm2.tokenizer([text], add_special_tokens=False, return_tensors="pt")
    assert smollm2.tokenizer.convert_ids_to_tokens(ids["input_ids"][0, -2:].tolist()) == ["1", "."]
    with torch.no_grad():
        out = smollm2.model(**ids, output_hidden_states=True)
    torch.testing.assert_close(smollm2.model.lm_head(q), out.logits[:, -1], rtol=1e-4, atol=1e-3)
    torch.testing.assert_close(out.hidden_states[-1][:, -1], q, rtol=1e-5, atol=1e-5)
    pre_norm = out.hidden_states[-2][:, -1]
    assert not torch.allclose(smollm2.model.model.norm(pre_norm), q, atol=1.0)


def test_encode_with_completion_cuts_after_first_item(smollm2):
    completion = "Here you go:\n1. Love Actually\n2. About Time"
    texts = smollm2.encoding_texts([ROMCOM], completions=[completion])
    assert texts[0] == smollm2.prompt(ROMCOM) + "Here you go:\n1."


def test_left_truncation_keeps_the_end(smollm2):
    heads = ["USER: hello\n", "USER: I want something with dogs in it, and maybe cats.\n" * 5]
    q = smollm2.encode_contexts([head + SCIFI * 2 for head in heads], max_length=64)
    # both texts end with the same 64 tokens (the end of SCIFI * 2 and of the prompt): the same q
    torch.testing.assert_close(q[0], q[1], rtol=1e-4, atol=1e-4)


def test_kv_reuse_gives_the_same_q_and_computes_only_new_tokens(smollm2):
    """The turns of a conversation in order: each context extends the last, so with the KV cache kept only the new
    tokens run; q matches the batched full forward. A context cut by max_length is computed whole."""
    turns = ["USER: Hi! I want a movie tonight.",
             "USER: Hi! I want a movie tonight.\nSYSTEM: What do you like?",
             "USER: Hi! I want a movie tonight.\nSYSTEM: What do you like?\nUSER: " + ROMCOM,
             "USER: " + SCIFI]  # another conversation: shares only the prompt's beginning
    full = smollm2.encode_contexts(turns, batch_size=4)
    reused = smollm2.encode_contexts(turns, reuse_kv=True)
    torch.testing.assert_close(reused, full, rtol=1e-4, atol=1e-4)
    stats = smollm2.last_encoding
    lengths = [len(ids) for ids in smollm2._ids(smollm2.encoding_texts(turns), 512)]
    assert stats["tokens"] == sum(lengths) and stats["computed"] < 0.6 * stats["tokens"]
    short = smollm2.encode_contexts(turns[:3], reuse_kv=True, max_length=48)  # every text cut: nothing shared
    torch.testing.assert_close(short, smollm2.encode_contexts(turns[:3], max_length=48), rtol=1e-4, atol=1e-4)


def test_encoding_cache(smollm2, tmp_path, monkeypatch):
    from lmrec.text.cache import EmbeddingCache

    cache = EmbeddingCache(tmp_path)
    first = smollm2.encode_contexts([ROMCOM, SCIFI], cache=cache)

    def fail(*args, **kwargs):
        raise AssertionError("encoded again although cached")

    monkeypatch.setattr(CausalLM, "encode_texts", fail)
    again = smollm2.encode_contexts([SCIFI, ROMCOM], cache=cache)
    torch.testing.assert_close(again, first[[1, 0]])


def test_token_embeddings_and_title_tokens(smollm2):
    table = smollm2.token_embeddings()
    assert table.shape == (49152, 576) and not table.requires_grad
    tok = smollm2.tokenizer
    titles = ["Toy Story", "Se7en", "The Lord of the Rings: The Fellowship of the Ring " * 4]
    with pytest.warns(UserWarning, match="1 of 3 titles are longer than 8 tokens"):
        ids, lengths = smollm2.tokenize_titles(titles, max_tokens=8)
    assert ids.shape == (3, 8) and ids.dtype == torch.long
    toy = tok(" Toy Story", add_special_tokens=False)["input_ids"]  # convention: the title after "1. "
    assert lengths[0] == len(toy) and ids[0, : len(toy)].tolist() == toy and (ids[0, len(toy) :] == 0).all()
    assert lengths[2] == 8 and lengths[1] == len(tok(" Se7en", add_special_tokens=False)["input_ids"])
    with pytest.raises(Exception, match="empty"):
        smollm2.tokenize_titles(["Heat", "  "])


def test_generate_is_greedy_and_deterministic(smollm2):
    first = smollm2.generate([SCIFI, ROMCOM], max_new_tokens=8, batch_size=2, progress=False)
    second = smollm2.generate([SCIFI, ROMCOM], max_new_tokens=8, batch_size=2, progress=False)
    assert first == second and all(text.strip() for text in first)
    assert "<|im_start|>" not in first[0] and "assistant" not in first[0][:10]  # completion only
    with_prefix = smollm2.generate([ROMCOM], max_new_tokens=4, answer_prefix="1.", progress=False)
    assert with_prefix[0].startswith("1.") and len(with_prefix[0]) > 2


def test_resolve_dtype():
    assert resolve_dtype("fp32") == torch.float32 and resolve_dtype("bf16") == torch.bfloat16
    assert resolve_dtype("auto") in (torch.float32, torch.bfloat16)
    with pytest.raises(Exception, match="unknown dtype"):
        resolve_dtype("int3")


@pytest.mark.slow
def test_generate_twenty_titles_and_parse(smollm2):
    """~200 new tokens: tens of seconds on 2 CPU cores."""
    completion = smollm2.generate([SCIFI], max_new_tokens=200, answer_prefix="1.", progress=False)[0]
    assert completion.startswith("1.") and len(completion) > 50
    assert isinstance(parse_titles(completion), list)


@pytest.mark.slow
def test_bfloat16_encoding_is_batch_independent_and_close_to_float32(smollm2):
    lm = CausalLM.load("smollm2-135m", dtype="bfloat16")
    assert "dtype=bfloat16" in lm.identity
    alone = lm.encode_contexts([ROMCOM])
    batch = lm.encode_contexts([SCIFI * 3, ROMCOM], batch_size=2)
    cos = torch.nn.functional.cosine_similarity
    assert cos(alone[0], batch[1], dim=0) > 0.999
    assert cos(alone[0], smollm2.encode_contexts([ROMCOM])[0], dim=0) > 0.99
    assert np.isfinite(batch.numpy()).all()
