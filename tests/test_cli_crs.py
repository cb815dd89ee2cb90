"""The CRS commands end to end (`lmrec crs prepare`, `lmrec train rta_reindex|rta_adapt|zero_shot_llm`,
`lmrec evaluate`, `lmrec recommend`, `lmrec crs chat`) on a tiny INSPIRED-format dataset and a tiny random Llama
(no download, seconds); and CRS run folders through the Python API (`lmrec.fit`, `lmrec.Run.load`)."""

from __future__ import annotations

import dataclasses
import io
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import lmrec
from helpers import write_inspired, write_tiny_llm
from lmrec.cli import main
from lmrec.inputs.store import read_generations, write_generations
from lmrec.models.queries import Conversations


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
        all_turns = json.dumps({"train": None, "valid": None, "test": None})  # no subsample (the default)
        assert main(["crs", "prepare", "--dataset", "inspired", "--llm", str(root / "llm"), "--dtype", "float32",
                     "--max-new-tokens", "6", "--max-samples", all_turns, "--generate-splits", "train,valid,test",
                     "--no-progress", "--out", str(prep)]) == 0
        assert main(["train", "zero_shot_llm", "--features", str(prep), "--out", str(zero)]) == 0
        assert main(["train", "rta_reindex", "--features", str(prep), "--aggregator", "weighted", "--label-source",
                     "both", "--epochs", "2", "--eval-every", "1", "--lr", "1e-2", "--no-progress",
                     "--out", str(reindex)]) == 0
        assert main(["train", "rta_adapt", "--features", str(prep), "--base", str(reindex), "--variant", "gate-fism",
                     "--epochs", "2", "--no-progress", "--out", str(adapt)]) == 0
        yield {"root": root, "prep": prep, "reindex": reindex, "adapt": adapt, "zero": zero}
    finally:
        torch.set_num_threads(threads)
        mp.undo()


def test_runs_write_metrics_like_lmrec_train(tiny_runs: dict[str, Path]) -> None:
    prepared = json.loads((tiny_runs["prep"] / "prepare.json").read_text())
    # 24 training turns, 20 distinct contexts: a context that several turns share is answered once
    assert prepared["splits"]["test"]["kept"] == 6 and prepared["splits"]["train"]["generation"]["generated_now"] == 20
    for run in ("zero", "reindex", "adapt"):
        metrics = json.loads((tiny_runs[run] / "metrics.json").read_text())
        assert {"valid", "test"} <= set(metrics)
        assert set(metrics["test"]) == {"all", "new"}  # every (turn, target) pair; new targets, mentioned removed
        block = metrics["test"]["all"]["hr@10"]
        assert set(block) == {"mean", "se", "n"} and 0.0 <= block["mean"] <= 1.0 and block["n"] == 9
    manifest = json.loads((tiny_runs["adapt"] / "manifest.json").read_text())
    assert manifest["model"] == "rta_adapt" and manifest["model_config"]["variant"] == "gate-fism"
    assert manifest["task"] == "crs" and manifest["status"] == "complete"
    assert manifest["features"] == "../prep"  # relative to the run folder
    assert (tiny_runs["adapt"] / "model.safetensors").exists() and not (tiny_runs["adapt"] / "config.json").exists()


def test_prepare_rerun_encodes_and_generates_nothing(tiny_runs: dict[str, Path], capsys) -> None:
    assert main(["crs", "prepare", "--dataset", "inspired", "--llm", str(tiny_runs["root"] / "llm"), "--dtype",
                 "float32", "--max-new-tokens", "6", "--no-progress", "--out", str(tiny_runs["prep"])]) == 0
    prepared = json.loads((tiny_runs["prep"] / "prepare.json").read_text())
    generations = [info["generation"] for info in prepared["splits"].values()]
    assert all(g["generated_now"] == 0 and g["cached"] == g["answers"] for g in generations)
    assert prepared["loader_skipped"] == {"empty_conversation": 0, "empty_title": 0}
    printed = capsys.readouterr().out
    assert "all cached" in printed and "loader skipped: 0 empty_conversation" in printed


def test_evaluate_reproduces_the_metrics(tiny_runs: dict[str, Path], capsys) -> None:
    before = json.loads((tiny_runs["adapt"] / "metrics.json").read_text())
    assert main(["evaluate", str(tiny_runs["adapt"])]) == 0
    assert f"{before['test']['all']['hr@10']['mean']:.4f}" in capsys.readouterr().out
    after = lmrec.Run.load(tiny_runs["adapt"]).evaluate("test")
    assert after["all"].summary()["hr@10"].mean == pytest.approx(before["test"]["all"]["hr@10"]["mean"])
    assert after["new"].summary()["hr@10"].mean == pytest.approx(before["test"]["new"]["hr@10"]["mean"])
    assert main(["evaluate", str(tiny_runs["adapt"]), "--metrics", "hr,coverage"]) == 2
    assert "choosing metrics applies to CF runs only" in capsys.readouterr().err


def test_recommend_reads_a_conversation_from_stdin(tiny_runs: dict[str, Path], monkeypatch, capsys) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO("User: I like Heat (1995) and The Matrix\n\nSystem: try Alien\n"))
    assert main(["recommend", str(tiny_runs["reindex"]), "--conversation", "-", "-k", "3"]) == 0
    out = capsys.readouterr().out
    assert "mentioned: Heat (1995); The Matrix (1999)" in out
    ranked = [line for line in out.splitlines() if line.strip()[:2] in ("1.", "2.", "3.")]
    assert len(ranked) == 3
    titles = [line.split("[")[0] for line in ranked]  # a line: rank. title  [id]  score  (reason)
    assert not any("Heat (1995)" in t or "The Matrix" in t for t in titles)  # mentioned items left out
    assert all(line.split("]")[-1].rstrip().endswith(")") for line in ranked)  # each with its reason


def test_recommend_from_a_file_with_the_adapted_model(tiny_runs: dict[str, Path], tmp_path: Path, capsys) -> None:
    conv = tmp_path / "conv.txt"
    conv.write_text("user: something like Jaws (1975)\n", encoding="utf-8")
    assert main(["recommend", str(tiny_runs["adapt"]), "--conversation", str(conv), "-k", "2"]) == 0
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
    assert main(["recommend", str(tiny_runs["reindex"]), "--conversation", "-"]) == 2
    err = capsys.readouterr().err
    assert "line 2" in err and "expected 'User: ...' or 'System: ...'" in err
    monkeypatch.setattr("sys.stdin", io.StringIO("\n  \n"))
    assert main(["recommend", str(tiny_runs["reindex"]), "--conversation", "-"]) == 2
    assert "conversation is empty" in capsys.readouterr().err


def test_prepare_with_no_answers_and_plain_per_split_values(tiny_runs: dict[str, Path], tmp_path: Path,
                                                            capsys) -> None:
    """Issue 25: --max-generate 0 in every split was a ZeroDivisionError; --max-samples wanted JSON."""
    llm = ["--llm", str(tiny_runs["root"] / "llm"), "--dtype", "float32", "--max-new-tokens", "4", "--no-progress"]
    out = tmp_path / "no-answers"
    assert main(["crs", "prepare", "--dataset", "inspired", *llm, "--max-generate", "train=0,valid=0,test=0",
                 "--max-samples", "train=5,valid=none", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "train: 5/24 turns" in printed and "valid: 6/6 turns" in printed and "test: 6/6 turns" in printed
    assert printed.count("no answers generated (--max-generate)") == 3
    prepared = json.loads((out / "prepare.json").read_text())
    assert all("generation" not in info for info in prepared["splits"].values())
    assert not list(out.glob("generations-*.jsonl"))
    json_form = tmp_path / "json-form"  # JSON is still read, with the same meaning
    assert main(["crs", "prepare", "--dataset", "inspired", *llm, "--max-generate", '{"train": 0, "valid": 0, '
                 '"test": 0}', "--max-samples", '{"train": 5, "valid": null}', "--out", str(json_form)]) == 0
    assert json.loads((json_form / "prepare.json").read_text())["config"] == prepared["config"]


def test_prepare_takes_answers_made_elsewhere(tiny_runs: dict[str, Path], tmp_path: Path, capsys) -> None:
    """--answers-from: the answers of another prepared folder (same LLM, settings and prompts) are taken, not
    generated again; the answers made with other settings are not."""
    llm = ["--llm", str(tiny_runs["root"] / "llm"), "--dtype", "float32", "--no-progress"]
    made = read_generations(tiny_runs["prep"] / "generations-train.jsonl")
    earlier = [str(tmp_path / "copied.jsonl")]  # made elsewhere, and its mapping is not trusted: it is redone here
    wrong = [dataclasses.replace(r, items=[*r.items, 0, 1], titles=["Elsewhere"]) for r in made.values()]
    write_generations(Path(earlier[0]), wrong)
    out = tmp_path / "elsewhere"
    assert main(["crs", "prepare", "--dataset", "inspired", *llm, "--max-new-tokens", "6", "--answers-from",
                 *earlier, "--out", str(out)]) == 0
    splits = json.loads((out / "prepare.json").read_text())["splits"]
    assert (splits["train"]["generation"]["taken_from_earlier"], splits["train"]["generation"]["generated_now"]) \
        == (20, 0)
    assert "generated 0 new (all cached), 20 taken from --answers-from" in capsys.readouterr().out
    assert read_generations(out / "generations-train.jsonl") == made
    longer = tmp_path / "longer-answers"  # another max_new_tokens: another key, generated
    assert main(["crs", "prepare", "--dataset", "inspired", *llm, "--max-new-tokens", "5", "--max-generate",
                 "valid=0,test=0", "--answers-from", *earlier, "--out", str(longer)]) == 0
    train = json.loads((longer / "prepare.json").read_text())["splits"]["train"]["generation"]
    assert (train["taken_from_earlier"], train["generated_now"]) == (0, 20)
    assert main(["crs", "prepare", "--dataset", "inspired", *llm, "--answers-from", str(tmp_path / "none.jsonl"),
                 "--out", str(tmp_path / "x")]) == 2
    assert "--answers-from: no such file" in capsys.readouterr().err


@pytest.mark.parametrize(("flags", "error"), [
    (["--max-samples", "train:2"], "argument --max-samples: expected KEY=VALUE pairs separated by commas, e.g. "
                                   "train=200,valid=50; got 'train:2'"),
    (["--max-samples", "train=-1"], "prepare setting --max-samples train=-1: expected greater than or equal to 0"),
    (["--max-generate", "later=1"], "prepare setting --max-generate later=1: expected 'train', 'valid' or 'test'"),
    (["--q-mode", "completion", "--max-generate", "test=0"], "--q-mode completion reads the LLM's answer to every "
     "kept turn, but 0 of the 6 kept test turns are answered (--generate-splits train,valid,test, "
     "--max-generate test=0)"),
    (["--q-mode", "completion", "--item-prompt", "I want {title}"], "--item-prompt 'I want {title}' needs "
     "--q-mode prefix"),
])
def test_prepare_errors_name_the_flags(tiny_runs: dict[str, Path], tmp_path: Path, capsys, flags, error) -> None:
    llm = ["--llm", str(tiny_runs["root"] / "llm"), "--dtype", "float32", "--max-new-tokens", "4", "--no-progress"]
    argv = ["crs", "prepare", "--dataset", "inspired", *llm, *flags, "--out", str(tmp_path / "x")]
    try:
        code = main(argv)
    except SystemExit as exc:  # refused by the parser
        code = exc.code
    err = capsys.readouterr().err
    assert code == 2 and err.startswith(f"lmrec: error: {error}") and err.count("\n") == 1, err


def test_prepare_help_shows_readable_defaults(capsys) -> None:
    with pytest.raises(SystemExit):
        main(["crs", "prepare", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--max-samples KEY=VALUE,... turns kept per split" in text and "e.g. train=200,valid=50" in text
    assert "default train,valid,test" in text and "{}" not in text and "('train'" not in text


def test_unknown_dataset_lists_the_names(tmp_path: Path, capsys) -> None:
    assert main(["crs", "prepare", "--dataset", "movielens", "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert "'movielens' is neither a known dataset" in err and "inspired, redial" in err  # the names are listed


def test_mention_finder() -> None:
    from lmrec.data.conversations import MentionFinder

    finder = MentionFinder(["Heat (1995)", "Scary Movie (2000)", "The Matrix (1999)", "The Matrix Reloaded (2003)"])
    assert finder.find("I loved Heat (1995) and The Matrix Reloaded!") == [0, 3]
    assert finder.find("the matrix (1999), then heat") == [2]  # with the year any case; one-word bare titles never
    assert finder.find("I want a scary movie tonight") == []  # lowercase words are not a bare title
    assert finder.find("Scary Movie was fun, so was The Matrix") == [1, 2]


def test_mention_finder_takes_a_bare_title_that_names_one_item() -> None:
    """'Inception' without its year is a mention when one item has that title, written as the catalog writes it
    and not opening a sentence (one-word titles are often plain words); a bare title of several items is none, and
    is reported with its candidates."""
    from lmrec.data.conversations import MentionFinder

    titles = ["Heat (1995)", "Heat (1986)", "Inception (2010)", "It (2017)", "Up (2009)", "Us (2019)",
              "The Thing (1982)", "The Thing (2011)", "Toy Story"]
    finder = MentionFinder(titles)
    assert finder.find("I loved Inception and Up, also \"It\"") == [2, 4, 3]
    assert finder.find("Inception was great. It was long. Up next: a movie") == []  # sentence openers
    assert finder.find("i loved inception, we live in the US, I saw INCEPTION") == []  # not as the catalog writes it
    assert finder.find("I liked Heat and The Thing, not Heat (1986)") == [1]
    assert finder.ambiguous("I liked Heat and The Thing, not Heat (1986)") == [("Heat", [0, 1]),
                                                                              ("The Thing", [6, 7])]
    assert finder.find("the matrix, then Toy Story") == [8]  # a title without a year is its bare title
    assert MentionFinder(["Heat (1995)", "Heat (1995)"]).ambiguous("Heat (1995)") == [("Heat (1995)", [0, 1])]


def test_chat_names_a_title_without_its_year(tiny_runs: dict[str, Path], monkeypatch, capsys) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO("I loved Inception and Heat (1995)\n/quit\n"))
    assert main(["crs", "chat", str(tiny_runs["reindex"]), "-k", "2"]) == 0
    assert "mentioned: Inception (2010); Heat (1995)" in capsys.readouterr().out


def test_fitted_and_loaded_runs_score_the_same(tiny_runs: dict[str, Path], tmp_path: Path) -> None:
    """The Python API: lmrec.fit on a prepared folder with a loaded reindex run as base, then Run.load."""
    data = lmrec.load_dataset("inspired")
    base = lmrec.Run.load(tiny_runs["reindex"], data=data)
    fitted = lmrec.fit("rta_adapt", data, {"epochs": 2, "progress": False}, out=tmp_path / "adapt",
                       features=tiny_runs["prep"], base=base, variant="gW+b")
    loaded = lmrec.Run.load(tmp_path / "adapt")
    samples = fitted.model.context.samples["test"]
    assert len(samples) == 6
    assert torch.equal(loaded.model.score(Conversations(tuple(samples))),
                       fitted.model.score(Conversations(tuple(samples))))
    assert loaded.metrics == json.loads(json.dumps(fitted.metrics))
    # adapting trained a copy of the reindexed item table: the base run scores as its folder does
    assert torch.equal(base.model.score(Conversations(tuple(samples))),
                       lmrec.Run.load(tiny_runs["reindex"]).model.score(Conversations(tuple(samples))))


def test_a_copied_adapt_run_loads_without_the_prepared_folder(tiny_runs: dict[str, Path], tmp_path: Path,
                                                             monkeypatch) -> None:
    """A run folder copied elsewhere (its prepared folder left behind) gets q from the LLM through the embedding
    cache, and scores the prepared test turns as the original does."""
    from lmrec.llm import CausalLM

    original = lmrec.Run.load(tiny_runs["adapt"])
    samples = original.model.context.samples["test"]
    assert len(samples) == 6
    expected = original.model.score(Conversations(tuple(samples)))
    copy = tmp_path / "elsewhere" / "adapt"
    shutil.copytree(tiny_runs["adapt"], copy)
    assert not (copy / json.loads((copy / "manifest.json").read_text())["features"]).exists()
    cache = tmp_path / "cache"
    monkeypatch.setenv("LMREC_CACHE", str(cache))
    moved = lmrec.Run.load(copy)
    assert moved.model.context.samples == {} and moved.model.context.q_table == {}  # nothing prepared is read
    got = moved.model.score(Conversations(tuple(samples)))
    # the LLM encodes these turns in other batches than prepare did (other padding widths): equal to float rounding
    torch.testing.assert_close(got, expected, rtol=1e-6, atol=1e-6)
    assert any((cache / "embeddings").rglob("*.npz")), "the new q vectors went into the embedding cache"

    def no_encoding(*args, **kwargs):
        raise AssertionError("q should come from the embedding cache")

    monkeypatch.setattr(CausalLM, "encode_texts", no_encoding)
    again = lmrec.Run.load(copy)
    assert torch.equal(again.model.score(Conversations(tuple(samples))), got)  # read back from the cache, bit for bit


def test_a_model_that_answers_by_generation_is_evaluated_on_the_answered_turns() -> None:
    """Generating the turns prepare left unanswered would take seconds each: the zero-shot run skips them."""
    from types import SimpleNamespace

    from lmrec.data.conversations import CRSSample
    from lmrec.eval.model import evaluation_turns
    from lmrec.inputs.lookup import ContextFeatures

    turns = [CRSSample("c", t, f"context {t}", [], [0], [True]) for t in range(4)]
    context = ContextFeatures(completions={"context 1": "1. Heat", "context 3": "1. Alien"},
                              samples={"test": turns, "valid": turns[:2]})
    zero_shot = SimpleNamespace(context=context, answers_by_generation=True)
    assert [s.turn_id for s in evaluation_turns(zero_shot, None, "test")] == [1, 3]
    assert [s.turn_id for s in evaluation_turns(zero_shot, None, "valid")] == [1]
    reindexed = SimpleNamespace(context=context, answers_by_generation=False)
    assert len(evaluation_turns(reindexed, None, "test")) == 4


def test_served_conversations_keep_the_kv_cache_and_answer_as_without(tiny_runs: dict[str, Path]) -> None:
    """Two sessions of six messages through `lmrec serve`'s app, with the KV cache kept and without (each a run of
    its own, nothing from the embedding cache): the same recommendations, and fewer tokens run with the cache."""
    from fastapi.testclient import TestClient

    from lmrec.serve import create_app
    from lmrec.serve.batching import ServeOptions

    answers = {}
    for kv_mb in (64.0, 0.0):
        run = lmrec.Run.load(tiny_runs["adapt"])
        run.model.context.cache = False
        client = TestClient(create_app({"rta": run}, options=ServeOptions(kv_cache_mb=kv_mb)))
        got = []
        for conversation in range(2):
            sid = client.post("/models/rta/sessions").json()["session_id"]
            for text in ["I like Toy Story (1995)", "something with action", "what about Heat (1995)?",
                         "maybe older", "I like Jaws (1975) too", "more please"]:
                text = f"{text} {'!' * conversation}"  # new contexts in either conversation (none from memory)
                body = client.post(f"/models/rta/sessions/{sid}/messages", json={"text": text, "k": 3}).json()
                got.append(body["recommendations"])
        answers[kv_mb] = got
        store = run.model.context.kv
        if kv_mb:
            assert store.stats["messages"] == 12 and store.stats["computed"] < 0.5 * store.stats["tokens"]
            assert len(store) == 2
        else:
            assert store is None
    for kept, plain in zip(answers[64.0], answers[0.0], strict=True):
        assert [r["item_id"] for r in kept] == [r["item_id"] for r in plain]
        np.testing.assert_allclose([r["score"] for r in kept], [r["score"] for r in plain], rtol=1e-4, atol=1e-4)


def test_the_rta_speed_bench_runs_on_a_reindex_run(tiny_runs: dict[str, Path], tmp_path: Path) -> None:
    """bench/bench_rta_speed.py goes through the one scoring contract: on a tiny reindex run it times both paths,
    checks that the LLM really ran (q as prepared, the same completions) and writes its table."""
    bench = Path(__file__).resolve().parents[1] / "bench" / "bench_rta_speed.py"
    out = tmp_path / "speed"
    done = subprocess.run([sys.executable, str(bench), "--run", str(tiny_runs["reindex"]), "--n", "2",
                           "--batch-size", "2", "--out", str(out)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(out.with_suffix(".json").read_text())
    assert result["q_max_abs_diff"] < 1e-4 and result["same_completions"] == 2
    assert [row["zero-shot forwards"] for row in result["rows"]] == [6, 6]  # --max-new-tokens 6: really generated
    assert "reindexed" in out.with_suffix(".md").read_text()
