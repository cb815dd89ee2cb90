"""Zero-shot transfer of AlphaRec (paper §2.6): train on one or several source datasets mixed, apply to an
unseen target without any training there.

Mixed training ("mix" in the official code): the sources become ONE dataset whose users and items are the
concatenation of the sources' (disjoint index ranges, so the training graph is block-diagonal and the
catalog is the sources' catalogs one after the other). AlphaRec is trained on it unchanged except that
negatives are drawn within the user's own domain. Validation Recall@20 = mean over sources of the
per-source valid Recall@20, each source ranked only over its own items (per-domain evaluators).

Zero-shot application on a target T (no parameter sees T):
    z_i = LM(title_i) for T's items, z_u = mean of z_i over u's TRAINING items in T,
    E = LightGCN(MLP([z_users; z_items])) on T's TRAINING graph (frozen MLP), s(u, i) = cos(e_u, e_i).
Evaluated on T's test split (train + valid masked) beside Pop and LightGCN trained on T's train split and a
Random scorer (uniform noise).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch

from lmrec import clock
from lmrec.data.catalog import ItemCatalog
from lmrec.data.interactions import SplitData
from lmrec.data.registry import DataRef
from lmrec.data.titles import title_words
from lmrec.environment import versions
from lmrec.eval.model import REPORT_KS, REPORT_METRICS
from lmrec.eval.ranking import RankingResult, Scorer, evaluate
from lmrec.eval.report import epochs_summary, estimate_cell
from lmrec.eval.stats import paired_test
from lmrec.io import atomic_write, write_json
from lmrec.models.cf.alpharec import AlphaRec, AlphaRecConfig
from lmrec.models.nn.graph import normalized_adjacency
from lmrec.models.nn.lm_inputs import user_profiles
from lmrec.models.queries import user_scorer
from lmrec.run import fit
from lmrec.settings import as_dict, build
from lmrec.tensorfile import save_tensors, tensor_dict
from lmrec.train import TrainConfig, Trainer, TrainLog
from lmrec.train.trainer import CHECKPOINT_FILE

_TRAILING_YEAR = re.compile(r" \d{4}$")
FeatureFn = Callable[[SplitData, AlphaRecConfig], np.ndarray]  # dataset -> (n_items, d) LM item features
COLUMNS = ("recall@20", "ndcg@20", "hr@20")


# -- the mixed dataset ------------------------------------------------------------------------------------
@dataclass
class MixedData:
    """Several datasets as one: source s owns users [user_offsets[s], user_offsets[s+1]) and items
    [item_offsets[s], item_offsets[s+1]) of ``data``; every split is block-diagonal."""

    data: SplitData
    sources: list[SplitData]
    user_offsets: np.ndarray  # (n_sources + 1,)
    item_offsets: np.ndarray  # (n_sources + 1,)

    @property
    def user_domain(self) -> np.ndarray:
        """(n_users,) source index of every union user."""
        return np.repeat(np.arange(len(self.sources)), np.diff(self.user_offsets))

    @property
    def item_domain(self) -> np.ndarray:
        """(n_items,) source index of every union item."""
        return np.repeat(np.arange(len(self.sources)), np.diff(self.item_offsets))

    def source_scorer(self, scorer: Scorer, s: int) -> Scorer:
        """Scores of source ``s``'s users over source ``s``'s items only (its per-domain evaluator)."""
        u0, i0, i1 = int(self.user_offsets[s]), int(self.item_offsets[s]), int(self.item_offsets[s + 1])
        return lambda users: scorer(np.asarray(users) + u0)[:, i0:i1]


def mix_datasets(sources: Sequence[SplitData], name: str | None = None) -> MixedData:
    """Concatenate users and items of ``sources`` (ids prefixed ``"<source name>:"``), block-diagonal splits.

    Only the catalog fields that every source has are kept.
    """
    if not sources:
        raise ValueError("zero-shot training needs at least one source dataset")
    names = [s.name for s in sources]
    if len(set(names)) != len(names):
        raise ValueError(f"source datasets must be distinct, got {names}")
    user_offsets = np.concatenate([[0], np.cumsum([s.n_users for s in sources])])
    item_offsets = np.concatenate([[0], np.cumsum([s.n_items for s in sources])])
    common = set.intersection(*(set(s.catalog.fields) for s in sources))
    catalog = ItemCatalog(
        ids=[f"{s.name}:{i}" for s in sources for i in s.catalog.ids],
        titles=[t for s in sources for t in s.catalog.titles],
        fields={f: [v for s in sources for v in s.catalog.fields[f]] for f in sorted(common)},
    )
    splits = {split: sp.block_diag([s.split(split) for s in sources], format="csr")
              for split in ("train", "valid", "test")}
    data = SplitData(
        name or "+".join(names), [f"{s.name}:{u}" for s in sources for u in s.user_ids], catalog,
        splits["train"], splits["valid"], splits["test"],
        "mix of " + "; ".join(f"{s.name} ({s.protocol})" for s in sources),
    )
    return MixedData(data, list(sources), user_offsets, item_offsets)


# -- AlphaRec with in-domain negatives ---------------------------------------------------------------------
class MixedAlphaRec(AlphaRec):
    """AlphaRec on a :class:`MixedData` union whose negatives come from the user's own domain only.

    ``shared`` negatives: one set of ``n_negatives`` items per domain per batch; row r keeps those of its
    own domain that are not its training items (the other domains' are masked out of the InfoNCE sum).
    ``per_row``: each row draws ``n_negatives`` items uniformly in its domain, excluding its training items.
    Everything else (MLP, propagation, loss, cosine scores) is AlphaRec's.
    """

    def __init__(self, mixed: MixedData, config: AlphaRecConfig | None = None,
                 features: np.ndarray | None = None, **overrides: Any):
        super().__init__(config, features=features, **overrides)
        self.mixed = mixed

    def batches(self, rng: np.random.Generator, batch_size: int) -> Iterator[tuple[torch.Tensor, ...]]:
        n_neg, n = self.config.n_negatives, self.data.train.nnz
        start, size = self.mixed.item_offsets[:-1], np.diff(self.mixed.item_offsets)
        user_domain, item_domain = self.mixed.user_domain, self.mixed.item_domain
        for _ in range(max(1, round(n / batch_size))):
            users, pos = self.sampler.user_positive(batch_size, rng)
            d = user_domain[users]
            if self.config.negatives == "shared":
                neg = np.concatenate([s + rng.integers(0, k, n_neg) for s, k in zip(start, size, strict=True)])
                rows = np.broadcast_to(neg, (len(users), len(neg)))
                keep = (item_domain[neg][None, :] == d[:, None]) & ~self.sampler.seen(users, rows)
                yield torch.from_numpy(users), torch.from_numpy(pos), torch.from_numpy(neg), torch.from_numpy(keep)
            else:
                yield torch.from_numpy(users), torch.from_numpy(pos), torch.from_numpy(
                    self._domain_negatives(users, start[d], size[d], n_neg, rng)), None

    def _domain_negatives(self, users: np.ndarray, start: np.ndarray, size: np.ndarray, n_neg: int,
                          rng: np.random.Generator, max_rounds: int = 100) -> np.ndarray:
        """(b, n_neg) items uniform in [start_r, start_r + size_r) minus user r's training items."""
        draw = lambda: start[:, None] + (rng.random((len(users), n_neg)) * size[:, None]).astype(np.int64)
        neg = draw()
        for _ in range(max_rounds):
            bad = self.sampler.seen(users, neg)
            if not bad.any():
                return neg
            neg[bad] = draw()[bad]
        raise ValueError("cannot sample in-domain negatives: some users have (almost) every item of their domain")


def mixed_validation(model: AlphaRec, mixed: MixedData, ks: Sequence[int] = (20,), seed: int = 0,
                     batch_size: int = 1024) -> dict[str, float]:
    """Per-source valid metrics (``"<source>/recall@20"``) and their unweighted mean over sources (``"recall@20"``)."""
    out: dict[str, float] = {}
    per_source: list[dict[str, float]] = []
    for s, source in enumerate(mixed.sources):
        ks_s = sorted({min(k, source.n_items) for k in ks})
        result = evaluate(mixed.source_scorer(user_scorer(model.score), s), source, "valid", ks=ks_s,
                          metrics=("recall", "ndcg", "hr"), seed=seed, batch_size=batch_size)
        values = {name: est.mean for name, est in result.summary().items()}
        per_source.append(values)
        out.update({f"{source.name}/{name}": v for name, v in values.items()})
    for name in per_source[0]:
        out[name] = float(np.mean([v[name] for v in per_source if name in v]))
    return out


def fit_mixed(model: MixedAlphaRec, train_config: TrainConfig, folder: Path | None = None) -> TrainLog:
    """:class:`lmrec.train.Trainer` with validation = mean over sources of the per-source valid
    ``train_config.metric`` (ranking the union as one dataset would weight sources by their users and rank
    every source's users over all domains). ``folder``: the per-epoch log and the checkpoint (resumed when there)."""
    cfg, mixed = model.train_config(train_config), model.mixed  # a TrainConfig as given, its precision resolved
    model.precision = cfg.precision
    seed = model.stream_seed(cfg)
    model.prepare(mixed.data, seed)
    validate = lambda: mixed_validation(model, mixed, sorted({cfg.metric_k, 20}), cfg.seed,  # noqa: E731
                                        cfg.eval_batch_size)
    return Trainer.in_folder(cfg, folder).run(model, validate, resume=True, seed=seed)


# -- zero-shot application -------------------------------------------------------------------------------
def lm_features(data: SplitData, config: AlphaRecConfig) -> np.ndarray:
    """LM embeddings of ``data``'s item texts (``config.text_fields`` with ``config.encoder``), cached."""
    from lmrec.inputs.prepare import item_text_features

    return item_text_features(data.catalog, config.encoder, config.text_fields)


def zero_shot_scorer(model: AlphaRec, target: SplitData, item_features: np.ndarray) -> Scorer:
    """s(u, i) = cos(e_u, e_i) with (e_u, e_i) = ``model.represent`` of the target's LM inputs on its TRAINING
    graph: z_i = item_features[i], z_u = mean of z_i over u's training items. No parameter is updated."""
    if item_features.shape[0] != target.n_items:
        raise ValueError(f"item features have {item_features.shape[0]} rows, the target has {target.n_items} items")
    z_items = torch.from_numpy(np.asarray(item_features, dtype=np.float32))
    z_users = torch.from_numpy(user_profiles(target.train, item_features))
    model.set_training(False)
    with torch.no_grad():
        users, items = model.represent(z_users, z_items, normalized_adjacency(target.train))
    return lambda u: users[torch.as_tensor(np.asarray(u), dtype=torch.long)] @ items.T


def random_scorer(n_items: int, seed: int = 0) -> Scorer:
    """Uniform noise in [0, 1) for every (user, item): the random-ranking reference."""
    generator = torch.Generator().manual_seed(seed)
    return lambda users: torch.rand(len(users), n_items, generator=generator)


# -- the experiment --------------------------------------------------------------------------------------
def run_zeroshot(
    sources: Sequence[SplitData],
    target: SplitData,
    out: Path,
    train_overrides: dict[str, Any] | None = None,
    model_overrides: dict[str, Any] | None = None,
    lightgcn_overrides: dict[str, Any] | None = None,
    features: FeatureFn | None = None,
    target_ref: DataRef | None = None,
    source_refs: Sequence[DataRef] | None = None,
    mixed_folder: Path | None = None,
) -> dict[str, Any]:
    """Train mixed AlphaRec on ``sources``, apply it zero-shot to ``target``, compare with target-side baselines.

    Writes ``out/metrics.json`` ({"valid", "test"} of the zero-shot model on the target), ``out/experiment.json``,
    ``out/model.safetensors`` (mixed training), ``out/comparison.{json,md}`` and the baseline run folders
    ``out/pop``, ``out/lightgcn``. The mixed training's ``log.jsonl`` and checkpoint go to ``mixed_folder``, kept
    there so that transfers from the same sources and settings train it once (the caller keeps one folder per
    sources and settings); without it to ``out``, the checkpoint removed when done. ``features(dataset, config)``
    gives item LM features (default: the config's encoder on the config's text fields). Returns the comparison.
    """
    if target.name in {s.name for s in sources}:
        raise ValueError(f"target {target.name!r} is one of the sources: zero-shot needs an unseen dataset")
    features = features or lm_features
    out.mkdir(parents=True, exist_ok=True)
    mixed = mix_datasets(sources)
    config = build(AlphaRecConfig, model_overrides, what="alpharec setting")
    source_features = np.concatenate([features(s, config) for s in sources])
    model = MixedAlphaRec(mixed, config, features=source_features)
    train_config = AlphaRec.train_config(train_overrides)
    log = fit_mixed(model, train_config, mixed_folder or out)  # a finished checkpoint there: its best state
    save_tensors(out / "model.safetensors", {**tensor_dict(model.state(), "state."),
                                             **tensor_dict(model.artifacts(), "artifacts.")})
    if mixed_folder is None:
        (out / CHECKPOINT_FILE).unlink(missing_ok=True)

    start = clock.now()
    scorer = zero_shot_scorer(model, target, features(target, config))
    apply_seconds = clock.now() - start
    seed = train_config.seed
    ks = tuple(sorted({min(k, target.n_items) for k in REPORT_KS}))
    results = {split: evaluate(scorer, target, split, ks=ks, metrics=REPORT_METRICS, seed=seed)
               for split in ("valid", "test")}
    write_json(out / "metrics.json", {split: r.to_dict() for split, r in results.items()})

    ref = target_ref or DataRef(target.name)
    lightgcn_train = {"progress": False, **(lightgcn_overrides or {})}
    baselines: dict[str, Scorer] = {
        "Pop (target train)": user_scorer(fit("pop", target, out=out / "pop", resume=True, ref=ref).model.score),
        "Random": random_scorer(target.n_items, seed),
    }
    lightgcn = fit("lightgcn", target, lightgcn_train, out=out / "lightgcn", resume=True, ref=ref)
    baselines[f"LightGCN (trained on target, best epoch {lightgcn.manifest['fit']['best_epoch']})"] = \
        user_scorer(lightgcn.model.score)
    rows = {"AlphaRec zero-shot": results["test"]}
    rows.update({name: evaluate(s, target, "test", ks=ks, metrics=REPORT_METRICS, seed=seed)
                 for name, s in baselines.items()})
    comparison = _comparison(rows, target, mixed, log, train_config, apply_seconds)
    comparison["lightgcn_train_config"] = lightgcn.manifest["train_config"]
    comparison["lightgcn_fit"] = lightgcn.manifest["fit"]
    write_json(out / "comparison.json", comparison)
    atomic_write(out / "comparison.md", lambda f: f.write(markdown(comparison)))
    write_json(out / "experiment.json", {
        "experiment": "zeroshot",
        "sources": [dataclasses.asdict(r) for r in (source_refs or [DataRef(s.name) for s in sources])],
        "source_stats": [s.stats() for s in sources],
        "target": dataclasses.asdict(ref),
        "target_stats": target.stats(),
        "target_checksum": target.checksum(),
        "model": "alpharec (mixed training, in-domain negatives)",
        "model_config": as_dict(config),
        "train_config": as_dict(train_config),
        "selection": f"mean over sources of per-source valid {train_config.metric}",
        "best_epoch": log.best_epoch,
        "best_valid": log.best_score,
        "stopped": log.stopped,
        "fit_seconds": log.total_seconds,
        "zero_shot_inputs": "items: LM(text); users: mean of their target TRAINING items; "
                            "propagation on the target training graph; frozen MLP",
        "evaluation": {"ranking": "full catalog", "test_masks": ["train", "valid"], "ks": list(ks)},
        "eval_seed": seed,
        "versions": versions(),
    })
    return comparison


def titles_in_sources(sources: Sequence[SplitData], target: SplitData) -> int:
    """How many of the target's items have a title that some source item has, compared as the title matcher
    compares them (:func:`lmrec.data.titles.title_words`: case, punctuation, articles and a "(yyyy)" ignored) and
    with a bare trailing year dropped too (a film's and its game's titles meet; so do "Blade Runner 2049" and
    "Blade Runner", which only over-counts): 0 for a target that shares no title with its sources, as the paper's."""
    key = lambda title: _TRAILING_YEAR.sub("", title_words(title)[0])  # noqa: E731
    seen = {key(t) for s in sources for t in s.catalog.titles}
    return sum(key(t) in seen for t in target.catalog.titles)


def _comparison(rows: dict[str, RankingResult], target: SplitData, mixed: MixedData, log: TrainLog,
                train_config: TrainConfig, apply_seconds: float) -> dict[str, Any]:
    """Test mean ± SE per row and the paired Recall@20 difference of the zero-shot model against each baseline."""
    ours = rows["AlphaRec zero-shot"].per_user["recall@20"]
    paired = {}
    for name, result in rows.items():
        if name != "AlphaRec zero-shot":
            test = paired_test(result.per_user["recall@20"], ours)
            paired[name] = {"diff": test.diff.as_dict(), "t_pvalue": test.t_pvalue,
                            "wilcoxon_pvalue": test.wilcoxon_pvalue}
    best = next(r.valid for r in log.records if r.epoch == log.best_epoch) if log.best_epoch else {}
    return {
        "target": target.stats() | {"titles_in_sources": titles_in_sources(mixed.sources, target)},
        "sources": [s.stats() for s in mixed.sources],
        "training": {"epochs_run": len(log.records), "max_epochs": train_config.epochs,
                     "eval_every": train_config.eval_every, "best_epoch": log.best_epoch,
                     "best_valid": best, "fit_seconds": log.total_seconds, "stopped": log.stopped,
                     "converged": log.converged,
                     "zero_shot_apply_seconds": apply_seconds},
        "rows": {name: r.to_dict() for name, r in rows.items()},
        "paired_recall@20_vs": paired,
    }


def shared_titles_note(target: dict[str, Any]) -> str:
    """The sentence saying how many target item titles are also source titles (:func:`titles_in_sources`); empty
    for a result saved before they were counted."""
    if "titles_in_sources" not in target:
        return ""
    k, n = target["titles_in_sources"], target["items"]
    return f" {k} of its {n} item titles ({k / n:.0%}) are also titles of source items."


def markdown(c: dict[str, Any]) -> str:
    t, tr = c["target"], c["training"]
    sources = ", ".join(f"{s['name']} ({s['users']} users, {s['items']} items)" for s in c["sources"])
    per_source = ", ".join(f"{k.split('/')[0]} {v:.4f}" for k, v in tr["best_valid"].items()
                           if k.endswith("/recall@20"))
    n = next(iter(c["rows"].values()))["recall@20"]["n"]
    lines = [
        f"### Zero-shot: {' + '.join(s['name'] for s in c['sources'])} -> {t['name']}", "",
        f"AlphaRec trained on the mix of {sources} (budget {tr['max_epochs']} epochs, validation every "
        f"{tr['eval_every']}): best / run {epochs_summary(tr)} on the mean per-source valid Recall@20 "
        f"({per_source}), {tr['fit_seconds']:.0f} s.",
        f"Applied to {t['name']} ({t['users']} users, {t['items']} items; {t['protocol']}) with no training there "
        f"({tr['zero_shot_apply_seconds']:.1f} s). Test split, full ranking, train+valid masked, mean ± SE over "
        f"{n} users.{shared_titles_note(t)}", "",
        "| model | " + " | ".join(COLUMNS) + " |", "|---|" + "---|" * len(COLUMNS),
    ]
    for name, row in c["rows"].items():
        lines.append(f"| {name} | " + " | ".join(estimate_cell(row[m]) for m in COLUMNS) + " |")
    lines.append("")
    if c.get("lightgcn_train_config"):
        g = c["lightgcn_train_config"]
        lines += [f"LightGCN trained on {t['name']}'s train split: budget {g['epochs']} epochs, validation every "
                  f"{g['eval_every']}, patience {g['patience']} (selection on valid {g['metric']}); best / run "
                  f"{epochs_summary(c.get('lightgcn_fit', {}))}.", ""]
    for name, p in c["paired_recall@20_vs"].items():
        lines.append(f"- zero-shot − {name}, Recall@20: {estimate_cell(p['diff'], signed=True)} "
                     f"(paired t p = {p['t_pvalue']:.2g})")
    return "\n".join(lines) + "\n"
