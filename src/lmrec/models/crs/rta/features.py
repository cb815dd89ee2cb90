"""What RTA needs from the LLM, computed once per (dataset, LLM) and cached: q, title tokens, generations.

``prepare_features`` writes into a folder::

    features.safetensors   q (n, d) and the sample indices of every split; the catalog's title token ids (local ids,
                           right-padded) and lengths, of the titles as written and without a trailing year
                           ("no_year." tensors); the token-embedding rows those titles use (not the whole table);
                           the LLM identity and the sample keys in its JSON header (lmrec.tensorfile: no pickle)
    generations-<split>.jsonl   the LLM's own answer for each sampled turn: completion, parsed titles, catalog items
    prepare.json           settings, counts, seconds per sample, share of generated titles that mapped

q for a context is the LLM's final hidden state at the last token of ``prompt(context) + "1."``
(:meth:`lmrec.llm.CausalLM.encode_contexts`), stored in an :class:`lmrec.text.EmbeddingCache` keyed by
(LLM identity + max_length, prompt text): a rerun, or another folder with the same LLM, encodes nothing.
``q_mode="completion"`` encodes the prompt plus the model's own answer cut after its first "1." as the official
tools/3_context_encoding.py does; the default ``"prefix"`` needs no generation, so training and serving see the
same input and a new conversation is one forward pass.

Generation is greedy with the answer forced to start with ``answer_prefix="1."`` (the paper: no prefix, 512 new tokens;
without the prefix SmolLM2-135M mostly continues the dialogue instead of listing titles) and ``max_new_tokens=160``.
Generations are cached in the jsonl files by ``key = sha256(identity, max_new_tokens, answer_prefix, prompt)``:
a rerun generates only the missing turns (each batch is written atomically as it finishes).
``max_samples`` limits each split to a seeded random subsample (sorted, reported) because generation on a CPU takes
seconds per turn.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
import torch
from pydantic import Field, NonNegativeInt, PositiveInt

from lmrec import clock
from lmrec.data.conversations import CRSData, CRSSample
from lmrec.errors import Argument, LmrecError
from lmrec.io import atomic_write, write_json
from lmrec.progress import progress_bars
from lmrec.settings import SettingsError, settings
from lmrec.tensorfile import load_tensors, save_tensors, tensor_dict

__all__ = ["SPLITS", "ContextFeatures", "GenerationRecord", "LLMFeatures", "PrepareConfig", "TitleTokens",
           "generation_settings", "context_features", "generation_key", "load_features", "map_completion",
           "prepare_config", "prepare_dataset", "prepare_features", "subsample", "title_tokens"]

SPLITS = ("train", "valid", "test")
ENCODE_CHUNK = 64  # contexts encoded (and written to the cache) at a time


Split = Literal["train", "valid", "test"]


@settings
class PrepareConfig:
    """Settings of ``prepare_features``. ``max_samples``: per split (missing or None = all samples);
    ``generate_splits``: the splits whose turns the LLM answers (reindex labels come from train and valid,
    the zero-shot baseline needs test); ``max_generate``: per split, answer only a seeded subsample of the kept
    turns (generation is the slow part)."""

    llm: str = "smollm2-135m"  # registered name, local folder, .gguf file or hub id
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"  # auto: bf16 only with AMX / AVX512-BF16
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


@dataclass
class GenerationRecord:
    """One generated answer: ``items`` = the catalog indices of its titles in order (unique; unmapped titles
    dropped), ``n_titles`` the parsed titles considered (≤ n_titles), ``n_mapped`` how many of them mapped."""

    key: str
    context: str
    completion: str
    titles: list[str]
    items: list[int]
    n_titles: int
    n_mapped: int
    conv_id: str = ""
    turn_id: int = -1
    settings: str = ""  # generation_settings(...) of the settings that made it ("" in files of older versions)

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> GenerationRecord:
        return cls(**{k: raw[k] for k in cls.__dataclass_fields__ if k in raw})


@dataclass
class TitleTokens:
    """Catalog titles as LLM tokens: ``ids`` (n_items, T) index rows of ``table`` (right-padded with 0, see
    ``lengths``), ``table`` (V_used, d) = the LLM input-embedding rows of ``vocab`` (V_used,) original token ids."""

    ids: torch.Tensor
    lengths: torch.Tensor
    table: torch.Tensor
    vocab: torch.Tensor

    def embeddings(self, items: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(tokens (k, T, d), lengths (k,)) of ``items`` (all items when None)."""
        ids = self.ids if items is None else self.ids[items]
        lengths = self.lengths if items is None else self.lengths[items]
        return self.table[ids], lengths


def title_tokens(lm: Any, titles: Sequence[str], max_tokens: int = 32) -> TitleTokens:
    """Tokenize titles with ``lm.tokenize_titles`` and gather only the embedding rows they use."""
    ids, lengths = lm.tokenize_titles(list(titles), max_tokens=max_tokens)
    mask = torch.arange(ids.shape[1])[None, :] < lengths[:, None]
    vocab = torch.unique(ids[mask])
    local = torch.searchsorted(vocab, ids).clamp(max=len(vocab) - 1).masked_fill(~mask, 0)
    table = lm.token_embeddings()[vocab].clone().float()
    return TitleTokens(local, lengths, table, vocab)


_YEAR = re.compile(r"\s*\(\d{4}\)\s*$")


def strip_year(title: str) -> str:
    """``"Heat (1995)"`` -> ``"Heat"``; a title without a trailing year is unchanged (never emptied)."""
    return _YEAR.sub("", title) or title


def subsample(n: int, max_samples: int | None, seed: int) -> np.ndarray:
    """Sorted indices of ``min(n, max_samples)`` of ``range(n)`` drawn without replacement (all when None)."""
    if max_samples is None or max_samples >= n:
        return np.arange(n)
    if max_samples < 0:
        raise ValueError(f"max_samples must be >= 0, got {max_samples}")
    return np.sort(np.random.default_rng(seed).choice(n, size=max_samples, replace=False))


def generation_key(identity: str, max_new_tokens: int, answer_prefix: str, prompt: str) -> str:
    text = f"{identity}\x00{max_new_tokens}\x00{answer_prefix}\x00{prompt}"
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def item_prompt_contexts(template: str, titles: Sequence[str]) -> list[str]:
    """The self-supervised item prompt of every title (``template`` with its one ``{title}`` placeholder)."""
    try:
        return [template.format(title=title) for title in titles]
    except (KeyError, IndexError, ValueError) as exc:
        raise LmrecError(f"item_prompt {template!r}: expected one {{title}} placeholder and no other braces "
                         f"({exc!r})") from None


def generation_settings(identity: str, cfg: PrepareConfig) -> str:
    """The settings a generation depends on, as one string stored with each record: the LLM, the answer length and
    prefix, the number of titles asked for and the domain (the prompt's words)."""
    return json.dumps({"llm": identity, "max_new_tokens": cfg.max_new_tokens, "answer_prefix": cfg.answer_prefix,
                       "n_titles": cfg.n_titles, "domain": cfg.domain}, sort_keys=True)


def map_completion(completion: str, matcher: Any, n_titles: int = 20) -> tuple[list[str], list[int], int]:
    """(parsed display titles, catalog items in order, number of titles that mapped) of one completion, keeping
    its first ``n_titles`` titles (:func:`lmrec.llm.parse_completion` then ``TitleMatcher.map``, no ground truth)."""
    from lmrec.llm import parse_completion

    parsed = parse_completion(completion)[:n_titles]
    mapping = matcher.map([t.key for t in parsed])
    return [t.display for t in parsed], mapping.indices, sum(m is not None for m in mapping.matched)


def _read_records(path: Path) -> dict[str, GenerationRecord]:
    out: dict[str, GenerationRecord] = {}
    if not path.exists():
        return out
    with open(path, encoding="utf-8") as f:
        for line_no, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                record = GenerationRecord.from_dict(json.loads(line))
            except (json.JSONDecodeError, TypeError) as exc:
                raise LmrecError(f"{path}, line {line_no}: not a generation record ({exc})") from None
            out[record.key] = record
    return out


def _write_records(path: Path, records: Sequence[GenerationRecord]) -> None:
    atomic_write(path, lambda f: f.writelines(json.dumps(asdict(r)) + "\n" for r in records))


class LLMFeatures:
    """A prepared folder: per split the kept samples, their q (n, d) and the LLM's generations, plus title tokens.

    ``samples[split]`` are the kept :class:`CRSSample` (in dataset order), ``q[split]`` their rows;
    ``generations[split]`` maps a context to its :class:`GenerationRecord` (only generated splits).
    """

    def __init__(self, folder: Path, data: CRSData, payload: dict[str, Any], meta: dict[str, Any]):
        self.folder = Path(folder)
        self.data = data
        self.meta = meta
        self.identity: str = payload["identity"]
        # the titles as the catalog writes them ("Heat (1995)") and without the year ("Heat"); a folder of an older
        # version has one set, the year-less one if it was prepared with title_year = false
        self.tokens: TitleTokens | None = payload["tokens"]
        self.tokens_no_year: TitleTokens | None = payload.get("tokens_no_year")
        if self.tokens_no_year is None and meta.get("config", {}).get("title_year") is False:
            self.tokens, self.tokens_no_year = None, self.tokens
        self.samples: dict[str, list[CRSSample]] = {}
        self.q: dict[str, torch.Tensor] = {}
        for split in SPLITS:
            entry = payload["splits"].get(split)
            if entry is None:
                continue
            all_samples = data.samples(split)
            kept = [all_samples[int(i)] for i in entry["indices"]]
            for s, (conv, turn) in zip(kept, entry["keys"]):
                if (s.conv_id, s.turn_id) != (conv, turn):
                    raise LmrecError(f"{self.folder}: the {split} samples changed since prepare "
                                     f"(expected turn {conv}/{turn}, found {s.conv_id}/{s.turn_id}); run prepare again")
            self.samples[split], self.q[split] = kept, entry["q"]
        self.item_prompt: str | None = payload.get("item_prompt")
        self.item_prompt_q: torch.Tensor | None = payload.get("item_prompt_q")
        # only the records made with this folder's settings: a generations file keeps those of earlier settings too
        wanted = generation_settings(self.identity, prepare_config(meta))
        self.generations: dict[str, dict[str, GenerationRecord]] = {}
        self.other_generations: dict[str, int] = {}  # records of other settings, left out
        for split in SPLITS:
            path = self.folder / f"generations-{split}.jsonl"
            if path.exists():
                records = list(_read_records(path).values())
                self.generations[split] = {r.context: r for r in records if r.settings == wanted}
                self.other_generations[split] = sum(r.settings != wanted for r in records)
                if records and not self.generations[split]:
                    warnings.warn(f"{path}: none of its {len(records)} generations was made with this folder's "
                                  "settings (or they predate settings being recorded); run prepare again to use them",
                                  stacklevel=2)

    def title_tokens(self, year: bool = True) -> TitleTokens:
        """The catalog's title tokens with the trailing year (``"Heat (1995)"``, the paper's) or without
        (``"Heat"``)."""
        tokens = self.tokens if year else self.tokens_no_year
        if tokens is None:
            raise LmrecError(f"{self.folder} has no title tokens {'with' if year else 'without'} the year (prepared "
                             "by an older lmrec): run prepare again")
        return tokens

    @property
    def dim(self) -> int:
        return int(next(t for t in (self.tokens, self.tokens_no_year) if t is not None).table.shape[1])

    @property
    def n_items(self) -> int:
        return len(self.data.catalog)

    def q_table(self) -> dict[str, torch.Tensor]:
        """context -> q over every prepared split (and the item prompts, when prepared)."""
        table = {s.context: row for split in self.samples for s, row in zip(self.samples[split], self.q[split])}
        if self.item_prompt_q is not None:
            table.update(zip((s.context for s in self.item_prompt_samples()), self.item_prompt_q))
        return table

    def item_prompt_samples(self) -> list[CRSSample]:
        """One self-supervised training turn per catalog item: context = the item prompt with its title, label =
        the item (conv_id ``"item-prompt"``, turn_id = the item). Prepare with ``item_prompt`` to have them."""
        if self.item_prompt is None or self.item_prompt_q is None:
            raise LmrecError(f"{self.folder}: no item prompts; prepare with item_prompt, e.g. "
                             "'User: I want to watch {title}.'")
        contexts = item_prompt_contexts(self.item_prompt, self.data.catalog.titles)
        return [CRSSample("item-prompt", i, context, [], [i], [True]) for i, context in enumerate(contexts)]

    def completions(self) -> dict[str, str]:
        """context -> generated completion over every generated split."""
        return {ctx: r.completion for records in self.generations.values() for ctx, r in records.items()}

    def generated_samples(self, split: str) -> list[CRSSample]:
        """The kept samples of ``split`` that have a generation."""
        records = self.generations.get(split, {})
        return [s for s in self.samples.get(split, []) if s.context in records]

    def llm_label_samples(self, split: str, top_k: int = 5, label_source: str = "llm") -> list[CRSSample]:
        """Samples whose targets are reindex labels: the LLM's top-``top_k`` mapped items (``"llm"``: the turns with
        a generation), the ground truth (``"ground_truth"``: every kept turn) or both (``"both"``: every kept turn,
        its LLM items first where it has a generation, then its targets, duplicates removed). Samples left with no
        label are dropped. ``target_is_new`` is recomputed against ``mentioned``."""
        if label_source not in ("llm", "ground_truth", "both"):
            raise ValueError(f"label_source must be 'llm', 'ground_truth' or 'both', got {label_source!r}")
        records = self.generations.get(split, {})
        if label_source == "llm" and not records:
            raise LmrecError(f"{self.folder}: no generations for split {split!r}: prepare with it in generate_splits")
        out = []
        pool = self.generated_samples(split) if label_source == "llm" else self.samples.get(split, [])
        for s in pool:
            labels: list[int] = []
            if label_source in ("llm", "both") and s.context in records:
                labels += records[s.context].items[:top_k]
            if label_source in ("ground_truth", "both"):
                labels += s.targets
            labels = list(dict.fromkeys(labels))
            if labels:
                mentioned = set(s.mentioned)
                out.append(CRSSample(s.conv_id, s.turn_id, s.context, s.mentioned, labels,
                                     [t not in mentioned for t in labels]))
        return out


FEATURES_FILE = "features.safetensors"


_TOKEN_FIELDS = {"title_ids": "ids", "title_lengths": "lengths", "token_table": "table", "vocab": "vocab"}
_NO_YEAR = "no_year."  # prefix of the tensors of the titles without the year


def _save_payload(path: Path, payload: Mapping[str, Any]) -> None:
    tensors = {}
    for prefix, key in (("", "tokens"), (_NO_YEAR, "tokens_no_year")):
        tensors |= {prefix + name: getattr(payload[key], field) for name, field in _TOKEN_FIELDS.items()}
    if payload.get("item_prompt_q") is not None:
        tensors["item_prompts.q"] = payload["item_prompt_q"]
    keys = {}
    for split, entry in payload["splits"].items():
        tensors[f"splits.{split}.indices"] = entry["indices"]
        tensors[f"splits.{split}.q"] = entry["q"]
        keys[split] = [list(k) for k in entry["keys"]]
    save_tensors(path, tensor_dict(tensors), {"identity": payload["identity"], "keys": keys,
                                              "item_prompt": payload.get("item_prompt")})


def _load_payload(path: Path) -> dict[str, Any]:
    tensors, meta = load_tensors(path)
    payload: dict[str, Any] = {}
    for prefix, key in (("", "tokens"), (_NO_YEAR, "tokens_no_year")):
        if prefix + "title_ids" in tensors:
            payload[key] = TitleTokens(**{field: tensors[prefix + name] for name, field in _TOKEN_FIELDS.items()})
    payload["identity"] = meta["identity"]
    payload["item_prompt"], payload["item_prompt_q"] = meta.get("item_prompt"), tensors.get("item_prompts.q")
    payload["splits"] = {split: {"indices": tensors[f"splits.{split}.indices"], "q": tensors[f"splits.{split}.q"],
                                 "keys": [tuple(k) for k in keys]} for split, keys in meta["keys"].items()}
    return payload


def load_features(folder: str | Path, data: CRSData) -> LLMFeatures:
    """Open a folder written by :func:`prepare_features` for ``data`` (the same dataset and split)."""
    folder = Path(folder)
    path = folder / FEATURES_FILE
    if not path.exists():
        raise LmrecError(f"{folder}: no {FEATURES_FILE}; run `lmrec crs prepare --out {folder}` first")
    payload = _load_payload(path)
    meta = json.loads((folder / "prepare.json").read_text(encoding="utf-8"))
    if meta.get("dataset") not in (None, data.name):
        raise LmrecError(f"{folder} was prepared for dataset {meta.get('dataset')!r}, not {data.name!r}")
    return LLMFeatures(folder, data, payload, meta)


def _encode_in_chunks(lm: Any, contexts: Sequence[str], cfg: PrepareConfig, cache: Any, what: str, progress: bool,
                      log: Callable[[str], None], completions: Sequence[str] | None = None
                      ) -> tuple[torch.Tensor, dict[str, int]]:
    """(q float32 (n, d), token counts) of ``contexts`` in order, ``ENCODE_CHUNK`` at a time: each chunk reaches the
    cache as it finishes (a killed prepare resumes there) and, with ``progress``, logs a line."""
    start = clock.now()
    parts = [torch.empty(0, lm.hidden_size)]
    tokens = {"tokens": 0, "computed": 0}
    for lo in range(0, len(contexts), ENCODE_CHUNK):
        answers = None if completions is None else completions[lo : lo + ENCODE_CHUNK]
        parts.append(lm.encode_contexts(contexts[lo : lo + ENCODE_CHUNK], batch_size=cfg.encode_batch_size,
                                        max_length=cfg.max_length, completions=answers, cache=cache,
                                        domain=cfg.domain, n_items=cfg.n_titles, reuse_kv=cfg.reuse_kv))
        for key in tokens:
            tokens[key] += lm.last_encoding.get(key, 0)
        if progress and len(contexts) > ENCODE_CHUNK:
            log(f"  encoded {min(lo + ENCODE_CHUNK, len(contexts))}/{len(contexts)} {what} "
                f"({clock.now() - start:.0f} s)")
    return torch.cat(parts).float().contiguous(), tokens


def prepare_features(
    data: CRSData,
    lm: Any,
    folder: str | Path,
    config: PrepareConfig | None = None,
    cache: Any = None,
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> LLMFeatures:
    """Encode q for the (sub)sampled turns of every split, generate for ``generate_splits``, tokenize titles.

    ``lm``: a :class:`lmrec.llm.CausalLM`; ``cache``: an :class:`lmrec.text.EmbeddingCache` for q (None: the
    default cache root). Writes the folder described in the module docstring and returns it opened.
    """
    from lmrec.llm import TitleMatcher
    from lmrec.text.cache import EmbeddingCache

    cfg = config or PrepareConfig()
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    cache = cache if cache is not None else EmbeddingCache()
    matcher = TitleMatcher(data.catalog.titles)
    meta: dict[str, Any] = {"dataset": data.name, "llm": cfg.llm, "identity": lm.identity, "config": asdict(cfg),
                            "splits": {}}
    splits: dict[str, Any] = {}
    for k, split in enumerate(SPLITS):
        samples = data.samples(split)
        keep = subsample(len(samples), cfg.max_samples.get(split), cfg.seed + k)
        kept = [samples[int(i)] for i in keep]
        info: dict[str, Any] = {"samples": len(samples), "kept": len(kept),
                                "subsample": None if len(kept) == len(samples) else f"seed {cfg.seed + k}"}
        completions = None
        answer = subsample(len(kept), cfg.max_generate.get(split), cfg.seed + 100 + k) \
            if split in cfg.generate_splits else np.zeros(0, dtype=np.int64)
        if cfg.q_mode == "completion" and len(answer) < len(kept):  # q is read after the LLM's own answer
            raise SettingsError(Argument("q_mode", "completion"), " reads the LLM's answer to every kept turn, but "
                                f"{len(answer)} of the {len(kept)} kept {split} turns are answered (",
                                Argument("generate_splits", cfg.generate_splits), ", ",
                                Argument("max_generate", cfg.max_generate), ")")
        if len(answer):  # max_generate 0 for a split: nothing generated there
            records, info["generation"] = _generate(lm, [kept[int(i)] for i in answer],
                                                    folder / f"generations-{split}.jsonl", cfg, matcher, progress,
                                                    log, split)
            info["generation"]["turns"] = len(answer)
            if cfg.q_mode == "completion":
                completions = [records[s.context].completion for s in kept]
        start = clock.now()
        # dataset order (conversations, then their turns): each context extends the last, so the KV cache is reused
        q, tokens = _encode_in_chunks(lm, [s.context for s in kept], cfg, cache, f"{split} turns",
                                      progress, log, completions)
        seconds = clock.now() - start
        info["encoding"] = {"seconds": seconds, "seconds_per_sample": seconds / max(len(kept), 1),
                            "note": "includes cache hits (0 s each)", "reuse_kv": cfg.reuse_kv,
                            "tokens": tokens["tokens"], "tokens_computed": tokens["computed"]}
        log(f"{split}: {len(kept)}/{len(samples)} turns; q {tuple(q.shape)} in {seconds:.1f} s")
        splits[split] = {"indices": torch.as_tensor(keep, dtype=torch.long), "q": q.float().contiguous(),
                         "keys": [(s.conv_id, s.turn_id) for s in kept]}
        meta["splits"][split] = info
    item_prompt_q = None
    if cfg.item_prompt is not None:
        if cfg.q_mode == "completion":
            raise SettingsError(Argument("item_prompt", cfg.item_prompt), " needs ", Argument("q_mode", "prefix"),
                                " (item prompts have no generated answer to encode)")
        start = clock.now()
        contexts = item_prompt_contexts(cfg.item_prompt, data.catalog.titles)
        item_prompt_q, prompt_tokens = _encode_in_chunks(lm, contexts, cfg, cache, "item prompts", progress, log)
        meta["item_prompts"] = {"template": cfg.item_prompt, "items": len(contexts),
                                "seconds": clock.now() - start, "tokens": prompt_tokens["tokens"],
                                "tokens_computed": prompt_tokens["computed"]}
        log(f"item prompts: {len(contexts)} in {meta['item_prompts']['seconds']:.1f} s")
    tokens = title_tokens(lm, data.catalog.titles, cfg.max_title_tokens)
    tokens_no_year = title_tokens(lm, [strip_year(t) for t in data.catalog.titles], cfg.max_title_tokens)
    meta["titles"] = {"items": len(data.catalog), "mean_tokens": float(tokens.lengths.float().mean()),
                      "mean_tokens_no_year": float(tokens_no_year.lengths.float().mean()),
                      "max_tokens": int(tokens.lengths.max()), "vocab_rows": len(tokens.vocab)}
    payload = {"identity": lm.identity, "splits": splits, "tokens": tokens, "tokens_no_year": tokens_no_year,
               "item_prompt": cfg.item_prompt,
               "item_prompt_q": item_prompt_q}
    _save_payload(folder / FEATURES_FILE, payload)
    write_json(folder / "prepare.json", meta)
    return LLMFeatures(folder, data, payload, meta)


def prepare_dataset(dataset: str | Path, out: str | Path, config: PrepareConfig | None = None,
                    cache_root: str | Path | None = None, progress: bool = True,
                    log: Callable[[str], None] = print) -> LLMFeatures:
    """Load a conversational dataset (registered name or folder) and the LLM, then :func:`prepare_features` into
    ``out`` (its lines to ``log``); ``prepare.json`` also records the LLM's load time, the loader's skip counts and
    the torch threads."""
    from lmrec.data.registry import load_dataset
    from lmrec.llm import CausalLM
    from lmrec.text.cache import EmbeddingCache

    cfg = config or PrepareConfig()
    data = load_dataset(dataset)
    if not isinstance(data, CRSData):
        raise LmrecError(f"{dataset!r} is not a conversational dataset (expected e.g. inspired or redial)")
    with progress_bars(progress):  # transformers' "Loading weights" bar too
        start = clock.now()
        lm = CausalLM.load(cfg.llm, dtype=cfg.dtype, device=cfg.device)
        load_seconds = clock.now() - start
        features = prepare_features(data, lm, out, cfg, EmbeddingCache(cache_root) if cache_root else None,
                                    progress, log)
    features.meta.update(llm_load_seconds=load_seconds, loader_skipped=dict(data.skipped),
                         torch_threads=torch.get_num_threads())
    write_json(Path(out) / "prepare.json", features.meta)
    return features


def _generate(
    lm: Any, samples: Sequence[CRSSample], path: Path, cfg: PrepareConfig, matcher: Any, progress: bool,
    log: Callable[[str], None], split: str,
) -> tuple[dict[str, GenerationRecord], dict[str, Any]]:
    """Generations for ``samples`` (cached in ``path``), keyed by context; and timing / mapping statistics."""
    cached = _read_records(path)
    prompts = [lm.prompt(s.context, n_items=cfg.n_titles, domain=cfg.domain) for s in samples]
    keys = [generation_key(lm.identity, cfg.max_new_tokens, cfg.answer_prefix, p) for p in prompts]
    settings = generation_settings(lm.identity, cfg)
    for key in keys:  # the key hashes these settings and the prompt: a cached record of it was made with them
        if key in cached:
            cached[key].settings = settings
    # longest prompts first, so each batch pads little and the slowest batch is known early
    todo = sorted((i for i, key in enumerate(keys) if key not in cached), key=lambda i: -len(prompts[i]))
    chunk = max(cfg.generate_batch_size, 1)
    seconds = 0.0
    for start in range(0, len(todo), chunk):
        rows = todo[start : start + chunk]
        t0 = clock.now()
        texts = lm.generate([prompts[i] for i in rows], max_new_tokens=cfg.max_new_tokens,
                            batch_size=cfg.generate_batch_size, formatted=True, answer_prefix=cfg.answer_prefix,
                            progress=False)
        seconds += clock.now() - t0
        for i, text in zip(rows, texts):
            titles, items, n_mapped = map_completion(text, matcher, cfg.n_titles)
            s = samples[i]
            cached[keys[i]] = GenerationRecord(keys[i], s.context, text, titles, items, len(titles), n_mapped,
                                               s.conv_id, s.turn_id, settings)
        _write_records(path, list(cached.values()))
        if progress:
            done = start + len(rows)
            log(f"  generated {done}/{len(todo)} {split} turns ({seconds / done:.1f} s/turn)")
    if not todo and samples:
        _write_records(path, list(cached.values()))  # the settings now stored with reused records
    records = {samples[i].context: cached[key] for i, key in enumerate(keys)}
    n_titles = sum(r.n_titles for r in records.values())
    n_mapped = sum(r.n_mapped for r in records.values())
    stats = {"generated_now": len(todo), "cached": len(samples) - len(todo), "seconds": seconds,
             "seconds_per_sample": seconds / len(todo) if todo else None,
             "titles_per_turn": n_titles / len(records), "mapped_share": n_mapped / n_titles if n_titles else 0.0,
             "items_per_turn": sum(len(r.items) for r in records.values()) / len(records)}
    log(f"{split}: {len(records)} generations ({len(todo)} new), {stats['titles_per_turn']:.1f} titles/turn, "
        f"{100 * stats['mapped_share']:.1f}% mapped to the catalog")
    return records, stats


def prepare_config(meta: Mapping[str, Any]) -> PrepareConfig:
    """The :class:`PrepareConfig` recorded in a prepared folder's (or a run's) metadata."""
    raw = meta.get("config", meta)
    return PrepareConfig(**{k: (tuple(v) if k == "generate_splits" else v)
                            for k, v in raw.items() if k in PrepareConfig.__dataclass_fields__})


def context_features(features: LLMFeatures | None, config: PrepareConfig | None = None,
                     cache_root: str | Path | None = None) -> ContextFeatures:
    """q / completion lookup over the prepared turns of ``features`` (none when None), with the LLM of
    ``config`` (default: the one that prepared ``features``) loaded lazily for new contexts."""
    from lmrec.llm import CausalLM
    from lmrec.text.cache import EmbeddingCache

    cfg = config or prepare_config(features.meta)  # type: ignore[union-attr]
    return ContextFeatures(features.q_table() if features else {}, features.completions() if features else {},
                           lm_loader=lambda: CausalLM.load(cfg.llm, dtype=cfg.dtype, device=cfg.device), config=cfg,
                           cache=EmbeddingCache(cache_root) if cache_root else None,
                           samples=features.samples if features else None)


class ContextFeatures:
    """q vectors and completions for contexts: prepared tables first, the LLM (loaded lazily) for the rest.

    Used at evaluation and serving time: a new conversation (or a masked probe of a known one) is encoded by the
    LLM through the embedding cache; ``completion`` generates with the prepare settings. ``lm_loader`` returns a
    :class:`lmrec.llm.CausalLM` (e.g. ``lambda: CausalLM.load(name, dtype)``). ``cache``: an
    :class:`lmrec.text.EmbeddingCache` for new q vectors; None = the default cache root; False = no cache (every
    new context runs the LLM, as for timing). ``samples``: the prepared turns per split (what a run is evaluated on).
    """

    def __init__(
        self,
        q_table: Mapping[str, torch.Tensor] | None = None,
        completions: Mapping[str, str] | None = None,
        lm_loader: Callable[[], Any] | None = None,
        config: PrepareConfig | None = None,
        cache: Any = None,
        samples: Mapping[str, Sequence[CRSSample]] | None = None,
    ):
        self.q_table = dict(q_table or {})
        self.samples = {split: list(turns) for split, turns in (samples or {}).items()}  # the prepared turns
        self.completion_table = dict(completions or {})
        self.lm_loader = lm_loader
        self.config = config or PrepareConfig()
        self.cache = cache
        self._lm: Any = None
        self._lock = threading.RLock()  # one LLM load, one LLM call at a time (a server answers from many threads)

    @property
    def lm(self) -> Any:
        with self._lock:
            if self._lm is None:
                if self.lm_loader is None:
                    raise LmrecError("this context was not prepared and no LLM is configured to encode it")
                self._lm = self.lm_loader()
            return self._lm

    def q(self, contexts: Sequence[str]) -> torch.Tensor:
        """(len(contexts), d) float32; safe to call from several threads (the LLM runs one call at a time)."""
        with self._lock:
            return self._q(contexts)

    def _q(self, contexts: Sequence[str]) -> torch.Tensor:
        missing = list(dict.fromkeys(c for c in contexts if c not in self.q_table))
        if missing:
            cfg = self.config
            completions = self._completions(missing) if cfg.q_mode == "completion" else None
            from lmrec.text.cache import EmbeddingCache

            cache = None if self.cache is False else self.cache if self.cache is not None else EmbeddingCache()
            vectors = self.lm.encode_contexts(missing, batch_size=cfg.encode_batch_size, max_length=cfg.max_length,
                                              completions=completions, cache=cache, domain=cfg.domain,
                                              n_items=cfg.n_titles, reuse_kv=cfg.reuse_kv)
            self.q_table.update(zip(missing, vectors.float()))
        return torch.stack([self.q_table[c] for c in contexts]) if contexts else torch.empty(0, 0)

    def completions(self, contexts: Sequence[str]) -> list[str]:
        with self._lock:
            return self._completions(contexts)

    def _completions(self, contexts: Sequence[str]) -> list[str]:
        missing = list(dict.fromkeys(c for c in contexts if c not in self.completion_table))
        if missing:
            cfg = self.config
            texts = self.lm.generate(missing, max_new_tokens=cfg.max_new_tokens, batch_size=cfg.generate_batch_size,
                                     answer_prefix=cfg.answer_prefix, progress=False, n_items=cfg.n_titles,
                                     domain=cfg.domain)
            self.completion_table.update(zip(missing, texts))
        return [self.completion_table[c] for c in contexts]
