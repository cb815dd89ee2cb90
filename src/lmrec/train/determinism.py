"""Training that gives the same numbers on every run with the same seed and thread count.

On CPU with two or more threads, torch's default backward of an index (``E[idx]``: ``index_put_`` with
``accumulate=True``) adds the gradient rows of repeated indices in whatever order the threads reach them, so two runs
of one seed drift apart from their first step, and a resumed run is not the unbroken one. ``bench/determinism.py``
(2-core AMD EPYC, 2 threads): AlphaRec on MovieLens-100k, 10 epochs, seed 2024, validation Recall@20 .22045 and
.22050 in two runs with the default kernels, .22079 in both with the deterministic ones, whose training steps cost
the same within noise (0.92x to 1.02x over nine CF models on Amazon Industrial). :class:`~lmrec.train.Trainer`
trains in them on CPU. On CUDA they need ``CUBLAS_WORKSPACE_CONFIG`` set before CUDA starts, which is the user's
environment, so GPU training keeps torch's defaults (atomic adds: runs differ in the last bits).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
import torch.utils.deterministic


@contextlib.contextmanager
def deterministic_kernels(device: torch.device) -> Iterator[None]:
    """Torch's deterministic kernels inside the block where ``device`` is a CPU (nothing changes elsewhere), the
    previous mode restored after. An operation without a deterministic kernel warns instead of failing, and memory
    torch leaves uninitialised stays unfilled (lmrec never reads it)."""
    if device.type != "cpu":
        yield
        return
    mode = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    fill = torch.utils.deterministic.fill_uninitialized_memory
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.utils.deterministic.fill_uninitialized_memory = False
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(mode, warn_only=warn_only)
        torch.utils.deterministic.fill_uninitialized_memory = fill
