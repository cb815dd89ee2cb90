"""Records of finished runs: what a table needs of a run, small enough to keep and to commit.

A record is a complete CF run folder less its weights::

    manifest.json  metrics.json  log.jsonl  per-user.safetensors

(see :mod:`lmrec.run`): settings, data checksum, fit summary, the validation curve, the valid and test means and
the test values per user. That is every number a comparison, convergence or paired test reports, so a reproduction
that outlives one machine or one session goes on from the records of the runs already finished
(``lmrec reproduce --reuse``) instead of training them again. A record counts as a run only where its settings and
data checksum equal those of the run asked for; it cannot serve a table that needs the model itself (that table
trains the run again).
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from lmrec.data.registry import DataRef
from lmrec.run import MANIFEST, METRICS, PER_USER, fit, per_user_test_values, read_manifest, settings_differ
from lmrec.train.trainer import LOG_FILE, with_legacy

RECORD_FILES = (MANIFEST, METRICS, LOG_FILE, PER_USER)


def is_complete(folder: Path) -> bool:
    """Whether ``folder`` holds a finished run or record (its manifest says complete)."""
    return (Path(folder) / MANIFEST).exists() and read_manifest(folder).get("status") == "complete"


def save_record(run: Path, dest: Path) -> None:
    """Write the record of complete run folder ``run`` to ``dest``, replacing any record there. It is assembled in a
    hidden temporary folder beside ``dest`` (readers skip hidden folders) and swapped in by renames, so a record is
    never half-written."""
    if not is_complete(run):
        raise ValueError(f"{run}: not a finished run; only finished runs are recorded")
    if Path(run).resolve() == Path(dest).resolve():
        return
    per_user_test_values(run)  # a run folder written before the values per user were kept gets them first
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
    old = tmp.with_name(tmp.name + ".old")
    try:
        tmp.chmod(0o755)  # mkdtemp's 0700 would follow the record wherever it is published
        for name in RECORD_FILES:
            if (run / name).exists():
                shutil.copyfile(run / name, tmp / name)
        if dest.exists():
            dest.rename(old)
        tmp.rename(dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)


def matching_record(record: Path, wanted: Mapping[str, Any]) -> tuple[bool, str]:
    """(usable, why): whether ``record`` is a finished run made with the settings and data of manifest ``wanted``."""
    if not (Path(record) / MANIFEST).exists():
        return False, "no record"
    if not is_complete(record):
        return False, "the record is not of a finished run"
    missing = [name for name in (METRICS, PER_USER) if not (Path(record) / name).exists()]
    if missing:
        return False, f"the record lacks {', '.join(missing)}"
    diff = settings_differ(read_manifest(record), wanted)
    return (not diff, f"recorded with other {', '.join(diff)}" if diff else "same settings and data")


def train_again(record: Path, out: Path) -> Path:
    """Train the run of ``record`` again into ``out`` with its recorded model, settings and data (and so its seed),
    for a table that needs the model itself; the data must still have the recorded checksum."""
    saved = read_manifest(record)
    fit(saved["model"], DataRef(**saved["data"]), with_legacy(saved["train_config"]), out=out, resume=True,
              **saved["model_config"])
    if settings_differ(read_manifest(out), saved):
        raise ValueError(f"{out}: trained again from {record}, but with other settings")
    return out
