"""How a comparison changes with training density: the same dataset with each user's training items thinned to a
share (:func:`lmrec.data.splits.thin_train`), every model at every share, one comparison table per share.

For share s < 1 the dataset entry is ``{"name": "<dataset>, train <100·s>%", "split": "<split>+thin:<s>"}``; share 1
is ``{"name": "<dataset>", "split": "<split>"}``. Training density = training interactions / (users · items). The
summary gives, per share, the density, each model's test Recall@20 (mean ± SE) and the focus model's relative gain
over the best other model chosen on validation, with the paired test of
:func:`lmrec.experiments.compare.run_comparison`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from lmrec.data.registry import DEFAULT_SPLIT
from lmrec.eval.report import estimate_cell
from lmrec.experiments.compare import family_estimate
from lmrec.io import atomic_write, write_json

METRIC = "recall@20"


def entries(dataset: str, shares: Sequence[float], split: str = DEFAULT_SPLIT) -> list[dict[str, str]]:
    """The comparison's dataset entries, one per share, all on ``split`` (share 1: not thinned)."""
    if not shares or any(not 0 < s <= 1 for s in shares):
        raise ValueError(f"shares must be in (0, 1], got {list(shares)}")
    name = Path(dataset).name
    return [{"name": name, "dataset": dataset, "split": split} if share == 1 else
            {"name": f"{name}, train {100 * share:g}%", "dataset": dataset, "split": f"{split}+thin:{share:g}"}
            for share in shares]


def summary(results: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One row per share, in the order run: density, each row family's test Recall@20, the focus comparison."""
    rows = []
    for label, block in results.items():
        s = block["stats"]
        models = {family: family_estimate(block, family, METRIC) for family in block["selected"]}
        rows.append({"dataset": label, "train": s["train"], "density": s["train"] / (s["users"] * s["items"]),
                     "models": models, "focus": block.get("focus")})
    return rows


def markdown(rows: list[dict[str, Any]]) -> str:
    families = list(dict.fromkeys(f for r in rows for f in r["models"]))
    lines = [f"Test {METRIC} (mean ± SE) against training density; the last column: the focus model against the "
             "best other one chosen on validation (relative gain, paired t-test p).", "",
             "| data | train interactions | density | " + " | ".join(families) + " | focus vs best |",
             "|---|---|---|" + "---|" * (len(families) + 1)]
    for r in rows:
        f = r["focus"]
        gain = (f"{100 * f['relative_gain']:+.1f}% vs {f['best_baseline']} (p = {f['t_pvalue']:.2g})" if f else "–")
        cells = [estimate_cell(r["models"][m]) if m in r["models"] else "–" for m in families]
        lines.append(f"| {r['dataset']} | {r['train']} | {r['density']:.4f} | " + " | ".join(cells) + f" | {gain} |")
    return "\n".join(lines) + "\n"


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    """Test Recall@20 (± SE) of each model against training density, log scale."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for family in dict.fromkeys(f for r in rows for f in r["models"]):
        points = sorted((r["density"], r["models"][family]) for r in rows if family in r["models"])
        ax.errorbar([d for d, _ in points], [e["mean"] for _, e in points], yerr=[e["se"] for _, e in points],
                    marker="o", capsize=3, label=family)
    ax.set_xscale("log")
    densities = sorted({r["density"] for r in rows})
    ax.set_xticks(densities, [f"{d:.4f}" for d in densities])
    ax.minorticks_off()
    ax.set_xlabel("training density (interactions / users·items)")
    ax.set_ylabel(f"test {METRIC}")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=110), binary=True)
    plt.close(fig)


def write(results: Mapping[str, Any], out: Path) -> str:
    """density.json, density.md and density.png in ``out``; returns the markdown."""
    rows = summary(results)
    write_json(out / "density.json", rows)
    text = markdown(rows)
    atomic_write(out / "density.md", lambda f: f.write(text))
    plot(rows, out / "density.png")
    return text
