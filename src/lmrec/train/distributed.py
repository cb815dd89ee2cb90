"""Data-parallel training on ``torch.distributed``: one process per rank, each with the whole model.

The contract (what makes an N-process run equal a one-process run with the same seed and global batch):

- Every rank draws the same global batch B (the numpy generator is seeded identically) and keeps its contiguous
  share B_r (:meth:`World.share`; a model with per-batch tensors says which fields are per row).
- Rank r minimises ℓ_r = (|B_r|·N/|B|)·L_rows(B_r) + L_batch(B), where L_rows is the model's mean over rows and
  L_batch its terms over the whole batch (in-batch contrastive losses; 0 for most models). The gradients are
  summed over ranks and divided by N (:meth:`World.average_gradients`), which gives exactly ∇[L_rows(B) + L_batch(B)]:
  the one-process gradient, up to floating-point summation order.
- Torch's generator is seeded identically, so random draws inside the loss (noise over the whole table) agree
  across ranks. A model that draws per row of the batch (MultVAE's dropout and sampling) cannot keep the contract
  and refuses data-parallel training.
- Validation ranks a contiguous share of the users on each rank and gathers the per-user hit lists exactly
  (:meth:`World.gather_rows`), so every rank selects the same epoch and stops at the same time.
- Only rank 0 writes (log, checkpoints, the run folder); every rank reads the checkpoint to resume, so the run
  folder must be on storage all machines see (a rank that finds another epoch to resume from than rank 0 stops
  the run with an error rather than train out of step).

Start: ``lmrec train ... --nproc N`` (one machine), or ``torchrun --nnodes M --nproc-per-node N -m lmrec train ...``
across machines; the process group is made from torchrun's environment (gloo on CPU, nccl on CUDA).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta

import numpy as np
import torch
import torch.distributed as dist

from lmrec.errors import LmrecError


@dataclass(frozen=True)
class World:
    """This process's place among the training processes (rank 0 of 1 when not distributed)."""

    rank: int = 0
    size: int = 1

    @property
    def active(self) -> bool:
        return self.size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def bounds(self, n: int) -> tuple[int, int]:
        """[start, stop) of this rank's contiguous share of n rows (sizes differ by at most one)."""
        return n * self.rank // self.size, n * (self.rank + 1) // self.size

    def share(self, batch: object, rows: Sequence[int] | None = None) -> object:
        """This rank's rows of a batch: a tensor, or a tuple of them where the fields ``rows`` (default: every
        tensor with at least one dimension) are split by rows and the others (per-batch values) kept whole."""
        if not self.active:
            return batch
        if isinstance(batch, torch.Tensor):
            start, stop = self.bounds(len(batch))
            return batch[start:stop]
        fields = list(batch)  # type: ignore[call-overload]
        n = len(fields[0])
        start, stop = self.bounds(n)
        split = range(len(fields)) if rows is None else rows
        for i in split:
            value = fields[i]
            if isinstance(value, torch.Tensor) and value.dim() > 0:
                if len(value) != n:
                    raise LmrecError(f"batch field {i} has {len(value)} rows, the batch {n}: it is not per row")
                fields[i] = value[start:stop]
        return type(batch)(fields)  # type: ignore[call-arg]

    def average_gradients(self, params: Sequence[torch.nn.Parameter], loss: torch.Tensor) -> torch.Tensor:
        """Sum every gradient (and the loss) over ranks and divide by the world size, in one all-reduce; returns
        the averaged loss. Parameters without a gradient (unused by this step's graph, the same on every rank) keep
        none, as in one process, so the optimizer leaves them alone."""
        if not self.active:
            return loss.detach()
        used = [p for p in params if p.grad is not None]
        buffer = torch.cat([*(p.grad.reshape(-1) for p in used), loss.detach().reshape(1)])
        dist.all_reduce(buffer, op=dist.ReduceOp.SUM)
        buffer /= self.size
        offset = 0
        for p in used:
            p.grad.copy_(buffer[offset : offset + p.numel()].view_as(p))
            offset += p.numel()
        return buffer[-1]

    def gather_rows(self, local: np.ndarray, n: int) -> np.ndarray:
        """All ranks' shares of an n-row array (rank r holds rows :meth:`bounds`), concatenated in rank order;
        exact (the rows themselves, no reduction)."""
        if not self.active:
            return local
        sizes = [stop - start for start, stop in (World(r, self.size).bounds(n) for r in range(self.size))]
        padded = np.zeros((max(sizes), *local.shape[1:]), dtype=local.dtype)
        padded[: len(local)] = local
        tensor = torch.from_numpy(padded).to(_device())
        parts = [torch.empty_like(tensor) for _ in range(self.size)]
        dist.all_gather(parts, tensor)
        return np.concatenate([part.cpu().numpy()[:size] for part, size in zip(parts, sizes, strict=True)])

    def from_main(self, value: int) -> int:
        """Rank 0's ``value`` (a small int or bool) on every rank: decisions that must not differ between ranks."""
        if not self.active:
            return value
        tensor = torch.tensor([int(value)], device=_device())
        dist.broadcast(tensor, src=0)
        return type(value)(tensor.item())

    def any(self, flag: bool) -> bool:
        """True on every rank when ``flag`` is true on at least one."""
        if not self.active:
            return flag
        tensor = torch.tensor([int(flag)], device=_device())
        dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
        return bool(tensor.item())


def _device() -> str:
    """Where the process group's collectives take their tensors: the GPU for nccl, else the CPU."""
    return "cuda" if dist.get_backend() == "nccl" else "cpu"


def current() -> World:
    """The world of the initialized process group, or a single process."""
    if dist.is_available() and dist.is_initialized():
        return World(dist.get_rank(), dist.get_world_size())
    return World()


def launched() -> bool:
    """True in a process started by torchrun (or ``--nproc``) as one of several."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def init_from_env(device: str = "cpu", timeout_minutes: float = 30) -> World:
    """Join the process group that torchrun's environment (RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT) describes:
    nccl for ``device="cuda"`` (each process on GPU LOCAL_RANK), gloo otherwise. A single process: nothing to do."""
    if not launched():
        return World()
    if dist.is_initialized():
        return current()
    for key in ("RANK", "MASTER_ADDR", "MASTER_PORT"):
        if key not in os.environ:
            raise LmrecError(f"WORLD_SIZE is set but {key} is not: start several processes with torchrun or --nproc")
    backend = "gloo"
    if device == "cuda":
        if not torch.cuda.is_available():
            raise LmrecError("device 'cuda' was asked for, but torch sees no CUDA GPU on this machine")
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        backend = "nccl"
    dist.init_process_group(backend, timeout=timedelta(minutes=timeout_minutes))
    return current()


def shutdown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
