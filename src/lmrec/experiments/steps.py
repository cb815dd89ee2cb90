"""Resumable experiment steps: a folder remembers the settings it was made with (``spec.json``)."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from lmrec.errors import LmrecError
from lmrec.io import write_json
from lmrec.run.folder import differences

SPEC = "spec.json"


def normalised(value: Any) -> Any:
    """JSON round trip: tuples become lists, paths strings, so saved and requested settings compare equal."""
    return json.loads(json.dumps(value, default=str))


def cached_step(folder: Path, spec: Mapping[str, Any], run: Callable[[], Any]) -> bool:
    """Run ``run()`` unless ``folder/spec.json`` already records ``spec``; True when it ran.

    ``spec.json`` is written only after ``run`` returns, so an interrupted step runs again. A folder made with
    other settings is an error naming the folder and the settings that differ (nothing is overwritten).
    """
    path = Path(folder) / SPEC
    wanted = normalised(dict(spec))
    if path.exists():
        saved = json.loads(path.read_text(encoding="utf-8"))
        if saved == wanted:
            return False
        keys = differences(saved, wanted)
        detail = "; ".join(f"{k}: saved {saved.get(k)!r}, requested {wanted.get(k)!r}" for k in keys)
        raise LmrecError(f"{folder} was made with other settings ({detail}); remove it or use another output folder")
    run()
    write_json(path, wanted)
    return True
