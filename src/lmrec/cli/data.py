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

    imp = data.add_parser("import", help="your interactions (and items) -> a dataset folder every command reads",
                          description="Read interactions (and items) once: CSV / TSV (any delimiter), Parquet or "
                          "JSON Lines, .gz too; ids kept as text. Writes a dataset folder (Parquet + dataset.json) "
                          "that `--dataset DIR` and lmrec.load_dataset(DIR) take, and prints what it read and "
                          "dropped.")
    source = imp.add_mutually_exclusive_group(required=True)
    source.add_argument("--interactions", help="file of interactions: a user and an item column, optionally a rating "
                        "and a time column")
    source.add_argument("--dataset", help="instead of files: a registered dataset or a folder of a known format "
                        "(e.g. RecBole atomic files, with --format recbole)")
    imp.add_argument("--items", help="file of items: an item column and text columns (title, description, ...)")
    imp.add_argument("--format", help="format of --dataset (auto-detected when omitted)")
    imp.add_argument("--user-col", help="the user column (default: user_id, user, customer_id, ... found by name)")
    imp.add_argument("--item-col", help="the item column, in both files (default: item_id, item, sku, asin, ...)")
    imp.add_argument("--rating-col", help="the rating column (default: rating, score, ... when present)")
    imp.add_argument("--time-col", help="the time column: seconds or dates (default: timestamp, time, date, ...)")
    imp.add_argument("--text-cols", help="comma-separated item text columns, the first the title (default: title,"
                     "description where present)")
    imp.add_argument("--sep", help=r"delimiter of CSV files (default: from the extension, else sniffed; \t or tab for "
                     "tabs)")
    imp.add_argument("--min-rating", type=float, help="keep interactions rated at least this")
    imp.add_argument("--kcore", type=int, help="keep users and items with at least N interactions (repeatedly)")
    imp.add_argument("--split", default="ratio:0.8,0.1,0.1", help="the folder's default split: ratio:0.8,0.1,0.1 | "
                     "temporal-user:0.8,0.1,0.1 | temporal-global | loo (default %(default)s; --split at train time "
                     "overrides it)")
    imp.add_argument("--data-seed", dest="data_seed", type=int, default=2024, help="seed of a random split")
    imp.add_argument("--name", help="the dataset's name (default: the --out folder's name)")
    imp.add_argument("--out", required=True, help="the dataset folder to write (must not exist or be empty)")
    imp.set_defaults(func=cmd_import)

    synth = data.add_parser("synth", help="write a synthetic dataset (power-law degrees, titles) of any size")
    synth.add_argument("--interactions", type=int, required=True, help="e.g. 1000000 (pairs asked for)")
    synth.add_argument("--users", type=int, help="default: interactions / 50")
    synth.add_argument("--items", type=int, help="default: interactions / 200")
    synth.add_argument("--seed", type=int, default=0)
    synth.add_argument("--csv", action="store_true", help="write a shop's raw files instead: interactions.csv and "
                       "items.csv with text ids (SKU-000017), ratings and timestamps, no split (for `data import`)")
    synth.add_argument("--out", required=True, help="folder to write (LightGCN text format + items.tsv, or --csv)")
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


def cmd_import(args: argparse.Namespace) -> None:
    from lmrec.data.frames import Dataset
    from lmrec.data.registry import load_interactions

    out = Path(args.out)
    options = {"text_cols": args.text_cols.split(",") if args.text_cols else None, "min_rating": args.min_rating,
               "kcore": args.kcore, "split": args.split, "seed": args.data_seed, "name": args.name or out.name}
    if args.dataset is not None:
        for flag in ("items", "user_col", "item_col", "rating_col", "time_col", "sep"):
            if getattr(args, flag) is not None:
                raise LmrecError(f"--{flag.replace('_', '-')} goes with --interactions, not --dataset")
        dataset = Dataset.from_interactions(load_interactions(args.dataset, format=args.format),
                                            **{k: v for k, v in options.items() if v is not None})
    else:
        sep = {"tab": "\t", "\\t": "\t"}.get(args.sep, args.sep) if args.sep else None
        dataset = Dataset.from_files(args.interactions, args.items, sep=sep, user_col=args.user_col,
                                     item_col=args.item_col, rating_col=args.rating_col, time_col=args.time_col,
                                     **options)
    dataset.save(out)
    for line in dataset.report.lines():
        print(line)
    print(f"wrote {out}/ (default split {dataset.split}, seed {dataset.seed}; checksum {dataset.checksum()}): "
          f"train on it with --dataset {out}")


def cmd_synth(args: argparse.Namespace) -> None:
    from lmrec.data.synth import synthesize

    start = clock.now()
    stats = synthesize(Path(args.out), args.interactions, args.users, args.items, args.seed, csv=args.csv)
    split = "interactions.csv + items.csv, no split" if args.csv else \
        f"train/valid/test {stats.train}/{stats.valid}/{stats.test}"
    print(f"{stats.users} users, {stats.items} items, {stats.interactions} interactions "
          f"({stats.interactions_asked} asked; repeated pairs collapse): {split}; wrote {args.out}/ in "
          f"{clock.now() - start:.1f} s")


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
