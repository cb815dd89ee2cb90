"""One reindex training step of the GRU aggregator, two ways, on a prepared dataset's real title tokens:

    bidirectional   nn.GRU(bidirectional=True) over the packed titles, the output at len − 1 (the paper's form)
    lmrec           GRUAggregator: the forward GRU + the backward direction's one step on the last token, which is
                    all that output sees (the same numbers; tests/crs/test_rta.py checks outputs and gradients)

A step = the item embeddings of the union of a batch's positives and ``--negatives`` uniform negatives, the
sampled-softmax logits of ``--batch`` turns' q against them, forward and backward. Median of ``--repeats`` steps
after one warm-up, the same items for both. Run alone (other processes on the cores distort the figures).

    python bench/reindex_step.py --features runs/reproduce/rta/01-inspired/prepare [--threads 2]
"""

from __future__ import annotations

import argparse
import datetime
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors.torch import load_file
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

RESULTS = Path(__file__).resolve().parent / "results"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--features", type=Path, required=True, help="a prepared folder (lmrec crs prepare)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--negatives", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--out", type=Path, default=RESULTS / "reindex_step.md")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    from common import machine, write_lines

    from lmrec.models.crs.rta.aggregators import GRUAggregator

    tensors = load_file(str(args.features / "features.safetensors"))
    table, ids, lengths = tensors["token_table"], tensors["title_ids"], tensors["title_lengths"]
    n_items, dim = len(lengths), table.shape[1]
    items = torch.unique(torch.cat([torch.randint(n_items, (args.batch,)), torch.randperm(n_items)[: args.negatives]]))
    width = int(lengths[items].max())
    tokens, item_lengths = table[ids[items, :width]], lengths[items]
    q = tensors["splits.train.q"][: args.batch]
    agg = GRUAggregator(dim)

    def bidirectional() -> torch.Tensor:
        packed = pack_padded_sequence(tokens, item_lengths, batch_first=True, enforce_sorted=False)
        out, _ = pad_packed_sequence(agg.gru(packed)[0], batch_first=True)
        return agg.proj(out[torch.arange(len(items)), item_lengths - 1])

    def step(embed: Callable[[], torch.Tensor]) -> float:
        agg.zero_grad()
        start = time.perf_counter()
        torch.logsumexp(q @ embed().T, dim=1).sum().backward()
        return time.perf_counter() - start

    ways = {"bidirectional": bidirectional, "lmrec": lambda: agg(tokens, item_lengths)}
    for embed in ways.values():
        step(embed)
    times: dict[str, list[float]] = {name: [] for name in ways}
    for _ in range(args.repeats):  # alternating, so load changes hit both
        for name, embed in ways.items():
            times[name].append(step(embed))
    ms = {name: 1000 * statistics.median(t) for name, t in times.items()}
    lines = [f"# Reindex step, GRU aggregator — {datetime.date.today()}", "",
             f"Machine: {machine()}; torch {torch.__version__}, {args.threads} thread(s); load average (1 min) "
             f"{os.getloadavg()[0]:.2f}. Titles: {args.features} ({n_items} items, d = {dim}, "
             f"{float(lengths.float().mean()):.1f} tokens on average). A step: {len(items)} items "
             f"({args.batch} turns' positives + {args.negatives} negatives), forward and backward, median of "
             f"{args.repeats}.", "", "| way | ms per step |", "|---|---|"]
    lines += [f"| {name} | {value:.0f} |" for name, value in ms.items()]
    lines += ["", f"lmrec's GRU aggregator: {ms['bidirectional'] / ms['lmrec']:.2f}x faster per step.", ""]
    write_lines(args.out, lines)


if __name__ == "__main__":
    main()
