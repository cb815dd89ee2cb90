"""Mixed precision: the float type of a model's dense products, chosen from the hardware.

``"bf16"``: the dense products a model runs through :func:`autocast` (the MLPs and projections over LM vectors of
AlphaRec, the linear mapping, KAR and RLMRec) run in bf16; their outputs come back as fp32, and the losses, the
propagation sums (sparse products), evaluation's score products and the optimizer state stay fp32. Scores stay fp32
because bf16 keeps 8 bits of mantissa: cosines near the top of a ranking would tie by the dozen and the seeded
tie-break, not the model, would order them. A model without such products (``Model.bf16_path`` false) always runs
in fp32.

``"auto"`` picks bf16 where bf16 products are fast: a CUDA GPU with bf16, or a CPU with bf16 instructions (AMX or
AVX512-BF16) on which a probe product (:func:`cpu_bf16_speedup`) runs at least :data:`MIN_SPEEDUP` times fp32's
speed; fp32 elsewhere. The flags alone do not tell: on a 2-core Xeon with AVX512-BF16 and no AMX the MLP's bf16
products ran 1.4-2.0x *slower* than fp32, on a 2-core AMD EPYC with the same flag 2.0-2.4x faster, and with AMX
~5x faster (``bench/results/precision*.md``). CPUs without either flag emulate bf16 and are not probed.
"""

from __future__ import annotations

import contextlib
import functools
import statistics
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import torch

Precision = Literal["auto", "fp32", "bf16"]
CPUINFO = Path("/proc/cpuinfo")
MIN_SPEEDUP = 1.5  # auto takes bf16 on a CPU whose probe product runs at least this many times fp32's speed
PROBE_SHAPE = (2048, 384, 768)  # m, k, n: AlphaRec's first MLP layer over a block of rows of 384-d LM vectors


@dataclass(frozen=True)
class PrecisionChoice:
    """``used``: what the model runs in ("fp32" or "bf16"); ``auto``: what "auto" picks for it here; ``why``: the
    hardware (and model) reason, in words."""

    used: str
    auto: str
    why: str

    def as_dict(self) -> dict[str, str]:
        return asdict(self)


def cpu_flags() -> frozenset[str]:
    """The CPU feature flags /proc/cpuinfo lists (empty where there is no such file, e.g. not Linux)."""
    try:
        text = CPUINFO.read_text(encoding="ascii", errors="replace")
    except OSError:
        return frozenset()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "flags":
            return frozenset(value.split())
    return frozenset()


def fast_bf16(device: str) -> tuple[bool, str]:
    """(whether bf16 products are faster than fp32 on ``device`` ("cpu", "cuda", "mps"), the reason in words)."""
    if device == "cuda":
        ok = torch.cuda.is_available() and torch.cuda.is_bf16_supported()
        return ok, "CUDA GPU with bf16" if ok else "CUDA GPU without bf16 support"
    if device != "cpu":
        return False, f"{device}: lmrec runs fp32 there"
    flags = cpu_flags()
    if not flags & {"amx_bf16", "avx512_bf16"}:
        return False, "CPU without bf16 instructions (no amx_bf16 or avx512_bf16 flag): bf16 is emulated, slower"
    kind = "AMX" if "amx_bf16" in flags else "AVX512-BF16 without AMX"
    speedup = cpu_bf16_speedup()
    m, k, n = PROBE_SHAPE
    return speedup >= MIN_SPEEDUP, (f"CPU with {kind}: a {m}x{k} by {k}x{n} bf16 product ran at {speedup:.2f}x "
                                    f"fp32's speed (bf16 from {MIN_SPEEDUP}x)")


def cpu_bf16_speedup() -> float:
    """fp32 seconds / bf16 seconds of one :data:`PROBE_SHAPE` product on this CPU at torch's present thread count
    (bf16 through autocast, as training runs it); measured once per process and thread count, in about 0.1 s."""
    return _probe(torch.get_num_threads())


@functools.cache
def _probe(threads: int, repeats: int = 5) -> float:
    m, k, n = PROBE_SHAPE
    gen = torch.Generator().manual_seed(0)
    x, w = torch.randn(m, k, generator=gen), torch.randn(k, n, generator=gen)

    def seconds(precision: str) -> float:
        times = []
        for _ in range(repeats + 1):  # the first is a warm-up
            start = time.perf_counter()
            with autocast(precision, "cpu"):
                x @ w
            times.append(time.perf_counter() - start)
        return statistics.median(times[1:])

    return seconds("fp32") / seconds("bf16")


def choose(asked: str, device: str, bf16_path: bool, model: str = "the model") -> PrecisionChoice:
    """The precision a model runs in: ``asked`` ("auto", "fp32" or "bf16") on ``device``; ``bf16_path``: whether the
    model has dense products to run in bf16 (without, it is fp32 whatever is asked)."""
    if asked not in ("auto", "fp32", "bf16"):
        raise ValueError(f"precision must be 'auto', 'fp32' or 'bf16', got {asked!r}")
    if not bf16_path:
        return PrecisionChoice("fp32", "fp32", f"{model} has no dense product that bf16 would speed up")
    fast, why = fast_bf16(device)
    auto = "bf16" if fast else "fp32"
    return PrecisionChoice(auto if asked == "auto" else asked, auto, why)


def autocast(precision: str, device: torch.device | str) -> contextlib.AbstractContextManager:
    """bf16 autocast on ``device``'s type when ``precision`` is "bf16" (what runs inside: the dense products in
    bf16, see torch.autocast), else nothing. Callers turn the outputs back to fp32."""
    if precision != "bf16":
        return contextlib.nullcontext()
    return torch.autocast(torch.device(device).type, dtype=torch.bfloat16)
