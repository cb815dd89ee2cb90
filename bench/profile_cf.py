"""Where a training batch of LightGCN and AlphaRec spends its time: torch.profiler over a few batches (forward,
backward, optimiser step, batch sampling), grouped by operator, and the machine's dense fp32 matmul rate for
comparison (AlphaRec's MLP is dense matmuls over every user and item). Then LightGCN's full-ranking evaluation
taken apart: the graph propagation, the score matrix and the top-K alone (the floor any full ranking pays on this
machine) against ``lmrec.eval.evaluate`` as a whole. Then LightGCN's propagation as lmrec ran it before 2026-12-02
(int64 CSR indices, layers stacked) and now (int32, a running sum). Last, AlphaRec's MLP first layer for the users
two ways: dense on the users' mean inputs (lmrec's way) or through the user-item means, W₁(M Z)ᵀ = M (Z W₁ᵀ), fewer
FLOPs but a sparse product over wide rows. Run alone.

    python bench/profile_cf.py --dataset runs/bench-scaling/synth-1000000-seed1 [--batches 5] [--threads 2]
"""

from __future__ import annotations

import argparse
import datetime
import os
import time
from pathlib import Path

import numpy as np
import torch

RESULTS = Path(__file__).resolve().parent / "results"


def matmul_gflops(n: int = 2048, repeats: int = 10) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    return 2 * n**3 * repeats / (time.perf_counter() - start) / 1e9


def profile(model_name: str, data, features, batches: int) -> tuple[str, float]:
    from bench_cf import train_stream

    from lmrec.models.base import get_model

    model = get_model(model_name, "cf")(**({"features": features} if model_name == "alpharec" else {}))
    _, optimizer, stream = train_stream(model, data)

    def step() -> None:
        with torch.profiler.record_function("sample batch"):
            batch = next(stream)
        optimizer.zero_grad()
        with torch.profiler.record_function("forward (loss)"):
            loss = model.loss(batch)
        with torch.profiler.record_function("backward"):
            loss.backward()
        with torch.profiler.record_function("optimizer step"):
            optimizer.step()

    step()  # warm-up
    start = time.perf_counter()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        for _ in range(batches):
            step()
    per_batch = (time.perf_counter() - start) / batches
    table = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=14, max_name_column_width=40)
    return table, per_batch


def median_seconds(fn, repeats: int = 5) -> float:
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def evaluation_breakdown(data, k: int = 20, batch_size: int = 1024) -> list[str]:
    """LightGCN's test evaluation against its unavoidable parts, each the median of 5 runs."""
    from common import user_scores

    from lmrec.eval.ranking import evaluate
    from lmrec.models.base import get_model

    model = get_model("lightgcn", "cf")()
    model.prepare(data, seed=2024)
    model.set_training(False)
    users = np.flatnonzero(np.diff(data.test.indptr) > 0)

    def propagation() -> None:
        model.set_training(True)
        model.set_training(False)
        model.vectors()

    user_emb, item_emb = model.vectors()
    batches = [torch.as_tensor(users[i : i + batch_size]) for i in range(0, len(users), batch_size)]
    score_matrix = [user_emb[b] @ item_emb.T for b in batches]
    parts = {
        "graph propagation (2 sparse products)": median_seconds(propagation),
        "score matrix (users x items matmul)": median_seconds(lambda: [user_emb[b] @ item_emb.T for b in batches]),
        f"top-{k + 1} of every row (torch.topk)": median_seconds(
            lambda: [torch.topk(s, k + 1, 1) for s in score_matrix]),
    }
    floor = sum(parts.values())

    def whole() -> None:
        propagation()
        evaluate(user_scores(model), data, "test", ks=(k,), metrics=("recall", "ndcg"))

    total = median_seconds(whole)
    nnz = 2 * data.train.nnz
    lines = [f"## lightgcn full-ranking evaluation: {1000 * total:.0f} ms for {len(users)} test users", "",
             "| part | ms | share of evaluate |", "|---|---|---|"]
    lines += [f"| {name} | {1000 * t:.1f} | {100 * t / total:.0f}% |" for name, t in parts.items()]
    lines += [f"| sum of the parts above (the floor) | {1000 * floor:.1f} | {100 * floor / total:.0f}% |",
              f"| masking, NaN check, ties, hit lookup (the rest) | {1000 * (total - floor):.1f} | "
              f"{100 * (total - floor) / total:.0f}% |", "",
              f"The propagation moves ≥ {2 * nnz * (64 * 4 + 12) / 1e9:.2f} GB per call (2 layers x {nnz} edges x "
              f"(a 64-float row + index and value)): "
              f"{2 * nnz * (64 * 4 + 12) / 1e9 / parts['graph propagation (2 sparse products)']:.1f} GB/s.", ""]
    return lines


def first_layer_two_ways(data, features: np.ndarray, hidden: int) -> list[str]:
    """Forward and backward of the users' first layer: dense (n_users·d·h, twice) vs M (Z W₁ᵀ) (nnz·h, twice)."""
    import scipy.sparse as sp

    from lmrec.models.nn.graph import csr_tensor
    from lmrec.models.nn.lm_inputs import user_profiles

    counts = np.asarray(data.train.sum(axis=1)).ravel()
    means = sp.diags(1.0 / np.maximum(counts, 1)) @ data.train
    m, m_t = csr_tensor(means), csr_tensor(means.T)
    z_users = torch.from_numpy(user_profiles(data.train, features))
    z_items = torch.from_numpy(np.asarray(features, np.float32))
    w = torch.randn(hidden, z_items.shape[1]) * 0.05
    grad = torch.randn(data.n_users, hidden)
    z_items_w = z_items @ w.T
    ways = {
        "dense: forward z_users W₁ᵀ": lambda: z_users @ w.T,
        "dense: backward (∂W₁ = gᵀ z_users)": lambda: grad.T @ z_users,
        "through means: forward M (Z W₁ᵀ)": lambda: m @ z_items_w,
        "through means: backward Mᵀ g": lambda: m_t @ grad,
    }
    times = {name: median_seconds(fn) for name, fn in ways.items()}
    lines = [f"## AlphaRec's first MLP layer for {data.n_users} users ({z_items.shape[1]} → {hidden}), "
             f"{means.nnz} user-item means", "", "| way | ms |", "|---|---|"]
    lines += [f"| {name} | {1000 * t:.1f} |" for name, t in times.items()]
    dense = times["dense: forward z_users W₁ᵀ"] + times["dense: backward (∂W₁ = gᵀ z_users)"]
    sparse = times["through means: forward M (Z W₁ᵀ)"] + times["through means: backward Mᵀ g"]
    flops = data.n_users * z_items.shape[1] / means.nnz
    lines += ["", f"Dense {1000 * dense:.0f} ms against {1000 * sparse:.0f} ms through the means: {flops:.1f}x the "
              f"FLOPs, yet dense BLAS streams contiguous rows while each sparse row gathers {means.nnz // data.n_users}"
              f" rows of {hidden} floats.", ""]
    return lines

def propagation_two_ways(data, dim: int = 64, repeats: int = 9) -> list[str]:
    """LightGCN's 2-layer propagation, forward and backward, as lmrec ran it until 2026-12-02 (int64 CSR indices,
    the layers stacked and averaged) against now (int32 indices, a running sum); alternating, medians."""
    from lmrec.models.nn.graph import normalized_adjacency, propagate, sparse_product

    adj = normalized_adjacency(data.train)
    adj64 = torch.sparse_csr_tensor(adj.crow_indices().long(), adj.col_indices().long(), adj.values(), size=adj.shape,
                                    check_invariants=False)
    x = torch.randn(adj.shape[0], dim, requires_grad=True)
    grad = torch.randn(adj.shape[0], dim)

    def before() -> None:
        layers = [x]
        for _ in range(2):
            layers.append(sparse_product(adj64, adj64, layers[-1]))
        torch.stack(layers).mean(dim=0).backward(grad)

    ways = {"int64 indices, stacked layers (before)": before,
            "int32 indices, running sum (now)": lambda: propagate(adj, x, 2).backward(grad)}
    times: dict[str, list[float]] = {name: [] for name in ways}
    for _ in range(repeats + 1):
        for name, fn in ways.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    ms = {name: 1000 * float(np.median(t[1:])) for name, t in times.items()}
    lines = [f"## LightGCN propagation, 2 layers forward and backward ({adj.shape[0]} nodes, {adj._nnz()} "
             f"non-zeros, {dim}-d)", "", "| way | ms |", "|---|---|"]
    lines += [f"| {name} | {value:.1f} |" for name, value in ms.items()]
    before_ms, now_ms = ms.values()
    return lines + ["", f"{before_ms - now_ms:.1f} ms less per training batch ({100 * (1 - now_ms / before_ms):.0f}%).",
                    ""]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--batches", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=RESULTS / "profile_cf.md")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from common import machine

    from lmrec.data.registry import DataRef
    from lmrec.io import atomic_write
    from lmrec.text import CachedEncoder, get_encoder

    data = DataRef.of(args.dataset).load()
    features = CachedEncoder(get_encoder("minilm")).encode(data.catalog.text(("title",)), progress=False)
    gflops = matmul_gflops()
    lines = [f"# Profile of a training batch — {datetime.date.today().isoformat()}", "",
             f"Machine: {machine()}, {args.threads} torch thread(s); load average {os.getloadavg()[0]:.2f}. "
             f"Data: {args.dataset} ({data.n_users} users, {data.n_items} items, {data.train.nnz} training "
             f"interactions). Dense fp32 matmul (2048²): {gflops:.0f} GFLOP/s.", ""]
    for name in ("lightgcn", "alpharec"):
        table, per_batch = profile(name, data, features, args.batches)
        batches_per_epoch = max(1, round(data.train.nnz / 4096))
        lines += [f"## {name}: {1000 * per_batch:.0f} ms per batch (profiled), ≈ {per_batch * batches_per_epoch:.1f} s "
                  f"per epoch of {batches_per_epoch} batches", "", "```", table, "```", ""]
        print(lines[-5], flush=True)
    lines += evaluation_breakdown(data)
    lines += propagation_two_ways(data)
    lines += first_layer_two_ways(data, features, hidden=2 * features.shape[1])
    atomic_write(args.out, lambda f: f.write("\n".join(lines)))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
