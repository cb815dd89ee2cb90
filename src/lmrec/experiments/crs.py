"""The RTA pipeline: prepare (LLM features) → zero-shot → reindex → adapt → evaluate, one run folder per step.

Folders::

    prepare DIR      features.pt, generations-<split>.jsonl, prepare.json      (lmrec.models.crs.rta.features)
    run RUN          config.json (kind, features folder, settings, timings), model.pt (reindex / adapt),
                     log.jsonl (one line per epoch), metrics.json

``metrics.json`` has the form of ``lmrec train``: ``{"valid": {...}, "test": {"hr@10": {"mean", "se", "n"}, ...},
"test_new": {...}}`` where ``test_new`` keeps only targets not mentioned before and removes the mentioned items from
the ranking; with ``"test_generated"`` (and ``"test_generated_new"``) added when the test turns the LLM answered are a
subsample of the encoded ones (the zero-shot baseline is scored on those; the block makes the comparison paired).
Evaluation: :func:`lmrec.eval.crs.evaluate_crs` over the dataset's whole catalog, per (turn, target) pair, ties
broken by expectation (a constant scorer gets the random level), K ∈ {1, 5, 10, 50}.
"""

from __future__ import annotations

import dataclasses
import json
import re
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import torch

from lmrec.data.catalog import ItemCatalog
from lmrec.data.conversations import CRSData, CRSSample, Turn, render_turn
from lmrec.errors import LmrecError
from lmrec.eval.crs import CRSResult, evaluate_crs
from lmrec.io import atomic_write, write_json
from lmrec.models.crs.rta.adapt import AdaptConfig, RTAAdapt
from lmrec.models.crs.rta.features import ContextFeatures, LLMFeatures, PrepareConfig, load_features, prepare_features
from lmrec.models.crs.rta.reindex import ReindexConfig, RTAReindex
from lmrec.models.crs.zero_shot_llm import ZeroShotLLM

__all__ = ["CRS_DATASETS", "CRSRun", "MentionFinder", "conversation_sample", "crs_metrics", "crs_results",
           "evaluate_crs_model", "load_crs_dataset", "load_crs_run", "parse_conversation", "run_adapt", "run_prepare",
           "run_reindex", "run_zero_shot"]

KS = (1, 5, 10, 50)


def _load_inspired(folder: Path) -> CRSData:
    from lmrec.data.loaders.inspired import load_inspired

    return load_inspired(folder)


def _load_redial(folder: Path) -> CRSData:
    from lmrec.data.loaders.redial import load_redial

    return load_redial(folder)


#: name -> (folder under a data root, loader). INSPIRED: the UniCRS 801/99/99 split; ReDIAL: the official test split,
#: train/valid from the 901 training conversations available (see ``lmrec.data.loaders.redial.load_redial``).
CRS_DATASETS: dict[str, tuple[str, Callable[[Path], CRSData]]] = {
    "inspired": ("inspired", _load_inspired),
    "redial": ("redial", _load_redial),
}


def load_crs_dataset(name: str, data_dir: str | Path | None = None) -> CRSData:
    """A conversational dataset by name, found under ``data_dir``, ``$LMREC_DATA`` (see ``lmrec.data.registry``)."""
    from lmrec.data.registry import DatasetNotFoundError, data_roots

    if name not in CRS_DATASETS:
        raise LmrecError(f"unknown CRS dataset {name!r}: known names are {', '.join(CRS_DATASETS)}")
    folder_name, loader = CRS_DATASETS[name]
    searched = []
    for root in data_roots(data_dir):
        folder = root / folder_name
        if folder.is_dir():
            return loader(folder)
        searched.append(str(folder))
    raise DatasetNotFoundError(f"dataset {name!r} not found; searched {', '.join(searched)} "
                               "(point LMREC_DATA at the folder that holds it)")


# -- evaluation ----------------------------------------------------------------------------------------------
def evaluate_crs_model(scorer: Callable[[Sequence[CRSSample]], torch.Tensor], samples: Sequence[CRSSample],
                       n_items: int, new_too: bool = True) -> dict[str, CRSResult]:
    """``{"all": ..., "new": ...}``: every (turn, target) pair over the full catalog; new targets only with the
    mentioned items removed from the ranking."""
    out = {"all": evaluate_crs(scorer, samples, n_items, ks=KS)}
    if new_too and any(any(s.target_is_new) for s in samples):
        out["new"] = evaluate_crs(scorer, samples, n_items, ks=KS, new_only=True, remove_mentioned=True)
    return out


def crs_results(scorer: Callable[[Sequence[CRSSample]], torch.Tensor], features: LLMFeatures,
                generated_only: bool = False) -> dict[str, CRSResult]:
    """A model's evaluations on the prepared turns, keyed like the metrics.json blocks (see the module docstring)."""
    n = features.n_items
    pick = features.generated_samples if generated_only else (lambda split: features.samples.get(split, []))
    out: dict[str, CRSResult] = {}
    valid = pick("valid")
    if valid:
        out["valid"] = evaluate_crs(scorer, valid, n, ks=KS)
    test = pick("test")
    if not test:
        raise LmrecError(f"{features.folder}: no prepared test turns{' with generations' if generated_only else ''}")
    blocks = [("test", test)]
    generated = features.generated_samples("test")
    if not generated_only and generated and len(generated) < len(test):
        blocks.append(("test_generated", generated))
    for name, samples in blocks:
        results = evaluate_crs_model(scorer, samples, n)
        out[name] = results["all"]
        if "new" in results:
            out[f"{name}_new"] = results["new"]
    return out


def crs_metrics(scorer: Callable[[Sequence[CRSSample]], torch.Tensor], features: LLMFeatures,
                generated_only: bool = False) -> dict[str, Any]:
    """The metrics.json blocks of a model: :func:`crs_results` as mean / SE / n."""
    return {name: result.to_dict() for name, result in crs_results(scorer, features, generated_only).items()}


# -- features and runs -------------------------------------------------------------------------------------
def _prepare_config(features: LLMFeatures) -> PrepareConfig:
    return PrepareConfig(**{k: (tuple(v) if k == "generate_splits" else v)
                            for k, v in features.meta["config"].items() if k in PrepareConfig.__dataclass_fields__})


def context_features(features: LLMFeatures, cache_root: str | Path | None = None) -> ContextFeatures:
    """q / completion lookup over the prepared turns, with the prepare LLM loaded lazily for new contexts."""
    from lmrec.llm import CausalLM
    from lmrec.text.cache import EmbeddingCache

    cfg = _prepare_config(features)
    return ContextFeatures(features.q_table(), features.completions(),
                           lm_loader=lambda: CausalLM.load(cfg.llm, dtype=cfg.dtype), config=cfg,
                           cache=EmbeddingCache(cache_root) if cache_root else None)


def run_prepare(dataset: str, out: Path, config: PrepareConfig | None = None, data_dir: str | Path | None = None,
                cache_root: str | Path | None = None, progress: bool = True) -> LLMFeatures:
    """Load the dataset and the LLM, then :func:`prepare_features` into ``out``."""
    from lmrec.llm import CausalLM
    from lmrec.text.cache import EmbeddingCache

    cfg = config or PrepareConfig()
    data = load_crs_dataset(dataset, data_dir)
    start = time.perf_counter()
    lm = CausalLM.load(cfg.llm, dtype=cfg.dtype)
    load_seconds = time.perf_counter() - start
    features = prepare_features(data, lm, out, cfg, EmbeddingCache(cache_root) if cache_root else None, progress)
    features.meta["llm_load_seconds"] = load_seconds
    features.meta["loader_skipped"] = dict(data.skipped)
    features.meta["torch_threads"] = torch.get_num_threads()
    write_json(Path(out) / "prepare.json", features.meta)
    return features


def _run_config(kind: str, features: LLMFeatures, **extra: Any) -> dict[str, Any]:
    from lmrec.experiments.runner import versions

    return {"kind": kind, "dataset": features.data.name, "features": str(features.folder.resolve()),
            "llm": features.meta.get("llm"), "llm_identity": features.identity, **extra,
            "evaluation": {"ranking": f"full catalog ({features.n_items} items)", "ties": "expected",
                           "pairs": "one per (turn, target)", "ks": list(KS),
                           "test_new": "new targets only, mentioned items removed from the ranking"},
            "versions": versions()}


def _open(features_dir: Path, data_dir: str | Path | None) -> LLMFeatures:
    meta_path = Path(features_dir) / "prepare.json"
    if not meta_path.exists():
        raise LmrecError(f"{features_dir}: not a prepared folder (no prepare.json); run `lmrec crs prepare` first")
    meta = json.loads(meta_path.read_text(encoding="utf-8"))
    return load_features(features_dir, load_crs_dataset(meta["dataset"], data_dir))


def run_zero_shot(features_dir: Path, out: Path, data_dir: str | Path | None = None) -> dict[str, Any]:
    """Score the zero-shot LLM on the prepared turns that have generations; writes config.json and metrics.json."""
    features = _open(features_dir, data_dir)
    context = context_features(features)
    model = ZeroShotLLM(features.data.catalog.titles, context.completions, n_titles=_prepare_config(features).n_titles)
    metrics = crs_metrics(model.score, features, generated_only=True)
    config = _run_config("zero_shot_llm", features, mapping=model.stats())
    _write_run(out, config, metrics)
    return metrics


def run_reindex(features_dir: Path, out: Path, config: ReindexConfig | None = None,
                data_dir: str | Path | None = None) -> dict[str, Any]:
    """Train the aggregator on the LLM's own answers (``config.label_source``), save, evaluate."""
    cfg = config or ReindexConfig()
    features = _open(features_dir, data_dir)
    context = context_features(features)
    train = features.llm_label_samples("train", cfg.top_k, cfg.label_source)
    valid = features.llm_label_samples("valid", cfg.top_k, cfg.label_source) if "valid" in features.samples else []
    model = RTAReindex(features.tokens, context.q, cfg)
    out.mkdir(parents=True, exist_ok=True)
    (out / "log.jsonl").unlink(missing_ok=True)
    start = time.perf_counter()
    log = model.fit(features.data, train, valid, log_path=out / "log.jsonl")
    fit_seconds = time.perf_counter() - start
    metrics = crs_metrics(model.score, features)
    q = context.q([s.context for s in features.samples["test"][:64]])
    scores = q @ model.item_table().T
    run_config = _run_config(
        "rta_reindex", features, reindex_config=dataclasses.asdict(cfg), fit_seconds=fit_seconds,
        best_epoch=log.best_epoch, best_valid=log.best_score if log.records else None, stopped=log.stopped,
        label_pairs={"train": sum(len(s.targets) for s in train), "valid": sum(len(s.targets) for s in valid),
                     "train_turns": len(train), "valid_turns": len(valid)},
        parameters=sum(p.numel() for p in model.indexer.aggregator.parameters()),
        score_scale={"q_norm": float(q.norm(dim=1).mean()), "score_std": float(scores.std(dim=1).mean()),
                     "score_range": float((scores.max(1).values - scores.min(1).values).mean())},
    )
    atomic_write(out / "model.pt", lambda f: torch.save(model.state(), f), binary=True)
    _write_run(out, run_config, metrics)
    return metrics


def run_adapt(reindex_run: Path, out: Path, config: AdaptConfig | None = None,
              data_dir: str | Path | None = None) -> dict[str, Any]:
    """Adapt a reindex run (bias terms or RecSys gating) on the ground-truth training pairs; save, evaluate."""
    cfg = config or AdaptConfig()
    base = _read_config(reindex_run)
    if base["kind"] != "rta_reindex":
        raise LmrecError(f"{reindex_run} is a {base['kind']} run; adapt needs a reindex run (`lmrec crs reindex`)")
    features = _open(Path(base["features"]), data_dir)
    context = context_features(features)
    reindexed = _load_reindex(reindex_run, base, features, context)
    model = RTAAdapt(reindexed.indexer, context.q, cfg)
    out.mkdir(parents=True, exist_ok=True)
    (out / "log.jsonl").unlink(missing_ok=True)
    start = time.perf_counter()
    log = model.fit(features.data, features.samples["train"], features.samples.get("valid", []),
                    log_path=out / "log.jsonl")
    fit_seconds = time.perf_counter() - start
    metrics = crs_metrics(model.score, features)
    run_config = _run_config(
        "rta_adapt", features, reindex_run=str(Path(reindex_run).resolve()), adapt_config=dataclasses.asdict(cfg),
        lr=cfg.resolved_lr, fit_seconds=fit_seconds, best_epoch=log.best_epoch, stopped=log.stopped,
        negatives="full softmax" if cfg.n_negatives is None or cfg.n_negatives >= features.n_items - 1
        else f"{cfg.n_negatives} shared per batch, uniform without replacement, collisions masked",
        train_pairs=sum(len(s.targets) for s in features.samples["train"]), learned=model.diagnostics(),
    )
    atomic_write(out / "model.pt", lambda f: torch.save(model.state(), f), binary=True)
    _write_run(out, run_config, metrics)
    return metrics


def _write_run(out: Path, config: dict[str, Any], metrics: dict[str, Any]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "config.json", config)
    write_json(out / "metrics.json", metrics)


def _read_config(run: Path) -> dict[str, Any]:
    path = Path(run) / "config.json"
    if not path.exists():
        raise LmrecError(f"{run}: not a CRS run folder (no config.json)")
    return json.loads(path.read_text(encoding="utf-8"))


def _load_reindex(run: Path, config: dict[str, Any], features: LLMFeatures, context: ContextFeatures) -> RTAReindex:
    cfg = ReindexConfig(**config["reindex_config"])
    model = RTAReindex(features.tokens, context.q, cfg)
    model.load_state(torch.load(Path(run) / "model.pt", map_location="cpu", weights_only=True))
    return model


@dataclasses.dataclass
class CRSRun:
    """A loaded run: its scorer, dataset, prepared features, context source and config."""

    model: Any
    data: CRSData
    features: LLMFeatures
    context: ContextFeatures
    config: dict[str, Any]

    @property
    def catalog(self) -> ItemCatalog:
        return self.data.catalog


def load_crs_run(run: Path, data_dir: str | Path | None = None) -> CRSRun:
    """Rebuild the model of a run folder (zero-shot, reindex or adapt) for evaluation and serving."""
    config = _read_config(run)
    features = _open(Path(config["features"]), data_dir)
    context = context_features(features)
    kind = config["kind"]
    if kind == "zero_shot_llm":
        model: Any = ZeroShotLLM(features.data.catalog.titles, context.completions,
                                 n_titles=_prepare_config(features).n_titles)
    elif kind == "rta_reindex":
        model = _load_reindex(run, config, features, context)
    elif kind == "rta_adapt":
        base_path = Path(config["reindex_run"])
        reindexed = _load_reindex(base_path, _read_config(base_path), features, context)
        model = RTAAdapt(reindexed.indexer, context.q, AdaptConfig(**config["adapt_config"]))
        model.load_state(torch.load(Path(run) / "model.pt", map_location="cpu", weights_only=True))
    else:
        raise LmrecError(f"{run}: unknown run kind {kind!r}")
    return CRSRun(model, features.data, features, context, config)


def evaluate_run(run: Path, data_dir: str | Path | None = None) -> dict[str, Any]:
    """Recompute a run's metrics (same turns as when it was made); rewrites its metrics.json."""
    loaded = load_crs_run(run, data_dir)
    zero_shot = loaded.config["kind"] == "zero_shot_llm"
    metrics = crs_metrics(loaded.model.score, loaded.features, generated_only=zero_shot)
    write_json(Path(run) / "metrics.json", metrics)
    return metrics


# -- conversations typed by a user ---------------------------------------------------------------------------
_LINE = re.compile(r"^\s*(user|system)\s*:(.*)$", re.IGNORECASE)
_WORDS = re.compile(r"\w+")
_YEAR = re.compile(r"\s*\((\d{4})?\)\s*$")


def parse_conversation(lines: Iterable[str], source: str = "<conversation>") -> list[Turn]:
    """Turns of a conversation written one utterance per line, ``User: ...`` or ``System: ...`` (case-insensitive);
    blank lines are skipped. A line without that prefix, or with nothing after it, raises LmrecError naming the line;
    so does a conversation with no turn."""
    turns: list[Turn] = []
    for line_no, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        match = _LINE.match(line)
        if match is None:
            got = line.strip()[:60]
            raise LmrecError(f"{source}, line {line_no}: expected 'User: ...' or 'System: ...', got {got!r}")
        text = " ".join(match.group(2).split())
        if not text:
            raise LmrecError(f"{source}, line {line_no}: nothing after '{match.group(1)}:'")
        turns.append(Turn(match.group(1).lower(), text))  # type: ignore[arg-type]
    if not turns:
        raise LmrecError(f"{source}: the conversation is empty; write at least one line 'User: ...'")
    return turns


class MentionFinder:
    """Catalog items named in free text, matched on words (punctuation ignored), longest match first, left to right:
    ``"Title (Year)"`` in any case, or the bare title when it has two or more words and is written capitalized
    (first and last word start with a capital or a digit: "The Conjuring", not "a scary movie"). One-word bare
    titles ("Heat", "Up") are too often plain words and need their year."""

    def __init__(self, titles: Sequence[str]):
        self.keys: dict[tuple[str, ...], tuple[int, bool]] = {}  # words -> (item, must be capitalized)
        for item, title in enumerate(titles):
            title = " ".join(title.split())
            words = tuple(_WORDS.findall(title.lower()))
            bare = tuple(_WORDS.findall(_YEAR.sub("", title).lower()))
            if words:
                self.keys.setdefault(words, (item, words == bare))
            if len(bare) >= 2:
                self.keys.setdefault(bare, (item, True))
        self.longest = max((len(k) for k in self.keys), default=0)

    def find(self, text: str) -> list[int]:
        original = _WORDS.findall(text)
        words = [w.lower() for w in original]
        found: dict[int, None] = {}
        i = 0
        while i < len(words):
            for n in range(min(self.longest, len(words) - i), 0, -1):
                hit = self.keys.get(tuple(words[i : i + n]))
                written = _capitalized(original[i]) and _capitalized(original[i + n - 1])
                if hit is not None and (not hit[1] or written):
                    found[hit[0]] = None
                    i += n
                    break
            else:
                i += 1
        return list(found)


def _capitalized(word: str) -> bool:
    return word[:1].isupper() or word[:1].isdigit()


def conversation_sample(turns: Sequence[Turn], finder: MentionFinder) -> CRSSample:
    """A sample for the next system turn: context = the rendered turns, mentioned = the items named in them."""
    mentioned: dict[int, None] = {}
    for turn in turns:
        mentioned.update(dict.fromkeys(finder.find(turn.text)))
    context = "\n".join(render_turn(t) for t in turns)
    return CRSSample("user", len(turns), context, list(mentioned), [], [])


def recommend(run: CRSRun, sample: CRSSample, k: int = 10, exclude_mentioned: bool = True) -> list[tuple[int, float]]:
    """Top-``k`` (item, score) for one sample, best first; mentioned items left out unless asked."""
    scores = run.model.score([sample])[0].clone()
    if exclude_mentioned and sample.mentioned:
        scores[torch.as_tensor(sample.mentioned)] = -torch.inf
    k = min(k, int(torch.isfinite(scores).sum()))
    top = torch.topk(scores, k)
    return list(zip(top.indices.tolist(), top.values.tolist()))
