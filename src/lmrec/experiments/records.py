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

import numpy as np
import torch

from lmrec.data.registry import DataRef
from lmrec.run import MANIFEST, METRICS, PER_USER, fit, per_user_test_values, read_manifest, settings_differ
from lmrec.tensorfile import save_tensors
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


# -- the packed form: a few files per runs folder, what a report keeps and what --reuse reads -------------------
PACKED_LOG, PACKED_VALUES = ".jsonl.gz", ".values.safetensors.gz"
PACKED_METRICS = ("recall@20", "ndcg@20")  # the values per user that paired tests compare


def pack_records(folder: Path, dest: Path) -> list[Path]:
    """Pack the records under ``folder`` (``<group>/<dataset>/<run>/``, :func:`save_record`'s layout) into two files
    per group in ``dest``: ``<group>.jsonl.gz`` (one JSON line per run: ``where`` = ``dataset/run``, its manifest,
    metrics and per-epoch log, null without one) and ``<group>.values.safetensors.gz`` (per run ``where::users``
    and ``where::<m>`` for the metrics of :data:`PACKED_METRICS`, float32). Each file is written atomically; returns
    the files."""
    import gzip
    import json

    from safetensors.torch import save

    from lmrec.io import write_bytes

    written = []
    for group in sorted(p for p in Path(folder).iterdir() if p.is_dir() and not p.name.startswith(".")):
        lines, values = [], {}
        for manifest in sorted(group.rglob(MANIFEST)):
            run = manifest.parent
            if any(part.startswith(".") for part in run.relative_to(group).parts) or not is_complete(run):
                continue
            where = run.relative_to(group).as_posix()
            log = (run / LOG_FILE).read_text(encoding="utf-8").splitlines() if (run / LOG_FILE).exists() else None
            lines.append(json.dumps({"where": where, "manifest": read_manifest(run),
                                     "metrics": json.loads((run / METRICS).read_text(encoding="utf-8")),
                                     "log": None if log is None else [json.loads(x) for x in log if x.strip()]}))
            if (run / PER_USER).exists():
                users, per_user = per_user_test_values(run)
                values[f"{where}::users"] = torch.from_numpy(users.astype(np.int32))
                values.update({f"{where}::{m}": torch.from_numpy(per_user[m].astype(np.float32))
                               for m in PACKED_METRICS if m in per_user})
        dest.mkdir(parents=True, exist_ok=True)
        write_bytes(dest / f"{group.name}{PACKED_LOG}", gzip.compress(("\n".join(lines) + "\n").encode(), mtime=0))
        write_bytes(dest / f"{group.name}{PACKED_VALUES}", gzip.compress(save(values), mtime=0))
        written += [dest / f"{group.name}{PACKED_LOG}", dest / f"{group.name}{PACKED_VALUES}"]
    return written


def unpack_records(src: Path, dest: Path) -> Path:
    """The packed records in ``src`` (:func:`pack_records`) as record folders under ``dest`` (``<group>/<dataset>/
    <run>/``), what comparisons read; a report folder whose ``records/`` is in folder form already is returned as is.
    Returns the folder of record folders."""
    import gzip
    import json

    from safetensors.torch import load

    from lmrec.io import atomic_write, write_json

    packed = sorted(Path(src).glob(f"*{PACKED_LOG}"))
    if not packed:
        return Path(src)
    for path in packed:
        group = path.name[: -len(PACKED_LOG)]
        values_path = path.with_name(group + PACKED_VALUES)
        values = load(gzip.decompress(values_path.read_bytes())) if values_path.exists() else {}
        for line in gzip.decompress(path.read_bytes()).decode("utf-8").splitlines():
            if not line.strip():
                continue
            record = json.loads(line)
            run = dest / group / record["where"]
            run.mkdir(parents=True, exist_ok=True)
            write_json(run / METRICS, record["metrics"], allow_nan=True)
            if record["log"] is not None:  # an untrained model's record has no log
                text = "".join(json.dumps(r) + "\n" for r in record["log"])
                atomic_write(run / LOG_FILE, lambda f, text=text: f.write(text))
            where = record["where"]
            if f"{where}::users" in values:
                per_user = {m: values[f"{where}::{m}"] for m in PACKED_METRICS if f"{where}::{m}" in values}
                save_tensors(run / PER_USER, {"users": values[f"{where}::users"], **per_user}, {"split": "test"})
            write_json(run / MANIFEST, record["manifest"])  # last: a complete manifest makes a record
    return dest
