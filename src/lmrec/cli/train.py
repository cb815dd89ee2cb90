"""``lmrec train|evaluate|recommend|models``: one model on one dataset, CF and CRS alike.

``lmrec train MODEL --help`` lists that model's settings (flags generated from its config) beside the training
settings (from :class:`lmrec.train.TrainConfig`).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from lmrec.cli.data import add_dataset_arguments
from lmrec.cli.flags import add_settings, given, model_name_in, model_settings_class
from lmrec.errors import Argument, ArgumentError, LmrecError
from lmrec.eval.report import metrics_table


def add_commands(sub: argparse._SubParsersAction, argv: list[str]) -> None:
    from lmrec.train import TrainConfig
    from lmrec.train.trainer import RUN_SETTINGS

    train = sub.add_parser("train", help="train a model, select on validation, report test (a run folder)",
                           allow_abbrev=False)  # --nproc is found in argv by its full name
    train.add_argument("model", help="a registered model (see `lmrec models`)")
    train.add_argument("--dataset", help="registry name or folder (CRS: optional with --features)")
    add_dataset_arguments(train)
    train.add_argument("--features", help="CRS: a folder made by `lmrec crs prepare` (the LLM's q and answers)")
    train.add_argument("--base", help="rta_adapt: the rta_reindex run folder to adapt")
    train.add_argument("--out", required=True, help="run folder to write")
    mode = train.add_mutually_exclusive_group()
    mode.add_argument("--overwrite", action="store_true", help="replace the run already in --out")
    mode.add_argument("--resume", action="store_true", help="continue the interrupted run in --out")
    add_threads(train)
    train.add_argument("--nproc", type=_positive, default=1,
                       help="data-parallel training in N processes on this machine (torch.distributed, gloo on CPU, "
                            "nccl on CUDA); across machines start `torchrun ... -m lmrec train` instead")
    name = model_name_in(argv, ["train"])
    config = model_settings_class(name)
    if config is not None:
        add_settings(train, config, f"{name} settings")
    if _trainable(name):
        add_settings(train, TrainConfig, "training settings (defaults: the model's paper values)",
                     defaults=_paper_training(name))
    else:  # a model fitted from the data (pop, dense, zero_shot_llm): the run's settings, no training settings
        add_settings(train, TrainConfig, "run settings", only=RUN_SETTINGS)
        add_settings(train, TrainConfig, "", skip=RUN_SETTINGS, hidden=True)  # parsed to be refused by name
    train.set_defaults(func=cmd_train)

    ev = sub.add_parser("evaluate", help="evaluate a run folder again (full ranking)",
                        description="Evaluate a run again: on the data the run folder keeps, or with --dataset on the "
                        "dataset itself (it must have the checksum the run was trained on).")
    ev.add_argument("run")
    ev.add_argument("--dataset", help="evaluate on this dataset (registry name or folder) instead of the run's copy")
    ev.add_argument("--format", help="with --dataset: its format (auto-detected when omitted)")
    ev.add_argument("--data-split", dest="split_protocol", help="with --dataset: its split protocol (default: the "
                    "dataset's)")
    ev.add_argument("--data-seed", dest="data_seed", type=int, default=2024, help="with --dataset: seed of its split")
    ev.add_argument("--split", default="test", choices=["valid", "test"])
    ev.add_argument("--k", type=_ks, help="comma-separated cut-offs (default: the run's)")
    ev.add_argument("--metrics", help="CF runs: comma-separated metrics (default: recall,ndcg,hr,mrr), of "
                                      + ", ".join(_metric_names()))
    ev.add_argument("--batch-size", dest="batch_size", type=_positive, default=1024)
    add_threads(ev)
    ev.set_defaults(func=cmd_evaluate)

    rec = sub.add_parser("recommend", help="top-k titles from a run: a user, a new user's items, or a conversation")
    rec.add_argument("run")
    who = rec.add_argument_group("for whom (one of)")
    who.add_argument("--user", help="a known user's external id")
    who.add_argument("--item", dest="items", action="append", metavar="ID", help="a new user's item (repeat)")
    who.add_argument("--title", dest="titles", action="append", metavar="TITLE", help="a new user's title (repeat)")
    who.add_argument("--conversation", help="CRS: a file of lines 'User: ...' / 'System: ...', or - for stdin")
    who.add_argument("--all-users", dest="all_users", action="store_true",
                     help="every user with training items, to a file (--out)")
    who.add_argument("--users", help="a file of user ids (one per line, or a CSV / Parquet with a user column), "
                     "to a file (--out)")
    rec.add_argument("--out", help="with --all-users / --users: write user, rank, item, title, score to this .csv or "
                     ".parquet file")
    rec.add_argument("--intent", help="a sentence stating what the user wants now (AlphaRec models)")
    rec.add_argument("--alpha", type=float, default=None,
                     help="weight of the intention (with --intent; default 0.5): (1-a)*user + a*intention")
    rec.add_argument("-k", type=_positive, default=10)
    rec.add_argument("--exclude", action="append", default=[], metavar="ID", help="an item id to leave out (repeat)")
    rec.add_argument("--keep-seen", dest="keep_seen", action="store_true",
                     help="also list items the user already has (or the conversation mentions)")
    add_threads(rec)
    rec.set_defaults(func=cmd_recommend)

    exp = sub.add_parser("export", help="a run's user and item vectors with their ids, for a vector database")
    exp.add_argument("run")
    exp.add_argument("--out", required=True, help="folder to write users / items (.parquet, or .npy + .json ids)")
    exp.add_argument("--format", default="parquet", choices=["parquet", "npy"])
    exp.set_defaults(func=cmd_export)

    sub.add_parser("models", help="registered models").set_defaults(func=cmd_models)


def _paper_training(name: str | None) -> dict:
    from lmrec.models.base import MODELS

    matches = [cls.train_defaults for _, n, cls in MODELS.entries() if n == name]
    return matches[0] if len(matches) == 1 else {}


def _trainable(name: str | None) -> bool:
    """Whether ``name`` is trained by the Trainer (an unknown name: True, so every flag parses until the registry
    names the error)."""
    from lmrec.models.base import MODELS

    classes = [cls for _, n, cls in MODELS.entries() if n == name]
    return not classes or any(cls.trainable for cls in classes)


def add_threads(p: argparse.ArgumentParser) -> None:
    p.add_argument("--threads", type=_positive, help="torch CPU threads (1 is often faster on a shared CPU)")


def set_threads(args: argparse.Namespace) -> None:
    if getattr(args, "threads", None):
        import torch

        torch.set_num_threads(args.threads)


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def _ks(text: str) -> tuple[int, ...]:
    return tuple(_positive(part) for part in text.split(","))


def cmd_train(args: argparse.Namespace) -> None:
    from lmrec.train import TrainConfig, distributed
    from lmrec.train.trainer import RUN_SETTINGS

    training = [key for key in given(args, TrainConfig) if key not in RUN_SETTINGS]
    if training and not _trainable(args.model):
        names = [part for key in training for part in (", ", Argument(key))][1:]
        raise ArgumentError(f"{args.model} does not train: ", *names,
                            f" do{'es' if len(training) == 1 else ''} not apply")
    if args.nproc > 1 and not distributed.launched():
        raise SystemExit(_launch(args.nproc))
    world = distributed.init_from_env(given(args, TrainConfig).get("device", "cpu"))
    try:
        _train(args, world)
    finally:
        distributed.shutdown()


def _launch(nproc: int) -> int:
    """Run this same command in ``nproc`` processes under torchrun (one machine, a free loopback port); each gets
    the CPU threads divided between them unless ``--threads`` says otherwise. Returns the exit status."""
    import os
    import subprocess

    argv = sys.argv[1:]
    at = next(i for i, a in enumerate(argv) if a == "--nproc" or a.startswith("--nproc="))
    argv = argv[:at] + argv[at + (1 if "=" in argv[at] else 2):]
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS",
                                                             str(max(1, (os.cpu_count() or 1) // nproc)))}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
               "-m", "lmrec", *argv]
    return subprocess.call(command, env=env)


def _train(args: argparse.Namespace, world) -> None:
    import lmrec
    from lmrec.data.registry import DataRef
    from lmrec.train import TrainConfig

    set_threads(args)
    config = model_settings_class(args.model)
    if config is None:
        lmrec.get_model(args.model)  # the registry's error names the known models
    dataset = args.dataset or _features_dataset(args.features)
    ref = DataRef.of(dataset, args.format, args.split, args.data_seed)
    base = lmrec.Run.load(args.base) if args.base else None
    run = lmrec.fit(args.model, ref, given(args, TrainConfig) or None, out=args.out, overwrite=args.overwrite,
                    resume=args.resume, features=args.features, base=base, **given(args, config))
    if not world.is_main:
        return
    print(metrics_table({split: _flat(block) for split, block in run.metrics.items()}))
    notes = run.manifest["evaluation"]
    for split, count in notes.get("excluded_cold_users", {}).items():
        print(f"{split}: {count} user(s) without training interactions left out of the evaluation")
    for split, reason in notes.get("not_evaluated", {}).items():
        print(f"{split}: not evaluated ({reason})")
    fit = run.manifest["fit"]
    summary = f"fit {fit['seconds']:.1f} s"
    if fit.get("trained"):
        summary += (f", best epoch {fit['best_epoch']} of {fit['epochs_run']} ({fit['stopped']}"
                    + ("" if fit["converged"] else "; NOT converged: the best epoch is the last") + ")")
    print(f"{summary}; wrote {args.out}/")


def _features_dataset(features: str | None) -> str:
    if not features:
        raise LmrecError("--dataset is required (or --features, whose prepared folder names its dataset)")
    import json

    path = Path(features) / "prepare.json"
    if not path.exists():
        raise LmrecError(f"{features}: not a prepared folder (no prepare.json); run `lmrec crs prepare` first")
    return json.loads(path.read_text(encoding="utf-8"))["dataset"]


def _flat(block: dict) -> dict:
    """CRS metric blocks ({"all": {...}, "new": {...}}) as one row: new-target metrics suffixed ``(new)``."""
    if block and all(isinstance(v, dict) and "mean" not in v for v in block.values()):
        keep = ("hr@10", "ndcg@10", "hr@50", "mrr")
        return {f"{m}{'' if part == 'all' else ' (new)'}": v for part, values in block.items()
                for m, v in values.items() if m in keep}
    return block


def _metric_names() -> list[str]:
    from lmrec.eval import beyond, metrics

    return [*metrics.METRICS, *beyond.METRICS]


def _metrics(text: str | None) -> tuple[str, ...] | None:
    """The --metrics names (None: the run's defaults); an unknown name is an error naming the allowed ones."""
    if text is None:
        return None
    names = tuple(dict.fromkeys(part.strip() for part in text.split(",")))
    unknown = [n for n in names if n not in _metric_names()]
    if unknown or not names:
        raise LmrecError(f"--metrics: unknown metric(s) {', '.join(unknown) or repr(text)}; "
                         f"expected some of {', '.join(_metric_names())}")
    return names


def cmd_evaluate(args: argparse.Namespace) -> None:
    from lmrec import Run
    from lmrec.data.registry import load_dataset
    from lmrec.eval.ranking import RankingResult

    set_threads(args)
    if args.dataset is None and (args.format or args.split_protocol):
        raise LmrecError("--format and --data-split go with --dataset")
    data = None if args.dataset is None else load_dataset(args.dataset, format=args.format,
                                                           split=args.split_protocol, seed=args.data_seed)
    metrics = _metrics(args.metrics)
    run = Run.load(args.run, data=data)
    result = run.evaluate(args.split, ks=args.k, batch_size=args.batch_size, metrics=metrics)
    if isinstance(result, RankingResult):
        print(metrics_table({args.split: result.to_dict()}))
        print(f"full ranking over {run.data.n_items} items, "
              f"masked: {', '.join(result.protocol['masked']) or 'nothing'};"
              f" ties: {result.protocol['ties']}")
        if result.protocol["excluded_cold_users"]:
            print(f"{result.protocol['excluded_cold_users']} user(s) without training interactions left out")
        if result.catalog:
            print(f"{', '.join(result.catalog)}: one number for the catalog (no SE)")
        if "head_items" in result.protocol:
            print(f"popularity from the training split; head: the {result.protocol['head_items']} most popular "
                  "items (>= 20% of the training interactions, ties at the boundary in the head), tail: the rest")
    else:
        print(metrics_table({args.split: _flat({k: r.to_dict() for k, r in result.items()})}))
        print(f"full ranking over {len(run.catalog)} items per (turn, target) pair; ties by expectation")


def cmd_recommend(args: argparse.Namespace) -> None:
    from lmrec import Run

    set_threads(args)
    run = Run.load(args.run)
    if args.all_users or args.users:
        return _recommend_to_file(run, args)
    if args.out:
        raise LmrecError("--out goes with --all-users or --users (one user's list is printed)")
    conversation = _read_conversation(args.conversation) if args.conversation else None
    if conversation is not None:
        sample = run.conversation_sample(conversation)
        if sample.mentioned:
            print("mentioned: " + "; ".join(run.catalog.titles[i] for i in sample.mentioned))
    elif args.user is not None and run.task == "cf":
        user = run.data.user_index(args.user)
        history = run.data.user_items(user, ("train",))
        print(f"user {args.user}: {len(history)} training items"
              + (", e.g. " + "; ".join(run.catalog.titles[i] for i in history[:3]) if len(history) else ""))
    if args.intent is not None:
        print(f"intention (alpha {0.5 if args.alpha is None else args.alpha}): {args.intent}")
    top = run.recommend(args.user, items=args.items, titles=args.titles, intent=args.intent, alpha=args.alpha,
                        conversation=conversation, k=args.k, exclude=args.exclude, exclude_seen=not args.keep_seen)
    for match in top.matched:
        print(f"matched: {match}")
    for r in top:
        print(f"{r.rank:3d}. {r.title}  [{r.item_id}]  {r.score:.4f}  ({r.reason})")


def _recommend_to_file(run, args: argparse.Namespace) -> None:
    """``--all-users`` / ``--users FILE``: every user's top k to ``--out`` (.csv or .parquet)."""
    import time

    from lmrec.io import atomic_write

    others = [flag for flag, value in (("--user", args.user), ("--item", args.items), ("--title", args.titles),
                                        ("--conversation", args.conversation), ("--intent", args.intent)) if value]
    if others:
        raise LmrecError(f"--all-users / --users recommend for many users; {', '.join(others)} do not go with them")
    if not args.out or Path(args.out).suffix.lower() not in (".csv", ".parquet"):
        raise LmrecError("--out: expected a .csv or .parquet file for the recommendations of many users")
    users = _read_users(Path(args.users)) if args.users else None
    start = time.perf_counter()
    frame = run.recommend_many(users, k=args.k, exclude_seen=not args.keep_seen)
    out = Path(args.out)
    if out.suffix.lower() == ".csv":
        atomic_write(out, lambda f: frame.to_csv(f, index=False))
    else:
        atomic_write(out, lambda f: frame.to_parquet(f, index=False), binary=True)
    print(f"wrote {len(frame)} recommendations for {frame['user'].nunique()} users to {out} in "
          f"{time.perf_counter() - start:.1f} s")


def _read_users(path: Path) -> list[str]:
    """User ids from a text file (one per line) or a CSV / Parquet file with a ``user`` / ``user_id`` column."""
    from lmrec.data.frames import USER_NAMES, read_table

    if path.suffix.lower() in (".csv", ".tsv", ".parquet", ".jsonl") or path.name.endswith(".csv.gz"):
        frame = read_table(path)
        column = next((c for c in frame.columns if str(c).lower() in USER_NAMES), None)
        if column is None:
            raise LmrecError(f"{path}: no user column (one of {', '.join(USER_NAMES)}); or give one id per line")
        return frame[column].astype(str).str.strip().tolist()
    if not path.is_file():
        raise LmrecError(f"{path}: no such file of user ids")
    return [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def cmd_export(args: argparse.Namespace) -> None:
    from lmrec import Run

    run = Run.load(args.run)
    for path in run.export_vectors(args.out, args.format):
        print(f"wrote {path}")


def _read_conversation(source: str) -> list[str]:
    if source == "-":
        return sys.stdin.read().splitlines()
    path = Path(source)
    if not path.is_file():
        raise LmrecError(f"{source}: no such conversation file")
    try:
        return path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as exc:
        raise LmrecError(f"{source}: not UTF-8 text (byte {exc.start}: {exc.reason})") from None


def cmd_models(args: argparse.Namespace) -> None:
    from lmrec.models.base import MODELS

    for task, name, cls in MODELS.entries():
        doc = (cls.__doc__ or "").strip().splitlines()[0]
        print(f"{task:4s} {name:14s} {'trained ' if cls.trainable else 'fitted  '} {doc}")
