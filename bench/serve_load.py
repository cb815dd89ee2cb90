"""Load on a real `lmrec serve` process: requests per second and p50 / p99 latency at 1, 8 and 32 concurrent
clients for (1) AlphaRec recommendations on MovieLens latest-small (exact retrieval), (2) recommendations on a
synthetic catalog of a million items (MF; FAISS IVF retrieval), (3) a conversational message (RTA adapt with
SmolLM2-135M: one LLM forward per message, every message a new text so nothing comes from a cache) and (4) the
same with FISM (no LLM); and the server's peak memory.

The runs are made once under ``runs/bench-serve/`` (minutes; reused after). The client (httpx, asyncio, one
process) shares the 2 cores with the server: figures are for the pair, run with nothing else on the machine.

``--compare BASE`` runs the same scenarios against a server of lmrec's code at commit BASE ("before": its ``src``
taken with ``git archive``, no checkout touched) and then of the code checked out ("after"), and writes one table
with both; ``--server-args`` passes flags to the server of the code checked out (e.g. ``"--max-batch 1"``: no
micro-batching). ``--scenarios`` picks some of alpharec, faiss, rta, fism; ``--quick`` makes small runs under
``runs/bench-serve-quick/`` (a check that the script runs end to end, not figures).

    python bench/serve_load.py [--requests 200] [--threads 1] [--compare 9e14b33] [--server-args "--max-batch 1"]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import random
import shlex
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import httpx
import numpy as np

import lmrec
from lmrec.environment import cpu_name
from lmrec.eval.report import text_table
from lmrec.io import atomic_write, write_json

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / "runs" / "bench-serve"
SCENARIOS = ("alpharec", "faiss", "rta", "fism")
FOLDERS = {"alpharec": "ml-alpharec", "faiss": "million-mf", "rta": "rta", "fism": "fism"}
LABELS = {"alpharec": "recommend, MovieLens latest-small AlphaRec (exact)",
          "faiss": "recommend, 1M-item catalog MF (FAISS IVF)", "rta": "CRS message, RTA adapt + SmolLM2-135M",
          "fism": "CRS message, FISM"}
RESULTS = Path(__file__).resolve().parent / "results"
CONCURRENCY = (1, 8, 32)
MESSAGES = ["I loved The Dark Knight (2008) and Inception (2010), anything like them?",
            "Something funny for a family evening, maybe like Toy Story (1995)?",
            "I want a scary movie, I liked The Conjuring (2013).",
            "A romantic drama please, Titanic (1997) is my favourite."]


def make_runs(which: Sequence[str] = SCENARIOS, work: Path = WORK, quick: bool = False) -> dict[str, Path]:
    """The run folders of the scenarios ``which`` (made once under ``work``; ``quick``: small ones, for a check)."""
    from lmrec.data.synth import synthesize
    from lmrec.inputs.config import PrepareConfig
    from lmrec.inputs.prepare import prepare_dataset

    runs = {name: work / FOLDERS[name] for name in which}
    quiet = {"progress": False}
    epochs = (lambda n: 1) if quick else (lambda n: n)
    if "alpharec" in runs and not (runs["alpharec"] / "metrics.json").exists():
        lmrec.fit("alpharec", "movielens-latest-small", {**quiet, "epochs": epochs(20), "eval_every": epochs(5)},
                  out=runs["alpharec"], overwrite=True)
    if "faiss" in runs and not (runs["faiss"] / "metrics.json").exists():
        synth = work / "synth-million-items"
        if not (synth / "items.tsv").exists():
            synthesize(synth, interactions=10_000 if quick else 100_000, users=1000,
                       items=20_000 if quick else 1_000_000, seed=0)
        lmrec.fit("mf", synth, {**quiet, "epochs": 2, "eval_every": 2, "eval_batch_size": 32},
                  out=runs["faiss"], overwrite=True)
    if "rta" in runs and not (runs["rta"] / "metrics.json").exists():
        prep = work / "inspired-prepared"
        if not (prep / "prepare.json").exists():
            samples = {"train": 16, "valid": 8, "test": 8} if quick else {"train": 64, "valid": 16, "test": 32}
            prepare_dataset("inspired", prep, PrepareConfig(max_samples=samples, generate_splits=(),
                                                            dtype="float32"), progress=False)
        reindex = lmrec.fit("rta_reindex", "inspired", {**quiet, "epochs": epochs(6), "eval_every": epochs(2)},
                            features=prep, out=work / "rta-reindex", resume=True, label_source="ground_truth")
        lmrec.fit("rta_adapt", "inspired", {**quiet, "epochs": epochs(6), "eval_every": epochs(2)}, features=prep,
                  base=reindex, out=runs["rta"], overwrite=True, variant="gate-fism")
    if "fism" in runs and not (runs["fism"] / "metrics.json").exists():
        lmrec.fit("fism", "inspired", {**quiet, "epochs": epochs(20)}, out=runs["fism"], overwrite=True)
    return runs


def base_source(commit: str, work: Path) -> Path:
    """lmrec's ``src`` at ``commit`` (``git archive``, kept under ``work``)."""
    sha = subprocess.run(["git", "rev-parse", "--short", commit], cwd=ROOT, capture_output=True, text=True,
                         check=True).stdout.strip()
    folder = work / f"src-{sha}"
    if not (folder / "src" / "lmrec").exists():
        folder.mkdir(parents=True, exist_ok=True)
        archive = subprocess.run(["git", "archive", sha, "src"], cwd=ROOT, capture_output=True, check=True).stdout
        subprocess.run(["tar", "-x", "-C", str(folder)], input=archive, check=True)
    return folder / "src"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def load(url: str, make_request, total: int, concurrency: int) -> dict[str, float]:
    latencies: list[float] = []
    errors = 0
    queue = list(range(total))

    async def worker(client: httpx.AsyncClient) -> None:
        nonlocal errors
        while queue:
            i = queue.pop()
            method, path, body = await make_request(client, i)
            start = time.perf_counter()
            response = await client.request(method, url + path, json=body)
            latencies.append(time.perf_counter() - start)
            errors += response.status_code >= 400

    # TCP_NODELAY: without it the client's request (headers, then body) waits on the server's delayed ACK, a floor
    # of ~40 ms per request on Linux loopback that hides the server's own time
    transport = httpx.AsyncHTTPTransport(limits=httpx.Limits(max_connections=concurrency),
                                         socket_options=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)])
    async with httpx.AsyncClient(timeout=300, transport=transport) as client:
        start = time.perf_counter()
        await asyncio.gather(*(worker(client) for _ in range(concurrency)))
        seconds = time.perf_counter() - start
    ms = 1000 * np.array(latencies)
    return {"requests": total, "errors": errors, "req/s": total / seconds, "p50 ms": float(np.median(ms)),
            "p99 ms": float(np.quantile(ms, 0.99))}


def start_server(src: Path, runs: dict[str, Path], threads: int, extra: list[str]) -> tuple[subprocess.Popen, str,
                                                                                              float]:
    """``lmrec serve`` of the code in ``src`` over ``runs`` (named by scenario): (process, url, seconds to start)."""
    port = free_port()
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONPATH": str(src)}
    names = [arg for name in runs for arg in ("--name", name)]
    server = subprocess.Popen([sys.executable, "-m", "lmrec", "serve", *map(str, runs.values()), *names, "--port",
                               str(port), "--threads", str(threads), *extra],
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    start = time.perf_counter()
    while True:
        try:
            if httpx.get(url + "/health", timeout=1).status_code == 200:
                break
        except httpx.TransportError:
            pass
        if server.poll() is not None:
            raise SystemExit(server.stderr.read())
        time.sleep(0.5)
    return server, url, time.perf_counter() - start


def measure(url: str, runs: dict[str, Path], args: argparse.Namespace, code: str) -> list[dict]:
    """Every scenario at every concurrency against the server at ``url``."""
    users = {name: lmrec.Run.load(folder).data.user_ids[:500] for name, folder in runs.items()
             if name in ("alpharec", "faiss")}
    rng = random.Random(0)
    counter = itertools.count()

    def recommend(name: str):
        async def make(client, i):
            return "POST", f"/models/{name}/recommend", {"user": rng.choice(users[name]), "k": 10}
        return make

    def message(name: str):
        async def make(client, i):
            sid = (await client.post(f"{url}/models/{name}/sessions")).json()["session_id"]
            text = f"{rng.choice(MESSAGES)} (request {next(counter)})"  # new text: nothing cached, the LLM runs
            return "POST", f"/models/{name}/sessions/{sid}/messages", {"text": text, "k": 10}
        return make

    rows = []
    for name in runs:
        make = (message if name in ("rta", "fism") else recommend)(name)
        label, total = LABELS[name], args.llm_requests if name == "rta" else args.requests
        asyncio.run(load(url, make, min(total, 8), 1))  # warm-up
        for concurrency in args.clients:
            row = {"scenario": label, "clients": concurrency, "code": code,
                   **asyncio.run(load(url, make, total, concurrency))}
            row["p99/p50"] = row["p99 ms"] / row["p50 ms"]
            rows.append(row)
            print(row, flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=200, help="requests per scenario and concurrency")
    parser.add_argument("--llm-requests", type=int, default=48, help="requests of the LLM message scenario")
    parser.add_argument("--threads", type=int, default=1, help="torch threads of the server")
    parser.add_argument("--clients", default=",".join(map(str, CONCURRENCY)), help="concurrent clients, e.g. 1,8,32")
    parser.add_argument("--scenarios", default=",".join(SCENARIOS), help=f"some of {', '.join(SCENARIOS)}")
    parser.add_argument("--compare", metavar="BASE", help="also serve lmrec's code at commit BASE, first (before)")
    parser.add_argument("--server-args", default="", help="more flags for the server of the code checked out")
    parser.add_argument("--quick", action="store_true", help="small runs in runs/bench-serve-quick/ (a check)")
    parser.add_argument("--out", default=str(RESULTS / "serve_load"), help="result files (.md, .json)")
    args = parser.parse_args()
    args.clients = [int(c) for c in args.clients.split(",")]
    which = [s for s in args.scenarios.split(",") if s]
    unknown = set(which) - set(SCENARIOS)
    if unknown:
        raise SystemExit(f"unknown scenarios {sorted(unknown)}: expected some of {', '.join(SCENARIOS)}")
    os.environ.setdefault("LMREC_DATA", str(ROOT.parent / "shared" / "data"))
    work = ROOT / "runs" / ("bench-serve-quick" if args.quick else "bench-serve")
    runs = make_runs(which, work, args.quick)
    sides = [("this code", ROOT / "src", shlex.split(args.server_args))]
    if args.compare:
        sides.insert(0, (f"before ({args.compare})", base_source(args.compare, work), []))
        sides[1] = ("after" + (f" ({args.server_args})" if args.server_args else ""), *sides[1][1:])
    elif args.server_args:
        sides[0] = (f"this code ({args.server_args})", *sides[0][1:])
    rows, notes = [], []
    for code, src, extra in sides:
        load_start = os.getloadavg()[0]
        server, url, startup = start_server(src, runs, args.threads, extra)
        try:
            rows += measure(url, runs, args, code)
            status = Path(f"/proc/{server.pid}/status").read_text()
            peak_mb = int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmHWM"))) / 1024
            items = {m["name"]: m["items"] for m in httpx.get(url + "/models").json()}
        finally:
            server.terminate()
            server.wait(timeout=30)
        notes.append(f"{code}: server start-up {startup:.0f} s, peak server memory (VmHWM) {peak_mb:.0f} MB, load "
                     f"average {load_start:.2f} at the start and {os.getloadavg()[0]:.2f} at the end")
    order = [LABELS[name] for name in which]
    rows.sort(key=lambda r: (order.index(r["scenario"]), r["clients"], [c for c, _, _ in sides].index(r["code"])))
    catalog = f"; the FAISS scenario's catalog: {items['faiss']:,} items" if "faiss" in items else ""
    head = (f"{cpu_name()}, {os.cpu_count()} cores shared by the server ({args.threads} torch thread(s)) and the "
            f"client{catalog}. " + "; ".join(notes))
    columns = ["scenario", "clients", *(["code"] if len(sides) > 1 else []), "requests", "errors", "req/s", "p50 ms",
               "p99 ms", "p99/p50"]
    table = text_table([{k: (f"{v:.1f}" if isinstance(v, float) else v) for k, v in r.items()} for r in rows],
                       columns)
    print(head)
    print(table)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_json(out.with_suffix(".json"), {"setting": head, "rows": rows, "sides": [c for c, _, _ in sides]})
    atomic_write(out.with_suffix(".md"), lambda f: f.write(
        f"# `lmrec serve` under load (`python bench/serve_load.py {' '.join(map(shlex.quote, sys.argv[1:]))}`)"
        f"\n\n{head}.\n\n```\n{table}\n```\n"))


if __name__ == "__main__":
    main()
