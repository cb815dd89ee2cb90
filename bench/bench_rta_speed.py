"""Serving speed of the reindexed RTA recommender against zero-shot generation: the same test conversations of a
prepared dataset, the same LLM and settings (the run's prepare.json), one process, one run.

    reindexed   `lmrec recommend` with the run's model: q = one LLM forward pass over
                prompt + "1." (cut to max_length tokens), then q @ E.T over the whole catalog, mentioned items
                masked, top-k
    zero-shot   the same recommend with ZeroShotLLM: greedy generation of max_new_tokens after "1." (prefill +
                decode, uncut prompt), parse 20 titles, fuzzy-map them to the catalog, positional scores, top-k

Both LLM calls go through ContextFeatures(cache=False), so every conversation really runs the LLM (no embedding
cache, no stored generation); the q and completions it produces are compared with the prepared ones as a check.
Conversations are answered one at a time (batch 1, the serving case), the two paths alternating per conversation so
that changes in machine load hit both, after --warmup conversations that are not timed. Breakdown: forward/prefill
(prompt, tokenization and the LLM's first forward pass), decode (the rest of the generation), and ranking
(matmul + mask + top-k, or parse + map + rank). Memory: the resident set sampled every 10 ms during each path, its
peak and its largest rise within one call (after malloc_trim; see RSSPeak), and the process's ru_maxrss (tracemalloc
does not see torch's allocations). --batch-size B > 1 also times all N conversations scored at once, batches of B.
Run alone: other processes on the same cores distort every figure (the load average is recorded).

    python bench/bench_rta_speed.py [--run runs/crs/reindex-gru] [--n 12] [--threads 1] [--batch-size 0]
"""

from __future__ import annotations

import argparse
import ctypes
import dataclasses
import datetime
import os
import resource
import statistics
import threading
import time
from collections.abc import Callable, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
from common import machine

from lmrec.eval.report import text_table as format_table
from lmrec.inputs import ModelInputs
from lmrec.inputs.lookup import ContextFeatures
from lmrec.inputs.store import load_features
from lmrec.io import atomic_write, write_json
from lmrec.llm import CausalLM
from lmrec.models.crs.zero_shot_llm import ZeroShotLLM
from lmrec.models.queries import Conversations
from lmrec.run import Run

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
RESULTS = BENCH / "results"
PATHS = ("reindexed", "zero-shot")


class RSSPeak:
    """Resident set size per named phase, sampled from /proc/self/statm every ``interval`` s by a daemon thread:
    ``peak[name]`` the highest seen, ``growth[name]`` the largest rise over the RSS at a phase's start, measured
    after glibc's ``malloc_trim(0)`` hands the heap that earlier phases left free back to the system."""

    def __init__(self, interval: float = 0.01):
        self.interval, self.page = interval, os.sysconf("SC_PAGE_SIZE")
        self.libc = ctypes.CDLL("libc.so.6")
        self.active = False
        self.current = 0
        self.peak: dict[str, int] = {}
        self.growth: dict[str, int] = {}
        threading.Thread(target=self._run, daemon=True).start()

    def rss(self) -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * self.page

    def _run(self) -> None:
        while True:
            if self.active:
                self.current = max(self.current, self.rss())
            time.sleep(self.interval)

    @contextmanager
    def phase(self, name: str):
        self.libc.malloc_trim(0)
        base = self.current = self.rss()
        self.active = True
        try:
            yield
        finally:
            self.active = False
            top = max(self.current, self.rss())
            self.peak[name] = max(self.peak.get(name, 0), top)
            self.growth[name] = max(self.growth.get(name, 0), top - base)


def timed(fn: Callable[..., Any], calls: list[tuple[float, float]]) -> Callable[..., Any]:
    """``fn`` that appends (start, end) perf_counter of each call to ``calls``."""
    def call(contexts: Sequence[str], **kwargs: Any) -> Any:
        start = time.perf_counter()
        out = fn(contexts, **kwargs)
        calls.append((start, time.perf_counter()))
        return out
    return call


def recommend(model: Any, sample: Any, k: int) -> list[int]:
    """Top-k items for one conversation turn, the mentioned items left out (what `lmrec recommend` does)."""
    scores = model.score(Conversations((sample,)))[0].clone()
    if sample.mentioned:
        scores[torch.as_tensor(sample.mentioned)] = -torch.inf
    return torch.topk(scores, k).indices.tolist()


def mean_se(values: Sequence[float]) -> str:
    se = statistics.stdev(values) / len(values) ** 0.5 if len(values) > 1 else float("nan")
    return f"{statistics.fmean(values):.3g} ± {se:.2g}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", type=Path, default=ROOT / "runs/crs/reindex-gru", help="a reindex or adapt run")
    parser.add_argument("--n", type=int, default=12, help="test conversations timed")
    parser.add_argument("--warmup", type=int, default=1, help="conversations run first, not timed")
    parser.add_argument("--k", type=int, default=10, help="top-k returned")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=0, help="> 1: also time all N at once, batches of this")
    parser.add_argument("--seed", type=int, default=0, help="seed of the choice of conversations")
    parser.add_argument("--out", type=Path, default=RESULTS / "rta_speed")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    load_start = os.getloadavg()[0]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s); load average {load_start:.2f}", flush=True)

    run = Run.load(args.run)
    if run.model.name not in ("rta_reindex", "rta_adapt"):
        raise SystemExit(f"{args.run} is a {run.model.name} run; give a reindex or adapt run")
    cfg = run.model.context.config
    lm = CausalLM.load(cfg.llm, dtype=cfg.dtype)
    features = load_features((args.run / run.manifest["features"]).resolve(), run.data)
    pool = features.generated_samples("test") or features.samples["test"]
    if len(pool) < args.n + args.warmup:
        raise SystemExit(f"only {len(pool)} prepared test conversations, asked for {args.n} + {args.warmup} warm-up")
    order = np.random.default_rng(args.seed).permutation(len(pool))
    warmup = [pool[int(i)] for i in order[: args.warmup]]
    samples = [pool[int(i)] for i in sorted(order[args.warmup : args.warmup + args.n])]

    ends: list[float] = []  # perf_counter at the end of every forward pass of the LLM's base model
    lm.model.base_model.register_forward_hook(lambda *_: ends.append(time.perf_counter()))
    q_calls: list[tuple[float, float]] = []
    gen_calls: list[tuple[float, float]] = []

    def models(config: Any) -> tuple[Any, Any, ContextFeatures, ContextFeatures]:
        """Fresh uncached context sources (nothing memoized from an earlier pass) and both models over them."""
        q_source = ContextFeatures(lm_loader=lambda: lm, config=config, cache=False)
        gen_source = ContextFeatures(lm_loader=lambda: lm, config=config, cache=False)
        timed_q = ContextFeatures(lm_loader=lambda: lm, config=config, cache=False)
        timed_q.q = timed(q_source.q, q_calls)  # type: ignore[method-assign]
        run.model.context = timed_q
        zero_shot = ZeroShotLLM(n_titles=cfg.n_titles, completions=timed(gen_source.completions, gen_calls))
        zero_shot.restore({}, ModelInputs(), run.data)
        return run.model, zero_shot, q_source, gen_source

    reindexed_run, zero_shot_run, q_source, gen_source = models(cfg)
    run.model.score(Conversations(tuple(warmup[:1])))  # builds the item table the model keeps between requests
    mem = RSSPeak()
    rss_loaded = mem.rss()
    for sample in warmup:
        for path_run in (reindexed_run, zero_shot_run):
            recommend(path_run, sample, args.k)

    rows: list[dict[str, Any]] = []
    for i, sample in enumerate(samples):
        row: dict[str, Any] = {"conversation": f"{sample.conv_id}/{sample.turn_id}"}
        text = lm.encoding_texts([sample.context], n_items=cfg.n_titles, domain=cfg.domain)[0]
        row["tokens"] = len(lm.tokenizer(text, add_special_tokens=False)["input_ids"])  # = the generation prompt
        for path, path_run, calls in (("reindexed", reindexed_run, q_calls), ("zero-shot", zero_shot_run, gen_calls)):
            ends.clear()
            calls.clear()
            with mem.phase(path):
                start, cpu = time.perf_counter(), time.process_time()
                recommend(path_run, sample, args.k)
                total, cpu = time.perf_counter() - start, time.process_time() - cpu
            [(llm_start, llm_end)] = calls
            row[f"{path} s"], row[f"{path} cpu s"], row[f"{path} forwards"] = total, cpu, len(ends)
            row[f"{path} prefill s"] = ends[0] - llm_start
            row[f"{path} decode s"] = llm_end - ends[0]
            row[f"{path} rank s"] = total - (llm_end - llm_start)
        row["ratio"] = row["zero-shot s"] / row["reindexed s"]
        rows.append(row)
        print(f"{i + 1}/{len(samples)} {row['conversation']}: {row['tokens']} tokens, reindexed "
              f"{row['reindexed s']:.2f} s, zero-shot {row['zero-shot s']:.2f} s ({row['zero-shot forwards']} "
              f"forwards), ratio {row['ratio']:.1f}, load {os.getloadavg()[0]:.2f}", flush=True)

    # checks: the LLM really ran, with the prepare settings
    prepared_q, prepared_text = features.q_table(), features.completions()
    q_diff = max(float((q_source.q_table[s.context] - prepared_q[s.context]).abs().max()) for s in samples)
    q_norm = statistics.fmean(float(prepared_q[s.context].norm()) for s in samples)
    same_text = sum(gen_source.completion_table[s.context] == prepared_text.get(s.context) for s in samples)

    def col(key: str) -> list[float]:
        return [r[key] for r in rows]

    summary = []
    for path in PATHS:
        summary.append({
            "path": path, "s/conv median": f"{statistics.median(col(f'{path} s')):.3g}",
            "s/conv mean ± SE": mean_se(col(f"{path} s")),
            "cpu s mean": f"{statistics.fmean(col(f'{path} cpu s')):.3g}",
            "forward/prefill s": f"{statistics.median(col(f'{path} prefill s')):.3g}",
            "decode s": f"{statistics.median(col(f'{path} decode s')):.3g}",
            "rank s": f"{statistics.median(col(f'{path} rank s')):.2g}",
            "LLM forwards": f"{statistics.fmean(col(f'{path} forwards')):.1f}",
            "peak RSS MB": f"{mem.peak[path] / 2**20:.0f}", "RSS growth MB": f"{mem.growth[path] / 2**20:.0f}"})
    ratios = col("ratio")
    ratio_line = (f"ratio zero-shot / reindexed per conversation: median {statistics.median(ratios):.2f}, "
                  f"mean {mean_se(ratios)}, min {min(ratios):.2f}, max {max(ratios):.2f} (n = {len(ratios)})")
    steps = [(r["zero-shot decode s"] / max(r["zero-shot forwards"] - 1, 1)) for r in rows]
    model_line = (f"generation = prefill + (forwards - 1) decode steps: median prefill "
                  f"{statistics.median(col('zero-shot prefill s')):.3g} s, median decode step "
                  f"{statistics.median(steps) * 1000:.3g} ms, mean {statistics.fmean(col('zero-shot forwards')):.0f} "
                  "forwards; the reindexed path is one forward over the same prompt, so ratio ≈ 1 + steps·step / "
                  "forward")

    cuts = np.quantile(col("tokens"), [1 / 3, 2 / 3])
    groups = np.digitize(col("tokens"), cuts, right=True)
    by_length = []
    for g, name in enumerate(("short", "middle", "long")):
        part = [r for r, k in zip(rows, groups) if k == g]
        if part:
            by_length.append({
                "tokens tertile": name, "n": len(part),
                "tokens": f"{min(r['tokens'] for r in part)}-{max(r['tokens'] for r in part)}",
                "reindexed s": f"{statistics.median(r['reindexed s'] for r in part):.3g}",
                "zero-shot s": f"{statistics.median(r['zero-shot s'] for r in part):.3g}",
                "decode s": f"{statistics.median(r['zero-shot decode s'] for r in part):.3g}",
                "ratio median": f"{statistics.median(r['ratio'] for r in part):.2f}",
                "ratio mean": f"{statistics.fmean(r['ratio'] for r in part):.2f}"})

    batched = []
    if args.batch_size > 1:
        config = dataclasses.replace(cfg, encode_batch_size=args.batch_size, generate_batch_size=args.batch_size)
        for path, path_run in zip(PATHS, models(config)[:2]):
            with mem.phase(f"{path} batched"):
                start = time.perf_counter()
                torch.topk(path_run.score(Conversations(tuple(samples))), args.k, dim=1)
                seconds = time.perf_counter() - start
            batched.append({"path": path, "batch size": args.batch_size, "conversations": len(samples),
                            "s": f"{seconds:.3g}", "conversations/s": f"{len(samples) / seconds:.3g}",
                            "peak RSS MB": f"{mem.peak[f'{path} batched'] / 2**20:.0f}",
                            "RSS growth MB": f"{mem.growth[f'{path} batched'] / 2**20:.0f}"})
        batched.append({"path": "ratio", "s": f"{float(batched[1]['s']) / float(batched[0]['s']):.3g}"})

    load_end = os.getloadavg()[0]
    per_conv = [{"conversation": r["conversation"], "tokens": r["tokens"], "reindexed s": f"{r['reindexed s']:.3g}",
                 "zero-shot s": f"{r['zero-shot s']:.3g}", "prefill s": f"{r['zero-shot prefill s']:.3g}",
                 "decode s": f"{r['zero-shot decode s']:.3g}", "forwards": r["zero-shot forwards"],
                 "ratio": f"{r['ratio']:.2f}"} for r in rows]
    date = datetime.date.today().isoformat()
    header = [
        f"# RTA serving speed — {date}", "",
        f"`python bench/bench_rta_speed.py --run {args.run} --n {args.n} --threads {args.threads}"
        f"{f' --batch-size {args.batch_size}' if args.batch_size > 1 else ''}`",
        f"Machine: {machine()}; torch {torch.__version__}, {torch.get_num_threads()} thread(s). "
        f"**Load average (1 min) {load_start:.2f} at start, {load_end:.2f} at end.**",
        f"LLM {lm.identity}; dataset {run.data.name} ({len(run.catalog)} items), run {run.model.name} "
        f"({args.run}); {args.n} prepared test conversations (seed {args.seed}), {args.warmup} warm-up, batch 1, "
        f"top-{args.k}; max_length {cfg.max_length}, max_new_tokens {cfg.max_new_tokens}, answer prefix "
        f"{cfg.answer_prefix!r}.",
        f"Checks: max |q - prepared q| = {q_diff:.2g} (mean |q| {q_norm:.3g}); completions equal to the prepared "
        f"ones (generated with batch {cfg.generate_batch_size}): {same_text}/{len(samples)}; RSS after loading "
        f"{rss_loaded / 2**20:.0f} MB, ru_maxrss {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB; "
        f"{sum(t > cfg.max_length for t in col('tokens'))}/{len(rows)} prompts longer than max_length (the reindexed "
        "path encodes their last max_length tokens, generation reads them whole).",
    ]
    blocks = [format_table(summary, list(summary[0])), "", ratio_line, model_line, "",
              format_table(by_length, list(by_length[0])), "", format_table(per_conv, list(per_conv[0]))]
    if batched:
        blocks += ["", format_table(batched, list(batched[0]))]
    text = "\n".join([*header, "", "```", *blocks, "```"])
    write_json(args.out.with_suffix(".json"), {
        "date": date, "machine": machine(), "settings": {k: str(v) for k, v in vars(args).items()},
        "llm": lm.identity, "load_start": load_start, "load_end": load_end, "q_max_abs_diff": q_diff,
        "same_completions": same_text, "rss_peak_bytes": mem.peak, "rss_growth_bytes": mem.growth, "rows": rows,
        "batched": batched})
    atomic_write(args.out.with_suffix(".md"), lambda f: f.write(text + "\n"))
    print("\n" + text)
    print(f"wrote {args.out.with_suffix('.md')}")


if __name__ == "__main__":
    main()
