"""Reindex step: condense each title's LLM token embeddings into one item embedding the LLM's q can score.

    e_i = agg(x_{i,1..len_i})                    x = frozen LLM input embeddings of title i's tokens
    score(q, i) = q · e_i                         ranking a turn = q @ E.T, one matrix product

Training (``train_reindex``): one row per (turn, label) with labels = the LLM's own top-5 mapped generations for the
TRAINING turns (``label_source="llm"``; ``"ground_truth"`` / ``"both"`` use or add the turn's real targets);
loss = cross-entropy over [q·e_pos, q·e_neg1 … q·e_negN] with N negatives drawn uniformly without replacement from
the catalog once per batch and shared by its rows. A negative equal to a row's positive is masked out of that row
(``filter_collisions=True``): the official reindex_step draws ``torch.randint`` over the global item set with
replacement and keeps such collisions, which trains the model to push the positive below itself; pass
``filter_collisions=False`` to reproduce that. Only the items in the batch (positives ∪ negatives) are run through
the aggregator. AdamW (lr 1e-4, weight decay 0, batch 256, gradient-norm clip 5.0); every ``eval_every`` epochs the
VALIDATION turns' labels (the same source as training; ``valid_labels="ground_truth"``: their real targets, an option
not in the paper) are ranked over the full catalog (HR@10 per (turn, label) = the official Recall@10), the best
state is kept and restored at the end; ``patience`` evaluations without improvement stop training. The LLM embeddings
are a frozen buffer. The ``sum`` aggregator has no parameters: it is used as is.

Options that are not in the paper (off by default): ``item_prompts`` adds the prepared self-supervised item prompts
to the training turns; ``center_q`` scores with q − μ, μ the mean q of the training turns (stored with the item
table, so the adapt step and serving centre alike), which removes the direction all contexts share;
``init_from_tokens`` makes e_i = mean_t x_{i,t} + agg(x_i) with agg's final projection started at zero, so training
starts from the title's own token rows (for an LLM with tied embeddings, its output rows: q·e_i is then the mean
logit the LLM gives the title's tokens) and learns a correction.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import PositiveInt
from torch import nn

from lmrec.data.conversations import CRSData, CRSSample, expand_pairs
from lmrec.errors import LmrecError
from lmrec.eval.validation import turn_validation
from lmrec.inputs import ModelInputs
from lmrec.inputs.store import TitleTokens
from lmrec.llm.parsing import TitleMatch
from lmrec.models.base import ModelConfig, register
from lmrec.models.crs.base import CRSRecommender
from lmrec.models.crs.rta.aggregators import Aggregator, build_aggregator, length_mask
from lmrec.models.crs.training import PairObjective
from lmrec.models.nn.losses import sample_negatives, sampled_softmax
from lmrec.models.queries import Conversations
from lmrec.settings import settings
from lmrec.train.trainer import TrainConfig, Trainer, TrainLog, resolve_device

__all__ = ["REINDEX_TRAIN_DEFAULTS", "ItemIndexer", "QSource", "RTAReindex", "ReindexConfig", "negative_mask",
           "sampled_softmax_loss", "tokens_from_state", "train_reindex"]

QSource = Callable[[Sequence[str]], torch.Tensor]  # contexts -> (n, d) q vectors


@settings
class ReindexConfig(ModelConfig):
    """Reindex model settings; the defaults are the official best_reindex.yaml (papers.md 1.4)."""

    aggregator: Literal["sum", "weighted", "gru", "transformer"] = "gru"
    label_source: Literal["llm", "ground_truth", "both"] = "llm"
    # labels of the VALIDATION turns that select the epoch: "label_source" (as training, the official behaviour) or
    # "ground_truth" (the turns' real targets: selection on what the tables measure, no validation answers needed)
    valid_labels: Literal["label_source", "ground_truth"] = "label_source"
    top_k: PositiveInt = 5  # LLM labels kept per turn (official MAX_LEN = 5)
    # how the LLM's titles become label items (lmrec.llm.title_matcher): "fuzzy" (fuzz.ratio >= 80, a title far from
    # every catalog title gives no label) or "nearest" (the official tools/2_entity_mapping.py: the turn's target
    # within 2 edits, else the nearest catalog title, always)
    title_match: TitleMatch = "fuzzy"
    n_negatives: PositiveInt = 1000
    filter_collisions: bool = True
    max_title_tokens: PositiveInt = 32
    item_prompts: bool = False  # also train on the prepared self-supervised item prompts (not in the paper)
    center_q: bool = False  # score with q − mean(q over the training turns) (not in the paper)
    # e = mean of the title's token rows + agg(x), agg's projection started at 0 (not in the paper)
    init_from_tokens: bool = False
    title_year: bool = True  # item tokens of "Heat (1995)" (the paper); False: of "Heat" (not in the paper)


#: the official reindex schedule; ``patience`` counts evaluations (official: 100 with 200 epochs, i.e. none)
REINDEX_TRAIN_DEFAULTS: dict[str, Any] = {"lr": 1e-4, "batch_size": 256, "epochs": 200, "eval_every": 2,
                                          "patience": 100, "metric": "hr@10", "optimizer": "adamw",
                                          "grad_clip": 5.0, "eval_batch_size": 512}


class ItemIndexer(nn.Module):
    """The frozen token rows of the catalog titles plus an aggregator: ``embed(items) -> (k, d)``."""

    def __init__(self, tokens: TitleTokens, aggregator: Aggregator, residual_mean: bool = False):
        super().__init__()
        self.register_buffer("token_table", tokens.table.float().clone())  # (V_used, d), frozen LLM rows
        self.register_buffer("title_ids", tokens.ids.long().clone())  # (n_items, T) rows of token_table
        self.register_buffer("title_lengths", tokens.lengths.long().clone())  # (n_items,)
        # subtracted from every q before scoring (``center_q``; zeros: the raw q, as the paper)
        self.register_buffer("q_mean", torch.zeros(tokens.table.shape[1]))
        # ``init_from_tokens``: the mean of the title's token rows is added to the aggregator's output
        self.register_buffer("residual_mean", torch.tensor(bool(residual_mean)))
        self.aggregator = aggregator

    def center(self, q: torch.Tensor) -> torch.Tensor:
        """q − the training mean it was fitted with (q itself unless ``center_q``)."""
        return q - self.q_mean

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):  # type: ignore[override]
        state_dict.setdefault(prefix + "q_mean", torch.zeros_like(self.q_mean))  # runs saved before these existed
        state_dict.setdefault(prefix + "residual_mean", torch.tensor(False))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    @property
    def n_items(self) -> int:
        return int(self.title_ids.shape[0])

    @property
    def dim(self) -> int:
        return int(self.token_table.shape[1])

    def embed(self, items: torch.Tensor | None = None, chunk_size: int = 1024) -> torch.Tensor:
        """(k, d) item embeddings of ``items`` (all items when None), aggregated ``chunk_size`` titles at a time."""
        items = torch.arange(self.n_items) if items is None else items.long()
        parts = []
        for start in range(0, len(items), chunk_size):
            rows = items[start : start + chunk_size]
            lengths = self.title_lengths[rows]
            width = int(lengths.max()) if len(rows) else 1
            tokens = self.token_table[self.title_ids[rows, :width]]  # (k, width, d)
            out = self.aggregator(tokens, lengths)
            if self.residual_mean:
                mask = length_mask(lengths, width).to(tokens.dtype)  # (k, width)
                out = out + (mask[:, :, None] * tokens).sum(1) / lengths.clamp(min=1)[:, None].to(tokens.dtype)
            parts.append(out)
        return torch.cat(parts) if parts else self.token_table.new_zeros(0, self.dim)

    @torch.no_grad()
    def item_table(self) -> torch.Tensor:
        """(n_items, d) single-token item embeddings, computed in eval mode."""
        was_training = self.training
        self.eval()
        table = self.embed()
        self.train(was_training)
        return table


def negative_mask(positives: torch.Tensor, negatives: torch.Tensor) -> torch.Tensor:
    """(b, N) bool: True where negative j equals row b's positive (those logits are removed from the row)."""
    return negatives[None, :] == positives[:, None]


def sampled_softmax_loss(
    q: torch.Tensor, positives: torch.Tensor, negatives: torch.Tensor, embed: Callable[[torch.Tensor], torch.Tensor],
    filter_collisions: bool = True,
) -> torch.Tensor:
    """CE over [q·e_pos, q·e_neg…] per row; ``embed`` maps item indices to (k, d) embeddings (called once on the
    union of the batch's items). With ``filter_collisions`` a negative equal to the row's positive is masked."""
    items, inverse = torch.unique(torch.cat([positives, negatives]), return_inverse=True)
    logits = q @ embed(items).T  # (b, u)
    pos = logits.gather(1, inverse[: len(positives), None])[:, 0]  # (b,)
    neg = logits[:, inverse[len(positives) :]]  # (b, N)
    return sampled_softmax(pos, neg, negative_mask(positives, negatives) if filter_collisions else None)


def train_reindex(
    indexer: ItemIndexer,
    q_source: QSource,
    train: Sequence[CRSSample],
    valid: Sequence[CRSSample],
    config: ReindexConfig,
    train_config: TrainConfig,
    folder: Path | None = None,
    resume: bool = False,
    seed: int | None = None,
) -> TrainLog:
    """Fit ``indexer.aggregator`` on the (turn, label) pairs of ``train`` (labels = ``targets``), selecting on the
    pairs of ``valid`` with :class:`lmrec.train.Trainer`; see the module docstring. ``seed``: of the negatives'
    stream (default ``train_config.seed``)."""
    pairs = expand_pairs(train)
    if not any(p.requires_grad for p in indexer.parameters()):
        log = TrainLog()
        log.stopped = f"{indexer.aggregator.kind} aggregator has no parameters: nothing to train"
        return log
    if not pairs:
        raise LmrecError("reindex: no (turn, label) training pairs (did the LLM's answers map to no catalog item?)")
    device = indexer.token_table.device
    q_train = q_source([s.context for s in train]).float().to(device)
    if config.center_q:  # the mean over the training turns (each turn once, not per label)
        indexer.q_mean.copy_(q_train.mean(0))
    seed = train_config.seed if seed is None else seed
    q_rows = indexer.center(q_train)
    sample_of = torch.as_tensor([p.sample for p in pairs], dtype=torch.long, device=device)
    label_of = torch.as_tensor([p.target for p in pairs], dtype=torch.long, device=device)

    def loss(rows: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        rows = rows.to(device)
        negatives = sample_negatives(indexer.n_items, config.n_negatives, generator).to(device)
        return sampled_softmax_loss(q_rows[sample_of[rows]], label_of[rows], negatives, indexer.embed,
                                    config.filter_collisions)

    def scorer(samples: Sequence[CRSSample]) -> torch.Tensor:
        return indexer.center(q_source([s.context for s in samples]).float().to(device)) @ indexer.item_table().T

    objective = PairObjective("reindex", indexer.aggregator, len(pairs), loss, seed)
    validate = turn_validation(scorer, valid, indexer.n_items, train_config)
    return Trainer.in_folder(train_config, folder).run(objective, validate, resume=resume, seed=seed)


@register("rta_reindex")
class RTAReindex(CRSRecommender):
    """The reindexed LLM: ``score = q @ E.T`` with E = the aggregated single-token item table.

    ``fit(data, train, inputs=ModelInputs(features=...))`` trains on the reindex labels of the prepared TRAINING
    turns (:meth:`lmrec.inputs.store.LLMFeatures.llm_label_samples`, per ``label_source``).
    """

    Config = ReindexConfig
    train_defaults = REINDEX_TRAIN_DEFAULTS
    trainable = True
    uses_llm = True
    needs = ("features",)

    def __init__(self, config: ReindexConfig | None = None, **overrides: Any):
        super().__init__(config, **overrides)
        self.indexer: ItemIndexer | None = None
        self.table: torch.Tensor | None = None
        self.log: TrainLog | None = None

    def build(self, tokens: TitleTokens, seed: int) -> None:
        torch.manual_seed(seed)
        dim = int(tokens.table.shape[1])
        aggregator = build_aggregator(self.config.aggregator, dim, tokens.ids.shape[1])
        if self.config.init_from_tokens:
            projection = getattr(aggregator, "proj", None)
            if projection is None:
                raise LmrecError(f"init_from_tokens needs an aggregator with a final projection (weighted, gru), "
                                 f"not {self.config.aggregator!r}")
            nn.init.zeros_(projection.weight)  # the item embedding starts as the mean of its title's token rows
            nn.init.zeros_(projection.bias)
        self.indexer = ItemIndexer(tokens, aggregator, residual_mean=self.config.init_from_tokens)
        self.indexer.to(self.device)
        self.n_items = self.indexer.n_items
        self.table = None

    def fit(self, data: CRSData, train: TrainConfig | dict | None = None, *, inputs: ModelInputs | None = None,
            folder: Path | None = None, resume: bool = False, on_validation: Any = None) -> TrainLog:
        from lmrec.inputs.lookup import context_features

        features = self.check_inputs(inputs).features
        cfg = self.train_config(train, self.config)
        self.device = resolve_device(cfg.device)
        self.context = context_features(features)
        seed = self.stream_seed(cfg)
        self.build(features.title_tokens(self.config.title_year), seed)
        if len(data.catalog) != self.n_items:
            raise LmrecError(f"rta_reindex: {self.n_items} titles tokenized, the data has {len(data.catalog)} items")
        c = self.config
        valid_source = c.label_source if c.valid_labels == "label_source" else "ground_truth"
        labels = {split: features.llm_label_samples(split, c.top_k, source, c.title_match)
                  if split in features.samples else []
                  for split, source in (("train", c.label_source), ("valid", valid_source))}
        if c.item_prompts:
            labels["train"] += features.item_prompt_samples()
        self.log = train_reindex(self.indexer, self.context.q, labels["train"], labels["valid"], c, cfg, folder,
                                 resume, seed=seed)
        self.table = self.indexer.item_table()
        return self.log

    def item_table(self) -> torch.Tensor:
        if self.indexer is None:
            raise LmrecError("rta_reindex: call fit before score")
        if self.table is None:
            self.table = self.indexer.item_table()
        return self.table

    def item_space(self) -> torch.Tensor:
        return self.item_table()

    def score_conversations(self, query: Conversations) -> torch.Tensor:
        return self.indexer.center(self.q(query.samples)) @ self.item_table().T

    def state(self) -> dict[str, torch.Tensor]:
        return {**{f"indexer.{k}": v for k, v in self.indexer.state_dict().items()}, "item_table": self.item_table()}

    def load_state(self, state: dict[str, torch.Tensor]) -> None:
        self.build(tokens_from_state(state, "indexer."), 0)
        self.indexer.load_state_dict({k.removeprefix("indexer."): v for k, v in state.items()
                                      if k.startswith("indexer.")})
        self.table = state["item_table"]


def tokens_from_state(state: dict[str, torch.Tensor], prefix: str) -> TitleTokens:
    """The title tokens an :class:`ItemIndexer` saved in its state (under ``prefix``)."""
    return TitleTokens(state[f"{prefix}title_ids"], state[f"{prefix}title_lengths"], state[f"{prefix}token_table"],
                       torch.zeros(0, dtype=torch.long))
