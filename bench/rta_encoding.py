"""RTA context encoding with and without KV-cache reuse: the first ``--turns`` training turns of a conversational
dataset, in dataset order (conversation by conversation, turn by turn), encoded once batched from scratch
(``CausalLM.encode_texts``) and once keeping the KV cache from turn to turn (``CausalLM.encode_sequential``).
Reports seconds, tokens run, the speed-up and the largest difference between the two q tables. No embedding
cache is used. Run alone.

    python bench/rta_encoding.py [--dataset inspired] [--turns 200] [--threads 2]
"""

from __future__ import annotations

import argparse
import datetime
import os
import time
from pathlib import Path

import torch

RESULTS = Path(__file__).resolve().parent / "results"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="inspired")
    parser.add_argument("--llm", default="smollm2-135m")
    parser.add_argument("--turns", type=int, default=200)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-length", type=int, default=512)
    parser.add_argument("--out", type=Path, default=RESULTS / "rta_encoding.md")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from common import machine, write_lines

    from lmrec.data.registry import load_dataset
    from lmrec.llm import CausalLM

    data = load_dataset(args.dataset)
    turns = data.samples("train")[: args.turns]
    lm = CausalLM.load(args.llm, dtype="float32")
    texts = lm.encoding_texts([s.context for s in turns])
    cut = sum(len(ids) > args.max_length for ids in lm._ids(texts, None))  # left-truncated: nothing to reuse
    start = time.perf_counter()
    full = lm.encode_texts(texts, batch_size=args.batch_size, max_length=args.max_length)
    full_seconds = time.perf_counter() - start
    start = time.perf_counter()
    reused, stats = lm.encode_sequential(texts, max_length=args.max_length)
    reuse_seconds = time.perf_counter() - start
    gap = float((full - reused).abs().max())
    cosine = float(torch.nn.functional.cosine_similarity(full, reused).min())
    conversations = len({s.conv_id for s in turns})
    lines = [
        f"# RTA context encoding: KV-cache reuse — {datetime.date.today().isoformat()}", "",
        f"Machine: {machine()}, {args.threads} torch thread(s); load average {os.getloadavg()[0]:.2f}. "
        f"LLM {lm.identity}. {args.dataset}: the first {len(turns)} training turns ({conversations} conversations), "
        f"max_length {args.max_length} tokens (left truncation, as the official code): {cut} of the {len(turns)} "
        f"texts are longer and cut, which shifts all their tokens, so they are computed whole.", "",
        "| way | seconds | s / turn | tokens run |", "|---|---|---|---|",
        f"| batched from scratch (batch {args.batch_size}) | {full_seconds:.1f} | {full_seconds / len(turns):.3f} | "
        f"{stats['tokens']} |",
        f"| one at a time, KV cache kept | {reuse_seconds:.1f} | {reuse_seconds / len(turns):.3f} | "
        f"{stats['computed']} |", "",
        f"Speed-up {full_seconds / reuse_seconds:.2f}x; tokens run {stats['computed'] / stats['tokens']:.1%} of all. "
        f"Largest |q difference| {gap:.2e}, smallest cosine {cosine:.6f} (float rounding).", ""]
    write_lines(args.out, lines)


if __name__ == "__main__":
    main()
