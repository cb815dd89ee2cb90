"""The Reindex-Then-Adapt results of one conversational dataset: every model on the same prepared test turns,
the popularity buckets and the title-masking probe, from one settings mapping (a ``configs/rta/*.toml`` table).

Folder::

    prepare/            lmrec crs prepare (LLM q vectors, title tokens, generations)
    baseline-<name>/ zero-shot/ reindex/ adapt-<name>/     run folders (lmrec train <baseline> / zero_shot_llm /
                                                           rta_reindex / rta_adapt)
    probe.json                            the masking probe of the named rows (and what it was computed from)
    table.json table.md buckets.png       the results
    table-spec.json                       what they were made from (written last; see run_rta_table's finished)
    targets-<t>/                          all of the above but prepare, per target definition (targets a list)

Steps whose ``spec.json`` equals the requested settings and inputs are reused; a folder with other settings is an
error naming it (see :func:`lmrec.experiments.steps.cached_step`).
Rows: the baselines (popularity, FISM, SASRec trained on ALL training turns and, with ``baseline_train =
"both"``, also on the prepared subsample the LLM models learn from, plus the dense retriever), the zero-shot LLM,
the reindexed LLM (and each of ``reindex_variants``: options over ``reindex``, e.g. ``{"+ item prompts" =
{item_prompts = true}}``) and each adapt variant, built on the reindex row with the best VALIDATION HR@10 (which
the probe may name ``"best reindexed"``). A row's training turns are those it learned from (an LLM-labelled row:
the turns whose answer mapped to an item). Test blocks: all prepared test pairs; new targets only with the
mentioned items removed; the subsample the LLM generated for (where the zero-shot LLM is scored, paired).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lmrec.data.conversations import CRSSample, training_mentions
from lmrec.data.registry import load_dataset
from lmrec.errors import LmrecError
from lmrec.eval.crs import CRSResult
from lmrec.eval.crs_analysis import buckets_table, popularity_buckets, probe_delta, quantile_bounds
from lmrec.eval.report import estimate_cell, progress_line
from lmrec.eval.stats import cluster_bootstrap, paired_test
from lmrec.experiments.crs import crs_results
from lmrec.experiments.steps import cached_step, normalised
from lmrec.inputs.config import PrepareConfig
from lmrec.inputs.prepare import prepare_dataset
from lmrec.inputs.store import LLMFeatures, load_features
from lmrec.io import atomic_write, write_bytes, write_json
from lmrec.models.base import get_model
from lmrec.models.queries import turn_scorer
from lmrec.run import MANIFEST, WEIGHTS, Run, fit
from lmrec.settings import as_dict, build

Scorer = Callable[[Sequence[CRSSample]], torch.Tensor]
BLOCKS = ("test", "test_new", "test_generated")
PROBE_DEFAULTS = {"models": [], "modes": ["mask", "replace"], "max_samples": None, "seed": 0}


@dataclasses.dataclass
class Row:
    """One model of the table: its scorer and its evaluations (``valid``, ``test``, ``test_new``, …)."""

    name: str
    kind: str  # baseline | llm
    scorer: Scorer
    results: dict[str, CRSResult]
    train_turns: int | None = None  # training turns it learned from (None: fitted without training turns)
    reindex: bool = False  # a reindex row (the adapt rows build on the one best on validation)
    run: tuple[Path, dict[str, Any]] | None = None  # its run folder and the settings it was made with (spec.json)
    mapping: dict[str, Any] | None = None  # the zero-shot LLM's title mapping as it ran (ZeroShotLLM.stats)

    @property
    def metrics(self) -> dict[str, Any]:
        """The metrics.json blocks (mean / SE / n per metric)."""
        return {block: result.to_dict() for block, result in self.results.items()}


Log = Callable[[str], None]
ZERO_SHOT_ROW = "zero-shot LLM"  # the one row scored on the answered test turns only


def _silent(line: str) -> None:
    pass


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", name).strip("-").lower()


def prepare_config(settings: Mapping[str, Any]) -> PrepareConfig:
    return build(PrepareConfig, settings, what="prepare setting")


def prepare_spec(dataset: str, settings: Mapping[str, Any]) -> dict[str, Any]:
    """What a prepared folder records in ``spec.json``: the dataset and the full :class:`PrepareConfig`."""
    return {"dataset": dataset, **as_dict(prepare_config(settings))}


def _prepare(dataset: str, folder: Path, settings: Mapping[str, Any], progress: bool, log: Log,
             answers_from: Sequence[Path] = ()) -> LLMFeatures:
    config = prepare_config(settings)
    cached_step(folder, prepare_spec(dataset, settings), lambda: prepare_dataset(
        dataset, folder, config, progress=progress, log=log, answers_from=answers_from))
    return load_features(folder, load_dataset(dataset))


def fit_baselines(features: LLMFeatures, settings: Mapping[str, Mapping[str, Any]], train_on: str = "all",
                  folder: Path | None = None, log: Log = _silent) -> list[Row]:
    """Fit each ``settings[name]`` (model settings; ``model`` = registered name, default ``name``; ``train`` =
    :class:`lmrec.train.TrainConfig` fields). Trained models learn from all training turns (``train_on="all"``,
    selected on all validation turns), from the prepared subsample the LLM models learn from (``"prepared"``)
    or once from each (``"both"``). With ``folder`` each is a run folder ``baseline-<name>[-prepared]`` there,
    resumed, and loaded instead of fitted again when complete with the same settings and inputs (other settings
    are an error naming the folder)."""
    if train_on not in ("all", "prepared", "both"):
        raise ValueError(f"baseline_train must be one of all, prepared, both; got {train_on!r}")
    rows: list[Row] = []
    folders: dict[Path, str] = {}
    for name, options in settings.items():
        options = dict(options)
        train = {"progress": False, **options.pop("train", {})}
        model = options.pop("model", name)
        cls = get_model(model, "crs")
        sources = {"all": [None], "prepared": [features], "both": [None, features]}[train_on] if cls.trainable \
            else [None]
        for source in sources:
            n_turns = len(source.samples["train"]) if source else len(features.data.samples("train"))
            label = f"{name} ({n_turns} train turns)" if cls.trainable else name
            fit_it = functools.partial(fit, cls(**options), features.data, train if cls.trainable else None,
                                       features=source)
            if folder is None:
                run = fit_it()
            else:
                out = folder / (f"baseline-{_slug(name)}" + ("-prepared" if source else ""))
                if out in folders:
                    raise LmrecError(f"baselines {folders[out]!r} and {label!r} would share the folder {out}: "
                                     "rename one")
                folders[out] = label
                spec = {"model": model, "config": as_dict(cls(**options).config),  # defaults included: a changed
                        "train": train if cls.trainable else None,                # default is another step
                        "data": features.data.checksum(), "source": "prepared" if source else "all",
                        **(_inputs(features) if source else {})}
                cached_step(out, spec, lambda fit_it=fit_it, out=out: fit_it(out=out, resume=True))
                run = Run.load(out, data=features.data)
            scorer = turn_scorer(run.model.score)
            rows.append(Row(label, "baseline", scorer, crs_results(scorer, features),
                            n_turns if cls.trainable else None,
                            run=(out, spec) if folder is not None else None))
            log(_progress_line(rows[-1], run))
    return rows


def _inputs(features: LLMFeatures) -> dict[str, Any]:
    """What a step that learns from prepared features depends on (in its ``spec.json``): the folder, its samples
    and LLM, and the prepare settings."""
    return {"features": str(features.folder.resolve()), "samples": samples_checksum(features.samples),
            "llm": features.identity, "prepare": features.meta["config"]}


def llm_rows(features: LLMFeatures, folder: Path, settings: Mapping[str, Any],
             zero_shot: bool | Mapping[str, Any], log: Log = _silent) -> list[Row]:
    """Zero-shot LLM (``zero_shot``: True, or its ``zero_shot_llm`` options), reindexed LLM and the adapt variants
    (built on the reindex row ``settings["adapt_base"]`` names: ``"best"`` on validation, ``"reindex"`` the
    ``[run.reindex]`` row, or a ``reindex_variants`` name): run folders reused when their settings AND their inputs
    match (each spec holds the features' identity, and an adapt spec its reindex spec)."""
    inputs = _inputs(features)
    data = features.data
    rows = []
    if zero_shot:
        options = dict(zero_shot) if isinstance(zero_shot, Mapping) else {}
        out = folder / "zero-shot"
        spec = {**inputs, "zero_shot": options} if options else inputs
        cached_step(out, spec, lambda: fit("zero_shot_llm", data, features=features, out=out, resume=True,
                                           **options))
        rows.append(_run_row(ZERO_SHOT_ROW, out, spec, features, log=log))
    reindex_runs: dict[str, tuple[Path, dict[str, Any], bool]] = {}  # variant -> (folder, spec, item prompts)
    names: dict[str, str] = {}  # row name -> variant ("reindex": the [run.reindex] row)
    for variant, variant_options in reindex_variants(settings).items():
        options = dict(variant_options)
        train = {"progress": False, **options.pop("train", {})}
        reindex = build(get_model("rta_reindex").Config, options, what="rta_reindex setting")
        spec = {**inputs, "reindex": as_dict(reindex), "train": train}
        out = folder / ("reindex" if not variant else f"reindex-{_slug(variant)}")
        cached_step(out, spec, lambda out=out, train=train, options=options: fit(
            "rta_reindex", data, train, features=features, out=out, resume=True, **options))
        # the turns it learned from: with label_source "llm", only those whose answer names a catalog item
        turns = (len(features.llm_label_samples("train", reindex.top_k, reindex.label_source, reindex.title_match))
                 + (features.n_items if reindex.item_prompts else 0))
        row = _run_row(f"reindexed ({reindex.aggregator})" + (f" {variant}" if variant else ""), out, spec, features,
                       turns, log)
        row.reindex = True
        rows.append(row)
        reindex_runs[variant or "reindex"] = (out, spec, reindex.item_prompts)
        names[row.name] = variant or "reindex"
    # adapt builds on one reindex row (by default the one chosen on validation) and learns from every training
    # turn's real targets
    base = settings.get("adapt_base", "best")
    if base == "best":
        base = names[best_reindexed(rows).name]
    if base not in reindex_runs:
        raise LmrecError(f"adapt_base {base!r}: expected 'best', 'reindex' or one of the reindex_variants "
                         f"{[v for v in reindex_runs if v != 'reindex']}")
    out, reindex_spec, item_prompts = reindex_runs[base]
    adapt_turns = len(features.samples["train"]) + (features.n_items if item_prompts else 0)
    for name, adapt_options in settings.get("adapt", {}).items():
        adapt_options = dict(adapt_options)
        adapt_train = {"progress": False, **adapt_options.pop("train", {})}
        run = folder / f"adapt-{_slug(name)}"
        spec = {**reindex_spec, "adapt": adapt_options, "adapt_train": adapt_train}
        cached_step(run, spec, lambda run=run, o=adapt_options, t=adapt_train: fit(
            "rta_adapt", data, t, features=features, base=Run.load(out, data=data), out=run, resume=True, **o))
        rows.append(_run_row(name, run, spec, features, adapt_turns, log))
    return rows


def reindex_variants(settings: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """{variant name: rta_reindex options}: ``""`` is ``reindex`` itself, each of ``reindex_variants`` updates it
    (its ``train`` table merged into the base one)."""
    base = dict(settings["reindex"])
    out = {"": base}
    for name, options in settings.get("reindex_variants", {}).items():
        if not name:
            raise LmrecError("[run.reindex_variants]: a variant needs a name")
        merged = {**base, **options}
        merged["train"] = {**base.get("train", {}), **options.get("train", {})}
        out[name] = merged
    return out


def _valid_hr(row: Row, k: int = 10) -> float:
    result = row.results.get("valid")
    return float(result.per_pair[f"hr@{k}"].mean()) if result is not None else float("-inf")


def best_reindexed(rows: Sequence[Row]) -> Row:
    """The reindex row with the best validation HR@10: the base of the adapt rows, the probe's "best reindexed"."""
    return max((r for r in rows if r.reindex), key=_valid_hr)


def _run_row(name: str, run: Path, spec: dict[str, Any], features: LLMFeatures, train_turns: int | None = None,
             log: Log = _silent) -> Row:
    """A run folder's model (made with ``spec``), its metrics recomputed now (the same evaluation code as every
    other row)."""
    loaded = Run.load(run, data=features.data)
    generated_only = loaded.model.name == "zero_shot_llm"
    scorer = turn_scorer(loaded.model.score)
    row = Row(name, "llm", scorer, crs_results(scorer, features, generated_only), train_turns,
              run=(run, spec))
    if generated_only:  # how its titles mapped with its own title_match, over the turns just scored
        row.mapping = {**loaded.model.stats(), "title_match": loaded.model.config.title_match}
    log(_progress_line(row, loaded))
    return row


def run_identity(folder: Path, spec: Mapping[str, Any]) -> dict[str, Any]:
    """What identifies a trained run: the settings it was made with and the sha256 of its manifest and weights (a
    run trained again with the same settings has other ones: the manifest records when and how long it ran)."""
    digest = hashlib.sha256()
    for name in (MANIFEST, WEIGHTS):
        digest.update((folder / name).read_bytes())
    return {"spec": dict(spec), "files": digest.hexdigest()}


def _progress_line(row: Row, run: Run) -> str:
    """A row as it is done (fitted or found fitted), in :func:`lmrec.eval.report.progress_line`'s form."""
    fitted = run.manifest["fit"]
    return progress_line(row.name, "hr@10", _valid_hr(row) if "valid" in row.results else None, fitted,
                         fitted["seconds"])


def run_rta_table(dataset: str, folder: Path, settings: Mapping[str, Any], progress: bool = False,
                  log: Log = _silent, answers_from: Sequence[Path] = (), finished: Path | None = None
                  ) -> dict[str, Any]:
    """Prepare, fit / reuse every model, then write ``table.{json,md}`` and ``buckets.png``; returns the table.
    ``progress``: prepare prints how many turns it has answered and encoded (a line per chunk); ``log`` gets a
    line per row as it is fitted or found fitted; ``answers_from``: generation files made elsewhere whose answers
    prepare takes instead of generating them again (:func:`lmrec.inputs.prepare.prepare_features`); ``finished``:
    this table's folder as another machine finished it (its ``table-spec.json``, ``table.{json,md}``,
    ``buckets.png``, and those of each ``targets-<t>/``): a definition table finished there with the same settings
    and inputs is taken instead of fitted here, unless this folder has its own.

    ``settings["targets"]``: the target definition (:class:`lmrec.data.conversations.CRSData`), ``"all"`` or
    ``"new"``, or a list of them: one prepare, then every model of each definition in ``targets-<t>/`` and one
    table per definition (the first is the headline; ``table.json`` holds them under ``"targets"``)."""
    folder.mkdir(parents=True, exist_ok=True)
    features_dir = (folder / "prepare").resolve()
    features = _prepare(dataset, features_dir, settings.get("prepare", {}), progress, log, answers_from)
    targets = settings.get("targets", "all")
    if isinstance(targets, str):
        return _definition_or_finished(dataset, features.with_targets(targets), folder, settings, log, finished)
    tables = {}
    for definition in targets:
        log(f"targets = {definition!r}")
        tables[definition] = _definition_or_finished(
            dataset, features.with_targets(definition), folder / f"targets-{definition}", settings, log,
            None if finished is None else finished / f"targets-{definition}")
    table = {"dataset": dataset, "targets": tables}
    write_json(folder / "table.json", table)
    atomic_write(folder / "table.md", lambda f: f.write("\n".join(
        f"#### Targets: {TARGETS_TITLE[d]}\n\n" + (folder / f"targets-{d}" / "table.md").read_text(encoding="utf-8")
        for d in tables)))
    return table


TABLE_SPEC = "table-spec.json"  # what a finished definition table was made from (written last)
FINISHED_FILES = ("table.json", "table.md", "buckets.png", TABLE_SPEC)  # a finished definition table, to carry


def copy_finished_table(source: Path, dest: Path) -> None:
    """The :data:`FINISHED_FILES` of a finished definition table in ``source`` to ``dest``, each atomically and the
    spec last: a table is complete once its spec is there."""
    for name in FINISHED_FILES:
        if (source / name).exists():
            write_bytes(dest / name, (source / name).read_bytes())


def table_spec(dataset: str, features: LLMFeatures, settings: Mapping[str, Any]) -> dict[str, Any]:
    """What a definition table's numbers depend on: the dataset, its target definition, the table's settings and
    the prepared inputs (LLM, samples, prepare settings)."""
    return normalised({"dataset": dataset, "targets": features.data.targets,
                       "settings": {k: v for k, v in settings.items() if k != "targets"}, **_inputs(features),
                       "features": None})  # the folder's path differs from machine to machine


def _definition_or_finished(dataset: str, features: LLMFeatures, folder: Path, settings: Mapping[str, Any],
                            log: Log, finished: Path | None) -> dict[str, Any]:
    """:func:`_definition_table` in ``folder``, or the table ``finished`` holds when it was made with the same
    :func:`table_spec` and ``folder`` has no table of its own (copied in; nothing is fitted)."""
    spec = table_spec(dataset, features, settings)
    done = finished is not None and (finished / TABLE_SPEC).exists() and not (folder / TABLE_SPEC).exists()
    if done and json.loads((finished / TABLE_SPEC).read_text(encoding="utf-8")) == spec:
        copy_finished_table(finished, folder)
        log(f"targets = {features.data.targets!r}: the table finished in {finished} (same settings and inputs)")
        return json.loads((folder / "table.json").read_text(encoding="utf-8"))
    if done:
        log(f"targets = {features.data.targets!r}: {finished} was made with other settings or inputs; fitting here")
    table = _definition_table(dataset, features, folder, settings, log)
    write_json(folder / TABLE_SPEC, spec)
    return table


TARGETS_TITLE = {"all": "every item the recommending turn mentions (repeats of items mentioned earlier included)",
                 "new": "only the items the context has not mentioned (a turn without one is not a sample)"}


def _definition_table(dataset: str, features: LLMFeatures, folder: Path, settings: Mapping[str, Any],
                      log: Log) -> dict[str, Any]:
    """Every row on ``features`` (one target definition), the analyses, and ``table.{json,md}``, ``buckets.png`` in
    ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    rows = fit_baselines(features, settings.get("baselines", {}), settings.get("baseline_train", "all"), folder,
                         log)
    rows += llm_rows(features, folder, settings, settings.get("zero_shot", True), log)
    test = features.samples["test"]
    n_items = features.n_items
    results = {r.name: r.results["test"] for r in rows if r.name != ZERO_SHOT_ROW}  # every test turn
    counts = training_mentions(features.data.train, n_items)
    buckets = popularity_buckets(results, counts)
    bounds = quantile_bounds(counts, next(iter(results.values())).pairs[:, 1])
    quantile = popularity_buckets(results, counts, bounds, names=("low", "mid", "high")) if len(bounds) == 2 else []
    probe = _cached_probe(rows, features, {**PROBE_DEFAULTS, **settings.get("probe", {})}, folder / "probe.json")
    generation = features.meta.get("splits", {}).get("test", {}).get("generation", {})
    answered = features.generated_samples("test")
    table = {
        "dataset": dataset,
        "targets": features.data.targets,
        "data_checksum": samples_checksum(features.samples),
        "turns": {split: len(s) for split, s in features.samples.items()},
        "loader_skipped": dict(features.data.skipped),
        "empty_context_turns": {split: features.data.empty_context_turns(split) for split in features.samples},
        "generated_test_turns": len(answered),
        "generated_test_contexts": len({s.context for s in answered}),
        "test_dialogues": len({s.conv_id for s in test}),
        "zero_shot_mapped_share": generation.get("mapped_share"),  # at prepare, fuzzy matching
        "zero_shot_mapping": next((r.mapping for r in rows if r.mapping), None),  # the row's own matching
        "catalog": n_items,
        "llm_label_turns": _llm_label_turns(features, settings),
        "rows": {r.name: {"kind": r.kind, "train_turns": r.train_turns,
                          **{b: m for b, m in r.metrics.items() if b in ("valid", *BLOCKS)},
                          "test_by_dialogue": _by_dialogue(r, features),
                          "distinct_top10": distinct_top_items(r.scorer, test) if r.name in results else None}
                 for r in rows},
        "best_vs_best": _best_vs_best(rows, results, test),
        "matched_vs_best": _best_vs_best(rows, results, test, matched=True),
        "buckets": [b.as_dict() for b in buckets],
        "buckets_quantile": [b.as_dict() for b in quantile],
        "probe": probe,
        "paper_hr10": dict(settings.get("paper_hr10", {})),
    }
    write_json(folder / "table.json", table)
    atomic_write(folder / "table.md", lambda f: f.write(markdown(table, buckets_table(buckets),
                                                                 buckets_table(quantile) if quantile else "")))
    plot_buckets(table, folder / "buckets.png")
    return table


DIALOGUE_METRICS = ("hr@10", "ndcg@10", "hr@50")


def _pair_dialogues(result: CRSResult, samples: Sequence[CRSSample]) -> np.ndarray:
    """The dialogue (conv_id) of each of ``result``'s (turn, target) pairs, ``samples`` being those it ranked."""
    return np.array([samples[int(i)].conv_id for i in result.pairs[:, 0]])


def _by_dialogue(row: Row, features: LLMFeatures) -> dict[str, Any] | None:
    """The test block's means with SEs from a bootstrap over dialogues (:func:`lmrec.eval.stats.cluster_bootstrap`);
    the zero-shot row is scored on the answered turns."""
    result = row.results.get("test")
    if result is None:
        return None
    samples = features.generated_samples("test") if row.name == ZERO_SHOT_ROW else features.samples["test"]
    dialogues = _pair_dialogues(result, samples)
    return {m: cluster_bootstrap(result.per_pair[m], dialogues).as_dict() for m in DIALOGUE_METRICS}


def _llm_label_turns(features: LLMFeatures, settings: Mapping[str, Any]) -> dict[str, int]:
    """How many training turns the LLM answered, and how many of those answers name a catalog item under the
    ``[run.reindex]`` title match (the turns an LLM-labelled reindex row learns from)."""
    answered = features.generated_samples("train")
    match = settings.get("reindex", {}).get("title_match", "fuzzy")
    labelled = features.llm_label_samples("train", label_source="llm", title_match=match) if answered else []
    return {"answered": len(answered), "labelled": len(labelled)}


def distinct_top_items(scorer: Scorer, samples: Sequence[CRSSample], k: int = 10, batch_size: int = 64) -> int:
    """How many different items appear in the top-k lists of all ``samples`` (a constant ranking gives k)."""
    seen: set[int] = set()
    for start in range(0, len(samples), batch_size):
        with torch.no_grad():
            seen.update(torch.topk(scorer(samples[start : start + batch_size]), k, dim=1).indices.flatten().tolist())
    return len(seen)


def samples_checksum(samples: Mapping[str, Sequence[CRSSample]]) -> str:
    """16 hex digits of SHA-256 over every prepared sample's split, context, mentioned and target items."""
    digest = hashlib.sha256()
    for split in sorted(samples):
        for s in samples[split]:
            digest.update(json.dumps([split, s.context, list(s.mentioned), list(s.targets)]).encode())
    return digest.hexdigest()[:16]


def _best_vs_best(rows: Sequence[Row], results: Mapping[str, CRSResult], test: Sequence[CRSSample],
                  matched: bool = False) -> dict[str, Any] | None:
    """The LLM row and the baseline row with the best VALIDATION HR@10, paired on test HR@10 (LLM − baseline;
    ``diff_by_dialogue``: its SE from a bootstrap over the ``test`` dialogues).
    ``matched``: only pairs trained on as many training turns (the same prepared turns; a row that also learned
    from item prompts counts them, so no baseline matches it): the best LLM row among those a baseline matches."""
    def scored(kind: str, turns: set[int | None] | None = None) -> list[Row]:
        return [r for r in rows if r.kind == kind and r.name in results and "valid" in r.results
                and (turns is None or r.train_turns in turns)]

    def best(kind: str, turns: set[int | None] | None = None) -> Row | None:
        return max(scored(kind, turns), key=_valid_hr, default=None)

    baseline_turns = {r.train_turns for r in scored("baseline") if r.train_turns is not None}
    llm = best("llm", baseline_turns if matched else None)
    base = best("baseline", {llm.train_turns} if matched and llm is not None else None)
    if llm is None or base is None:
        return None
    a, b = results[base.name].per_pair["hr@10"], results[llm.name].per_pair["hr@10"]
    paired = paired_test(a, b)
    by_dialogue = cluster_bootstrap(b - a, _pair_dialogues(results[llm.name], test))
    return {"llm": llm.name, "baseline": base.name, "diff": paired.diff.as_dict(), "t_pvalue": paired.t_pvalue,
            "wilcoxon_pvalue": paired.wilcoxon_pvalue, "diff_by_dialogue": by_dialogue.as_dict()}


BEST_REINDEXED = "best reindexed"  # a probe model: the reindex row with the best validation HR@10


def _probe_models(rows: Sequence[Row], names: Sequence[str]) -> list[Row]:
    """The rows the probe settings name (``"best reindexed"`` among them), each once."""
    by_name = {r.name: r for r in rows}
    if any(r.reindex for r in rows):
        by_name[BEST_REINDEXED] = best_reindexed(rows)
    unknown = [m for m in names if m not in by_name]
    if unknown:
        raise LmrecError(f"probe models {unknown} are not rows of the table; rows: {list(by_name)}")
    return list({by_name[m].name: by_name[m] for m in names}.values())


def _cached_probe(rows: Sequence[Row], features: LLMFeatures, settings: Mapping[str, Any],
                  path: Path) -> list[dict[str, Any]]:
    """:func:`_probe`, kept in ``path`` with what it was computed from (the probe settings, the dataset, the test
    turns and every probed row's :func:`run_identity`) and reused while that is the same; otherwise computed again
    and ``path`` replaced (a derived result: it runs the LLM on the rewritten contexts and scores them again, minutes
    on a CPU)."""
    models = _probe_models(rows, settings["models"])
    if any(row.run is None for row in models):
        return _probe(models, features, settings)
    spec = normalised({"settings": dict(settings), "data": features.data.checksum(),
                       "samples": samples_checksum(features.samples),
                       "models": {row.name: run_identity(*row.run) for row in models}})
    saved = json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}
    if saved.get("spec") != spec:
        saved = {"spec": spec, "probe": _probe(models, features, settings)}
        write_json(path, saved)
    return saved["probe"]


def _probe(models: Sequence[Row], features: LLMFeatures, settings: Mapping[str, Any]) -> list[dict[str, Any]]:
    samples = features.samples["test"]
    if settings["max_samples"]:
        keep = np.random.default_rng(settings["seed"]).permutation(len(samples))[: settings["max_samples"]]
        samples = [samples[i] for i in sorted(keep)]
    out = []
    for row in models:
        for mode in settings["modes"]:
            result = probe_delta(row.scorer, samples, features.data.catalog, mode, settings["seed"])
            out.append({"model": row.name, "mode": mode, "samples": len(samples), **result.as_dict()})
    return out


def _cell(block: Mapping[str, Any] | None, metric: str) -> str:
    if not block or metric not in block:
        return "–"
    return estimate_cell(block[metric])


def _paper_key(paper: Mapping[str, str], name: str) -> str | None:
    """The ``paper_hr10`` key of the row ``name``: the name itself, or a baseline's name in the config (its row's name
    adds the turns it trained on, "fism (2061 train turns)")."""
    return next((key for key in (name, name.split(" (")[0]) if key in paper), None)


def _mapping_sentence(table: Mapping[str, Any]) -> str:
    """How the zero-shot LLM's titles mapped to the catalog: with the row's own matching (``title_match``), and the
    fuzzy share of prepare beside it when the row matched otherwise."""
    mapping, fuzzy = table.get("zero_shot_mapping"), table.get("zero_shot_mapped_share")
    fuzzy_text = "" if fuzzy is None else f"{100 * fuzzy:.1f}% of its titles map with fuzz.ratio ≥ 80"
    if not mapping:
        return f" Zero-shot LLM: {fuzzy_text}." if fuzzy_text else ""
    text = (f" Zero-shot LLM ({ZERO_SHOT_ROW!r} row, generated turns only; its HR@10 by dialogue bootstraps their "
            f"dialogues): {mapping['titles_per_turn']:.1f} titles per answer, "
            f"{100 * mapping['mapped_share']:.1f}% mapped to a catalog item by {mapping['title_match']} matching")
    return text + (f" ({fuzzy_text})." if fuzzy_text and mapping["title_match"] != "fuzzy" else ".")


def _label_turns_sentence(counts: Mapping[str, int] | None) -> str:
    if not counts or not counts["answered"]:
        return ""
    return (f" The LLM answered {counts['answered']} training turns; {counts['labelled']} of the answers "
            f"({100 * counts['labelled'] / counts['answered']:.1f}%) name a catalog item (the turns a reindex row "
            "on the LLM's labels learns from).")


def _generated_test(table: Mapping[str, Any]) -> str:
    """How many test turns have an LLM answer; an answer is keyed by its context, and turns can share a context."""
    turns, contexts = table["generated_test_turns"], table.get("generated_test_contexts")
    if contexts is None or contexts == turns:
        return f"the LLM answered {turns} test turns"
    return f"the LLM answered {contexts} distinct test contexts, the context of {turns} test turns"


def markdown(table: Mapping[str, Any], buckets_md: str, quantile_md: str = "") -> str:
    turns = table["turns"]
    first = next(row for name, row in table["rows"].items() if name != ZERO_SHOT_ROW)
    paper = table.get("paper_hr10") or {}
    lines = [
        f"Dataset {table['dataset']}: {table['catalog']} items; prepared turns "
        + ", ".join(f"{k} {v}" for k, v in turns.items())
        + f"; {_generated_test(table)}. Full ranking, ties by expectation, "
          "mean ± SE over (turn, target) pairs"
        + (f"; \"by dialogue\": the SE of a bootstrap over the {table['test_dialogues']} test dialogues (2,000 "
           "resamples; the pairs of one dialogue share its context)" if table.get("test_dialogues") else "")
        + ". The loader skipped: "
        + (", ".join(f"{n} {reason}" for reason, n in table.get("loader_skipped", {}).items()) or "nothing") + ". "
        + "Recommendations that open a conversation (nothing to condition on) are not turns: "
        + (", ".join(f"{split} {n}" for split, n in table.get("empty_context_turns", {}).items()) or "none") + "."
        + _mapping_sentence(table)
        + _label_turns_sentence(table.get("llm_label_turns")),
        "",
        f"| model | train turns | HR@10 ({first['test']['hr@10']['n']} pairs) | HR@10 by dialogue "
        + ("| paper HR@10 " if paper else "")
        + "| NDCG@10 | HR@50 | HR@10 new, mentioned removed | HR@10 on the generated turns "
          "| distinct items in the top-10 lists |",
        "|---|---|---|---|" + ("---|" if paper else "") + "---|---|---|---|---|",
    ]
    for name, row in table["rows"].items():
        test = row.get("test") if name != ZERO_SHOT_ROW else None
        generated = row.get("test_generated") or (row.get("test") if name == ZERO_SHOT_ROW else None)
        by_dialogue = row.get("test_by_dialogue")  # the zero-shot row's: over the dialogues of its generated turns
        paper_cell = f"{paper.get(_paper_key(paper, name), '–')} | " if paper else ""
        lines.append(f"| {name} | {row.get('train_turns') if row.get('train_turns') is not None else '–'} | "
                     f"{_cell(test, 'hr@10')} | {_cell(by_dialogue, 'hr@10')} | " + paper_cell
                     + f"{_cell(test, 'ndcg@10')} | "
                     f"{_cell(test, 'hr@50')} | {_cell(row.get('test_new') if test else None, 'hr@10')} | "
                     f"{_cell(generated, 'hr@10')} | {row.get('distinct_top10') or '–'} |")
    unmatched = sorted(set(paper) - {_paper_key(paper, name) for name in table["rows"]})
    if unmatched:
        lines += ["", "Paper rows that name no row of this table: " + ", ".join(unmatched) + "."]
    for key, what in (("matched_vs_best", "trained on the same turns"), ("best_vs_best", "of all")):
        best = table.get(key)
        if best:
            by_dialogue = best.get("diff_by_dialogue")
            lines += ["", f"Best LLM row on validation ({best['llm']}) − best baseline {what} on validation "
                          f"({best['baseline']}), test HR@10: {estimate_cell(best['diff'], signed=True)} "
                          f"(paired t p = {best['t_pvalue']:.2g}, Wilcoxon p = {best['wilcoxon_pvalue']:.2g})"
                          + (f"; SE by dialogue {by_dialogue['se']:.4f}" if by_dialogue else "") + "."]
    lines += ["", "Popularity buckets (training mentions), HR@10 on the test pairs whose target is in the bucket:", "",
              buckets_md]
    if quantile_md:
        lines += ["", "The same with bucket bounds at the terciles of the test targets' training mentions (about a "
                      "third of the test pairs each):", "", quantile_md]
    if table["probe"]:
        lines += ["", "Masking probe: the mentioned titles in the context masked or replaced by random titles "
                      "(item lists unchanged); HR@10 after − before, paired over pairs; the target's rank after − "
                      "before (positive: it fell); the share of each top-10 list that stays:", "",
                  "| model | rewrite | turns (contexts changed) | HR@10 before | after | Δ | p (t) | Δ rank | "
                  "median rank before → after | top-10 kept |", "|---|---|---|---|---|---|---|---|---|---|"]
        for p in table["probe"]:
            lines.append(f"| {p['model']} | {p['mode']} | {p['samples']} ({p['changed_samples']}) | "
                         f"{p['before']['mean']:.4f} | {p['after']['mean']:.4f} | "
                         f"{estimate_cell(p['delta'], signed=True)} | {p['t_pvalue']:.2g} | "
                         f"{estimate_cell(p['rank_shift'], signed=True)} | {p['median_rank_before']:.0f} → "
                         f"{p['median_rank_after']:.0f} | {estimate_cell(p['top_overlap'])} |")
    return "\n".join(lines) + "\n"


def plot_buckets(table: Mapping[str, Any], path: Path) -> None:
    """HR@10 ± SE per model (a horizontal bar each, baselines grey, LLM rows blue), one panel per non-empty
    popularity bucket: the fixed buckets, then the quantile ones."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [b for b in (*table["buckets"], *table.get("buckets_quantile", [])) if b["pairs"]]
    models = list(panels[0]["hr"]) if panels else []
    colour = {name: "#1f77b4" if row["kind"] == "llm" else "#9e9e9e" for name, row in table["rows"].items()}
    fig, axes = plt.subplots(1, max(1, len(panels)), sharey=True, squeeze=False,
                             figsize=(2.4 * max(1, len(panels)) + 3.2, 0.28 * len(models) + 1.4))
    y = np.arange(len(models))[::-1]
    for ax, bucket in zip(axes[0], panels, strict=False):
        hr = [bucket["hr"][m] for m in models]
        ax.barh(y, [h["mean"] for h in hr], xerr=[h["se"] for h in hr], capsize=2,
                color=[colour.get(m, "#1f77b4") for m in models])
        ax.set_title(f"{bucket['bucket']}\n{bucket['pairs']} pairs", fontsize=9)
        ax.set_xlabel("HR@10")
        ax.set_xlim(left=0)
    axes[0][0].set_yticks(y, models, fontsize=8)
    fig.suptitle(f"{table['dataset']}: test HR@10 by the target's training popularity "
                 "(fixed buckets, then terciles; grey: baselines)", fontsize=10)
    fig.tight_layout()
    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=110), binary=True)
    plt.close(fig)


__all__ = ["Row", "fit_baselines", "llm_rows", "markdown", "plot_buckets", "reindex_variants", "run_rta_table"]
