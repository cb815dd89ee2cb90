"""The one formatter of results: "mean ± SE" cells and aligned text tables."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

MISSING = "–"


def estimate_cell(value: Any, signed: bool = False, digits: int = 4) -> str:
    """``"0.1234 ± 0.0056"`` for an :class:`~lmrec.eval.stats.Estimate` or a ``{"mean", "se"}`` dict (``signed``:
    ``"+0.0123 ± 0.0045"`` for differences; ``digits`` after the point, e.g. 0 for epochs: ``"165 ± 5"``);
    ``"0.1234"`` for a value without SE (se None or NaN: a catalog-level metric such as coverage); ``"–"`` for
    nothing or an estimate of no values."""
    if value is None:
        return MISSING
    mean, se = (value["mean"], value["se"]) if isinstance(value, Mapping) else (value.mean, value.se)
    n = value.get("n", 1) if isinstance(value, Mapping) else value.n
    if not n or mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return MISSING
    sign = "+" if signed else ""
    if se is None or (isinstance(se, float) and math.isnan(se)):
        return f"{mean:{sign}.{digits}f}"
    return f"{mean:{sign}.{digits}f} ± {se:.{digits}f}"


def cell(value: Any) -> str:
    """A table cell: estimates as mean ± SE, floats with 4 significant digits, anything else as text."""
    if isinstance(value, Mapping) and "mean" in value or hasattr(value, "se"):
        return estimate_cell(value)
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def text_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> str:
    """A plain aligned text table of ``rows`` (missing cells empty)."""
    cells = [[str(c) for c in columns]] + [[cell(row.get(c, "")) for c in columns] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(columns))]
    lines = ["  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip() for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def metrics_table(metrics: Mapping[str, Mapping[str, Any]]) -> str:
    """``split  recall@20  ...`` rows from ``{"valid": {...}, "test": {...}}`` blocks."""
    if not metrics:
        return "(no metrics)"
    names = list(dict.fromkeys(k for block in metrics.values() for k in block))
    return text_table([{"split": split, **values} for split, values in metrics.items()], ["split", *names])


def epochs_summary(fit: Mapping[str, Any]) -> str:
    """A run's training in one cell, from its manifest's ``fit`` block (or a table row with the same keys):
    ``"best / run"``, `` †`` when the best validation epoch is the last one run (unconverged), and why training
    ended (:meth:`TrainLog.reason`: patience, budget or time), e.g. ``"40 / 140, patience"``; ``"-"`` untrained."""
    if not fit.get("best_epoch"):
        return "-"
    from lmrec.train.trainer import TrainLog

    why = TrainLog.reason(fit.get("stopped"))
    return (f"{fit['best_epoch']} / {fit.get('epochs_run') or '?'}" + ("" if fit.get("converged", True) else " †")
            + (f", {why}" if why else ""))


def progress_line(name: str, metric: str, valid: float | None, fit: Mapping[str, Any], seconds: float) -> str:
    """A finished run in one line for long tables: ``name: valid <metric> …, best / run …, … min`` (the validation
    part left out without a score, the epochs without a trained best epoch; see :func:`epochs_summary`)."""
    score = f"valid {metric} {valid:.4f}, " if valid is not None else ""
    epochs = f"best / run {epochs_summary(fit)}, " if fit.get("best_epoch") else ""
    return f"{name}: {score}{epochs}{seconds / 60:.1f} min"
