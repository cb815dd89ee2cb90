"""The ``lmrec`` command: data, embed, train, evaluate, recommend (``lmrec --help``)."""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lmrec.errors import LmrecError


def _value(text: str) -> Any:
    """A ``--set`` value: JSON when it parses (numbers, true/false, lists), the plain string otherwise."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def _pairs(items: Sequence[str]) -> dict[str, Any]:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise LmrecError(f"--set expects key=value, got {item!r}")
        out[key.replace("-", "_")] = _value(value)
    return out


def _ints(text: str) -> tuple[int, ...]:
    return tuple(int(x) for x in text.split(","))


def format_table(rows: list[dict[str, Any]], columns: Sequence[str]) -> str:
    """A plain aligned text table."""
    cells = [[str(c) for c in columns]] + [[_fmt(row.get(c, "")) for c in columns] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(columns))]
    lines = ["  ".join(v.ljust(w) for v, w in zip(r, widths)) for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _fmt(value: Any) -> str:
    if isinstance(value, dict) and "mean" in value:
        return f"{value['mean']:.4f} ± {value['se']:.4f}"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def metrics_table(metrics: dict[str, dict[str, dict[str, float]]]) -> str:
    names = list(next(iter(metrics.values())).keys())
    rows = [{"split": split, **values} for split, values in metrics.items()]
    return format_table(rows, ["split", *names])


# -- commands -----------------------------------------------------------------------------------------
def cmd_data_list(args: argparse.Namespace) -> None:
    from lmrec.data.registry import find_dataset_dir, list_datasets

    rows = []
    for spec in list_datasets():
        try:
            where = str(find_dataset_dir(spec.name))
        except LmrecError:
            where = "(not found)"
        rows.append({"name": spec.name, "format": spec.format, "split": spec.split, "found at": where})
    print(format_table(rows, ["name", "format", "split", "found at"]))


def cmd_data_stats(args: argparse.Namespace) -> None:
    from lmrec.data.registry import load_dataset

    data = load_dataset(args.dataset, format=args.format, split=args.split, seed=args.seed)
    stats = data.stats()
    width = max(map(len, stats))
    for key, value in stats.items():
        print(f"{key.ljust(width)}  {_fmt(value)}")
    print(f"{'checksum'.ljust(width)}  {data.checksum()}")


def cmd_embed(args: argparse.Namespace) -> None:
    import numpy as np

    from lmrec.data.registry import load_interactions
    from lmrec.io import atomic_write
    from lmrec.text import encode_catalog, get_encoder

    catalog = load_interactions(args.dataset, format=args.format).catalog
    texts = catalog.text(tuple(args.fields.split(",")))
    start = time.perf_counter()
    vectors = encode_catalog(texts, get_encoder(args.encoder), progress=True)
    print(f"{len(texts)} item texts -> {vectors.shape} with {args.encoder} in {time.perf_counter() - start:.1f} s "
          f"(cached: a second run encodes nothing)")
    if args.out:
        atomic_write(Path(args.out), lambda f: np.save(f, vectors), binary=True)
        print(f"wrote {args.out}")


def cmd_train(args: argparse.Namespace) -> None:
    from lmrec.experiments.runner import DataRef, train_and_evaluate

    model_overrides = _pairs(args.set)
    if args.encoder:
        model_overrides["encoder"] = args.encoder
    train_overrides = _pairs(args.train_set)
    for key in ("epochs", "seed", "lr", "batch_size", "eval_every", "patience"):
        if getattr(args, key) is not None:
            train_overrides[key] = getattr(args, key)
    if args.no_progress:
        train_overrides["progress"] = False
    ref = DataRef(args.dataset, args.format, args.split, args.data_seed)
    result = train_and_evaluate(args.model, ref, model_overrides, train_overrides, Path(args.out))
    print(metrics_table(result.metrics))
    print(f"fit {result.config['fit_seconds']:.1f} s, best epoch {result.config['best_epoch']}; wrote {args.out}/")


def cmd_evaluate(args: argparse.Namespace) -> None:
    from lmrec.eval.ranking import evaluate
    from lmrec.experiments.runner import REPORT_METRICS, load_run

    model, data, config = load_run(Path(args.run))
    result = evaluate(model.score, data, args.split, ks=_ints(args.k), metrics=REPORT_METRICS,
                      batch_size=args.batch_size, seed=config.get("eval_seed", 0))
    print(metrics_table({args.split: result.to_dict()}))
    print(f"full ranking over {data.n_items} items, masked: {', '.join(result.protocol['masked']) or 'nothing'}; "
          f"ties: {result.protocol['ties']}")


def cmd_recommend(args: argparse.Namespace) -> None:
    from lmrec.experiments.runner import load_run

    model, data, _ = load_run(Path(args.run))
    user = data.user_index(args.user)
    history = data.train_items(user)  # raises a clear error for a user without training items
    print(f"user {args.user}: {len(history)} training items, e.g. "
          + "; ".join(data.catalog.titles[i] for i in history[:3]))
    if args.intent:
        from lmrec.experiments.intention import recommend_with_intent

        print(f"intention (alpha {args.alpha}): {args.intent}")
        top = recommend_with_intent(model, data, user, args.intent, args.alpha, args.k)  # type: ignore[arg-type]
    else:
        top = model.recommend(user, args.k)
    for rank, (item, score) in enumerate(top, start=1):
        print(f"{rank:3d}. {data.catalog.titles[item]}  [{data.catalog.ids[item]}]  {score:.4f}")


def cmd_demo(args: argparse.Namespace) -> None:
    from lmrec.experiments.demo import run_demo

    run_demo(Path(args.out), args.dataset, args.user)


def cmd_compare(args: argparse.Namespace) -> None:
    from lmrec.experiments.compare import markdown, run_comparison

    train = {"progress": not args.no_progress, **_pairs(args.train_set)}
    if args.epochs:
        train["epochs"] = args.epochs
    results = run_comparison(args.models.split(","), args.datasets.split(","), Path(args.out), train,
                             seed=args.data_seed)
    print(markdown(results))


def cmd_reproduce(args: argparse.Namespace) -> None:
    from lmrec.experiments.reproduce import publish, reproduce

    out = Path(args.out or f"runs/reproduce/{args.paper}{'-quick' if args.quick else ''}")
    only = [o for o in (args.only or "").split(",") if o]
    start = time.perf_counter()
    report = reproduce(args.paper, Path(args.configs), out, args.quick, only)
    print(f"report: {report / 'report.md'} ({(time.perf_counter() - start) / 60:.1f} min)")
    if args.publish:
        print(f"published to {publish(report, Path(args.publish))}")


def cmd_zeroshot(args: argparse.Namespace) -> None:
    from lmrec.experiments import zeroshot
    from lmrec.experiments.runner import DataRef

    sources = [DataRef(name, args.format, args.split, args.data_seed) for name in args.train.split(",") if name]
    target = DataRef(args.target, args.format, args.split, args.data_seed)
    model_overrides = _pairs(args.set)
    if args.encoder:
        model_overrides["encoder"] = args.encoder
    train = {"progress": not args.no_progress, **_pairs(args.train_set)}
    for key in ("epochs", "eval_every", "patience", "lr", "seed"):
        if getattr(args, key) is not None:
            train[key] = getattr(args, key)
    lightgcn = {"epochs": args.lightgcn_epochs, "eval_every": args.eval_every or 5}
    comparison = zeroshot.run_zeroshot([r.load() for r in sources], target.load(), Path(args.out), train,
                                       model_overrides, lightgcn, features=zeroshot.lm_features,
                                       target_ref=target, source_refs=sources)
    print(zeroshot.markdown(comparison))
    print(f"wrote {args.out}/metrics.json and comparison.md")


def cmd_intention(args: argparse.Namespace) -> None:
    from lmrec.experiments.intention import markdown, run_intention
    from lmrec.experiments.runner import load_run

    model, data, _ = load_run(Path(args.run))
    result = run_intention(model, data, Path(args.out), args.alpha, n_users=args.users,  # type: ignore[arg-type]
                           seed=args.seed, run=args.run)
    print(markdown(result))
    print(f"wrote {args.out}/intention.json, intention.md, alpha.png")


def cmd_convergence(args: argparse.Namespace) -> None:
    from lmrec.experiments.convergence import markdown, run_convergence

    rows = run_convergence(Path(args.runs), Path(args.out))
    print(markdown(rows))
    print(f"wrote {args.out}/convergence.md and convergence.png")


def cmd_models(args: argparse.Namespace) -> None:
    from lmrec.models.base import get_model, list_models

    for name in list_models():
        doc = (get_model(name).__doc__ or "").strip().splitlines()[0]
        print(f"{name:12s} {doc}")


# -- conversational recommendation (RTA): lmrec crs ... ----------------------------------------------------------
def _max_samples(text: str | None) -> dict[str, int | None]:
    """``--max-samples``: ``N`` (every split) or ``train=N,valid=M,test=K`` (``all`` = no limit)."""
    if not text:
        return {}
    if "=" not in text:
        n = None if text == "all" else int(text)
        return {"train": n, "valid": n, "test": n}
    out: dict[str, int | None] = {}
    for part in text.split(","):
        split, _, value = part.partition("=")
        out[split.strip()] = None if value.strip() == "all" else int(value)
    return out


def _crs_threads(args: argparse.Namespace) -> None:
    """``--threads N``: torch intra-op threads (1 is often faster on a CPU shared with other jobs)."""
    if getattr(args, "threads", None):
        import torch

        torch.set_num_threads(args.threads)


def _crs_metrics(metrics: dict[str, Any], out: Path) -> None:
    keep = ("hr@1", "hr@10", "hr@50", "ndcg@10", "mrr")
    print(metrics_table({split: {k: v for k, v in block.items() if k in keep} for split, block in metrics.items()}))
    print(f"wrote {out}/metrics.json")


def cmd_crs_prepare(args: argparse.Namespace) -> None:
    from lmrec.experiments.crs import run_prepare
    from lmrec.models.crs.rta.features import PrepareConfig

    _crs_threads(args)
    config = PrepareConfig(llm=args.llm, dtype=args.dtype, max_samples=_max_samples(args.max_samples),
                           generate_splits=tuple(s for s in args.generate.split(",") if s), seed=args.seed,
                           max_generate=_max_samples(args.max_generate),
                           max_new_tokens=args.max_new_tokens, answer_prefix=args.answer_prefix,
                           generate_batch_size=args.batch_size, encode_batch_size=args.batch_size, q_mode=args.q_mode)
    features = run_prepare(args.dataset, Path(args.out), config, cache_root=args.cache, progress=not args.no_progress)
    for split, info in features.meta["splits"].items():
        gen = info.get("generation")
        encode = info["encoding"]["seconds_per_sample"]
        line = f"{split}: {info['kept']}/{info['samples']} turns, encode {encode:.2f} s/turn"
        if gen:
            per = f"{gen['seconds_per_sample']:.1f} s/turn" if gen["seconds_per_sample"] else "all cached"
            line += (f"; generated {gen['generated_now']} new ({per}), "
                     f"{100 * gen['mapped_share']:.1f}% of {gen['titles_per_turn']:.1f} titles/turn mapped")
        print(line)
    skipped = features.meta["loader_skipped"]
    print("loader skipped: " + (", ".join(f"{n} {reason}" for reason, n in skipped.items()) if skipped else "nothing"))
    print(f"wrote {args.out}/")


def cmd_crs_zero_shot(args: argparse.Namespace) -> None:
    _crs_threads(args)
    from lmrec.experiments.crs import run_zero_shot

    _crs_metrics(run_zero_shot(Path(args.features), Path(args.out)), Path(args.out))


def cmd_crs_reindex(args: argparse.Namespace) -> None:
    _crs_threads(args)
    from lmrec.experiments.crs import run_reindex
    from lmrec.models.crs.rta.reindex import ReindexConfig

    options = {k: getattr(args, k) for k in ("lr", "epochs", "max_minutes", "n_negatives", "patience", "seed",
                                             "eval_every", "weight_decay") if getattr(args, k) is not None}
    config = ReindexConfig(aggregator=args.aggregator, label_source=args.label_source, progress=not args.no_progress,
                           **options, **_pairs(args.set))
    _crs_metrics(run_reindex(Path(args.features), Path(args.out), config), Path(args.out))


def cmd_crs_adapt(args: argparse.Namespace) -> None:
    _crs_threads(args)
    from lmrec.experiments.crs import run_adapt
    from lmrec.models.crs.rta.adapt import AdaptConfig

    options = {k: getattr(args, k) for k in ("lr", "epochs", "max_minutes", "patience", "seed", "weight_decay",
                                             "eval_every") if getattr(args, k) is not None}
    if args.n_negatives is not None:
        options["n_negatives"] = None if args.n_negatives <= 0 else args.n_negatives
    config = AdaptConfig(variant=args.variant, freeze_aggregator=args.freeze_aggregator, llm_scale=args.llm_scale,
                         progress=not args.no_progress, **options, **_pairs(args.set))
    _crs_metrics(run_adapt(Path(args.reindex), Path(args.out), config), Path(args.out))


def cmd_crs_evaluate(args: argparse.Namespace) -> None:
    _crs_threads(args)
    from lmrec.experiments.crs import evaluate_run

    _crs_metrics(evaluate_run(Path(args.run)), Path(args.run))


def _read_lines(source: str) -> tuple[list[str], str]:
    if source == "-":
        return sys.stdin.read().splitlines(), "<stdin>"
    path = Path(source)
    if not path.is_file():
        raise LmrecError(f"{source}: no such conversation file")
    return path.read_text(encoding="utf-8").splitlines(), str(path)


def _print_recommendations(run: Any, sample: Any, k: int, exclude: bool) -> list[int]:
    from lmrec.experiments.crs import recommend

    titles = run.catalog.titles
    if sample.mentioned:
        print("mentioned: " + "; ".join(titles[i] for i in sample.mentioned))
    top = recommend(run, sample, k, exclude)
    for rank, (item, score) in enumerate(top, start=1):
        print(f"{rank:3d}. {titles[item]}  {score:.3f}")
    sys.stdout.flush()
    return [item for item, _ in top]


def cmd_crs_recommend(args: argparse.Namespace) -> None:
    _crs_threads(args)
    from lmrec.experiments.crs import MentionFinder, conversation_sample, load_crs_run, parse_conversation

    lines, source = _read_lines(args.conversation)
    turns = parse_conversation(lines, source)
    run = load_crs_run(Path(args.run))
    _print_recommendations(run, conversation_sample(turns, MentionFinder(run.catalog.titles)), args.k,
                           not args.keep_mentioned)


def cmd_crs_chat(args: argparse.Namespace) -> None:
    """Each input line is a user turn (``System: ...`` adds a system turn); top-k titles after each user turn,
    and a system turn naming the first three is added to the conversation. ``/reset`` clears it, ``/quit`` ends."""
    _crs_threads(args)
    from lmrec.data.conversations import Turn
    from lmrec.experiments.crs import MentionFinder, conversation_sample, load_crs_run, parse_conversation

    run = load_crs_run(Path(args.run))
    finder = MentionFinder(run.catalog.titles)
    interactive = sys.stdin.isatty()
    print(f"lmrec crs chat ({run.config['kind']} on {run.config['dataset']}): type what you like; /reset, /quit")
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
        top = _print_recommendations(run, conversation_sample(turns, finder), args.k, not args.keep_mentioned)
        if top:
            reply = "How about " + ", ".join(run.catalog.titles[i] for i in top[:3]) + "?"
            turns.append(Turn("system", reply))
            print(f"System: {reply}")


# -- parser -------------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lmrec", description="Recommendation with language models.")
    sub = parser.add_subparsers(dest="command", required=True)

    def dataset_args(p: argparse.ArgumentParser) -> None:
        p.add_argument("--format", help="source format of a folder (auto-detected when omitted)")
        p.add_argument("--split", help="split protocol, e.g. ratio:0.4,0.3,0.3 | loo | temporal-user | fixed")
        p.add_argument("--data-seed", dest="data_seed", type=int, default=2024, help="seed of a random split")

    data = sub.add_parser("data", help="datasets").add_subparsers(dest="data_command", required=True)
    data.add_parser("list", help="registered datasets and where they were found").set_defaults(func=cmd_data_list)
    stats = data.add_parser("stats", help="counts of a dataset and its split")
    stats.add_argument("dataset")
    stats.add_argument("--format")
    stats.add_argument("--split")
    stats.add_argument("--seed", type=int, default=2024)
    stats.set_defaults(func=cmd_data_stats)

    embed = sub.add_parser("embed", help="encode a dataset's item texts into the embedding cache")
    embed.add_argument("dataset")
    embed.add_argument("--format")
    embed.add_argument("--encoder", default="minilm", help="minilm | mpnet | smollm2-135m | openai:MODEL | st:PATH | hf:PATH")
    embed.add_argument("--fields", default="title", help="comma-separated catalog fields, e.g. title,genres")
    embed.add_argument("--out", help="also save the matrix as .npy")
    embed.set_defaults(func=cmd_embed)

    train = sub.add_parser("train", help="train a model, select on validation, report test")
    train.add_argument("model", help="a registered model (see `lmrec models`)")
    train.add_argument("--dataset", required=True, help="registry name or folder")
    dataset_args(train)
    train.add_argument("--encoder", help="text encoder of LM-based models")
    train.add_argument("--epochs", type=int)
    train.add_argument("--seed", type=int)
    train.add_argument("--lr", type=float)
    train.add_argument("--batch-size", dest="batch_size", type=int)
    train.add_argument("--eval-every", dest="eval_every", type=int)
    train.add_argument("--patience", type=int)
    train.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="model setting")
    train.add_argument("--train-set", dest="train_set", action="append", default=[], metavar="KEY=VALUE",
                       help="training-loop setting (see lmrec.train.TrainConfig)")
    train.add_argument("--no-progress", action="store_true")
    train.add_argument("--out", required=True, help="run folder to write")
    train.set_defaults(func=cmd_train)

    ev = sub.add_parser("evaluate", help="evaluate a trained run folder")
    ev.add_argument("run")
    ev.add_argument("--split", default="test", choices=["valid", "test"])
    ev.add_argument("--k", default="10,20", help="comma-separated cut-offs")
    ev.add_argument("--batch-size", dest="batch_size", type=int, default=1024)
    ev.set_defaults(func=cmd_evaluate)

    rec = sub.add_parser("recommend", help="top-k titles for a user of a trained run")
    rec.add_argument("run")
    rec.add_argument("--user", required=True, help="external user id")
    rec.add_argument("-k", type=int, default=10)
    rec.add_argument("--intent", help="a sentence stating what the user wants now (AlphaRec models)")
    rec.add_argument("--alpha", type=float, default=0.5, help="weight of the intention: (1-a)*user + a*intention")
    rec.set_defaults(func=cmd_recommend)

    sub.add_parser("models", help="registered models").set_defaults(func=cmd_models)

    cmp = sub.add_parser("compare", help="several models x datasets -> one table (resumes finished runs)")
    cmp.add_argument("--models", default="pop,mf,lightgcn,linear_map,alpharec")
    cmp.add_argument("--datasets", default="movielens-latest-small,movielens-100k,amazon-industrial-scientific-2018")
    cmp.add_argument("--epochs", type=int)
    cmp.add_argument("--train-set", dest="train_set", action="append", default=[], metavar="KEY=VALUE")
    cmp.add_argument("--data-seed", dest="data_seed", type=int, default=2024)
    cmp.add_argument("--no-progress", action="store_true")
    cmp.add_argument("--out", required=True)
    cmp.set_defaults(func=cmd_compare)

    rep = sub.add_parser("reproduce", help="run a paper's configured tables and write a report folder")
    rep.add_argument("paper", choices=["alpharec", "rta"])
    rep.add_argument("--quick", action="store_true", help="the configs' [quick] settings: a few minutes in all")
    rep.add_argument("--configs", default="configs", help="folder with <paper>/*.toml (default ./configs)")
    rep.add_argument("--only", help="comma-separated table names (file stems, with or without the number)")
    rep.add_argument("--out", help="work folder (default runs/reproduce/<paper>[-quick]); finished runs are reused")
    rep.add_argument("--publish", help="also copy the report folder here, e.g. docs/results/<date>-<paper>")
    rep.set_defaults(func=cmd_reproduce)

    zs = sub.add_parser("zeroshot", help="train AlphaRec on mixed sources, apply it untrained to a target dataset")
    zs.add_argument("--train", required=True, help="comma-separated source datasets, mixed into one training set")
    zs.add_argument("--target", required=True, help="unseen dataset to evaluate on (no training there)")
    dataset_args(zs)
    zs.add_argument("--encoder", help="text encoder (default: AlphaRec's, minilm)")
    zs.add_argument("--epochs", type=int, help="AlphaRec epoch budget on the mix")
    zs.add_argument("--eval-every", dest="eval_every", type=int)
    zs.add_argument("--patience", type=int)
    zs.add_argument("--lr", type=float)
    zs.add_argument("--seed", type=int)
    zs.add_argument("--lightgcn-epochs", dest="lightgcn_epochs", type=int, default=100,
                    help="epoch budget of the LightGCN trained on the target")
    zs.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="AlphaRec setting")
    zs.add_argument("--train-set", dest="train_set", action="append", default=[], metavar="KEY=VALUE")
    zs.add_argument("--no-progress", action="store_true")
    zs.add_argument("--out", required=True)
    zs.set_defaults(func=cmd_zeroshot)

    it = sub.add_parser("intention", help="HR@5/NDCG@5 of held-out targets with and without a stated intention")
    it.add_argument("run", help="an AlphaRec run folder")
    it.add_argument("--alpha", type=float, default=0.5, help="the alpha reported as 'with intention'")
    it.add_argument("--users", type=int, help="evaluate this many users drawn at random (default: all)")
    it.add_argument("--seed", type=int, default=2024)
    it.add_argument("--out", required=True)
    it.set_defaults(func=cmd_intention)

    cv = sub.add_parser("convergence", help="epochs and seconds to the best validation score, from run folders")
    cv.add_argument("runs", help="folder of run folders, e.g. runs/table1")
    cv.add_argument("--out", required=True)
    cv.set_defaults(func=cmd_convergence)

    demo = sub.add_parser("demo", help="Pop, LightGCN and AlphaRec on the bundled MovieLens, with titles")
    demo.add_argument("--dataset", default="movielens-latest-small")
    demo.add_argument("--user", default="1")
    demo.add_argument("--out", default="runs/demo")
    demo.set_defaults(func=cmd_demo)

    crs = sub.add_parser("crs", help="conversational recommendation with an LLM (Reindex-Then-Adapt)")
    crs.add_argument("--threads", type=int, help="torch CPU threads (1 is often faster on a shared CPU)")
    crs_sub = crs.add_subparsers(dest="crs_command", required=True)
    prep = crs_sub.add_parser("prepare", help="encode q, tokenize titles and generate with the LLM (cached)")
    prep.add_argument("--dataset", required=True, help="inspired | redial (found under $LMREC_DATA)")
    prep.add_argument("--llm", default="smollm2-135m", help="registered name, local folder, .gguf file or hub id")
    prep.add_argument("--dtype", default="auto",
                      help="auto | float32 | bfloat16 (auto: bf16 only with AMX / AVX512-BF16)")
    prep.add_argument("--max-samples", dest="max_samples", help="N or train=N,valid=M,test=K (seeded subsample)")
    prep.add_argument("--generate", default="train,valid,test", help="splits the LLM answers (comma-separated)")
    prep.add_argument("--max-generate", dest="max_generate",
                      help="N or train=N,valid=M,test=K: answer only a seeded subsample of the kept turns")
    prep.add_argument("--max-new-tokens", dest="max_new_tokens", type=int, default=160)
    prep.add_argument("--answer-prefix", dest="answer_prefix", default="1.",
                      help='forced start of the answer ("" = the paper\'s setting)')
    prep.add_argument("--q-mode", dest="q_mode", default="prefix", choices=["prefix", "completion"])
    prep.add_argument("--batch-size", dest="batch_size", type=int, default=8)
    prep.add_argument("--seed", type=int, default=2024)
    prep.add_argument("--cache", help="embedding cache root (default $LMREC_CACHE/embeddings)")
    prep.add_argument("--no-progress", action="store_true")
    prep.add_argument("--out", required=True)
    prep.set_defaults(func=cmd_crs_prepare)

    zsl = crs_sub.add_parser("zero-shot", help="score the LLM's own generated titles")
    zsl.add_argument("--features", required=True, help="a folder written by `lmrec crs prepare`")
    zsl.add_argument("--out", required=True)
    zsl.set_defaults(func=cmd_crs_zero_shot)

    def crs_train_args(p: argparse.ArgumentParser) -> None:
        p.add_argument("--lr", type=float)
        p.add_argument("--weight-decay", dest="weight_decay", type=float)
        p.add_argument("--epochs", type=int)
        p.add_argument("--patience", type=int, help="evaluations without improvement before stopping")
        p.add_argument("--eval-every", dest="eval_every", type=int, help="validate every N epochs")
        p.add_argument("--max-minutes", dest="max_minutes", type=float)
        p.add_argument("--n-negatives", dest="n_negatives", type=int)
        p.add_argument("--seed", type=int)
        p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="any other config field")
        p.add_argument("--no-progress", action="store_true")
        p.add_argument("--out", required=True)

    rx = crs_sub.add_parser("reindex", help="train an aggregator: single-token item embeddings the LLM can score")
    rx.add_argument("--features", required=True)
    rx.add_argument("--aggregator", default="gru", choices=["sum", "weighted", "gru", "transformer"])
    rx.add_argument("--label-source", dest="label_source", default="llm", choices=["llm", "ground_truth", "both"])
    crs_train_args(rx)
    rx.set_defaults(func=cmd_crs_reindex)

    ad = crs_sub.add_parser("adapt", help="bias terms or RecSys gating on top of a reindex run")
    ad.add_argument("--reindex", required=True, help="a reindex run folder")
    ad.add_argument("--variant", default="gW+b", choices=["none", "b", "gW", "gW+b", "gate-fism", "gate-sasrec"])
    ad.add_argument("--freeze-aggregator", dest="freeze_aggregator", action=argparse.BooleanOptionalAction,
                    default=True, help="keep the reindexed item table fixed (default) or train the aggregator too")
    ad.add_argument("--llm-scale", dest="llm_scale", default="none", choices=["none", "learned"])
    crs_train_args(ad)
    ad.set_defaults(func=cmd_crs_adapt)

    cev = crs_sub.add_parser("evaluate", help="recompute a CRS run's metrics.json")
    cev.add_argument("run")
    cev.set_defaults(func=cmd_crs_evaluate)

    crec = crs_sub.add_parser("recommend", help="top-k titles for a conversation (lines 'User: ...' / 'System: ...')")
    crec.add_argument("run")
    crec.add_argument("--conversation", required=True, help="a text file, or - for stdin")
    crec.add_argument("-k", type=int, default=10)
    crec.add_argument("--keep-mentioned", dest="keep_mentioned", action="store_true",
                      help="also list movies already named in the conversation")
    crec.set_defaults(func=cmd_crs_recommend)

    chat = crs_sub.add_parser("chat", help="interactive: recommends after every line you type (/reset, /quit)")
    chat.add_argument("run")
    chat.add_argument("-k", type=int, default=5)
    chat.add_argument("--keep-mentioned", dest="keep_mentioned", action="store_true")
    chat.set_defaults(func=cmd_crs_chat)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except (LmrecError, ValueError, FileNotFoundError) as error:
        print(f"lmrec: error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
