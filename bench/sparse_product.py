"""Sparse (CSR) times dense on CPU, the products of AlphaRec's users through their items' means (P·X forward and
Pᵀ·G backward over the MLP's hidden width) and of LightGCN's propagation (Â·E over 64 columns), several ways:

    torch       torch's CSR product (``m @ x`` on a ``torch.sparse_csr_tensor``), what lmrec uses
    scipy       ``scipy.sparse`` csr @ dense (scipy's sparsetools kernel, one thread)
    scipy xN    the same kernel on N row blocks of equal non-zeros, N threads (the kernel releases the GIL)
    numba       a prange kernel, only where numba is installed (it is not a dependency of lmrec)

The products are memory-bound (a row of X read per non-zero, the output rows written: 2 FLOPs per 4·d + 8 bytes),
so the table gives GB/s of that minimum traffic next to the machine's copy rate (a 155 MB tensor copied into
another). Each figure is the median of ``--repeats`` products after one warm-up, the ways alternating, for every
thread count asked (``--threads 1,2``). Freed memory is kept in the process as the ``lmrec`` command keeps it
(:func:`lmrec.allocator.keep_freed_memory`); ``--default-allocator`` measures with glibc's defaults, where every
large output is fresh pages that the kernel maps and zero-fills (torch's product pays it twice). The largest
difference from torch's result is printed. Run alone: other processes on the cores distort every figure.

    LMREC_DATA=../shared/data python bench/sparse_product.py [--datasets amazon-video-games-2018,DIR] [--width 768]
"""

from __future__ import annotations

import argparse
import datetime
import os
import statistics
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import scipy.sparse as sp
import torch
from scipy.sparse._sparsetools import csr_matvecs  # the kernel of scipy's csr @ dense, into a given output

RESULTS = Path(__file__).resolve().parent / "results"
Product = Callable[[torch.Tensor], torch.Tensor]


def scipy_blocks(m: sp.csr_matrix, threads: int) -> Product:
    """``m @ x`` by scipy's kernel on ``threads`` row blocks of equal non-zeros, each written into its rows of one
    output (no copy; a block's slice of indptr indexes the whole indices and data); the first block runs in the
    calling thread."""
    bounds = np.searchsorted(m.indptr, np.linspace(0, m.nnz, threads + 1)[1:-1]).tolist()
    edges = [0, *bounds, m.shape[0]]
    blocks = [(lo, hi) for lo, hi in zip(edges[:-1], edges[1:]) if hi > lo]
    pool = ThreadPoolExecutor(max_workers=threads)

    def matmul(x: torch.Tensor) -> torch.Tensor:
        xs = np.ascontiguousarray(x.numpy())
        out = np.zeros((m.shape[0], xs.shape[1]), np.float32)
        run = lambda lo, hi: csr_matvecs(hi - lo, m.shape[1], xs.shape[1], m.indptr[lo : hi + 1],  # noqa: E731
                                         m.indices, m.data, xs.ravel(), out[lo:hi].ravel())
        futures = [pool.submit(run, lo, hi) for lo, hi in blocks[1:]]
        run(*blocks[0])
        for future in futures:
            future.result()
        return torch.from_numpy(out)

    return matmul


def numba_product(m: sp.csr_matrix, threads: int) -> Product | None:
    """A numba CSR x dense kernel (rows in parallel on ``threads``), or None without numba."""
    try:
        import numba
    except ImportError:
        return None

    @numba.njit(parallel=True)
    def kernel(indptr, indices, data, x, out):  # pragma: no cover - compiled
        for r in numba.prange(len(indptr) - 1):
            for k in range(indptr[r], indptr[r + 1]):
                w, row = data[k], x[indices[k]]
                for j in range(x.shape[1]):
                    out[r, j] += w * row[j]
        return out

    numba.set_num_threads(threads)
    return lambda x: torch.from_numpy(kernel(m.indptr, m.indices, m.data, x.numpy(),
                                             np.zeros((m.shape[0], x.shape[1]), np.float32)))


def ways(m: sp.csr_matrix, threads: int) -> dict[str, Product]:
    from lmrec.models.nn.graph import csr_tensor

    t = csr_tensor(m)
    out: dict[str, Product] = {"torch": lambda x: t @ x, "scipy": lambda x: torch.from_numpy(m @ x.numpy())}
    if threads > 1:
        out[f"scipy x{threads}"] = scipy_blocks(m, threads)
    kernel = numba_product(m, threads)
    if kernel is not None:
        out["numba"] = kernel
    return out


def median_ms(products: dict[str, Product], x: torch.Tensor, repeats: int) -> tuple[dict[str, float], dict[str, float]]:
    """(median ms per way, largest |difference| from the first way's result)."""
    reference = next(iter(products.values()))(x)
    diff = {name: float((f(x) - reference).abs().max()) for name, f in products.items()}  # the warm-up too
    times: dict[str, list[float]] = {name: [] for name in products}
    for _ in range(repeats):
        for name, f in products.items():
            start = time.perf_counter()
            f(x)
            times[name].append(time.perf_counter() - start)
    return {name: 1000 * statistics.median(t) for name, t in times.items()}, diff


def copy_rate(repeats: int) -> float:
    """GB/s of copying a 50,546 x 768 float32 tensor (155 MB) into another (read + write)."""
    x, out = torch.randn(50546, 768), torch.empty(50546, 768)
    out.copy_(x)
    start = time.perf_counter()
    for _ in range(repeats):
        out.copy_(x)
    return 2 * x.numel() * 4 * repeats / (time.perf_counter() - start) / 1e9


def matrices(data, width: int) -> list[tuple[str, sp.csr_matrix, int]]:
    """(label, matrix, columns): P and Pᵀ over the MLP width, the LightGCN adjacency over 64."""
    from lmrec.models.nn.graph import normalized_adjacency
    from lmrec.models.nn.lm_inputs import profile_matrix

    p = sp.csr_matrix(profile_matrix(data.train), dtype=np.float32)
    adj = normalized_adjacency(data.train)
    adj = sp.csr_matrix((adj.values().numpy(), adj.col_indices().numpy(), adj.crow_indices().numpy()),
                        shape=adj.shape)
    return [("P (users x items)", p, width), ("P^T", sp.csr_matrix(p.T), width), ("adjacency", adj, 64)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", default="amazon-video-games-2018", help="comma-separated names or folders")
    parser.add_argument("--width", type=int, default=768, help="columns of X for P and Pᵀ (AlphaRec's hidden width)")
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--default-allocator", action="store_true", help="glibc's defaults, not lmrec's")
    parser.add_argument("--out", type=Path, default=RESULTS / "sparse_product.md")
    args = parser.parse_args()

    from common import dataset_path, machine, write_lines

    from lmrec.allocator import keep_freed_memory
    from lmrec.data.registry import load_dataset

    if not args.default_allocator:
        keep_freed_memory()
    allocator = "glibc's defaults" if args.default_allocator else "freed memory kept (as the lmrec command)"
    lines = [f"# CSR x dense products — {datetime.date.today()}", "",
             f"Machine: {machine()}; torch {torch.__version__}; allocator: {allocator}; load average (1 min) "
             f"{os.getloadavg()[0]:.2f} at start. Median of {args.repeats} products, ways alternating. GB/s: the "
             "least traffic a product needs (non-zeros and indices, one row of X per non-zero, the output) over its "
             "time.", ""]
    for threads in (int(t) for t in args.threads.split(",")):
        torch.set_num_threads(threads)
        lines.append(f"Copy rate, {threads} thread(s): {copy_rate(args.repeats):.1f} GB/s.")
    lines += ["", "| dataset | matrix | rows x cols | nnz | columns | threads | way | ms | GB/s | max diff |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    print("\n".join(lines), flush=True)
    for name in args.datasets.split(","):
        data = load_dataset(dataset_path(name))
        for label, m, cols in matrices(data, args.width):
            m.sort_indices()
            x = torch.randn(m.shape[1], cols)
            moved = m.nnz * (8 + 4 * cols) + 4 * m.shape[0] * cols
            for threads in (int(t) for t in args.threads.split(",")):
                torch.set_num_threads(threads)
                ms, diff = median_ms(ways(m, threads), x, args.repeats)
                for way in ms:
                    lines.append(f"| {data.name} | {label} | {m.shape[0]} x {m.shape[1]} | {m.nnz} | {cols} | "
                                 f"{threads} | {way} | {ms[way]:.1f} | {moved / ms[way] / 1e6:.1f} | "
                                 f"{diff[way]:.1e} |")
                    print(lines[-1], flush=True)
    lines += ["", f"Load average (1 min) at the end: {os.getloadavg()[0]:.2f}.", ""]
    write_lines(args.out, lines)


if __name__ == "__main__":
    main()
