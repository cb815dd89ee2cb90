"""``lmrec tune``: search a model's settings on validation (optuna TPE, median pruning); the same command resumes."""

from __future__ import annotations

import argparse

from lmrec.cli.data import add_dataset_arguments
from lmrec.cli.train import _positive, add_threads, set_threads
from lmrec.errors import LmrecError
from lmrec.settings import SettingsError, parse_value

BUDGET = ("epochs", "patience", "eval_every", "metric", "device")  # flags fixing a training setting of every trial


def add_commands(sub: argparse._SubParsersAction, argv: list[str]) -> None:
    p = sub.add_parser("tune", help="search a model's settings on validation (TPE, pruning); a rerun resumes")
    p.add_argument("model", help="a trained collaborative-filtering model (see `lmrec models`)")
    p.add_argument("--dataset", required=True, help="registry name or folder")
    add_dataset_arguments(p)
    p.add_argument("--trials", type=_positive, required=True,
                   help="trials in all, the default settings first (the same command with more goes on)")
    p.add_argument("--timeout", type=_positive_float, help="seconds after which no new trial starts")
    p.add_argument("--out", required=True, help="the search's folder: study.db, trials/, best/, trials.md/.csv")
    p.add_argument("--set", dest="fixed", action="append", default=[], metavar="KEY=VALUE",
                   help="a model or training setting every trial takes, out of the search (repeat)")
    p.add_argument("--seed", type=int, default=2024, help="seed of the sampler and of every trial's training")
    budget = p.add_argument_group("every trial's training (default: the model's paper values)")
    budget.add_argument("--epochs", type=_positive, help="maximum number of epochs")
    budget.add_argument("--patience", type=_positive, help="stop after N validations without improvement")
    budget.add_argument("--eval-every", dest="eval_every", type=_positive, help="validate every N epochs")
    budget.add_argument("--metric", help="selection metric on validation, e.g. recall@20")
    budget.add_argument("--device", choices=["cpu", "cuda", "mps"], help="where tensors live")
    add_threads(p)
    p.set_defaults(func=cmd_tune)


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a positive number of seconds, got {text}")
    return value


def fixed_settings(cls: type, args: argparse.Namespace) -> dict:
    """The settings every trial takes, from ``--set KEY=VALUE`` and the budget flags; an error names the flag."""
    from lmrec.tuning import split_fixed

    fixed: dict = {}
    for text in args.fixed:
        key, sep, value = text.partition("=")
        if not sep or not key.strip():
            raise LmrecError(f"--set {text!r}: expected KEY=VALUE, e.g. --set emb_dim=32")
        key = key.strip()
        if key in fixed:
            raise LmrecError(f"--set {key}: given twice")
        fixed[key] = parse_value(value)
        try:
            split_fixed(cls, {key: fixed[key]})
        except SettingsError as exc:
            raise LmrecError(f"--set {text}: {exc}") from None
    for key in BUDGET:
        value = getattr(args, key)
        if value is None:
            continue
        flag = "--" + key.replace("_", "-")
        if key in fixed:
            raise LmrecError(f"{flag} and --set {key}=...: give it once")
        try:
            split_fixed(cls, {key: value})
        except SettingsError as exc:
            raise LmrecError(f"{flag}: {exc}") from None
        fixed[key] = value
    return fixed


def cmd_tune(args: argparse.Namespace) -> None:
    from lmrec.data.registry import DataRef
    from lmrec.tuning import tunable, tune

    set_threads(args)
    cls = tunable(args.model)  # before any data is read: pop, CRS models and unknown names are refused here
    fixed = fixed_settings(cls, args)
    tune(args.model, DataRef.of(args.dataset, args.format, args.split, args.data_seed), args.trials, out=args.out,
         fixed=fixed, timeout=args.timeout, seed=args.seed)
