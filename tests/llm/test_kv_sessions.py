"""The KV cache kept per conversation (lmrec.llm.kv_sessions) on the real SmolLM2: each message runs only its new
tokens and gives the q of the full recompute; the bounds drop sessions, which are then computed whole."""

import pytest
import torch

from lmrec.errors import LmrecError
from lmrec.inputs.config import PrepareConfig
from lmrec.inputs.lookup import ContextFeatures
from lmrec.llm.kv_sessions import KVSessions, cache_bytes

TURNS = ["User: Hi! I want a movie for tonight.",
         "System: Sure, what do you like?",
         "User: I loved Inception (2010) and The Matrix (1999), something mind-bending.",
         "System: Have you seen Memento (2000)?",
         "User: Yes, loved it. Something newer maybe?",
         "User: And not too long please."]


def contexts(turns=TURNS) -> list[str]:
    """The context after each turn, as the service renders a growing conversation."""
    return ["\n".join(turns[: i + 1]) for i in range(len(turns))]


def test_each_message_runs_its_new_tokens_and_gives_the_full_q(smollm2):
    full = smollm2.encode_contexts(contexts(), batch_size=8)
    store = KVSessions()
    lengths, computed, qs = [], [], []
    for context in contexts():
        qs.append(smollm2.encode_contexts([context], session=(store, "s1"))[0])
        lengths.append(smollm2.last_encoding["tokens"])
        computed.append(smollm2.last_encoding["computed"])
    torch.testing.assert_close(torch.stack(qs), full, rtol=1e-4, atol=1e-4)
    assert computed[0] == lengths[0] and lengths == sorted(lengths)
    for i in range(1, len(lengths)):  # the new turn and the prompt's closing tokens, never the conversation again
        new_turn = len(smollm2.tokenizer(TURNS[i], add_special_tokens=False)["input_ids"])
        assert computed[i] <= new_turn + 12 and computed[i] < lengths[i] - lengths[0] // 2
    assert store.stats == {"messages": 6, "tokens": sum(lengths), "computed": sum(computed), "dropped": 0}
    assert len(store) == 1 and store.nbytes == cache_bytes(store._entries["s1"].cache) > 0


def test_sessions_are_kept_apart_and_an_edited_conversation_shares_only_its_prefix(smollm2):
    other = ["User: Any romantic comedy like Notting Hill (1999)?", "User: Or something with Hugh Grant."]
    store = KVSessions()
    a, b = contexts(), contexts(other)
    got = [smollm2.encode_contexts([a[0]], session=(store, "a")), smollm2.encode_contexts([b[0]], session=(store, "b")),
           smollm2.encode_contexts([a[1]], session=(store, "a")), smollm2.encode_contexts([b[1]], session=(store, "b"))]
    want = smollm2.encode_contexts([a[0], b[0], a[1], b[1]])
    torch.testing.assert_close(torch.cat(got), want, rtol=1e-4, atol=1e-4)
    edited = a[1].replace("tonight", "this weekend")  # not an extension: only the text before the edit is kept
    torch.testing.assert_close(smollm2.encode_contexts([edited], session=(store, "a")),
                               smollm2.encode_contexts([edited]), rtol=1e-4, atol=1e-4)
    assert 0 < smollm2.last_encoding["tokens"]


def test_bounds_drop_the_least_recent_sessions_which_are_then_computed_whole(smollm2):
    store = KVSessions(max_sessions=2)
    first = contexts()
    for key in ("a", "b", "c"):
        smollm2.encode_contexts([first[0]], session=(store, key))
    assert "a" not in store and {"b", "c"} <= set(store._entries) and store.stats["dropped"] == 1
    smollm2.encode_contexts([first[1]], session=(store, "a"))
    assert smollm2.last_encoding["computed"] == smollm2.last_encoding["tokens"]  # dropped: computed whole
    one = store.nbytes // 2
    small = KVSessions(max_mb=1.5 * one / 2**20)  # room for one conversation's cache
    smollm2.encode_contexts([first[0]], session=(small, "a"))
    smollm2.encode_contexts([first[0]], session=(small, "b"))
    assert list(small._entries) == ["b"] and small.nbytes <= small.max_bytes
    capped = KVSessions(max_tokens=10)  # longer prompts are not kept: every message is computed whole
    for context in first[:3]:
        smollm2.encode_contexts([context], session=(capped, "a"))
        assert smollm2.last_encoding["computed"] == smollm2.last_encoding["tokens"]
    assert len(capped) == 0 and capped.nbytes == 0
    with pytest.raises(LmrecError):
        KVSessions(max_mb=0)


def test_a_prompt_cut_on_the_left_is_computed_whole_as_without_the_cache(smollm2):
    store = KVSessions()
    cut = contexts()[2:5]  # all longer than 64 tokens: each cut differently at its start
    got = torch.cat([smollm2.encode_contexts([c], session=(store, "s"), max_length=64) for c in cut])
    torch.testing.assert_close(got, smollm2.encode_contexts(cut, max_length=64), rtol=1e-4, atol=1e-4)
    assert store.stats["computed"] == store.stats["tokens"] == 3 * 64


def test_context_features_keep_the_cache_per_conversation_key(smollm2):
    plain = ContextFeatures(lm_loader=lambda: smollm2, config=PrepareConfig(dtype="float32"), cache=False)
    kept = ContextFeatures(lm_loader=lambda: smollm2, config=PrepareConfig(dtype="float32"), cache=False)
    store = kept.keep_kv()
    for i, context in enumerate(contexts()):
        torch.testing.assert_close(kept.q([context], keys=["session"]), plain.q([context]), rtol=1e-4, atol=1e-4)
        assert store.stats["messages"] == i + 1
    assert store.stats["computed"] < 0.5 * store.stats["tokens"]
    kept.q(["User: a context of no conversation"])  # without keys: encoded as before, the store untouched
    assert store.stats["messages"] == len(TURNS)
    with pytest.raises(LmrecError, match="2 contexts but 1"):
        kept.q(["a", "b"], keys=["k"])
