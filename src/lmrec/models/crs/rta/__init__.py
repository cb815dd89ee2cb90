"""Reindex-Then-Adapt (RTA): title aggregators, the reindexed LLM and its adapted variants (the LLM features they
read are model inputs: :mod:`lmrec.inputs`, re-exported here)."""

from lmrec.inputs.config import PrepareConfig
from lmrec.inputs.lookup import ContextFeatures
from lmrec.inputs.prepare import prepare_features
from lmrec.inputs.store import GenerationRecord, LLMFeatures, TitleTokens, load_features, title_tokens
from lmrec.models.crs.rta.adapt import AdaptConfig, AdaptModule, RTAAdapt, build_recsys
from lmrec.models.crs.rta.aggregators import AGGREGATORS, Aggregator, build_aggregator
from lmrec.models.crs.rta.reindex import ItemIndexer, ReindexConfig, RTAReindex, train_reindex

__all__ = [
    "AGGREGATORS",
    "AdaptConfig",
    "AdaptModule",
    "Aggregator",
    "ContextFeatures",
    "GenerationRecord",
    "ItemIndexer",
    "LLMFeatures",
    "PrepareConfig",
    "RTAAdapt",
    "RTAReindex",
    "ReindexConfig",
    "TitleTokens",
    "build_aggregator",
    "build_recsys",
    "load_features",
    "prepare_features",
    "title_tokens",
    "train_reindex",
]
