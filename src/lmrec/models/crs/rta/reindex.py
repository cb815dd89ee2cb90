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
VALIDATION turns' labels are ranked over the full catalog (HR@10 per (turn, label) = the official Recall@10), the best
state is kept and restored at the end; ``patience`` evaluations without improvement stop training. The LLM embeddings
are a frozen buffer. The ``sum`` aggregator has no parameters: it is used as is.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from lmrec.data.conversations import CRSData, CRSSample, expand_pairs
from lmrec.errors import LmrecError
from lmrec.eval.crs import evaluate_crs
from lmrec.models.crs.base import CRSRecommender, register_crs
from lmrec.models.crs.rta.aggregators import Aggregator, build_aggregator
from lmrec.models.crs.rta.features import TitleTokens
from lmrec.train.trainer import EpochRecord, TrainLog

__all__ = ["ItemIndexer", "QSource", "RTAReindex", "ReindexConfig", "negative_mask", "sample_negatives",
           "sampled_softmax_loss", "train_reindex"]

QSource = Callable[[Sequence[str]], torch.Tensor]  # contexts -> (n, d) q vectors


@dataclass
class ReindexConfig:
    """Reindex settings; defaults are the official best_reindex.yaml (papers.md 1.4) except ``patience``, which
    counts evaluations (official: 100 with 200 epochs, i.e. effectively none)."""

    aggregator: str = "gru"
    label_source: str = "llm"  # llm | ground_truth | both
    top_k: int = 5  # LLM labels kept per turn (official MAX_LEN = 5)
    n_negatives: int = 1000
    filter_collisions: bool = True
    lr: float = 1e-4
    weight_decay: float = 0.0
    batch_size: int = 256
    epochs: int = 200
    eval_every: int = 2
    patience: int = 100
    metric: str = "hr@10"
    grad_clip: float | None = 5.0
    max_minutes: float | None = None
    seed: int = 2024
    max_title_tokens: int = 32
    progress: bool = True


class ItemIndexer(nn.Module):
    """The frozen token rows of the catalog titles plus an aggregator: ``embed(items) -> (k, d)``."""

    def __init__(self, tokens: TitleTokens, aggregator: Aggregator):
        super().__init__()
        self.register_buffer("token_table", tokens.table.float().clone())  # (V_used, d), frozen LLM rows
        self.register_buffer("title_ids", tokens.ids.long().clone())  # (n_items, T) rows of token_table
        self.register_buffer("title_lengths", tokens.lengths.long().clone())  # (n_items,)
        self.aggregator = aggregator

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
            parts.append(self.aggregator(tokens, lengths))
        return torch.cat(parts) if parts else self.token_table.new_zeros(0, self.dim)

    @torch.no_grad()
    def item_table(self) -> torch.Tensor:
        """(n_items, d) single-token item embeddings, computed in eval mode."""
        was_training = self.training
        self.eval()
        table = self.embed()
        self.train(was_training)
        return table


def sample_negatives(n_items: int, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """``min(n, n_items)`` distinct items drawn uniformly (without replacement) from ``range(n_items)``."""
    return torch.randperm(n_items, generator=generator)[: min(n, n_items)]


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
    pos = logits.gather(1, inverse[: len(positives), None])  # (b, 1)
    neg = logits[:, inverse[len(positives) :]]  # (b, N)
    if filter_collisions:
        neg = neg.masked_fill(negative_mask(positives, negatives), -torch.inf)
    return F.cross_entropy(torch.cat([pos, neg], dim=1), torch.zeros(len(q), dtype=torch.long, device=q.device))


def train_reindex(
    indexer: ItemIndexer,
    q_source: QSource,
    train: Sequence[CRSSample],
    valid: Sequence[CRSSample],
    config: ReindexConfig | None = None,
    log_path: Path | None = None,
) -> TrainLog:
    """Fit ``indexer.aggregator`` on the (turn, label) pairs of ``train`` (labels = ``targets``), selecting on the
    pairs of ``valid``; see the module docstring. Returns a :class:`lmrec.train.trainer.TrainLog`."""
    cfg = config or ReindexConfig()
    pairs = expand_pairs(train)
    params = [p for p in indexer.parameters() if p.requires_grad]
    log = TrainLog()
    if not params:
        log.stopped = f"{indexer.aggregator.kind} aggregator has no parameters: nothing to train"
        return log
    if not pairs:
        raise LmrecError("reindex: no (turn, label) training pairs (did the LLM's answers map to no catalog item?)")
    q_train = q_source([s.context for s in train]).float()  # (n_samples, d)
    sample_of = torch.as_tensor([p.sample for p in pairs], dtype=torch.long)
    label_of = torch.as_tensor([p.target for p in pairs], dtype=torch.long)
    torch.manual_seed(cfg.seed)
    generator = torch.Generator().manual_seed(cfg.seed)
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    k = int(cfg.metric.partition("@")[2])
    table_cache: dict[str, torch.Tensor] = {}

    def scorer(samples: Sequence[CRSSample]) -> torch.Tensor:
        return q_source([s.context for s in samples]).float() @ table_cache["table"].T

    best_state: dict[str, Any] | None = None
    bad_evals = 0
    start = time.perf_counter()
    epochs = tqdm(range(1, cfg.epochs + 1), desc=f"reindex {indexer.aggregator.kind}", disable=not cfg.progress)
    for epoch in epochs:
        t0 = time.perf_counter()
        indexer.train()
        total, n_batches = 0.0, 0
        order = torch.randperm(len(pairs), generator=generator)
        for b in range(0, len(order), cfg.batch_size):
            rows = order[b : b + cfg.batch_size]
            negatives = sample_negatives(indexer.n_items, cfg.n_negatives, generator)
            optimizer.zero_grad(set_to_none=True)
            loss = sampled_softmax_loss(q_train[sample_of[rows]], label_of[rows], negatives, indexer.embed,
                                        cfg.filter_collisions)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"reindex loss became {loss.item()} at epoch {epoch}; lower the learning rate")
            loss.backward()
            if cfg.grad_clip is not None:
                nn.utils.clip_grad_norm_(params, cfg.grad_clip)
            optimizer.step()
            total += loss.item()
            n_batches += 1
        indexer.eval()
        record = EpochRecord(epoch, total / max(n_batches, 1), time.perf_counter() - t0)
        over_time = cfg.max_minutes is not None and time.perf_counter() - start > 60 * cfg.max_minutes
        last = epoch == cfg.epochs or over_time
        if valid and (epoch % cfg.eval_every == 0 or last):
            table_cache["table"] = indexer.item_table()
            result = evaluate_crs(scorer, valid, indexer.n_items, ks=(k,), batch_size=512)
            record.valid = {m: est.mean for m, est in result.summary().items()}
            score = record.valid[cfg.metric]
            if score > log.best_score:
                log.best_score, log.best_epoch = score, epoch
                log.seconds_to_best = time.perf_counter() - start
                best_state = copy.deepcopy(indexer.aggregator.state_dict())
                bad_evals = 0
            else:
                bad_evals += 1
            epochs.set_postfix(loss=f"{record.loss:.4f}", **{cfg.metric: f"{score:.4f}"},
                               best=f"{log.best_score:.4f}@{log.best_epoch}")
        log.records.append(record)
        if log_path is not None:
            log_path.parent.mkdir(parents=True, exist_ok=True)
            with open(log_path, "a", encoding="utf-8") as f:
                f.write(json.dumps(dataclasses.asdict(record)) + "\n")
        if bad_evals >= cfg.patience:
            log.stopped = f"early stop: no validation improvement in {cfg.patience} evaluations"
            break
        if over_time and epoch != cfg.epochs:
            log.stopped = f"time budget of {cfg.max_minutes} minutes"
            break
    log.total_seconds = time.perf_counter() - start
    if best_state is not None:
        indexer.aggregator.load_state_dict(best_state)
    indexer.eval()
    return log


@register_crs("rta_reindex")
class RTAReindex(CRSRecommender):
    """The reindexed LLM: ``score = q @ E.T`` with E = the aggregated single-token item table.

    ``fit(data, train, valid)`` expects samples whose ``targets`` are the reindex labels (see
    :meth:`lmrec.models.crs.rta.features.LLMFeatures.llm_label_samples`).
    """

    def __init__(self, tokens: TitleTokens, q_source: QSource, config: ReindexConfig | None = None):
        self.config = config or ReindexConfig()
        self.q_source = q_source
        torch.manual_seed(self.config.seed)
        dim = int(tokens.table.shape[1])
        self.indexer = ItemIndexer(tokens, build_aggregator(self.config.aggregator, dim, tokens.ids.shape[1]))
        self.table: torch.Tensor | None = None
        self.log: TrainLog | None = None

    @property
    def n_items(self) -> int:
        return self.indexer.n_items

    def fit(self, data: CRSData | None, train: Sequence[CRSSample], valid: Sequence[CRSSample],
            log_path: Path | None = None) -> TrainLog:
        if data is not None and len(data.catalog) != self.n_items:
            raise LmrecError(f"rta_reindex: {self.n_items} titles tokenized, the data has {len(data.catalog)} items")
        self.log = train_reindex(self.indexer, self.q_source, train, valid, self.config, log_path)
        self.table = self.indexer.item_table()
        return self.log

    def item_table(self) -> torch.Tensor:
        if self.table is None:
            self.table = self.indexer.item_table()
        return self.table

    def score(self, samples: Sequence[CRSSample]) -> torch.Tensor:
        q = self.q_source([s.context for s in samples]).float()
        return q @ self.item_table().T

    def state(self) -> dict[str, Any]:
        return {"config": dataclasses.asdict(self.config), "aggregator": self.indexer.aggregator.state_dict(),
                "item_table": self.item_table()}

    def load_state(self, state: dict[str, Any]) -> None:
        self.indexer.aggregator.load_state_dict(state["aggregator"])
        self.table = state["item_table"]
