"""Train several models on several datasets and write one comparison table (markdown + json).

Each (dataset, run) is an ordinary run folder (``out/<dataset>/<run name>/``); a finished run is reused when its
saved settings agree with the requested ones (and is an error naming the folder when they do not), so an
interrupted comparison resumes where it stopped. A run is a :class:`RunSpec`: a registered model with settings, so
one model can appear several times (e.g. ``linear_map`` with each text encoder). The table reports test
mean ± SE, the epoch selected on validation, and the paired difference of a chosen run against the best other one.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lmrec.data.interactions import SplitData
from lmrec.errors import LmrecError
from lmrec.eval.ranking import evaluate
from lmrec.eval.stats import paired_test
from lmrec.experiments.runner import DataRef, build_model, load_run, train_and_evaluate
from lmrec.experiments.steps import normalised
from lmrec.io import atomic_write, write_json
from lmrec.models.torch_base import TorchRecommender

COLUMNS = ("recall@20", "ndcg@20", "hr@20")


@dataclass(frozen=True)
class RunSpec:
    """One row of a comparison: ``name`` (the folder and the table label) runs registered ``model`` with
    ``model_overrides`` (its config fields) and ``train_overrides`` (:class:`lmrec.train.TrainConfig` fields)."""

    name: str
    model: str
    model_overrides: Mapping[str, Any] = field(default_factory=dict)
    train_overrides: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def of(cls, spec: str | RunSpec) -> RunSpec:
        return spec if isinstance(spec, RunSpec) else cls(spec, spec)


def resolved_settings(spec: RunSpec) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """The full model config and training config ``spec`` trains with (code defaults + overrides)."""
    model = build_model(spec.model, dict(spec.model_overrides))
    train = None
    if isinstance(model, TorchRecommender):
        train = dataclasses.asdict(model.resolve_train_config(dict(spec.train_overrides)))
    return dataclasses.asdict(model.config), train


def _check_reusable(run_dir: Path, spec: RunSpec, data: SplitData, config: dict[str, Any]) -> None:
    """A finished run may stand for ``spec`` only if it trained that model on the same data (checksum) with the
    same resolved settings: every field the saved config and today's code both know (``progress`` aside)."""
    model_config, train_config = resolved_settings(spec)
    wanted = {"model": (config.get("model"), spec.model),
              "data checksum": (config.get("data_checksum"), data.checksum())}
    for label, saved, now in (("model setting", config.get("model_config") or {}, model_config),
                              ("training setting", config.get("train_config") or {}, train_config or {})):
        wanted.update({f"{label} {k}": (saved[k], v) for k, v in now.items() if k in saved and k != "progress"})
    if (config.get("train_config") is None) != (train_config is None):
        wanted["training"] = (config.get("train_config"), train_config)
    differ = {key: pair for key, pair in wanted.items() if normalised(pair[0]) != normalised(pair[1])}
    if differ:
        detail = "; ".join(f"{k}: saved {a!r}, requested {b!r}" for k, (a, b) in differ.items())
        raise LmrecError(f"{run_dir} holds a finished run with other settings ({detail}); "
                         "remove that folder or write the comparison to another --out")


def run_comparison(
    runs: Sequence[str | RunSpec],
    datasets: Sequence[str],
    out: Path,
    train_overrides: Mapping[str, Any] | None = None,
    focus: str | None = "alpharec",
    seed: int = 2024,
    dataset_train_overrides: Mapping[str, Mapping[str, Any]] | None = None,
) -> dict[str, Any]:
    """Run every spec on every dataset. Training settings, later ones winning: ``train_overrides`` (all runs),
    ``dataset_train_overrides[dataset]``, the spec's own."""
    specs = [RunSpec.of(r) for r in runs]
    names = [s.name for s in specs]
    if len(set(names)) != len(names):
        raise ValueError(f"run names must be unique, got {names}")
    results: dict[str, Any] = {}
    for dataset in datasets:
        ref = DataRef(dataset, seed=seed)
        data = ref.load()
        results[dataset] = {"stats": data.stats(), "checksum": data.checksum(), "models": {}}
        for spec in specs:
            train = {**(train_overrides or {}), **(dataset_train_overrides or {}).get(dataset, {}),
                     **spec.train_overrides}
            spec = RunSpec(spec.name, spec.model, spec.model_overrides, train)
            run_dir = out / dataset / spec.name
            if (run_dir / "metrics.json").exists():
                metrics = json.loads((run_dir / "metrics.json").read_text())
                config = json.loads((run_dir / "config.json").read_text())
                _check_reusable(run_dir, spec, data, config)
            else:
                run = train_and_evaluate(spec.model, ref, dict(spec.model_overrides), dict(spec.train_overrides),
                                         run_dir, data=data)
                metrics, config = run.metrics, run.config
            results[dataset]["models"][spec.name] = {
                "model": spec.model, "test": metrics["test"], "valid": metrics["valid"],
                "best_epoch": config["best_epoch"], "fit_seconds": config["fit_seconds"],
            }
        if focus in names and len(names) > 1:
            results[dataset]["focus"] = _focus_vs_best(focus, names, out / dataset, results[dataset]["models"])
    write_json(out / "results.json", results)
    atomic_write(out / "results.md", lambda f: f.write(markdown(results)))
    return results


def _focus_vs_best(focus: str, models: Sequence[str], folder: Path, rows: dict[str, Any]) -> dict[str, Any]:
    """Relative Recall@20 gain of ``focus`` over the best other model (chosen on VALIDATION), paired test on test."""
    others = [m for m in models if m != focus]
    best = max(others, key=lambda m: rows[m]["valid"]["recall@20"]["mean"])
    per_user = {}
    for name in (best, focus):
        model, data, config = load_run(folder / name)
        result = evaluate(model.score, data, "test", metrics=("recall",), seed=config.get("eval_seed", 0))
        per_user[name] = result.per_user["recall@20"]
    test = paired_test(per_user[best], per_user[focus])
    base = float(per_user[best].mean())
    return {"best_baseline": best, "relative_gain": test.diff.mean / base if base else float("nan"),
            "diff": test.diff.as_dict(), "t_pvalue": test.t_pvalue, "wilcoxon_pvalue": test.wilcoxon_pvalue}


def markdown(results: dict[str, Any]) -> str:
    lines = []
    for dataset, block in results.items():
        s = block["stats"]
        lines += [f"### {dataset}", "",
                  f"{s['users']} users, {s['items']} items, train/valid/test {s['train']}/{s['valid']}/{s['test']} "
                  f"interactions ({s['protocol']}). Test, full ranking, train+valid masked, mean ± SE over "
                  f"{next(iter(block['models'].values()))['test']['recall@20']['n']} users.", "",
                  "| model | " + " | ".join(COLUMNS) + " | best epoch (valid) | fit s |",
                  "|---|" + "---|" * (len(COLUMNS) + 2)]
        for name, row in block["models"].items():
            cells = [f"{row['test'][c]['mean']:.4f} ± {row['test'][c]['se']:.4f}" for c in COLUMNS]
            tail = f" | {row['best_epoch'] or '-'} | {row['fit_seconds']:.0f} |"
            lines.append(f"| {name} | " + " | ".join(cells) + tail)
        if "focus" in block:
            f = block["focus"]
            lines += ["", f"Recall@20 vs the best baseline on validation ({f['best_baseline']}): "
                          f"{100 * f['relative_gain']:+.1f}% "
                          f"(difference {f['diff']['mean']:+.4f} ± {f['diff']['se']:.4f}, "
                          f"paired t p = {f['t_pvalue']:.2g}, Wilcoxon p = {f['wilcoxon_pvalue']:.2g})"]
        lines.append("")
    return "\n".join(lines)
