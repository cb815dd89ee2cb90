"""``lmrec crs prepare|chat``: the LLM features of a conversational dataset, and recommending as you type.

Training, evaluation and one-shot recommendation of CRS models go through the common commands:
``lmrec train rta_reindex --features DIR --out RUN``, ``lmrec evaluate RUN``, ``lmrec recommend RUN --conversation F``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from lmrec.cli.flags import add_settings, given
from lmrec.cli.train import add_threads, set_threads
from lmrec.errors import LmrecError


def add_commands(sub: argparse._SubParsersAction, argv: list[str]) -> None:
    from lmrec.inputs.config import PrepareConfig

    crs = sub.add_parser("crs", help="conversational recommendation with an LLM (Reindex-Then-Adapt)")
    crs_sub = crs.add_subparsers(dest="crs_command", required=True)
    prep = crs_sub.add_parser("prepare", help="encode q, tokenize titles and generate with the LLM (cached)")
    prep.add_argument("--dataset", required=True, help="inspired | redial (found under $LMREC_DATA) or a folder")
    prep.add_argument("--cache", help="embedding cache root (default $LMREC_CACHE/embeddings)")
    prep.add_argument("--no-progress", dest="progress", action="store_false")
    prep.add_argument("--out", required=True)
    prep.add_argument("--answers-from", dest="answers_from", nargs="+", default=[], metavar="FILE",
                      help="generations-<split>.jsonl[.gz] files made elsewhere (another folder, a report's answers/): "
                           "an answer of the same LLM, settings and prompt is taken from them instead of generated")
    add_threads(prep)
    add_settings(prep, PrepareConfig, "prepare settings")
    prep.set_defaults(func=cmd_prepare)

    chat = crs_sub.add_parser("chat", help="interactive: recommends after every line you type (/reset, /quit)")
    chat.add_argument("run")
    chat.add_argument("-k", type=int, default=5)
    chat.add_argument("--keep-mentioned", dest="keep_mentioned", action="store_true")
    add_threads(chat)
    chat.set_defaults(func=cmd_chat)


def cmd_prepare(args: argparse.Namespace) -> None:
    from lmrec.inputs.config import PrepareConfig
    from lmrec.inputs.prepare import prepare_dataset
    from lmrec.settings import build

    set_threads(args)
    config = build(PrepareConfig, given(args, PrepareConfig), what="prepare setting")
    missing = [f for f in args.answers_from if not Path(f).is_file()]
    if missing:
        raise LmrecError(f"--answers-from: no such file {missing[0]} (expected a generations-<split>.jsonl[.gz] file)")
    features = prepare_dataset(args.dataset, Path(args.out), config, cache_root=args.cache, progress=args.progress,
                               answers_from=[Path(f) for f in args.answers_from])
    for split, info in features.meta["splits"].items():
        gen = info.get("generation")
        encode = info["encoding"]["seconds_per_sample"]
        line = f"{split}: {info['kept']}/{info['samples']} turns, encode {encode:.2f} s/turn"
        if gen:
            per = f"{gen['seconds_per_answer']:.1f} s each" if gen["seconds_per_answer"] else "all cached"
            taken = f", {gen['taken_from_earlier']} taken from --answers-from" if gen.get("taken_from_earlier") else ""
            line += (f"; generated {gen['generated_now']} new ({per}){taken}, "
                     f"{100 * gen['mapped_share']:.1f}% of {gen['titles_per_turn']:.1f} titles/turn mapped")
        elif split in config.generate_splits and info["kept"]:
            line += "; no answers generated (--max-generate)"
        print(line)
    skipped = features.meta["loader_skipped"]
    print("loader skipped: " + (", ".join(f"{n} {reason}" for reason, n in skipped.items()) if skipped else "nothing"))
    print(f"wrote {args.out}/")


def cmd_chat(args: argparse.Namespace) -> None:
    """Each input line is a user turn (``System: ...`` adds a system turn); top-k titles after each user turn,
    and a system turn naming the first three is added to the conversation. ``/reset`` clears it, ``/quit`` ends.
    The LLM's KV cache is kept between turns: a turn runs only its own tokens, not the whole conversation again."""
    from lmrec import Run
    from lmrec.data.conversations import Turn, parse_conversation

    set_threads(args)
    run = Run.load(args.run)
    if run.task != "crs":
        raise LmrecError(f"{args.run} is a {run.model.name} run (collaborative filtering); chat needs a conversational "
                         "run (lmrec train rta_adapt / sasrec / ... on inspired or redial)")
    context = getattr(run.model, "context", None)
    if context is not None:
        context.keep_kv(max_sessions=1)
    conversation = 0  # which conversation (a new one after /reset)
    interactive = sys.stdin.isatty()
    print(f"lmrec crs chat ({run.model.name} on {run.data.name}): type what you like; /reset, /quit")
    turns: list[Turn] = []
    while True:
        if interactive:
            print("> ", end="", flush=True)
        line = sys.stdin.readline()
        if not line:
            break
        text = line.strip()
        if not text:
            continue
        if text == "/quit":
            break
        if text == "/reset":
            turns = []
            conversation += 1
            print("(conversation cleared)")
            continue
        if text.startswith("/"):
            print(f"unknown command {text!r}: /reset or /quit")
            continue
        if not text.lower().startswith(("user:", "system:")):
            text = f"User: {text}"
        turn = parse_conversation([text], "<chat>")[0]
        turns.append(turn)
        if turn.role == "system":
            continue
        if not interactive:
            print(f"> {turn.text}")
        sample = run.conversation_sample(turns, conv_id=f"chat-{conversation}")
        for written, candidates in run.ambiguous_mentions(turn.text):
            print(f"{written!r} is not taken as a mention: it could be {'; '.join(candidates[:5])} (write the year)")
        if sample.mentioned:
            print("mentioned: " + "; ".join(run.catalog.titles[i] for i in sample.mentioned))
        top = run.recommend(conversation=sample, k=args.k, exclude_seen=not args.keep_mentioned)
        for r in top:
            print(f"{r.rank:3d}. {r.title}  {r.score:.3f}")
        sys.stdout.flush()
        if top:
            reply = "How about " + ", ".join(r.title for r in top[:3]) + "?"
            turns.append(Turn("system", reply))
            print(f"System: {reply}")
