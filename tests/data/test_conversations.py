"""make_samples / expand_pairs / training_mentions on a hand-computed conversation."""

import gzip

import numpy as np
import pytest

from lmrec.data.conversations import (
    Conversation,
    Pair,
    Turn,
    expand_pairs,
    iter_jsonl,
    make_samples,
    split_conversations,
    training_mentions,
)
from lmrec.errors import DataFormatError

HEAT, THIEF, COLLATERAL, RONIN = 0, 1, 2, 3


@pytest.fixture
def conv() -> Conversation:
    return Conversation("c1", [
        Turn("system", "Hi! What do you like?"),
        Turn("user", "I loved Heat (1995) and Thief (1981)", [HEAT, THIEF]),
        Turn("system", "Then watch Collateral (2004), or rewatch Heat (1995)", [COLLATERAL, HEAT]),
        Turn("user", "Thanks!"),
        Turn("system", "Also Ronin (1998)\nand Collateral (2004)", [RONIN, COLLATERAL, RONIN]),
    ])


CONTEXT_1 = "System: Hi! What do you like?\nUser: I loved Heat (1995) and Thief (1981)"
CONTEXT_2 = CONTEXT_1 + "\nSystem: Then watch Collateral (2004), or rewatch Heat (1995)\nUser: Thanks!"


def test_make_samples_exact(conv):
    first, second = make_samples(conv)
    assert (first.conv_id, first.turn_id) == ("c1", 2)
    assert first.context == CONTEXT_1
    assert first.mentioned == [HEAT, THIEF]
    assert first.targets == [COLLATERAL, HEAT]
    assert first.target_is_new == [True, False]
    assert second.turn_id == 4
    assert second.context == CONTEXT_2
    assert second.mentioned == [HEAT, THIEF, COLLATERAL]
    assert second.targets == [RONIN, COLLATERAL]  # distinct, first-mention order
    assert second.target_is_new == [True, False]


def test_new_targets_only(conv):
    """targets="new": a turn's targets are the items its context has not mentioned; a turn left with none is no
    sample (here: none is, both turns recommend one new item)."""
    first, second = make_samples(conv, targets="new")
    assert (first.targets, first.target_is_new) == ([COLLATERAL], [True])
    assert (second.targets, second.target_is_new) == ([RONIN], [True])
    repeat = Conversation("c2", [Turn("user", "I loved Heat (1995)", [HEAT]), Turn("system", "Heat (1995)!", [HEAT])])
    assert len(make_samples(repeat)) == 1 and make_samples(repeat, targets="new") == []


def test_context_never_holds_the_target_turn(conv):
    for sample in make_samples(conv):
        assert conv.turns[sample.turn_id].text.split("\n")[0] not in sample.context
        assert len(sample.context.split("\n")) == sample.turn_id


def test_user_turns_and_item_less_system_turns_give_no_sample():
    conv = Conversation("c", [Turn("user", "Heat (1995)", [HEAT]), Turn("system", "Nice")])
    assert make_samples(conv) == []


def test_max_context_chars_keeps_recent_whole_lines(conv):
    second = make_samples(conv, max_context_chars=len("User: Thanks!"))[1]
    assert second.context == "User: Thanks!"
    assert second.mentioned == [HEAT, THIEF, COLLATERAL]  # mentions still cover the whole history
    assert make_samples(conv, max_context_chars=5)[1].context == "anks!"
    assert make_samples(conv, max_context_chars=0)[1].context == ""
    assert make_samples(conv, max_context_chars=10_000)[1].context == CONTEXT_2


def test_expand_pairs(conv):
    pairs = expand_pairs(make_samples(conv))
    assert pairs == [
        Pair(0, COLLATERAL, True), Pair(0, HEAT, False), Pair(1, RONIN, True), Pair(1, COLLATERAL, False),
    ]


def test_training_mentions_counts_turns(conv):
    counts = training_mentions([conv], n_items=5)
    assert counts.tolist() == [2, 1, 2, 1, 0]  # Ronin twice in one turn counts once
    assert training_mentions([conv]).tolist() == [2, 1, 2, 1]
    with pytest.raises(ValueError):
        training_mentions([conv], n_items=2)


def test_turn_role_is_checked():
    with pytest.raises(ValueError, match="role"):
        Turn("seeker", "hi")  # type: ignore[arg-type]


def test_split_conversations_is_seeded_and_complete():
    convs = [Conversation(str(i), []) for i in range(50)]
    train, valid = split_conversations(convs, 0.1, seed=7)
    assert len(valid) == 5 and len(train) == 45
    assert sorted(c.conv_id for c in train + valid) == sorted(c.conv_id for c in convs)
    assert [c.conv_id for c in valid] == [c.conv_id for c in split_conversations(convs, 0.1, seed=7)[1]]
    assert [int(c.conv_id) for c in train] == sorted(int(c.conv_id) for c in train)  # file order kept


def test_iter_jsonl_names_file_and_line(tmp_path):
    path = tmp_path / "x.jsonl.gz"
    with gzip.open(path, "wt") as f:
        f.write('{"a": 1}\n\n{"a": \n')
    with pytest.raises(DataFormatError, match=r"x\.jsonl\.gz, line 3: invalid JSON") as info:
        list(iter_jsonl(path))
    assert info.value.line == 3


def test_training_mentions_dtype(conv):
    assert training_mentions([conv], 5).dtype == np.int64
