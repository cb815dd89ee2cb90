"""How prepared LLM features are kept on disk and opened again: a folder made by ``lmrec crs prepare``::

    features.safetensors   q (n, d) and the sample indices of every split; the catalog's title token ids (local ids,
                           right-padded) and lengths, of the titles as written and without a trailing year
                           ("no_year." tensors); the token-embedding rows those titles use (not the whole table);
                           the LLM identity and the sample keys in its JSON header (lmrec.tensorfile: no pickle)
    generations-<split>.jsonl   the LLM's own answer for each sampled turn: completion, parsed titles, catalog items
    prepare.json           settings, counts, seconds per sample, share of generated titles that mapped

:class:`LLMFeatures` is such a folder opened for its dataset (samples, q, generations, title tokens), identified by
the LLM's identity and the settings its generations were made with.
"""

from __future__ import annotations

import copy
import json
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from lmrec.data.conversations import CRSData, CRSSample, Targets, new_targets_only
from lmrec.errors import LmrecError
from lmrec.inputs.config import SPLITS, generation_settings, prepare_config
from lmrec.io import atomic_write
from lmrec.llm.parsing import TitleMatch
from lmrec.tensorfile import load_tensors, save_tensors, tensor_dict

FEATURES_FILE = "features.safetensors"


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


def read_generations(path: Path) -> dict[str, GenerationRecord]:
    """The generation records of a ``generations-<split>.jsonl`` file (gzip-compressed where its name ends in
    ``.gz``) by key; none where the file does not exist. A line that is not a record is an error naming it."""
    import gzip

    out: dict[str, GenerationRecord] = {}
    if not path.exists():
        return out
    with (gzip.open(path, "rt", encoding="utf-8") if path.suffix == ".gz" else open(path, encoding="utf-8")) as f:
        for line_no, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                record = GenerationRecord.from_dict(json.loads(line))
            except (json.JSONDecodeError, TypeError) as exc:
                raise LmrecError(f"{path}, line {line_no}: not a generation record ({exc})") from None
            out[record.key] = record
    return out


def write_generations(path: Path, records: Sequence[GenerationRecord]) -> None:
    """Write ``records`` to ``path`` atomically, a JSON line each (gzip-compressed where its name ends in ``.gz``)."""
    import gzip

    text = "".join(json.dumps(asdict(r)) + "\n" for r in records)
    if Path(path).suffix == ".gz":
        data = gzip.compress(text.encode("utf-8"), mtime=0)
        atomic_write(path, lambda f: f.write(data), binary=True)
    else:
        atomic_write(path, lambda f: f.write(text))


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
        self._matchers: dict[str, Any] = {}  # title_match -> TitleMatcher, built when first asked for
        self.item_prompt: str | None = payload.get("item_prompt")
        self.item_prompt_q: torch.Tensor | None = payload.get("item_prompt_q")
        # only the records made with this folder's settings: a generations file keeps those of earlier settings too
        wanted = generation_settings(self.identity, prepare_config(meta))
        self.generations: dict[str, dict[str, GenerationRecord]] = {}
        self.other_generations: dict[str, int] = {}  # records of other settings, left out
        for split in SPLITS:
            path = self.folder / f"generations-{split}.jsonl"
            if path.exists():
                records = list(read_generations(path).values())
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
        from lmrec.inputs.prepare import item_prompt_contexts

        contexts = item_prompt_contexts(self.item_prompt, self.data.catalog.titles)
        return [CRSSample("item-prompt", i, context, [], [i], [True]) for i, context in enumerate(contexts)]

    @classmethod
    def open(cls, folder: Path, data: CRSData, payload: dict[str, Any], meta: dict[str, Any]) -> LLMFeatures:
        """The folder under ``data``'s target definition: its indices count the turns of every target ("all"), of
        which "new" is a view (:meth:`with_targets`)."""
        features = cls(folder, data.with_targets("all"), payload, meta)
        return features if data.targets == "all" else features.with_targets(data.targets)

    def with_targets(self, targets: Targets) -> LLMFeatures:
        """The same folder under another target definition (:class:`lmrec.data.conversations.CRSData`): with
        ``"new"``, each kept turn keeps the targets its context has not mentioned, and a turn left with none is
        dropped with its q row. Generations and title tokens are shared."""
        view = copy.copy(self)
        view.data = self.data.with_targets(targets)
        view.samples, view.q = {}, {}
        for split, samples in self.samples.items():
            rows = [i for i, s in enumerate(samples) if targets == "all" or any(s.target_is_new)]
            view.samples[split] = [new_targets_only(samples[i]) if targets == "new" else samples[i] for i in rows]
            view.q[split] = self.q[split][torch.as_tensor(rows, dtype=torch.long)]
        return view

    def completions(self) -> dict[str, str]:
        """context -> generated completion over every generated split."""
        return {ctx: r.completion for records in self.generations.values() for ctx, r in records.items()}

    def generated_samples(self, split: str) -> list[CRSSample]:
        """The kept samples of ``split`` that have a generation."""
        records = self.generations.get(split, {})
        return [s for s in self.samples.get(split, []) if s.context in records]

    def llm_label_samples(self, split: str, top_k: int = 5, label_source: str = "llm",
                          title_match: TitleMatch = "fuzzy") -> list[CRSSample]:
        """Samples whose targets are reindex labels: the LLM's top-``top_k`` mapped items (``"llm"``: the turns with
        a generation), the ground truth (``"ground_truth"``: every kept turn) or both (``"both"``: every kept turn,
        its LLM items first where it has a generation, then its targets, duplicates removed). Samples left with no
        label are dropped. ``target_is_new`` is recomputed against ``mentioned``.

        ``title_match``: how the answer's titles become items (:func:`lmrec.llm.title_matcher`). ``"fuzzy"``: the
        items mapped at prepare time; ``"nearest"`` (the official rule): the titles mapped again, each to the turn's
        target within 2 edits if there is one, else to the nearest catalog title."""
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
                labels += self.mapped_items(records[s.context], title_match, s.targets)[:top_k]
            if label_source in ("ground_truth", "both"):
                labels += s.targets
            labels = list(dict.fromkeys(labels))
            if labels:
                mentioned = set(s.mentioned)
                out.append(CRSSample(s.conv_id, s.turn_id, s.context, s.mentioned, labels,
                                     [t not in mentioned for t in labels]))
        return out


    def mapped_items(self, record: GenerationRecord, title_match: TitleMatch = "fuzzy",
                     ground_truth: Sequence[int] | None = None) -> list[int]:
        """The catalog items of one generation's parsed titles, in order, under ``title_match`` (see
        :meth:`llm_label_samples`)."""
        if title_match == "fuzzy":
            return record.items
        if title_match not in self._matchers:
            from lmrec.llm import title_matcher

            self._matchers[title_match] = title_matcher(self.data.catalog.titles, title_match)
        return self._matchers[title_match].map(record.titles, ground_truth).indices



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
    """Open a folder written by :func:`prepare_features` for ``data`` (the same dataset and split), under ``data``'s
    target definition (:meth:`LLMFeatures.open`)."""
    folder = Path(folder)
    path = folder / FEATURES_FILE
    if not path.exists():
        raise LmrecError(f"{folder}: no {FEATURES_FILE}; run `lmrec crs prepare --out {folder}` first")
    payload = _load_payload(path)
    meta = json.loads((folder / "prepare.json").read_text(encoding="utf-8"))
    if meta.get("dataset") not in (None, data.name):
        raise LmrecError(f"{folder} was prepared for dataset {meta.get('dataset')!r}, not {data.name!r}")
    return LLMFeatures.open(folder, data, payload, meta)


