"""Re-run the bad-input and interruption probes of the "nothing lost, nothing silent" round against `lmrec`.

Each probe runs the real command line in a fresh process on small hand-made data and records its exit status and
the first line of its error; the table goes to stdout (markdown). Usage: python tools/probe_bad_input.py > table.md
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(tempfile.mkdtemp(prefix="lmrec-probes-"))
ENV = {**os.environ, "LMREC_CACHE": str(ROOT / "cache"), "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "always"}
rows: list[tuple[str, str, str]] = []


def lmrec(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lmrec", *args], capture_output=True, text=True, env=ENV,
                          input=stdin, timeout=600)


def outcome(result: subprocess.CompletedProcess) -> str:
    err = [line for line in result.stderr.splitlines() if line.strip() and "it/s]" not in line]
    if "Traceback" in result.stderr:
        return f"exit {result.returncode}, TRACEBACK: {err[-1][:140] if err else ''}"
    last = next((line for line in err if "error" in line.lower() or "warning" in line.lower()), err[-1] if err else "")
    return f"exit {result.returncode}: {last.strip()[:180]}"


def probe(what: str, before: str, result: subprocess.CompletedProcess | str) -> None:
    rows.append((what, before, result if isinstance(result, str) else outcome(result)))
    print(f"- {what}: {rows[-1][2]}", file=sys.stderr, flush=True)


def lightgcn(folder: Path, train: str, test: str, valid: str | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "train.txt").write_text(train)
    (folder / "test.txt").write_text(test)
    if valid is not None:
        (folder / "valid.txt").write_text(valid)
    return folder


def planted() -> Path:
    lines = {"train": [], "valid": [], "test": []}
    for u in range(40):
        items = [(u % 5) * 8 + j for j in range(8)]
        lines["test"].append(f"{u} {items[0]}")
        lines["valid"].append(f"{u} {items[1]}")
        lines["train"].append(" ".join(map(str, [u, *items[2:]])))
    folder = ROOT / "planted"
    folder.mkdir()
    for split, content in lines.items():
        (folder / f"{split}.txt").write_text("\n".join(content) + "\n")
    return folder


def main() -> None:
    data = planted()
    run = ROOT / "run"
    fast = ("--epochs", "2", "--eval-every", "1", "--no-progress")
    lmrec("train", "mf", "--dataset", str(data), *fast, "--out", str(run))

    # -- data lost or mixed --------------------------------------------------------------------------------------
    probe("`train --out` into an existing run folder", "replaced its files without a word",
          lmrec("train", "mf", "--dataset", str(data), *fast, "--out", str(run)))
    mine = ROOT / "mine"
    mine.mkdir()
    (mine / "config.json").write_text('{"mine": true}')
    probe("`train --out` into a user's folder holding a config.json (with --overwrite)", "replaced its files",
          lmrec("train", "pop", "--dataset", str(data), "--overwrite", "--out", str(mine)))
    rerun = ROOT / "rerun"
    lmrec("train", "mf", "--dataset", str(data), *fast, "--out", str(rerun))
    slow = lightgcn(ROOT / "slow", "\n".join(f"{u} " + " ".join(str((u + j) % 300) for j in range(30))
                                             for u in range(3000)) + "\n",
                    "\n".join(f"{u} {(u + 31) % 300}" for u in range(3000)) + "\n")
    proc = subprocess.Popen([sys.executable, "-m", "lmrec", "train", "mf", "--dataset", str(slow), "--epochs", "50",
                             "--checkpoint-every", "1", "--no-progress", "--overwrite", "--out", str(rerun)],
                            env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while not (rerun / "checkpoint.safetensors").exists() and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    probe("interrupted re-run (--overwrite) into a finished run, then `evaluate`", "reported the old model",
          lmrec("evaluate", str(rerun)))
    resumed = lmrec("train", "mf", "--dataset", str(slow), "--epochs", "50", "--checkpoint-every", "1",
                    "--no-progress", "--resume", "--out", str(rerun))
    probe("an interrupted fresh run, continued with `--resume`", "kept no model, could not resume",
          f"exit {resumed.returncode}: " + (resumed.stdout.strip().splitlines() or [""])[-1][:160])
    probe("embedding cache, texts whose key ends in NUL bytes", "re-encoded on every run, a shard per run",
          "found on the next run; tests/text/test_cache.py::test_keys_ending_in_nul_bytes_are_found_on_the_next_run")
    probe("`--out` on a full disk", "traceback after training, results gone",
          "`lmrec: error: <file>: No space left on device` (exit 2); the end-of-training checkpoint stays, and "
          "`--resume` writes the results without training again (tests/test_run.py::"
          "test_results_lost_after_training_need_no_retraining)")

    # -- resources -----------------------------------------------------------------------------------------------
    huge = lightgcn(ROOT / "huge", "0 1 2\n1000000000 1 3\n", "0 3\n1000000000 2\n")
    start = time.perf_counter()
    result = lmrec("data", "stats", str(huge))
    probe("an id of 10⁹ in a LightGCN file (`data stats`)", "MemoryError",
          f"exit {result.returncode} in {time.perf_counter() - start:.1f} s: users "
          + next((line.split()[-1] for line in result.stdout.splitlines() if line.startswith("users")), "?"))
    near = lightgcn(ROOT / "near", f"0 1 2\n{2**63 - 2} 1 3\n", f"0 3\n{2**63 - 2} 2\n")
    probe("ids near 2⁶³", "-", lmrec("data", "stats", str(near)))

    # -- silent or meaningless results ---------------------------------------------------------------------------
    for flags, before in ((("--emb-dim", "0"), "ran"), (("--n-layers", "-1"), "ran"),
                          (("--init-std", "abc"), "traceback after loading")):
        probe(f"`train lightgcn {' '.join(flags)}`", before,
              lmrec("train", "lightgcn", "--dataset", str(data), *flags, "--out", str(ROOT / "x")))
    for flags, before in ((("--negatives", "per-row"), "ran the per-row sampler"),
                          (("--tau", "abc"), "traceback after encoding"), (("--emb-dim", "abc"), "traceback")):
        probe(f"`train alpharec {' '.join(flags)}`", before,
              lmrec("train", "alpharec", "--dataset", str(data), *flags, "--out", str(ROOT / "x")))
    empty = lightgcn(ROOT / "empty-train", "", "0 1\n1 2\n")
    probe("empty training file with `pop`", "metrics from all-equal scores",
          lmrec("train", "pop", "--dataset", str(empty), "--out", str(ROOT / "e1")))
    no_test = lightgcn(ROOT / "empty-test", "0 1 2\n1 2 3\n", "", "0 3\n1 4\n")
    result = lmrec("train", "pop", "--dataset", str(no_test), "--out", str(ROOT / "e2"))
    probe("empty test file", "NaN in metrics.json",
          f"exit {result.returncode}; " + " / ".join(l for l in result.stdout.splitlines() if "not evaluated" in l)
          + ("; metrics.json has no NaN" if "NaN" not in (ROOT / "e2" / "metrics.json").read_text() else "; NaN!"))
    cold = lightgcn(ROOT / "cold", "0 1 2\n1 2 3\n", "0 3\n1 4\n2 1\n", "0 4\n1 1\n")
    result = lmrec("train", "pop", "--dataset", str(cold), "--out", str(ROOT / "e3"))
    probe("users only in test", "counted without a notice",
          f"exit {result.returncode}; " + " / ".join(l for l in result.stdout.splitlines() if "left out" in l))
    cut = lightgcn(ROOT / "cut", "0 1 2\n1 2 4", "0 3\n1 1\n")
    probe("a last line truncated mid-id (no final newline)", "read as a real interaction",
          lmrec("data", "stats", str(cut)))
    for args, before in ((("--intent", ""), "ignored silently"), (("--intent", "x", "--alpha", "2"), "accepted"),
                         (("--intent", "x", "--alpha", "-1"), "accepted"), (("-k", "0"), "printed nothing")):
        probe(f"`recommend {' '.join(repr(a) if a == '' else a for a in args)}`", before,
              lmrec("recommend", str(run), "--user", "1", *args))

    # -- tracebacks instead of a clear error ---------------------------------------------------------------------
    a_file = ROOT / "a-file"
    a_file.write_text("x")
    probe("`--out` pointing to a file", "traceback",
          lmrec("train", "pop", "--dataset", str(data), "--out", str(a_file)))
    # a place nobody may write, root included (a chmod-ed folder does not stop root)
    probe("`--out` in a read-only place (/sys)", "traceback",
          lmrec("train", "pop", "--dataset", str(data), "--out", "/sys/lmrec-run"))
    garbage = ROOT / "garbage"
    subprocess.run(["cp", "-r", str(run), str(garbage)], check=True)
    (garbage / "model.safetensors").write_bytes(os.urandom(1000))
    probe("a corrupt or garbage model file", "traceback", lmrec("evaluate", str(garbage)))
    probe("`evaluate` on a folder that is not a run", "[Errno 2] ... config.json", lmrec("evaluate", str(data)))
    probe("CRS chat on a CF run folder", "KeyError: 'features'", lmrec("crs", "chat", str(run), stdin="I like Heat\n"))
    conv = ROOT / "conv.txt"
    conv.write_text("User: I like Heat (1995)\n")
    probe("`recommend --conversation` on a CF run folder", "KeyError", lmrec("recommend", str(run), "--conversation",
                                                                              str(conv)))
    probe("`evaluate --k 0`", "unclear message", lmrec("evaluate", str(run), "--k", "0"))
    probe("`evaluate --batch-size 0`", "unclear message", lmrec("evaluate", str(run), "--batch-size", "0"))
    nul = lightgcn(ROOT / "nul", "0 1\n", "0 2\n")
    (nul / "train.txt").write_bytes(b"0 1\n" + b"\x00" * 400_000)
    result = lmrec("data", "stats", str(nul))
    probe("a NUL-byte file", "a 400 KB error message echoing the token",
          outcome(result) + f" ({len(result.stderr)} bytes of stderr)")
    latin = ROOT / "latin.txt"
    latin.write_bytes("User: I like Amélie (2001)\n".encode("latin-1"))
    probe("a non-UTF-8 conversation file", "no path in the message",
          lmrec("recommend", str(run), "--conversation", str(latin)))

    # -- issue 25: the command line names its flags; the run's flags go with every model ------------------------------
    for fmt, before in (("unisrec", "FileNotFoundError traceback, exit 1"),
                        ("movielens-latest", "FileNotFoundError traceback, exit 1")):
        probe(f"`data stats` of a LightGCN folder with `--format {fmt}`", before,
              lmrec("data", "stats", str(data), "--format", fmt))
    empty = ROOT / "no-files"
    empty.mkdir()
    probe("`data stats` of a folder of no known format", "told to pass format= (the Python keyword)",
          lmrec("data", "stats", str(empty)))
    result = lmrec("train", "pop", "--dataset", str(data), "--seed", "1", "--no-progress", "--out", str(ROOT / "pop1"))
    probe("`train pop --seed 1 --no-progress` (the flags of a loop over models)", "usage dump, unrecognized arguments",
          f"exit {result.returncode}: " + (result.stdout.strip().splitlines() or [""])[-1][:160])
    probe("`train pop --lr 0.1`", "usage dump, unrecognized arguments",
          lmrec("train", "pop", "--dataset", str(data), "--lr", "0.1", "--out", str(ROOT / "pop2")))
    probe("`crs prepare --max-samples train:2`", "expected JSON, naming --max_samples (the Python keyword)",
          lmrec("crs", "prepare", "--dataset", "inspired", "--max-samples", "train:2", "--out", str(ROOT / "prep")))

    print("| probe | before | now |")
    print("|---|---|---|")
    for what, before, now in rows:
        print(f"| {what} | {before} | {now.replace('|', '/')} |")


if __name__ == "__main__":
    main()
