"""Settings of the model inputs, one settings class per kind (:mod:`lmrec.settings`).

:class:`PrepareConfig`: what ``lmrec crs prepare`` computes from the LLM for each conversation turn (q vectors,
generations) and for the catalog (title tokens). The LM item-text features of the AlphaRec family are set on the
model itself (``encoder``, ``text_fields``) and made through the embedding cache (:mod:`lmrec.inputs.prepare`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import field
from typing import Annotated, Any, Literal

from pydantic import Field, NonNegativeInt, PositiveInt

from lmrec.settings import settings

SPLITS = ("train", "valid", "test")
Split = Literal["train", "valid", "test"]


@settings
class PrepareConfig:
    """Settings of ``prepare_features``. ``max_samples``: per split (missing or None = all samples);
    ``generate_splits``: the splits whose turns the LLM answers (reindex labels come from train and valid,
    the zero-shot baseline needs test); ``max_generate``: per split, answer only a seeded subsample of the kept
    turns (generation is the slow part)."""

    llm: str = "smollm2-135m"  # registered name, local folder, .gguf file or hub id
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"  # auto: lmrec.train.precision's rule
    max_samples: Annotated[dict[Split, NonNegativeInt | None], Field(
        description="turns kept per split, a seeded subsample, e.g. train=200,valid=50 (a split not named: all)",
    )] = field(default_factory=dict)
    generate_splits: Annotated[tuple[Split, ...], Field(description="the splits whose turns the LLM answers")] = SPLITS
    max_generate: Annotated[dict[Split, NonNegativeInt | None], Field(
        description="kept turns the LLM answers per split, e.g. train=384 (a split not named: all; 0: none)",
    )] = field(default_factory=dict)
    seed: int = 2024
    q_mode: Literal["prefix", "completion"] = "prefix"  # "prefix": prompt + "1."; "completion": + own answer (official)
    max_length: PositiveInt = 512  # tokens kept (the last ones) of an encoded prompt
    reuse_kv: bool = True  # encode turns in conversation order keeping the LLM's KV cache (same q up to rounding)
    encode_batch_size: PositiveInt = 8
    generate_batch_size: PositiveInt = 16
    max_new_tokens: PositiveInt = 160
    answer_prefix: str = "1."  # forced start of the answer; "" is the paper's setting
    n_titles: PositiveInt = 20
    max_title_tokens: PositiveInt = 32
    domain: str = "movie"
    device: Literal["cpu", "cuda", "mps"] = "cpu"  # where the LLM runs (the q vectors do not depend on it)
    # self-supervised item prompts (not in the paper): q of this one-line context for every catalog item, a training
    # turn labelled with that item, so items no conversation mentions get a signal; None: none are made
    item_prompt: str | None = None  # e.g. "User: I want to watch {title}."


def prepare_config(meta: Mapping[str, Any]) -> PrepareConfig:
    """The :class:`PrepareConfig` recorded in a prepared folder's (or a run's) metadata."""
    raw = meta.get("config", meta)
    return PrepareConfig(**{k: (tuple(v) if k == "generate_splits" else v)
                            for k, v in raw.items() if k in PrepareConfig.__dataclass_fields__})


def generation_settings(identity: str, cfg: PrepareConfig) -> str:
    """The settings a generation depends on, as one string stored with each record: the LLM, the answer length and
    prefix, the number of titles asked for and the domain (the prompt's words)."""
    return json.dumps({"llm": identity, "max_new_tokens": cfg.max_new_tokens, "answer_prefix": cfg.answer_prefix,
                       "n_titles": cfg.n_titles, "domain": cfg.domain}, sort_keys=True)


