"""``lmrec reproduce alpharec|rta``: run every configured table of a paper and write one report folder.

A paper's tables are ``configs/<paper>/*.toml``, one file per table, run in file-name order::

    title = "Table 3: AlphaRec against the CF baselines"
    experiment = "compare"        # compare | density | zeroshot | intention | convergence | crs
    paper = '''markdown: the paper's numbers, printed beside ours'''
    notes = '''markdown: how our setting differs from the paper's'''
    [run]                         # the experiment's settings (see the runner functions below)
    [quick]                       # with --quick, its keys replace [run]'s (whole values; a few minutes in all)

Output ``OUT/``: ``report/`` (``report.md``, ``environment.json`` with machine, versions, git commit, seeds and
data checksums, ``configs/`` as run, ``figures/``, ``tables/``, ``records/``: every finished comparison run less its
weights; ``answers/<table>/``: the LLM answers a conversational table's prepare has made so far; ``rta-tables/``:
each conversational table's finished target-definition tables; all three packed as each table finishes and when a
reproduction stops early (an error, Ctrl-C, SIGTERM); small enough to commit, see ``--publish``) and one work
folder per table with the run folders. Finished runs are reused when their settings match (an interrupted
reproduction resumes); a folder made with other settings is an error naming it. ``--reuse REPORT`` goes on from
another report's records, answers and finished tables (a reproduction longer than one machine's session: publish
or copy the report folder, then reuse it); ``--models`` runs only some model entries of the comparison tables, so
that a long table can be split between calls.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import os
import platform
import shutil
import tomllib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from lmrec import clock
from lmrec.data.registry import DEFAULT_SEED, DataRef
from lmrec.environment import cpu_name, git_state, versions
from lmrec.errors import LmrecError
from lmrec.experiments.records import pack_records, unpack_records
from lmrec.experiments.schemas import (
    CompareSettings,
    ConvergenceSettings,
    CRSTableSettings,
    DensitySettings,
    IntentionSettings,
    ZeroShotSettings,
)
from lmrec.experiments.steps import cached_step
from lmrec.io import atomic_write, write_json
from lmrec.settings import as_dict

SECTION = "section.md"  # a finished table's report section, kept in its work folder
RECORDS = "records"  # the report's folder of finished runs' records
ANSWERS = "answers"  # the report's folder of LLM answers (conversational tables' generations, gzip-compressed)
PACKED_ANSWERS = ".jsonl.gz"  # answers/<table>/generations-<split>.jsonl.gz
RTA_TABLES = "rta-tables"  # the report's folder of finished conversational definition tables
PAPERS = {"alpharec": "AlphaRec (Sheng et al., 2024): language representations for collaborative filtering",
          "rta": "Reindex-Then-Adapt (RTA): LLM-based conversational recommendation"}


@dataclasses.dataclass
class Table:
    """One config file: what to run and what to print beside it."""

    key: str  # file stem, also the work folder name
    title: str
    experiment: str
    settings: Any  # the experiment's settings class (lmrec.experiments.schemas)
    paper: str = ""
    notes: str = ""
    source: Path | None = None


def load_table(path: Path, quick: bool = False) -> Table:
    """Read one config; unknown top-level keys, unknown experiments and invalid ``[run]`` settings
    (:mod:`lmrec.experiments.schemas`) are errors naming the file and the key."""
    from lmrec.experiments.schemas import EXPERIMENT_SETTINGS, table_settings

    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise LmrecError(f"{path}: not valid TOML: {exc}") from exc
    unknown = sorted(set(raw) - {"title", "experiment", "paper", "notes", "run", "quick"})
    if unknown:
        raise LmrecError(f"{path}: unknown key(s) {unknown}; expected title, experiment, paper, notes, run, quick")
    if raw.get("experiment") not in EXPERIMENT_SETTINGS:
        raise LmrecError(f"{path}: experiment must be one of {sorted(EXPERIMENT_SETTINGS)}, got "
                         f"{raw.get('experiment')!r}")
    values = {**raw.get("run", {}), **(raw.get("quick", {}) if quick else {})}
    try:
        settings = table_settings(raw["experiment"], values)
    except (LmrecError, TypeError, ValueError) as exc:
        raise LmrecError(f"{path}: {exc}") from exc
    return Table(path.stem, raw.get("title", path.stem), raw["experiment"], settings, raw.get("paper", ""),
                 raw.get("notes", ""), path)


def load_tables(folder: Path, quick: bool = False) -> list[Table]:
    """Every table config of ``folder`` (all validated before anything runs)."""
    paths = sorted(Path(folder).glob("*.toml"))
    if not paths:
        raise LmrecError(f"no table configs (*.toml) in {folder}")
    return [load_table(p, quick) for p in paths]


def select(tables: list[Table], only: list[str] | None) -> list[Table]:
    """The tables named in ``only`` (file stem, with or without its number prefix); all when empty."""
    if not only:
        return tables
    matches = lambda t, o: o in (t.key, t.key.split("-", 1)[-1])
    missing = [o for o in only if not any(matches(t, o) for t in tables)]
    if missing:
        raise LmrecError(f"--only {missing}: no such table (tables: {[t.key for t in tables]})")
    return [t for t in tables if any(matches(t, o) for o in only)]


def restrict(tables: list[Table], models: list[str] | None) -> list[Table]:
    """The tables with model entries (``[run.models]``: comparison and density tables) cut to the entries named in
    ``models``, and without the tables that have none of them; all tables whole when ``models`` is empty. The runs
    are the same as the whole table's (same names, settings and seeds), so a later call of the whole table, here or
    with ``--reuse``, finds them finished. A name that no selected table has is an error."""
    if not models:
        return tables
    entries = {name for t in tables for name in getattr(t.settings, "models", {})}
    missing = [m for m in models if m not in entries]
    if missing:
        raise LmrecError(f"--models {missing}: no such model entry in the selected tables (entries: "
                         f"{sorted(entries)})")
    cut = []
    for table in tables:
        kept = {n: e for n, e in getattr(table.settings, "models", {}).items() if n in models}
        if kept:
            part = f"{len(kept)} of its {len(table.settings.models)} models ({', '.join(kept)})"
            cut.append(dataclasses.replace(table, settings=dataclasses.replace(table.settings, models=kept),
                                           notes=f"**Partial run: {part}.**\n\n{table.notes}"))
    return cut


# -- one runner per experiment kind: (settings, work folder, output root, context) -> markdown -------------------
@dataclasses.dataclass(frozen=True)
class Context:
    """What every table runner gets besides its settings: ``jobs`` independent runs at once (the tables that have
    independent runs), ``log`` a line per finished step (a run, a chunk of prepared turns) so long tables show
    progress, ``records`` the folder that gets the record of every finished comparison run
    (:mod:`lmrec.experiments.records`, as ``<runs folder>/<dataset>/<run>``), ``reuse`` records made earlier (e.g.
    on another machine) that count as finished runs where their settings and data match, ``answers`` LLM answers
    made earlier (generation files) that a conversational table's prepare takes where their key matches,
    ``finished`` conversational tables finished earlier (``<table>/[targets-<t>/]``), taken where their settings and
    inputs match."""

    records: Path
    jobs: int = 1
    log: Callable[[str], None] = print
    reuse: Path | None = None
    answers: tuple[Path, ...] = ()
    finished: Path | None = None
    finished_only: bool = False


def _compare(s: CompareSettings, folder: Path, root: Path, context: Context) -> str:
    from lmrec.experiments.compare import markdown

    return markdown(_comparison(s, folder, root, context))


def _density(s: DensitySettings, folder: Path, root: Path, context: Context) -> str:
    from lmrec.experiments import density
    from lmrec.experiments.compare import markdown

    results = _comparison(s.as_compare(), folder, root, context)
    return density.write(results, folder) + "\n" + markdown(results)


def _comparison(s: CompareSettings, folder: Path, root: Path, context: Context) -> dict[str, Any]:
    from lmrec.experiments.compare import grid_specs, run_comparison

    specs = [spec for name, entry in s.models.items()
             for spec in grid_specs(name, entry.model or name, entry.set, entry.train, entry.grid)]
    runs = s.runs_in or folder.name  # another table's runs: those with equal settings are reused
    return run_comparison(specs, s.datasets, folder, {"progress": False, **s.train}, focus=s.focus, seed=s.seed,
                          dataset_train_overrides=s.train_by_dataset, jobs=context.jobs, runs_dir=root / runs,
                          log=context.log, records=context.records / runs,
                          reuse=context.reuse / runs if context.reuse else None, seeds=s.seeds,
                          focus_seeds=s.focus_seeds, widen=s.widen, finished_only=context.finished_only)


def _zeroshot(s: ZeroShotSettings, folder: Path, root: Path, context: Context) -> str:
    from lmrec.experiments import zeroshot

    parts = []
    for transfer in s.transfers:
        sources = [DataRef.of(name, seed=s.seed) for name in transfer.train]
        target = DataRef.of(transfer.target, seed=s.seed)
        out = folder / f"{transfer.target}-from-{'+'.join(transfer.train)}"
        spec = {"transfer": {"train": transfer.train, "target": transfer.target}, "train": s.train, "set": s.set,
                "lightgcn": s.lightgcn, "seed": s.seed}
        # one mixed training per sources and settings, whatever the target (its folder claimed for them up front)
        mixed = folder / f"mixed-{'+'.join(transfer.train)}"
        cached_step(mixed, {"train": transfer.train, "settings": s.train, "set": s.set, "seed": s.seed}, lambda: None)
        cached_step(out, spec, lambda out=out, sources=sources, target=target, mixed=mixed: zeroshot.run_zeroshot(
            [r.load() for r in sources], target.load(), out, {"progress": False, **s.train}, s.set, s.lightgcn,
            features=zeroshot.lm_features, target_ref=target, source_refs=sources, mixed_folder=mixed))
        parts.append((out / "comparison.md").read_text(encoding="utf-8"))
    return "\n".join(parts)


def _intention(s: IntentionSettings, folder: Path, root: Path, context: Context) -> str:
    from lmrec.experiments import intention
    from lmrec.experiments.records import is_complete, train_again
    from lmrec.run import Run, read_manifest

    name = selected_run(root, s.run, context.log)
    run = root / name
    records = [r / name for r in (context.records, context.reuse) if r is not None and is_complete(r / name)]
    if not is_complete(run) and records:  # its record only, and the model is needed
        context.log(f"{name} is a record without weights: training it again with its recorded settings")
        train_again(records[0], run)
    if not is_complete(run):
        raise LmrecError(f"intention: {run} is not a finished run (configure the table that trains it first)")
    saved = read_manifest(run)
    spec = {"run": name, "alpha": s.alpha, "alphas": s.alphas or list(intention.ALPHAS), "n_users": s.n_users,
            "seed": s.seed, "run_config": {k: saved.get(k) for k in ("model_config", "train_config", "data_checksum",
                                                                      "fit")}}
    if s.writer is not None:  # only then, so that the records of rule-written intentions stay as they were
        spec["writer"] = as_dict(s.writer)

    def go() -> None:
        loaded = Run.load(run)
        writer = intention.LLMWriter.load(folder, loaded.data.catalog, **spec["writer"]) if s.writer else None
        intention.run_intention(loaded.model, loaded.data, folder, spec["alpha"], spec["alphas"], spec["n_users"],
                                spec["seed"], run=name, writer=writer)

    cached_step(folder, spec, go)
    return (folder / "intention.md").read_text(encoding="utf-8")


def selected_run(root: Path, run: str, log: Callable[[str], None]) -> str:
    """``run`` (``<table>/<dataset>/<name>``, folder names) where ``name`` is a model family of comparison table
    ``<table>``: the folder of the grid point that table selected on validation for ``<dataset>`` (its
    ``results.json``), so that "the AlphaRec of the comparison" is the one the comparison reports; otherwise ``run``
    itself (a run named by its grid point, or a table whose selection is not known here, which is logged)."""
    from lmrec.experiments.compare import slug

    parts = run.split("/")
    results = root / parts[0] / "results.json"
    if len(parts) != 3 or not results.exists():
        if len(parts) == 3:
            log(f"{run}: {results} not found, so the comparison's selection is unknown here: the run of that name "
                "is used")
        return run
    blocks = json.loads(results.read_text(encoding="utf-8"))
    selected = next((b.get("selected", {}) for label, b in blocks.items() if slug(label) == parts[1]), {})
    chosen = next((name for family, name in selected.items() if slug(family) == parts[2]), None)
    return "/".join([*parts[:2], slug(chosen)]) if chosen else run


def _convergence(s: ConvergenceSettings, folder: Path, root: Path, context: Context) -> str:
    from lmrec.experiments.convergence import markdown, run_convergence

    # every finished run, recorded ones too (a work folder from before records: its run folders); of a comparison's
    # grid, the points it chose
    runs = context.records / s.runs if (context.records / s.runs).is_dir() else root / s.runs
    return markdown(run_convergence(runs, folder, root / s.runs / "results.json"))


def _crs(s: CRSTableSettings, folder: Path, root: Path, context: Context) -> str:
    from lmrec.experiments.rta_table import run_rta_table

    run_rta_table(s.dataset, folder, as_dict(s), progress=True, log=context.log, answers_from=context.answers,
                  finished=context.finished / folder.name if context.finished else None)
    return (folder / "table.md").read_text(encoding="utf-8")


EXPERIMENTS: dict[str, Callable[[Any, Path, Path, Context], str]] = {
    "compare": _compare, "density": _density, "zeroshot": _zeroshot, "intention": _intention,
    "convergence": _convergence, "crs": _crs,
}


# -- the report ----------------------------------------------------------------------------------------------
def environment(tables: list[Table], out: Path, quick: bool, reuse: Path | None = None,
                finished_only: bool = False) -> dict[str, Any]:
    """Machine, library versions, git commit, seeds and the data checksums found in the run folders."""
    checksums: dict[str, str] = {}
    for path in sorted([*out.rglob("manifest.json"), *out.rglob("experiment.json")]):
        if any(part.startswith(".") for part in path.relative_to(out).parts):  # a record being written
            continue
        config = json.loads(path.read_text(encoding="utf-8"))
        if "data_checksum" in config:
            data = config["data"]
            how = [f"split {data['split']}" if data.get("split") else "",
                   f"seed {data['seed']}" if data.get("seed", DEFAULT_SEED) != DEFAULT_SEED else ""]
            label = Path(data["dataset"]).name + "".join(f" ({h})" for h in how if h)
            checksums[label] = config["data_checksum"]
        if "target_checksum" in config:
            checksums[Path(config["target"]["dataset"]).name] = config["target_checksum"]
    for path in sorted(out.rglob("table.json")):
        table = json.loads(path.read_text(encoding="utf-8"))
        checksums[table["dataset"]] = table.get("data_checksum", "")
    return {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "mode": "quick" if quick else "full",
        "trained_here": not finished_only,  # False: a --finished-only report of runs trained elsewhere
        "machine": {"cpu": cpu_name(), "cores": os.cpu_count(), "platform": platform.platform(),
                    "torch_threads": _torch_threads(), "load_average": list(os.getloadavg())},
        "versions": versions(),
        "git": git_state(),
        "split_seeds": {t.key: t.settings.seed for t in tables if hasattr(t.settings, "seed")},
        "training_seed": "each model's TrainConfig.seed (default 2024; in each run's manifest.json)",
        "data_checksums": checksums,
        "reused_records": str(reuse) if reuse is not None else None,  # runs finished elsewhere (their manifests)
    }


def _torch_threads() -> int:
    import torch

    return torch.get_num_threads()


def reproduce(paper: str, configs: Path, out: Path, quick: bool = False, only: list[str] | None = None,
              log: Callable[[str], None] = print, jobs: int = 1, reuse: Path | None = None,
              models: list[str] | None = None, finished_only: bool = False) -> Path:
    """Run the tables of ``configs/<paper>`` into ``out``; returns the report folder ``out/report``. ``reuse``: a
    report folder made earlier (its ``records/``), whose finished runs count where their settings and data match.
    ``finished_only``: train nothing; the comparison tables show their finished runs and list the others (a long
    table's progress), the other tables are left out."""
    if paper not in PAPERS:
        raise LmrecError(f"unknown paper {paper!r}; expected one of {sorted(PAPERS)}")
    tables = load_tables(Path(configs) / paper, quick)
    chosen = restrict(select(tables, only), models)
    if finished_only:
        chosen = [_finished_only(t) for t in chosen if t.experiment in FINISHED_ONLY_KINDS]
        if not chosen:
            raise LmrecError(f"--finished-only reports comparison tables ({', '.join(FINISHED_ONLY_KINDS)}); none of "
                             "the selected tables is one")
    if reuse is not None and not any((Path(reuse) / sub).is_dir() for sub in (RECORDS, ANSWERS, RTA_TABLES)):
        raise LmrecError(f"--reuse {reuse}: no {RECORDS}/, {ANSWERS}/ or {RTA_TABLES}/ folder there (expected a "
                         "report folder of lmrec reproduce)")
    report = out / "report"
    for sub in ("configs", "figures", "tables", RECORDS):
        (report / sub).mkdir(parents=True, exist_ok=True)
    _move_folder_records(report / RECORDS, out / RECORDS)
    reused = None if reuse is None or not (Path(reuse) / RECORDS).is_dir() else \
        unpack_records(Path(reuse) / RECORDS, out / ".reused-records")
    answers = () if reuse is None else tuple(sorted((Path(reuse) / ANSWERS).glob(f"*/*{PACKED_ANSWERS}")))
    finished = Path(reuse) / RTA_TABLES if reuse is not None and (Path(reuse) / RTA_TABLES).is_dir() else None
    context = Context(out / RECORDS, jobs, log, reused, answers, finished, finished_only)
    for table in chosen:
        log(f"[{table.key}] {table.title} ...")
        start = clock.now()
        folder = out / table.key
        folder.mkdir(parents=True, exist_ok=True)
        runner = EXPERIMENTS[table.experiment]
        try:
            ours = runner(table.settings, folder, out,
                          dataclasses.replace(context, log=lambda line, key=table.key: log(f"[{key}] {line}")))
        finally:  # what is finished reaches the report even when the table stops early
            _pack(out, report)
        seconds = clock.now() - start
        log(f"[{table.key}] done in {seconds / 60:.1f} min")
        assert table.source is not None
        shutil.copyfile(table.source, report / "configs" / table.source.name)
        figures = _collect(folder, report, table.key)
        section = _section(table, ours, seconds, figures)
        atomic_write(folder / SECTION, lambda f, section=section: f.write(section))
    sections = [(out / t.key / SECTION).read_text(encoding="utf-8") for t in tables if (out / t.key / SECTION).exists()]
    env = environment(tables, out, quick, reuse, finished_only)
    write_json(report / "environment.json", env)
    atomic_write(report / "report.md", lambda f: f.write(_report(paper, env, sections)))
    return report


def _pack(out: Path, report: Path) -> None:
    """The work folder's finished runs into ``report/records/`` (:func:`pack_records`) and the LLM answers of its
    conversational tables (``<table>/prepare/generations-<split>.jsonl``) into ``report/answers/<table>/``, gzipped
    and merged with the answers packed there before (the work folder's answer wins for a key in both), and their
    finished definition tables into ``report/rta-tables/<table>/[targets-<t>/]``; every file written atomically."""
    from lmrec.experiments.rta_table import TABLE_SPEC, copy_finished_table
    from lmrec.inputs.store import read_generations, write_generations

    if (out / RECORDS).is_dir():
        pack_records(out / RECORDS, report / RECORDS)
    for path in sorted(out.glob("*/prepare/generations-*.jsonl")):
        packed = report / ANSWERS / path.parent.parent.name / f"{path.stem}{PACKED_ANSWERS}"
        write_generations(packed, list({**read_generations(packed), **read_generations(path)}.values()))
    for spec in sorted([*out.glob(f"*/{TABLE_SPEC}"), *out.glob(f"*/targets-*/{TABLE_SPEC}")]):
        copy_finished_table(spec.parent, report / RTA_TABLES / spec.parent.relative_to(out))


FINISHED_ONLY_KINDS = ("compare", "density")  # the tables whose runs --finished-only can leave out


def _finished_only(table: Table) -> Table:
    """``table`` with a note that its report shows only the runs finished so far."""
    note = ("**Finished runs only** (`--finished-only`): nothing was trained for this report; the planned runs not "
            "finished yet are listed under each table, and the choices (widening, the best other model) are those of "
            "the finished runs.")
    return dataclasses.replace(table, notes=f"{note}\n\n{table.notes}")


def _move_folder_records(report_records: Path, work_records: Path) -> None:
    """Records in folder form that an earlier lmrec kept in ``report/records/`` move to the work folder's
    ``records/`` (the report keeps them packed)."""
    for group in [p for p in report_records.iterdir() if p.is_dir()] if report_records.is_dir() else []:
        target = work_records / group.name
        if target.exists():
            shutil.copytree(group, target, dirs_exist_ok=True)
            shutil.rmtree(group)
        else:
            work_records.mkdir(parents=True, exist_ok=True)
            group.rename(target)


def _collect(folder: Path, report: Path, key: str) -> list[str]:
    """Copy the table's figures and result json into the report; returns the figures' report-relative paths."""
    figures = []
    for png in sorted(folder.rglob("*.png")):
        rel = png.relative_to(folder)
        name = f"{key}--{'--'.join(rel.parts)}"
        shutil.copyfile(png, report / "figures" / name)
        figures.append(f"figures/{name}")
    for name in ("results.json", "table.json", "convergence.json", "intention.json"):
        if (folder / name).exists():
            shutil.copyfile(folder / name, report / "tables" / f"{key}.json")
    for comparison in sorted(folder.glob("*/comparison.json")):
        shutil.copyfile(comparison, report / "tables" / f"{key}--{comparison.parent.name}.json")
    return figures


def _section(table: Table, ours: str, seconds: float, figures: list[str]) -> str:
    lines = [f"## {table.title}", "",
             f"Config `configs/{table.source.name if table.source else table.key}`; {seconds / 60:.1f} min "
             "(runs finished earlier are reused).", ""]
    if table.notes:
        lines += [table.notes.strip(), ""]
    if table.paper:
        lines += ["### The paper", "", table.paper.strip(), ""]
    nested = "\n".join("#" + line if line.startswith("#") else line for line in ours.strip().splitlines())
    lines += ["### lmrec", "", nested, ""]
    lines += [f"![{Path(f).stem}]({f})" for f in figures]
    return "\n".join(lines) + "\n"


def _report(paper: str, env: Mapping[str, Any], sections: list[str]) -> str:
    m = env["machine"]
    git = env["git"]
    trained = env.get("trained_here", True)
    where = (f"on {m['cpu']} ({m['cores']} cores, {m['torch_threads']} torch threads)" if trained else
             f"made without training on {m['cpu']} (the runs trained elsewhere: their settings, versions and fit "
             "times are in their records, `records/`)")
    head = [f"# {PAPERS[paper]}: lmrec reproduction ({env['mode']}{'' if trained else ', finished runs only'})", "",
            f"{env['date']} {where}, "
            f"{m['platform']}; lmrec {env['versions']['lmrec']}, torch {env['versions']['torch']}, "
            f"git {git.get('commit') or 'unknown'}{' (dirty)' if git.get('dirty') else ''}. "
            "Seeds, data checksums and versions: `environment.json`; the configs as run: `configs/`.", "",
            "Evaluation: model selection and early stopping on validation only; test once at the end; full ranking; "
            "mean ± SE (ddof = 1) with every mean.", ""]
    return "\n".join(head) + "\n" + "\n".join(sections)


def publish(report: Path, dest: Path) -> Path:
    """Copy a report folder (small files only) to ``dest`` (e.g. ``docs/results/<date>-<paper>``)."""
    if dest.exists():
        raise LmrecError(f"{dest} exists; publish into a new folder")
    shutil.copytree(report, dest)
    return dest
