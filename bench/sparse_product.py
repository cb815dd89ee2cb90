"""Sparse (CSR) times dense on CPU, the products of AlphaRec's users through their items' means (P·X and Pᵀ·G over
the MLP's hidden width) and of LightGCN's propagation (Â·E over 64 columns), several ways:

    torch       torch's CSR product (``m @ x`` on a ``torch.sparse_csr_tensor``)
    scipy       ``scipy.sparse`` csr @ dense (one thread: scipy's sparsetools kernel)
    scipy ×N    the same, the rows split in N blocks run on N threads (sparsetools releases the GIL)
    numba       a prange kernel, only where numba is installed (it is not a dependency of lmrec)

Each figure is the median of ``--repeats`` products after one warm-up, the ways alternating, for every torch thread
count asked (``--threads 1,2``; scipy ×N uses that many threads). The largest difference from torch's result is
printed. Run alone: other processes on the cores distort every figure.

    LMREC_DATA=../shared/data python bench/sparse_product.py [--datasets amazon-video-games-2018,DIR] [--width 768]
"""

from __future__ import annotations

import argparse
import datetime
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import scipy.sparse as sp
import torch

RESULTS = Path(__file__).resolve().parent / "results"


def numba_product() -> Callable[[sp.csr_matrix, np.ndarray], np.ndarray] | None:
    """A numba CSR × dense kernel (rows in parallel), or None without numba."""
    try:
        import numba
    except ImportError:
        return None

    @numba.njit(parallel=True, cache=False)
    def kernel(indptr, indices, data, x, out):  # pragma: no cover - compiled
        for r in numba.prange(len(indptr) - 1):
            for k in range(indptr[r], indptr[r + 1]):
                w, row = data[k], x[indices[k]]
                for j in range(x.shape[1]):
                    out[r, j] += w * row[j]
        return out

    return lambda m, x: kernel(m.indptr, m.indices, m.data, x, np.zeros((m.shape[0], x.shape[1]), np.float32))


def ways(m: sp.csr_matrix, threads: int) -> dict[str, Callable[[torch.Tensor], torch.Tensor]]:
    from lmrec.models.nn.graph import csr_tensor
    from lmrec.models.nn.spmm import ScipyCSR

    t = csr_tensor(m)
    out: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
        "torch": lambda x: t @ x,
        "scipy": lambda x: torch.from_numpy(m @ x.numpy()),
    }
    if threads > 1:
        split = ScipyCSR(m, threads)
        out[f"scipy x{threads}"] = split.matmul
    kernel = numba_product()
    if kernel is not None:
        import numba

        numba.set_num_threads(threads)
        out["numba"] = lambda x: torch.from_numpy(kernel(m, x.numpy()))
    return out


def median_ms(products: dict[str, Callable[[torch.Tensor], torch.Tensor]], x: torch.Tensor, repeats: int
              ) -> tuple[dict[str, float], dict[str, float]]:
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


def matrices(data, width: int) -> list[tuple[str, sp.csr_matrix, int]]:
    """(label, matrix, columns): P and Pᵀ over the MLP width, the LightGCN adjacency over 64."""
    from lmrec.models.nn.lm_inputs import profile_matrix

    p = sp.csr_matrix(profile_matrix(data.train), dtype=np.float32)
    r = sp.csr_matrix(data.train, dtype=np.float32)
    adj = sp.bmat([[None, r], [r.T, None]], format="csr", dtype=np.float32)
    return [("P (users x items)", p, width), ("P^T", sp.csr_matrix(p.T), width), ("adjacency", adj, 64)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", default="amazon-video-games-2018", help="comma-separated names or folders")
    parser.add_argument("--width", type=int, default=768, help="columns of X for P and Pᵀ (AlphaRec's hidden width)")
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--out", type=Path, default=None, help="write the table there (markdown)")
    args = parser.parse_args()

    from common import machine, write_lines

    from lmrec.data.registry import load_dataset

    lines = [f"# CSR x dense products — {datetime.date.today()}", "",
             f"Machine: {machine()}; torch {torch.__version__}; load average (1 min) {os.getloadavg()[0]:.2f} at "
             f"start. Median of {args.repeats} products, ways alternating.", "",
             "| dataset | matrix | rows x cols | nnz | columns | threads | way | ms | GB/s | max diff |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    print("\n".join(lines), flush=True)
    for name in args.datasets.split(","):
        data = load_dataset(name)
        for label, m, cols in matrices(data, args.width):
            m.sort_indices()
            x = torch.randn(m.shape[1], cols)
            # bytes a product must move at least: the non-zeros and their indices, one read of X's rows per
            # non-zero (cache misses aside) and the output written
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
    if args.out is not None:
        write_lines(args.out, lines)


if __name__ == "__main__":
    main()
