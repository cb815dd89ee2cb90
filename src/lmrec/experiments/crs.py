"""RTA experiments on top of the library: prepare a dataset's LLM features and evaluate CRS models on the prepared
turns, in the blocks the RTA tables report.

Blocks (``metrics.json`` of the RTA tables): ``valid``, ``test`` (every prepared test (turn, target) pair over the
full catalog), ``test_new`` (new targets only, mentioned items removed from the ranking), and ``test_generated``
(+ ``test_generated_new``) when the test turns the LLM answered are a subsample of the encoded ones (the zero-shot
baseline is scored on those; the block makes the comparison paired). Ties by expectation, K ∈ {1, 5, 10, 50}.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from lmrec.data.conversations import CRSData, CRSSample
from lmrec.data.registry import load_dataset
from lmrec.errors import LmrecError
from lmrec.eval.crs import CRSResult, evaluate_crs, evaluate_turns
from lmrec.io import write_json
from lmrec.models.crs.rta.features import LLMFeatures, PrepareConfig, prepare_features

KS = (1, 5, 10, 50)
Scorer = Callable[[Sequence[CRSSample]], torch.Tensor]


def load_crs_dataset(name: str, data_dir: str | Path | None = None) -> CRSData:
    """A conversational dataset by name or folder (see :func:`lmrec.data.registry.load_dataset`)."""
    data = load_dataset(name, data_dir=data_dir)
    if not isinstance(data, CRSData):
        raise LmrecError(f"{name!r} is not a conversational dataset (expected e.g. inspired or redial)")
    return data


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
