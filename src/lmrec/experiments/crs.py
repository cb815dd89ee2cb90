"""RTA experiments on top of the library: CRS models evaluated on the prepared turns, in the blocks the RTA tables
report.

Blocks (``metrics.json`` of the RTA tables): ``valid``, ``test`` (every prepared test (turn, target) pair over the
full catalog), ``test_new`` (new targets only, mentioned items removed from the ranking), and ``test_generated``
(+ ``test_generated_new``) when the test turns the LLM answered are a subsample of the encoded ones (the zero-shot
baseline is scored on those; the block makes the comparison paired). Ties by expectation, K ∈ {1, 5, 10, 50}.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from lmrec.data.conversations import CRSSample
from lmrec.errors import LmrecError
from lmrec.eval.crs import CRSResult, evaluate_crs, evaluate_turns
from lmrec.inputs.store import LLMFeatures

KS = (1, 5, 10, 50)
Scorer = Callable[[Sequence[CRSSample]], torch.Tensor]


def crs_results(scorer: Scorer, features: LLMFeatures, generated_only: bool = False) -> dict[str, CRSResult]:
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
        results = evaluate_turns(scorer, samples, n, ks=KS)
        out[name] = results["all"]
        if "new" in results:
            out[f"{name}_new"] = results["new"]
    return out
