"""Progress bars, lmrec's and those of the libraries it calls (transformers' "Loading weights", huggingface_hub's
downloads, sentence-transformers' encoding): within ``progress_bars(False)`` none is drawn, whatever a step deep
inside asks for (each of lmrec's bars asks :func:`shown`)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager

_show = True


def shown(requested: bool = True) -> bool:
    """Whether to draw a progress bar that a step asks for (``requested``): not within ``progress_bars(False)``."""
    return requested and _show


@contextmanager
def progress_bars(show: bool) -> Iterator[None]:
    """Within the block, the libraries' progress bars are shown only when ``show``; as they were after it.

    transformers reads huggingface_hub's switch when it is imported, so a transformers imported within the block
    starts silent and is switched back on after it (unless huggingface_hub's bars were off before)."""
    global _show
    if show:
        yield
        return
    from huggingface_hub import utils as hub

    hub_was_off = hub.are_progress_bars_disabled()
    loaded = sys.modules.get("transformers.utils.logging")
    transformers_was_on = loaded.is_progress_bar_enabled() if loaded is not None else not hub_was_off
    hub.disable_progress_bars()
    if loaded is not None:
        loaded.disable_progress_bar()
    before, _show = _show, False
    try:
        yield
    finally:
        _show = before
        transformers = sys.modules.get("transformers.utils.logging")
        if transformers is not None and transformers_was_on:
            transformers.enable_progress_bar()  # (switches huggingface_hub's on too: set just below)
        if hub_was_off:
            hub.disable_progress_bars()
        else:
            hub.enable_progress_bars()
