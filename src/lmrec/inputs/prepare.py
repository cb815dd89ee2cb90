"""Making the model inputs: the LLM's q vectors, answers and title tokens for conversation turns
(:func:`prepare_features`, ``lmrec crs prepare``), and the LM item-text features of the AlphaRec family
(:func:`item_text_features`), both through the embedding cache so that a rerun computes nothing again.

q for a context is the LLM's final hidden state at the last token of ``prompt(context) + "1."``
(:meth:`lmrec.llm.CausalLM.encode_contexts`), stored in an :class:`lmrec.text.EmbeddingCache` keyed by
(LLM identity + max_length, prompt text): a rerun, or another folder with the same LLM, encodes nothing.
``q_mode="completion"`` encodes the prompt plus the model's own answer cut after its first "1." as the official
tools/3_context_encoding.py does; the default ``"prefix"`` needs no generation, so training and serving see the
same input and a new conversation is one forward pass.

Generation is greedy with the answer forced to start with ``answer_prefix="1."`` (the paper: no prefix, 512 new tokens;
without the prefix SmolLM2-135M mostly continues the dialogue instead of listing titles) and ``max_new_tokens=160``.
Generations are cached in the jsonl files by ``key = sha256(identity, max_new_tokens, answer_prefix, prompt)``:
a rerun generates only the missing turns (each batch is written atomically as it finishes). ``answers_from``:
generation files made elsewhere (another folder or machine, e.g. a report's ``answers/``) whose records of the same
key are taken instead of generated again; their titles are mapped to the catalog again here.
``max_samples`` limits each split to a seeded random subsample (sorted, reported) because generation on a CPU takes
seconds per turn.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lmrec import clock
from lmrec.data.catalog import ItemCatalog
from lmrec.data.conversations import CRSData, CRSSample
from lmrec.errors import Argument, LmrecError
from lmrec.inputs.config import SPLITS, PrepareConfig, generation_settings
from lmrec.inputs.store import (
    FEATURES_FILE,
    GenerationRecord,
    LLMFeatures,
    _save_payload,
    read_generations,
    title_tokens,
    write_generations,
)
from lmrec.io import write_json
from lmrec.progress import progress_bars
from lmrec.settings import SettingsError

ENCODE_CHUNK = 64  # contexts encoded (and written to the cache) at a time


def item_text_features(catalog: ItemCatalog, encoder: str, fields: Sequence[str] = ("title",),
                       device: str = "cpu") -> np.ndarray:
    """(n_items, d) LM embeddings of each item's text (``fields`` joined) with the text ``encoder``
    (:func:`lmrec.text.get_encoder`), through the embedding cache (keyed by the encoder's identity and the text)."""
    from lmrec.text import encode_catalog, get_encoder

    return encode_catalog(catalog.text(tuple(fields)), get_encoder(encoder, device=device))


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


def map_completion(completion: str, matcher: Any, n_titles: int = 20, ground_truth: Sequence[int] | None = None
                   ) -> tuple[list[str], list[int], int]:
    """(parsed display titles, catalog items in order, number of titles that mapped) of one completion, keeping
    its first ``n_titles`` titles (:func:`lmrec.llm.parse_completion` then ``TitleMatcher.map``; ``ground_truth``:
    the turn's targets, tried first, as the official mapping does for training labels)."""
    from lmrec.llm import parse_completion

    parsed = parse_completion(completion)[:n_titles]
    mapping = matcher.map([t.key for t in parsed], ground_truth)
    return [t.display for t in parsed], mapping.indices, sum(m is not None for m in mapping.matched)


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
    answers_from: Sequence[Path] = (),
) -> LLMFeatures:
    """Encode q for the (sub)sampled turns of every split, generate for ``generate_splits``, tokenize titles.

    ``lm``: a :class:`lmrec.llm.CausalLM`; ``cache``: an :class:`lmrec.text.EmbeddingCache` for q (None: the
    default cache root); ``answers_from``: generation files whose answers are taken where their key matches (the
    module docstring). Writes the folder described in the module docstring and returns it opened.
    """
    from lmrec.llm import TitleMatcher
    from lmrec.text.cache import EmbeddingCache

    targets, data = data.targets, data.with_targets("all")  # the folder indexes the turns of every target
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
                                                    log, split, answers_from)
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
    return LLMFeatures.open(folder, data.with_targets(targets), payload, meta)


def prepare_dataset(dataset: str | Path, out: str | Path, config: PrepareConfig | None = None,
                    cache_root: str | Path | None = None, progress: bool = True,
                    log: Callable[[str], None] = print, answers_from: Sequence[Path] = ()) -> LLMFeatures:
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
                                    progress, log, answers_from)
    features.meta.update(llm_load_seconds=load_seconds, loader_skipped=dict(data.skipped),
                         torch_threads=torch.get_num_threads())
    write_json(Path(out) / "prepare.json", features.meta)
    return features


def _generate(
    lm: Any, samples: Sequence[CRSSample], path: Path, cfg: PrepareConfig, matcher: Any, progress: bool,
    log: Callable[[str], None], split: str, answers_from: Sequence[Path] = (),
) -> tuple[dict[str, GenerationRecord], dict[str, Any]]:
    """Generations for ``samples`` (cached in ``path``; a key missing there is taken from the files of
    ``answers_from`` that hold it), keyed by context; and timing / mapping statistics."""
    cached = read_generations(path)
    prompts = [lm.prompt(s.context, n_items=cfg.n_titles, domain=cfg.domain) for s in samples]
    keys = [generation_key(lm.identity, cfg.max_new_tokens, cfg.answer_prefix, p) for p in prompts]
    settings = generation_settings(lm.identity, cfg)
    found = len(set(keys) & cached.keys())

    def record(i: int, completion: str) -> GenerationRecord:
        titles, items, n_mapped = map_completion(completion, matcher, cfg.n_titles)
        s = samples[i]
        return GenerationRecord(keys[i], s.context, completion, titles, items, len(titles), n_mapped, s.conv_id,
                                s.turn_id, settings)

    taken = 0
    for source in answers_from:  # the key hashes the settings and the prompt: a record of it was made with them
        earlier = read_generations(Path(source))
        for i, key in enumerate(keys):
            if key not in cached and key in earlier:
                cached[key] = record(i, earlier[key].completion)
                taken += 1
    for key in keys:
        if key in cached:
            cached[key].settings = settings
    if samples:  # the settings stored with cached records, and the answers taken, kept before anything is generated
        write_generations(path, list(cached.values()))
    # each missing key once (turns can share a context), longest prompts first, so each batch pads little and the
    # slowest batch is known early
    first = {key: i for i, key in reversed(list(enumerate(keys))) if key not in cached}
    todo = sorted(first.values(), key=lambda i: -len(prompts[i]))
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
            cached[keys[i]] = record(i, text)
        write_generations(path, list(cached.values()))
        if progress:
            done = start + len(rows)
            log(f"  generated {done}/{len(todo)} {split} answers ({seconds / done:.1f} s each)")
    records = {samples[i].context: cached[key] for i, key in enumerate(keys)}
    n_titles = sum(r.n_titles for r in records.values())
    n_mapped = sum(r.n_mapped for r in records.values())
    # answers are counted once per distinct prompt (turns can share a context): found in the folder's file, taken
    # from answers_from, or generated now
    stats = {"answers": len(set(keys)), "cached": found, "taken_from_earlier": taken, "generated_now": len(todo),
             "seconds": seconds, "seconds_per_answer": seconds / len(todo) if todo else None,
             "titles_per_turn": n_titles / len(records), "mapped_share": n_mapped / n_titles if n_titles else 0.0,
             "items_per_turn": sum(len(r.items) for r in records.values()) / len(records)}
    log(f"{split}: {len(records)} generations ({len(todo)} new, {taken} from earlier answers), "
        f"{stats['titles_per_turn']:.1f} titles/turn, {100 * stats['mapped_share']:.1f}% mapped to the catalog")
    return records, stats


