"""`lmrec crs ...` end to end on a tiny INSPIRED-format dataset and a tiny random Llama (no download, seconds)."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
import torch

from lmrec.cli import main

MOVIES = ["Toy Story (1995)", "Heat (1995)", "The Matrix (1999)", "Alien (1979)", "Jaws (1975)",
          "Up (2009)", "Inception (2010)", "Titanic (1997)", "Ronin (1998)", "Fargo (1996)"]
WORDS = ["User", "System", "I", "like", "watch", "try", "movies", "action", "you", "should", "what", "about"]


def dialog(k: int) -> list[dict]:
    a, b, c = MOVIES[k % 10], MOVIES[(k + 3) % 10], MOVIES[(k + 5) % 10]
    return [
        {"text": "Hi! what movies do you like?", "role": "RECOMMENDER", "movie": []},
        {"text": f"I like {a} and action", "role": "SEEKER", "movie": [a]},
        {"text": f"you should watch {b}", "role": "RECOMMENDER", "movie": [b]},
        {"text": "what about another?", "role": "SEEKER", "movie": []},
        {"text": f"try {c} or {a}", "role": "RECOMMENDER", "movie": [c, a]},
    ]


def write_inspired(root: Path) -> None:
    folder = root / "inspired" / "unicrs_processed"
    folder.mkdir(parents=True)
    for split, ks in (("train", range(12)), ("valid", range(12, 15)), ("test", range(15, 18))):
        with open(folder / f"{split}_data_dbpedia.jsonl", "w", encoding="utf-8") as f:
            for k in ks:
                f.write(json.dumps(dialog(k)) + "\n")


def write_tiny_llm(folder: Path) -> None:
    """A 1-layer, 16-d random Llama with a whitespace word-level tokenizer (no chat template: Llama-2 prompt)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    vocab: dict[str, int] = {"[UNK]": 0, "[PAD]": 1, "</s>": 2, "<s>": 3}
    import re

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


@pytest.fixture(scope="module")
def tiny_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("crs")
    write_inspired(root / "data")
    write_tiny_llm(root / "llm")
    mp = pytest.MonkeyPatch()
    mp.setenv("LMREC_DATA", str(root / "data"))
    mp.setenv("LMREC_CACHE", str(root / "cache"))
    prep, reindex, adapt, zero = root / "prep", root / "reindex", root / "adapt", root / "zero"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert main(["crs", "prepare", "--dataset", "inspired", "--llm", str(root / "llm"), "--dtype", "float32",
                     "--max-new-tokens", "6", "--max-samples", "train=all,valid=all,test=all", "--no-progress",
                     "--out", str(prep)]) == 0
        assert main(["crs", "zero-shot", "--features", str(prep), "--out", str(zero)]) == 0
        assert main(["crs", "reindex", "--features", str(prep), "--aggregator", "weighted", "--label-source", "both",
                     "--epochs", "2", "--eval-every", "1", "--lr", "1e-2", "--no-progress", "--out", str(reindex)]) == 0
        assert main(["crs", "adapt", "--reindex", str(reindex), "--variant", "gate-fism", "--epochs", "2",
                     "--no-progress", "--out", str(adapt)]) == 0
        yield {"root": root, "prep": prep, "reindex": reindex, "adapt": adapt, "zero": zero}
    finally:
        torch.set_num_threads(threads)
        mp.undo()


def test_runs_write_metrics_like_lmrec_train(tiny_runs: dict[str, Path]) -> None:
    prepared = json.loads((tiny_runs["prep"] / "prepare.json").read_text())
    assert prepared["splits"]["test"]["kept"] == 6 and prepared["splits"]["train"]["generation"]["generated_now"] == 24
    for run in ("zero", "reindex", "adapt"):
        metrics = json.loads((tiny_runs[run] / "metrics.json").read_text())
        assert {"valid", "test", "test_new"} <= set(metrics)
        block = metrics["test"]["hr@10"]
        assert set(block) == {"mean", "se", "n"} and 0.0 <= block["mean"] <= 1.0 and block["n"] == 9
    config = json.loads((tiny_runs["adapt"] / "config.json").read_text())
    assert config["kind"] == "rta_adapt" and config["adapt_config"]["variant"] == "gate-fism"


def test_prepare_rerun_encodes_and_generates_nothing(tiny_runs: dict[str, Path], capsys) -> None:
    assert main(["crs", "prepare", "--dataset", "inspired", "--llm", str(tiny_runs["root"] / "llm"), "--dtype",
                 "float32", "--max-new-tokens", "6", "--no-progress", "--out", str(tiny_runs["prep"])]) == 0
    prepared = json.loads((tiny_runs["prep"] / "prepare.json").read_text())
    assert all(info["generation"]["generated_now"] == 0 for info in prepared["splits"].values())
    assert "all cached" in capsys.readouterr().out


def test_evaluate_reproduces_the_metrics(tiny_runs: dict[str, Path]) -> None:
    before = json.loads((tiny_runs["adapt"] / "metrics.json").read_text())
    assert main(["crs", "evaluate", str(tiny_runs["adapt"])]) == 0
    after = json.loads((tiny_runs["adapt"] / "metrics.json").read_text())
    assert after["test"]["hr@10"]["mean"] == pytest.approx(before["test"]["hr@10"]["mean"])


def test_recommend_reads_a_conversation_from_stdin(tiny_runs: dict[str, Path], monkeypatch, capsys) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO("User: I like Heat (1995) and The Matrix\n\nSystem: try Alien\n"))
    assert main(["crs", "recommend", str(tiny_runs["reindex"]), "--conversation", "-", "-k", "3"]) == 0
    out = capsys.readouterr().out
    assert "mentioned: Heat (1995); The Matrix (1999)" in out
    ranked = [line for line in out.splitlines() if line.strip()[:2] in ("1.", "2.", "3.")]
    assert len(ranked) == 3
    assert not any("Heat (1995)" in line or "The Matrix" in line for line in ranked)  # mentioned items left out


def test_recommend_from_a_file_with_the_adapted_model(tiny_runs: dict[str, Path], tmp_path: Path, capsys) -> None:
    conv = tmp_path / "conv.txt"
    conv.write_text("user: something like Jaws (1975)\n", encoding="utf-8")
    assert main(["crs", "recommend", str(tiny_runs["adapt"]), "--conversation", str(conv), "-k", "2"]) == 0
    assert "  1. " in capsys.readouterr().out


def test_chat_with_piped_input(tiny_runs: dict[str, Path], monkeypatch, capsys) -> None:
    typed = "I like Toy Story (1995)\nsomething scarier\n/reset\nhi\n/quit\nnever"
    monkeypatch.setattr("sys.stdin", io.StringIO(typed))
    assert main(["crs", "chat", str(tiny_runs["reindex"]), "-k", "2"]) == 0
    out = capsys.readouterr().out
    assert out.count("  1. ") == 3 and "(conversation cleared)" in out
    assert out.count("System: How about") == 3 and "never" not in out


def test_malformed_line_and_empty_conversation(tiny_runs: dict[str, Path], monkeypatch, capsys) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO("User: hello\nI like Heat\n"))
    assert main(["crs", "recommend", str(tiny_runs["reindex"]), "--conversation", "-"]) == 2
    err = capsys.readouterr().err
    assert "line 2" in err and "expected 'User: ...' or 'System: ...'" in err
    monkeypatch.setattr("sys.stdin", io.StringIO("\n  \n"))
    assert main(["crs", "recommend", str(tiny_runs["reindex"]), "--conversation", "-"]) == 2
    assert "conversation is empty" in capsys.readouterr().err


def test_unknown_dataset_lists_the_names(tmp_path: Path, capsys) -> None:
    assert main(["crs", "prepare", "--dataset", "movielens", "--out", str(tmp_path / "x")]) == 2
    assert "known names are inspired, redial" in capsys.readouterr().err


def test_mention_finder() -> None:
    from lmrec.experiments.crs import MentionFinder

    finder = MentionFinder(["Heat (1995)", "Scary Movie (2000)", "The Matrix (1999)", "The Matrix Reloaded (2003)"])
    assert finder.find("I loved Heat (1995) and The Matrix Reloaded!") == [0, 3]
    assert finder.find("the matrix (1999), then heat") == [2]  # with the year any case; one-word bare titles never
    assert finder.find("I want a scary movie tonight") == []  # lowercase words are not a bare title
    assert finder.find("Scary Movie was fun, so was The Matrix") == [1, 2]
