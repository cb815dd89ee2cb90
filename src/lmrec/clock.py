"""lmrec's one clock: whatever depends on elapsed time (session expiry, the training time budget, the seconds a run
reports) reads :func:`now`, at the moment it needs the time.

The clock is monotonic: only differences between readings mean anything (a machine started a minute ago reads
about 60). :func:`use` swaps in another clock for a block, e.g. a :class:`ManualClock` that a test moves forward
itself instead of waiting, or patching the :mod:`time` module.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

Clock = Callable[[], float]
"""Seconds on a monotonic clock."""

_current: Clock = time.monotonic
_lock = threading.Lock()


def now() -> float:
    """Seconds on lmrec's clock (:func:`time.monotonic` unless :func:`use` says otherwise)."""
    return _current()


@contextmanager
def use(clock: Clock) -> Iterator[Clock]:
    """lmrec reads ``clock`` within the block (in every thread); the clock before is restored after it."""
    global _current
    with _lock:
        before, _current = _current, clock
    try:
        yield clock
    finally:
        with _lock:
            _current = before


class ManualClock:
    """A clock that stands still until :meth:`advance` moves it (``start``: its first reading)."""

    def __init__(self, start: float = 0.0):
        self.seconds = start

    def __call__(self) -> float:
        return self.seconds

    def advance(self, seconds: float) -> None:
        """Move the clock ``seconds`` forward."""
        if seconds < 0:
            raise ValueError(f"a monotonic clock does not go back: advance({seconds})")
        self.seconds += seconds
