"""Load on a real `lmrec serve` process: requests per second and p50 / p99 latency at 1, 8 and 32 concurrent
clients for (1) AlphaRec recommendations on MovieLens latest-small (exact retrieval), (2) recommendations on a
synthetic catalog of a million items (MF; FAISS IVF retrieval), (3) a conversational message (RTA adapt with
SmolLM2-135M: one LLM forward per message, every message a new text so nothing comes from a cache) and (4) the
same with FISM (no LLM); and the server's peak memory.

The runs are made once under ``runs/bench-serve/`` (minutes; reused after). The client (httpx, asyncio, one
process) shares the 2 cores with the server: figures are for the pair, run with nothing else on the machine.

    python bench/serve_load.py [--requests 200] [--threads 1]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import random
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np

import lmrec
from lmrec.environment import cpu_name
from lmrec.eval.report import text_table
from lmrec.io import atomic_write, write_json

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / "runs" / "bench-serve"
RESULTS = Path(__file__).resolve().parent / "results"
CONCURRENCY = (1, 8, 32)
MESSAGES = ["I loved The Dark Knight (2008) and Inception (2010), anything like them?",
            "Something funny for a family evening, maybe like Toy Story (1995)?",
            "I want a scary movie, I liked The Conjuring (2013).",
            "A romantic drama please, Titanic (1997) is my favourite."]


def make_runs() -> dict[str, Path]:
    """The four run folders (made once)."""
    from lmrec.data.synth import synthesize
    from lmrec.inputs.config import PrepareConfig
    from lmrec.inputs.prepare import prepare_dataset

    runs = {"ml-alpharec": WORK / "ml-alpharec", "million-mf": WORK / "million-mf", "inspired-rta": WORK / "rta",
            "inspired-fism": WORK / "fism"}
    quiet = {"progress": False}
    if not (runs["ml-alpharec"] / "metrics.json").exists():
        lmrec.fit("alpharec", "movielens-latest-small", {**quiet, "epochs": 20, "eval_every": 5},
                  out=runs["ml-alpharec"], overwrite=True)
    if not (runs["million-mf"] / "metrics.json").exists():
        synth = WORK / "synth-million-items"
        if not (synth / "items.tsv").exists():
            synthesize(synth, interactions=100_000, users=1000, items=1_000_000, seed=0)
        lmrec.fit("mf", synth, {**quiet, "epochs": 2, "eval_every": 2, "eval_batch_size": 32},
                  out=runs["million-mf"], overwrite=True)
    if not (runs["inspired-rta"] / "metrics.json").exists():
        prep = WORK / "inspired-prepared"
        if not (prep / "prepare.json").exists():
            prepare_dataset("inspired", prep, PrepareConfig(max_samples={"train": 64, "valid": 16, "test": 32},
                                                            generate_splits=(), dtype="float32"), progress=False)
        reindex = lmrec.fit("rta_reindex", "inspired", {**quiet, "epochs": 6, "eval_every": 2}, features=prep,
                            out=WORK / "rta-reindex", resume=True, label_source="ground_truth")
        lmrec.fit("rta_adapt", "inspired", {**quiet, "epochs": 6, "eval_every": 2}, features=prep, base=reindex,
                  out=runs["inspired-rta"], overwrite=True, variant="gate-fism")
    if not (runs["inspired-fism"] / "metrics.json").exists():
        lmrec.fit("fism", "inspired", {**quiet, "epochs": 20}, out=runs["inspired-fism"], overwrite=True)
    return runs


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

    async with httpx.AsyncClient(timeout=300, limits=httpx.Limits(max_connections=concurrency)) as client:
        start = time.perf_counter()
        await asyncio.gather(*(worker(client) for _ in range(concurrency)))
        seconds = time.perf_counter() - start
    ms = 1000 * np.array(latencies)
    return {"requests": total, "errors": errors, "req/s": total / seconds, "p50 ms": float(np.median(ms)),
            "p99 ms": float(np.quantile(ms, 0.99))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=200, help="requests per scenario and concurrency")
    parser.add_argument("--llm-requests", type=int, default=48, help="requests of the LLM message scenario")
    parser.add_argument("--threads", type=int, default=1, help="torch threads of the server")
    args = parser.parse_args()
    os.environ.setdefault("LMREC_DATA", str(ROOT.parent / "shared" / "data"))
    runs = make_runs()
    users = {name: lmrec.Run.load(folder).data.user_ids[:500] for name, folder in runs.items()
             if name in ("ml-alpharec", "million-mf")}
    port = free_port()
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    server = subprocess.Popen([sys.executable, "-m", "lmrec", "serve", *map(str, runs.values()), "--name",
                               "ml-alpharec", "--name", "million-mf", "--name", "inspired-rta", "--name",
                               "inspired-fism", "--port", str(port), "--threads", str(args.threads)],
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
    startup = time.perf_counter() - start
    models = {m["name"]: m for m in httpx.get(url + "/models").json()}
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

    scenarios = [("recommend, MovieLens latest-small AlphaRec (exact)", recommend("ml-alpharec"), args.requests),
                 ("recommend, 1M-item catalog MF (FAISS IVF)", recommend("million-mf"), args.requests),
                 ("CRS message, RTA adapt + SmolLM2-135M", message("inspired-rta"), args.llm_requests),
                 ("CRS message, FISM", message("inspired-fism"), args.requests)]
    rows = []
    for label, make, total in scenarios:
        asyncio.run(load(url, make, min(total, 8), 1))  # warm-up
        for concurrency in CONCURRENCY:
            row = {"scenario": label, "clients": concurrency, **asyncio.run(load(url, make, total, concurrency))}
            rows.append(row)
            print(row, flush=True)
    status = Path(f"/proc/{server.pid}/status").read_text()
    peak_mb = int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmHWM"))) / 1024
    server.terminate()
    server.wait(timeout=30)
    head = (f"{cpu_name()}, {os.cpu_count()} cores shared by the server ({args.threads} torch thread(s)) and the "
            f"client; server start-up {startup:.0f} s (loading 4 runs, building the FAISS index over "
            f"{models['million-mf']['items']:,} items); peak server memory (VmHWM) {peak_mb:.0f} MB")
    table = text_table([{k: (f"{v:.1f}" if isinstance(v, float) else v) for k, v in r.items()} for r in rows],
                       list(rows[0]))
    print(head)
    print(table)
    RESULTS.mkdir(exist_ok=True)
    write_json(RESULTS / "serve_load.json", {"setting": head, "rows": rows, "peak_server_mb": peak_mb,
                                             "models": models})
    atomic_write(RESULTS / "serve_load.md", lambda f: f.write(
        f"# `lmrec serve` under load (`python bench/serve_load.py`)\n\n{head}.\n\n```\n{table}\n```\n"))


if __name__ == "__main__":
    main()
