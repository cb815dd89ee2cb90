"""``lmrec compare|reproduce|zeroshot|intention|convergence|demo``: the papers' experiments and reports."""

from __future__ import annotations

import argparse
import contextlib
import signal
import sys
from collections.abc import Iterator
from pathlib import Path

from lmrec import clock
from lmrec.cli.data import add_dataset_arguments
from lmrec.cli.flags import add_settings, given
from lmrec.cli.train import add_threads, set_threads
from lmrec.errors import LmrecError


def add_commands(sub: argparse._SubParsersAction, argv: list[str]) -> None:
    from lmrec.models.cf.alpharec import AlphaRecConfig
    from lmrec.train import TrainConfig

    cmp = sub.add_parser("compare", help="several models x datasets -> one table (resumes finished runs)")
    cmp.add_argument("--models", default="pop,mf,lightgcn,linear_map,alpharec")
    cmp.add_argument("--datasets", default="movielens-latest-small,movielens-100k,amazon-industrial-scientific-2018")
    cmp.add_argument("--data-seed", dest="data_seed", type=int, default=2024)
    cmp.add_argument("--jobs", type=int, default=1, help="independent runs at once (the CPU threads divided)")
    cmp.add_argument("--out", required=True)
    add_threads(cmp)
    add_settings(cmp, TrainConfig, "training settings (every run; each model's paper values otherwise)")
    cmp.set_defaults(func=cmd_compare)

    rep = sub.add_parser("reproduce", help="run a paper's configured tables and write a report folder")
    rep.add_argument("paper", choices=["alpharec", "rta"])
    rep.add_argument("--quick", action="store_true", help="the configs' [quick] settings: a few minutes in all")
    rep.add_argument("--configs", default="configs", help="folder with <paper>/*.toml (default ./configs)")
    rep.add_argument("--only", help="comma-separated table names (file stems, with or without the number)")
    rep.add_argument("--out", help="work folder (default runs/reproduce/<paper>[-quick]); finished runs are reused")
    rep.add_argument("--publish", help="also copy the report folder here, e.g. docs/results/<date>-<paper>")
    rep.add_argument("--jobs", type=int, default=1, help="independent runs of a comparison table at once")
    rep.add_argument("--reuse", help="a report folder made earlier (e.g. published, on another machine): its recorded "
                                     "runs count as finished where their settings and data match, and its LLM "
                                     "answers are taken where the LLM, settings and prompt match")
    rep.add_argument("--models", help="comma-separated [run.models] entries: run only these of the comparison tables "
                                      "(a long table split between calls; the whole table later reuses their runs)")
    rep.add_argument("--finished-only", dest="finished_only", action="store_true",
                     help="train nothing: report the comparison tables' finished runs (here or in --reuse) and list "
                          "the planned runs still missing (a long table's progress)")
    rep.set_defaults(func=cmd_reproduce)

    zs = sub.add_parser("zeroshot", help="train AlphaRec on mixed sources, apply it untrained to a target dataset")
    zs.add_argument("--train", required=True, help="comma-separated source datasets, mixed into one training set")
    zs.add_argument("--target", required=True, help="unseen dataset to evaluate on (no training there)")
    add_dataset_arguments(zs)
    zs.add_argument("--lightgcn-epochs", dest="lightgcn_epochs", type=int, default=100,
                    help="epoch budget of the LightGCN trained on the target")
    zs.add_argument("--out", required=True)
    add_threads(zs)
    add_settings(zs, AlphaRecConfig, "AlphaRec settings")
    add_settings(zs, TrainConfig, "training settings of AlphaRec on the mix")
    zs.set_defaults(func=cmd_zeroshot)

    it = sub.add_parser("intention", help="HR@5/NDCG@5 of held-out targets with and without a stated intention")
    it.add_argument("run", help="an AlphaRec run folder")
    it.add_argument("--alpha", type=alpha_choice, default=0.5,
                    help="the alpha reported as 'with intention', or 'valid': the best of the grid on validation "
                    "cases, the test cases read once (default 0.5)")
    it.add_argument("--users", type=int, help="evaluate this many users drawn at random (default: all)")
    it.add_argument("--seed", type=int, default=2024)
    it.add_argument("--llm", help="a registered causal LM (e.g. smollm2-135m) that writes each target's intention from "
                    "its title, title words removed (default: written by rule from the catalog's genres, tags, "
                    "categories or description)")
    it.add_argument("--domain", default="product",
                    help="with --llm: the request's word for an item, e.g. 'video game product' (default: product)")
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


def cmd_compare(args: argparse.Namespace) -> None:
    from lmrec.experiments.compare import markdown, run_comparison
    from lmrec.train import TrainConfig

    set_threads(args)
    results = run_comparison(args.models.split(","), args.datasets.split(","), Path(args.out),
                             given(args, TrainConfig), seed=args.data_seed, jobs=args.jobs, log=print)
    print(markdown(results))


@contextlib.contextmanager
def stop_like_ctrl_c() -> Iterator[None]:
    """Within it, SIGTERM (``kill``, a machine's shutdown) ends the process through its ``finally`` blocks as Ctrl-C
    does, so a reproduction packs what it finished before it exits (status 128 + 15); the previous handler after."""
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def cmd_reproduce(args: argparse.Namespace) -> None:
    from lmrec.experiments.reproduce import publish, reproduce

    out = Path(args.out or f"runs/reproduce/{args.paper}{'-quick' if args.quick else ''}")
    if args.publish and Path(args.publish).exists():  # known before hours of training, not after
        raise LmrecError(f"--publish {args.publish}: exists; publish into a new folder")
    only = [o for o in (args.only or "").split(",") if o]
    start = clock.now()
    models = [m for m in (args.models or "").split(",") if m]
    with stop_like_ctrl_c():
        report = reproduce(args.paper, Path(args.configs), out, args.quick, only, jobs=args.jobs,
                           reuse=Path(args.reuse) if args.reuse else None, models=models,
                           finished_only=args.finished_only)
    print(f"report: {report / 'report.md'} ({(clock.now() - start) / 60:.1f} min)")
    if args.publish:
        print(f"published to {publish(report, Path(args.publish))}")


def cmd_zeroshot(args: argparse.Namespace) -> None:
    from lmrec.data.registry import DataRef
    from lmrec.experiments import zeroshot
    from lmrec.models.cf.alpharec import AlphaRecConfig
    from lmrec.train import TrainConfig

    set_threads(args)
    sources = [DataRef.of(name, args.format, args.split, args.data_seed) for name in args.train.split(",") if name]
    target = DataRef.of(args.target, args.format, args.split, args.data_seed)
    train = given(args, TrainConfig)
    lightgcn = {"epochs": args.lightgcn_epochs, "eval_every": train.get("eval_every", 5)}
    comparison = zeroshot.run_zeroshot([r.load() for r in sources], target.load(), Path(args.out), train,
                                       given(args, AlphaRecConfig), lightgcn, features=zeroshot.lm_features,
                                       target_ref=target, source_refs=sources)
    print(zeroshot.markdown(comparison))
    print(f"wrote {args.out}/metrics.json and comparison.md")


def alpha_choice(text: str) -> float | str:
    """``--alpha``: a weight in [0, 1], or ``valid``."""
    if text == "valid":
        return text
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"expected a number from 0 to 1, or 'valid'; got {text!r}")
    return value


def cmd_intention(args: argparse.Namespace) -> None:
    from lmrec import Run
    from lmrec.experiments.intention import LLMWriter, markdown, run_intention

    run = Run.load(args.run)
    writer = LLMWriter.load(Path(args.out), run.data.catalog, args.llm, domain=args.domain) if args.llm else None
    result = run_intention(run.model, run.data, Path(args.out), args.alpha, n_users=args.users,  # type: ignore
                           seed=args.seed, run=args.run, writer=writer)
    print(markdown(result))
    print(f"wrote {args.out}/intention.json, intention.md, alpha.png")


def cmd_convergence(args: argparse.Namespace) -> None:
    from lmrec.experiments.convergence import markdown, run_convergence

    rows = run_convergence(Path(args.runs), Path(args.out))
    print(markdown(rows))
    print(f"wrote {args.out}/convergence.md and convergence.png")


def cmd_demo(args: argparse.Namespace) -> None:
    from lmrec.experiments.demo import run_demo

    run_demo(Path(args.out), args.dataset, args.user)
