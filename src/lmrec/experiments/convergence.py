"""Convergence (paper §2.8): how many epochs, optimizer steps and seconds each model needs to reach its best
validation score.

Reads run folders (``<root>/<dataset>/<model>/`` with ``log.jsonl`` and ``manifest.json``; see :mod:`lmrec.run`).
For each run, from the validation points in its log:

    best = max_t v_t,  epoch to best = first evaluated epoch t with v_t = best,
    epoch to 95% = first evaluated epoch t with v_t ≥ 0.95·best,
    seconds to t = Σ_{epochs ≤ t} training seconds of the epoch (validation time excluded),
    steps to t = Σ_{epochs ≤ t} optimizer steps of the epoch (an epoch's steps differ between datasets and budgets).

The selection metric is the run's own (``train_config.metric``, Recall@20 by default). A run whose manifest is not
complete is still training and is marked as such (its numbers may change). Models without a training
loop (Pop) have no log and no row. The runs of one setting at several training seeds (``name~...,seed=S`` beside
``name``) also get one row over the seeds: mean ± SE (ddof 1) of the epochs, steps and seconds to the best
(:func:`over_seeds`).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lmrec.errors import LmrecError
from lmrec.eval.report import estimate_cell
from lmrec.eval.stats import estimate
from lmrec.io import atomic_write, write_json
from lmrec.train.trainer import EARLY_STOP, MAX_EPOCHS, TIME_BUDGET

FOCUS = "alpharec"
_SEED = re.compile(r"([~,]seed=\d+|_seed-\d+)$")  # lmrec.experiments.compare.RunSpec.at_seed, and its slug


def setting(label: str) -> str:
    """A run's label without its training seed: ``alpharec~tau=0.2,seed=2025`` -> ``alpharec~tau=0.2``,
    ``alpharec~seed=2025`` -> ``alpharec`` (the run at the tuning seed carries none); a folder name alike
    (``alpharec_seed-2025`` -> ``alpharec``, for a manifest without a label)."""
    return _SEED.sub("", label)


@dataclass
class Curve:
    """The validation curve of one run."""

    dataset: str
    model: str
    metric: str
    epochs: np.ndarray  # evaluated epochs
    values: np.ndarray  # validation metric at those epochs
    seconds: np.ndarray  # cumulative training seconds at those epochs
    steps: np.ndarray  # cumulative optimizer steps at those epochs
    epochs_run: int
    seconds_run: float
    finished: bool
    folder: Path
    train_config: dict[str, Any] | None = None
    threads: int | None = None  # torch's CPU threads of the process that finished the fit (None: not recorded)

    def stop_reason(self) -> str:
        """'early stop', 'max epochs', 'time budget' (finished runs, from the training settings) or 'running'."""
        cfg = self.train_config or {}
        if not self.finished:
            return "running"
        if self.epochs_run >= cfg.get("epochs", np.inf):
            return MAX_EPOCHS
        if len(self.epochs) and self.epochs_run - self.epochs[np.argmax(self.values)] >= \
                cfg.get("patience", np.inf) * cfg.get("eval_every", 1):
            return EARLY_STOP
        return TIME_BUDGET if cfg.get("max_minutes") else "unknown"

    def summary(self, fraction: float = 0.95) -> dict[str, Any]:
        """Best value, epochs and seconds to reach it and to reach ``fraction`` of it."""
        if not len(self.values):
            return {"dataset": self.dataset, "model": self.model, "finished": self.finished, "evaluations": 0,
                    "epochs_run": self.epochs_run, "stop": self.stop_reason()}
        best = float(self.values.max())
        at_best = int(np.argmax(self.values >= best))
        at_frac = int(np.argmax(self.values >= fraction * best))
        return {
            "dataset": self.dataset, "model": self.model, "metric": self.metric, "finished": self.finished,
            "best_valid": best, "epoch_to_best": int(self.epochs[at_best]),
            "seconds_to_best": float(self.seconds[at_best]), "steps_to_best": int(self.steps[at_best]),
            f"epoch_to_{round(100 * fraction)}pct": int(self.epochs[at_frac]),
            f"seconds_to_{round(100 * fraction)}pct": float(self.seconds[at_frac]),
            "epochs_run": self.epochs_run, "seconds_run": self.seconds_run,
            "seconds_per_epoch": self.seconds_run / max(self.epochs_run, 1), "evaluations": int(len(self.values)),
            "stop": self.stop_reason(), "threads": self.threads,
        }


def read_run(folder: Path) -> Curve | None:
    """The curve of a run folder, or None when it has no ``log.jsonl``."""
    log = folder / "log.jsonl"
    if not log.exists():
        return None
    config_path = folder / "manifest.json"
    config = json.loads(config_path.read_text(encoding="utf-8")) if config_path.exists() else {}
    train_config = config.get("train_config") or None
    metric = (train_config or {}).get("metric", "recall@20")
    records = [json.loads(line) for line in log.read_text(encoding="utf-8").splitlines() if line.strip()]
    seconds = np.cumsum([r["seconds"] for r in records]) if records else np.zeros(0)
    steps = np.cumsum([r.get("steps", 0) for r in records]) if records else np.zeros(0)
    points = [(r["epoch"], r["valid"][metric], seconds[i], steps[i]) for i, r in enumerate(records)
              if r.get("valid") and metric in r["valid"]]
    epochs, values, secs, at_steps = (np.array(c) for c in zip(*points, strict=True)) if points else (
        np.zeros(0),) * 4
    dataset = Path((config.get("data") or {}).get("dataset") or folder.parent.name).name
    return Curve(dataset, config.get("label") or folder.name, metric, epochs.astype(int), values.astype(float),
                 secs.astype(float), at_steps.astype(int), len(records), float(seconds[-1]) if len(seconds) else 0.0,
                 config.get("status") == "complete", folder, train_config, (config.get("fit") or {}).get("threads"))


def find_curves(root: Path, comparison: Path | None = None) -> list[Curve]:
    """Every run under ``root`` (any depth) that has a log, sorted by dataset then model (the run folder's name).
    Under a comparison (its ``results.json``: ``comparison``, default ``root/results.json``) only each model's run
    chosen on validation is kept, with that setting's runs at the other training seeds."""
    if not root.is_dir():
        raise LmrecError(f"{root}: not a folder of runs")
    logs = [log for log in sorted(root.rglob("log.jsonl"))
            if not any(part.startswith(".") for part in log.relative_to(root).parts)]  # hidden: being written
    curves = [c for log in logs if (c := read_run(log.parent)) is not None]
    comparison = comparison or root / "results.json"
    if comparison.exists():
        results = json.loads(comparison.read_text(encoding="utf-8"))
        from lmrec.experiments.compare import slug

        chosen = {(slug(d), slug(name)) for d, block in results.items()
                  for name in (block.get("selected") or {}).values()}
        names = lambda c: {(c.folder.parent.name, c.folder.name), (c.folder.parent.name, slug(setting(c.model)))}
        curves = [c for c in curves if names(c) & chosen] if chosen else curves
    if not curves:
        raise LmrecError(f"{root}: no run folder with a log.jsonl below it")
    return sorted(curves, key=lambda c: (c.dataset, c.model.partition("~")[0] != FOCUS, c.model))


SEED_COLUMNS = ("best_valid", "epoch_to_best", "steps_to_best", "seconds_to_best")


def over_seeds(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row for each setting (:func:`setting`) of a dataset with finished, evaluated runs at two or more training
    seeds: ``seeds``, ``at_budget`` (how many of them the epoch budget stopped: their epochs to the best are lower
    bounds) and the mean ± SE over them of :data:`SEED_COLUMNS`."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in rows:
        if r["finished"] and r["evaluations"]:
            groups.setdefault((r["dataset"], setting(r["model"])), []).append(r)
    return [{"dataset": dataset, "model": name, "seeds": len(runs),
             "at_budget": sum(r["stop"] == MAX_EPOCHS for r in runs),
             **{k: estimate(np.array([r[k] for r in runs], dtype=float)).as_dict() for k in SEED_COLUMNS}}
            for (dataset, name), runs in groups.items() if len(runs) > 1]


def markdown(rows: list[dict[str, Any]]) -> str:
    lines = []
    seeds = over_seeds(rows)
    for dataset in dict.fromkeys(r["dataset"] for r in rows):
        block = [r for r in rows if r["dataset"] == dataset]
        metric = next((r["metric"] for r in block if "metric" in r), "recall@20")
        lines += [f"### {dataset}", "",
                  f"Validation {metric}; seconds are training seconds (validation excluded), summed over epochs; "
                  "beside s/epoch, the CPU threads the fit finished on, where its run recorded them.", "",
                  "| model | best valid | epoch to best | steps to best | s to best | epoch to 95% | s to 95% | "
                  "epochs run | stop | s/epoch |", "|---|---|---|---|---|---|---|---|---|---|"]
        for r in block:
            name = r["model"] + ("" if r["finished"] else " (still training)")
            if not r["evaluations"]:
                lines.append(f"| {name} | - | - | - | - | - | - | {r['epochs_run']} | {r['stop']} | - |")
                continue
            lines.append(
                f"| {name} | {r['best_valid']:.4f} | {r['epoch_to_best']} | {r['steps_to_best']} | "
                f"{r['seconds_to_best']:.0f} | "
                f"{r['epoch_to_95pct']} | {r['seconds_to_95pct']:.0f} | {r['epochs_run']} | {r['stop']} | "
                f"{r['seconds_per_epoch']:.2f}{_threads(r.get('threads'))} |")
        lines.append("")
        block_seeds = [r for r in seeds if r["dataset"] == dataset]
        if block_seeds:
            whole = lambda v: estimate_cell(v, digits=0)
            lines += ["Over training seeds (finished runs; mean ± SE; at budget: runs the epoch budget stopped, whose "
                      "epochs to the best are lower bounds):", "",
                      "| model | seeds | at budget | best valid | epoch to best | steps to best | s to best |",
                      "|---|---|---|---|---|---|---|"]
            lines += [f"| {r['model']} | {r['seeds']} | {r['at_budget']} | {estimate_cell(r['best_valid'])} | "
                      f"{whole(r['epoch_to_best'])} | {whole(r['steps_to_best'])} | {whole(r['seconds_to_best'])} |"
                      for r in block_seeds]
            lines.append("")
    return "\n".join(lines)


def _threads(n: int | None) -> str:
    return "" if n is None else f" ({n} thread{'s' if n != 1 else ''})"


def plot(curves: list[Curve], path: Path) -> None:
    """Validation metric against epoch (left) and training seconds (right), one row per dataset; the runs of one
    setting at several training seeds share a colour and a legend entry."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    datasets = list(dict.fromkeys(c.dataset for c in curves))
    fig, axes = plt.subplots(len(datasets), 2, figsize=(10, 3.4 * len(datasets)), squeeze=False)
    for row, dataset in enumerate(datasets):
        shown = [c for c in curves if c.dataset == dataset and len(c.values)]
        settings = list(dict.fromkeys(setting(c.model) for c in shown))
        labelled: set[str] = set()
        for curve in shown:
            name = setting(curve.model)
            focus = curve.model.partition("~")[0] == FOCUS
            colour = "black" if focus else f"C{settings.index(name) % 10}"
            style = {"linewidth": 2.5 if focus else 1.2, "color": colour}
            n = sum(setting(c.model) == name for c in shown)
            label = None if name in labelled else name + (f" ({n} seeds)" if n > 1 else "") + (
                "" if curve.finished else " (running)")
            labelled.add(name)
            for col, x in enumerate((curve.epochs, curve.seconds)):
                axes[row, col].plot(x, curve.values, label=label, **style)
                best = int(np.argmax(curve.values))
                axes[row, col].scatter([x[best]], [curve.values[best]], s=18, color=style.get("color"))
        for col, xlabel in enumerate(("epoch", "training seconds")):
            ax = axes[row, col]
            ax.set_xlabel(xlabel)
            ax.set_ylabel(f"valid {curves[0].metric}")
            ax.set_title(dataset)
            ax.grid(alpha=0.3)
        axes[row, 0].legend(fontsize=8)
    fig.tight_layout()
    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=110), binary=True)
    plt.close(fig)


def run_convergence(root: Path, out: Path, comparison: Path | None = None) -> list[dict[str, Any]]:
    """Write ``out/convergence.{md,json,png}`` for every run under ``root`` (see :func:`find_curves`), and
    ``out/convergence-seeds.json`` (:func:`over_seeds`); returns the table rows."""
    curves = find_curves(root, comparison)
    rows = [c.summary() for c in curves]
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "convergence.json", rows)
    write_json(out / "convergence-seeds.json", over_seeds(rows))
    atomic_write(out / "convergence.md", lambda f: f.write(markdown(rows)))
    plot(curves, out / "convergence.png")
    return rows
