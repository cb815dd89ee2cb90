"""``lmrec data list|stats`` and ``lmrec embed``: datasets and their item-text embeddings."""

from __future__ import annotations

import argparse
from pathlib import Path

from lmrec import clock
from lmrec.errors import LmrecError
from lmrec.eval.report import cell, text_table


def add_commands(sub: argparse._SubParsersAction, argv: list[str]) -> None:
    data = sub.add_parser("data", help="datasets").add_subparsers(dest="data_command", required=True)
    data.add_parser("list", help="registered datasets and where they were found").set_defaults(func=cmd_list)
    stats = data.add_parser("stats", help="counts of a dataset and its split")
    stats.add_argument("dataset", help="registry name or folder")
    add_dataset_arguments(stats)
    stats.set_defaults(func=cmd_stats)

    synth = data.add_parser("synth", help="write a synthetic dataset (power-law degrees, titles) of any size")
    synth.add_argument("--interactions", type=int, required=True, help="e.g. 1000000 (pairs asked for)")
    synth.add_argument("--users", type=int, help="default: interactions / 50")
    synth.add_argument("--items", type=int, help="default: interactions / 200")
    synth.add_argument("--seed", type=int, default=0)
    synth.add_argument("--out", required=True, help="folder to write (LightGCN text format + items.tsv)")
    synth.set_defaults(func=cmd_synth)

    embed = sub.add_parser("embed", help="encode a dataset's item texts into the embedding cache")
    embed.add_argument("dataset")
    embed.add_argument("--format")
    embed.add_argument("--encoder", default="minilm", help="minilm | mpnet | smollm2-135m | gemma-3-270m | "
                       "openai:MODEL | st:PATH | hf:PATH[:last|mean]")
    embed.add_argument("--fields", default="title", help="comma-separated catalog fields, e.g. title,genres")
    embed.add_argument("--device", default="cpu", choices=["cpu", "cuda", "mps"])
    embed.add_argument("--out", help="also save the matrix as .npy")
    embed.set_defaults(func=cmd_embed)


def add_dataset_arguments(p: argparse.ArgumentParser) -> None:
    """--format, --split and --data-seed: how a dataset name or folder is read and split."""
    p.add_argument("--format", help="source format of a folder (auto-detected when omitted)")
    p.add_argument("--split", help="split protocol, e.g. ratio:0.4,0.3,0.3 | loo | temporal-user | fixed; "
                   "+thin:0.1 after one keeps that share of each user's training items")
    p.add_argument("--data-seed", dest="data_seed", type=int, default=2024, help="seed of a random split")


def cmd_list(args: argparse.Namespace) -> None:
    from lmrec.data.registry import find_dataset_dir, list_datasets

    rows = []
    for spec in list_datasets():
        try:
            where = str(find_dataset_dir(spec.name))
        except LmrecError:
            where = "(not found)"
        rows.append({"name": spec.name, "task": spec.task, "format": spec.format, "split": spec.split,
                     "found at": where})
    print(text_table(rows, ["name", "task", "format", "split", "found at"]))


def cmd_stats(args: argparse.Namespace) -> None:
    from lmrec.data.conversations import CRSData
    from lmrec.data.registry import load_dataset

    data = load_dataset(args.dataset, format=args.format, split=args.split, seed=args.data_seed)
    if isinstance(data, CRSData):
        stats = {"name": data.name, "items": len(data.catalog),
                 **{f"{s} conversations": len(data.split(s)) for s in ("train", "valid", "test")},
                 **{f"{s} turns": len(data.samples(s)) for s in ("train", "valid", "test")},
                 "skipped": ", ".join(f"{n} {r}" for r, n in data.skipped.items()) or "nothing"}
    else:
        stats = data.stats()
    width = max(map(len, stats))
    for key, value in {**stats, "checksum": data.checksum()}.items():
        print(f"{key.ljust(width)}  {cell(value)}")


def cmd_synth(args: argparse.Namespace) -> None:
    from lmrec.data.synth import synthesize

    start = clock.now()
    stats = synthesize(Path(args.out), args.interactions, args.users, args.items, args.seed)
    print(f"{stats.users} users, {stats.items} items, {stats.interactions} interactions "
          f"({stats.interactions_asked} asked; repeated pairs collapse): train/valid/test "
          f"{stats.train}/{stats.valid}/{stats.test}; wrote {args.out}/ in {clock.now() - start:.1f} s")


def cmd_embed(args: argparse.Namespace) -> None:
    import numpy as np

    from lmrec.data.registry import load_interactions
    from lmrec.io import atomic_write
    from lmrec.text import encode_catalog, get_encoder

    catalog = load_interactions(args.dataset, format=args.format).catalog
    texts = catalog.text(tuple(args.fields.split(",")))
    start = clock.now()
    vectors = encode_catalog(texts, get_encoder(args.encoder, device=args.device), progress=True)
    print(f"{len(texts)} item texts -> {vectors.shape} with {args.encoder} in {clock.now() - start:.1f} s "
          f"(cached: a second run encodes nothing)")
    if args.out:
        atomic_write(Path(args.out), lambda f: np.save(f, vectors), binary=True)
        print(f"wrote {args.out}")
