"""Mixed precision: the float type of a model's dense products, chosen from the hardware.

``"bf16"``: the dense products a model runs through :func:`autocast` (the MLPs and projections over LM vectors of
AlphaRec, the linear mapping, KAR and RLMRec) run in bf16; their outputs come back as fp32, and the losses, the
propagation sums (sparse products), evaluation's score products and the optimizer state stay fp32. Scores stay fp32
because bf16 keeps 8 bits of mantissa: cosines near the top of a ranking would tie by the dozen and the seeded
tie-break, not the model, would order them. A model without such products (``Model.bf16_path`` false) always runs
in fp32.

``"auto"`` picks bf16 where bf16 products are fast, a rule from measured CPU kinds (``bench/precision.py``, 2
threads): a CUDA GPU with bf16; a CPU with AMX (``amx_bf16`` in /proc/cpuinfo: ~5x fp32 for a 50,546 x 384 by
384 x 768 product); an AMD CPU with AVX512-BF16 (a 2-core EPYC: the MLP's products 1.8-2.5x faster than fp32,
``bench/results/precision-epyc.md``); fp32 elsewhere: an Intel CPU with AVX512-BF16 and no AMX (a 2-core Xeon: the
same products 1.4-2.0x *slower*, ``bench/results/precision.md``) and CPUs without bf16 instructions, which emulate
it. The rule reads the CPU's flags and vendor, never a timing, so a run resumes, and its ranks and its records
match, in the precision it started with. ``LMREC_AUTO_PRECISION=fp32`` (or ``bf16``) makes ``auto`` mean that on
any machine, for the process and its children (the test suite sets fp32, so its numbers do not depend on the CPU).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Literal

import torch

from lmrec.environment import cpu_info
from lmrec.errors import LmrecError

Precision = Literal["auto", "fp32", "bf16"]
AUTO_ENV = "LMREC_AUTO_PRECISION"  # "fp32" or "bf16": what auto means, whatever the hardware


@dataclass(frozen=True)
class PrecisionChoice:
    """``used``: what the model runs in ("fp32" or "bf16"); ``auto``: what "auto" picks for it here; ``why``: the
    hardware (and model) reason, in words."""

    used: str
    auto: str
    why: str

    def as_dict(self) -> dict[str, str]:
        return asdict(self)


def cpu_flags(info: Mapping[str, str] | None = None) -> frozenset[str]:
    """The CPU feature flags of /proc/cpuinfo (of ``info``, :func:`lmrec.environment.cpu_info`, when given); empty
    where there is no such file."""
    return frozenset((cpu_info() if info is None else info).get("flags", "").split())


def fast_bf16(device: str) -> tuple[bool, str]:
    """(whether bf16 products are faster than fp32 on ``device`` ("cpu", "cuda", "mps"), the reason in words); where
    ``$LMREC_AUTO_PRECISION`` is set, what it says."""
    forced = os.environ.get(AUTO_ENV)
    if forced:
        if forced not in ("fp32", "bf16"):
            raise LmrecError(f"{AUTO_ENV}={forced!r}: expected 'fp32' or 'bf16'")
        return forced == "bf16", f"set by {AUTO_ENV}={forced}"
    if device == "cuda":
        ok = torch.cuda.is_available() and torch.cuda.is_bf16_supported()
        return ok, "CUDA GPU with bf16" if ok else "CUDA GPU without bf16 support"
    if device != "cpu":
        return False, f"{device}: lmrec runs fp32 there"
    info = cpu_info()
    flags = cpu_flags(info)
    if "amx_bf16" in flags:
        return True, "CPU with AMX (amx_bf16): bf16 products ~5x fp32's speed"
    if "avx512_bf16" not in flags:
        return False, "CPU without bf16 instructions (no amx_bf16 or avx512_bf16 flag): bf16 is emulated, slower"
    if info.get("vendor_id") == "AuthenticAMD":
        return True, "AMD CPU with AVX512-BF16: bf16 products 1.8-2.5x fp32's speed (2-core EPYC)"
    return False, ("CPU with AVX512-BF16 but no AMX (no amx_bf16 flag): bf16 products 1.4-2.0x slower than fp32 "
                   "(2-core Xeon)")


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
