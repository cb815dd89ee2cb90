"""Latency of a CRS message by its turn in the conversation, with the LLM's KV cache kept between a session's
messages and without (``lmrec serve --kv-cache-mb 0``): the RTA run of ``bench/serve_load.py`` (SmolLM2-135M),
through the service's app in this process (FastAPI's TestClient, no network), ``--conversations`` sessions of
``--turns`` user messages each, the two ways taking turns conversation by conversation. Every message is a new
text and nothing comes from the embedding cache, so every message runs the LLM. Reports the median ms at turns 1,
5, 10, 20, the prompt's tokens and the tokens the LLM ran, and whether the two ways recommended the same items.

Without the cache a message runs the LLM over the whole prompt (every earlier turn again); with it, over the new
turn and the prompt's closing tokens. RTA reads a conversation's first 2,000 characters and its prompt's last 512
tokens; a prompt cut on the left shares no prefix with the last one and is computed whole either way. The messages
here stay below both cuts for 20 turns.

    python bench/crs_turns.py [--run runs/bench-serve/rta] [--conversations 6] [--turns 20] [--threads 1]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).resolve().parent / "results"
MESSAGES = [
    "Hi! I am looking for a movie to watch tonight.",
    "I loved The Dark Knight (2008) and Inception (2010).",
    "Something with a clever plot, maybe a heist or a twist.",
    "Not too violent though, my partner will watch too.",
    "We also liked Knives Out (2019) a lot last month.",
    "Newer movies are better, from the last ten years.",
    "A bit of humour is welcome, but not a comedy.",
    "We have seen Parasite (2019) already, it was great.",
    "Something around two hours would be perfect.",
    "Maybe a thriller with a female lead this time?",
    "Gone Girl (2014) was a bit too dark for us.",
    "What about something set in space, like The Martian?",
    "Interstellar (2014) was too long for a weeknight.",
    "Any mystery with a detective would work as well.",
    "Glass Onion (2022) was fun, more of that please.",
    "We prefer English language movies tonight.",
    "Something that got good reviews from critics.",
    "Not a sequel, we have not seen the first ones.",
    "Maybe a film based on a true story?",
    "Ok, last one: which of those would you pick?",
]


def conversation(n: int, turns: int) -> list[str]:
    """``turns`` user messages, new texts for conversation ``n`` (nothing repeats across conversations)."""
    return [f"{MESSAGES[t % len(MESSAGES)]} ({n}.{t + 1})" for t in range(turns)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", default=str(ROOT / "runs" / "bench-serve" / "rta"),
                        help="an RTA run folder (default: the one bench/serve_load.py makes, made if missing)")
    parser.add_argument("--conversations", type=int, default=6)
    parser.add_argument("--turns", type=int, default=20)
    parser.add_argument("--report", default="1,5,10,20", help="turns shown in the table")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--out", default=str(RESULTS / "crs_turns"), help="result files (.md, .json)")
    args = parser.parse_args()
    os.environ.setdefault("LMREC_DATA", str(ROOT.parent / "shared" / "data"))
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    torch.set_num_threads(args.threads)
    from fastapi.testclient import TestClient

    import lmrec
    from lmrec.environment import cpu_name
    from lmrec.eval.report import text_table
    from lmrec.io import atomic_write, write_json
    from lmrec.serve import create_app
    from lmrec.serve.batching import ServeOptions

    folder = Path(args.run)
    if not (folder / "metrics.json").exists():
        if folder.resolve() != (ROOT / "runs" / "bench-serve" / "rta").resolve():
            raise SystemExit(f"{folder}: not a run folder")
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from serve_load import make_runs

        make_runs(["rta"])
    load_start = os.getloadavg()[0]
    sides = {}
    for label, mb in (("without", 0.0), ("with", 512.0)):
        run = lmrec.Run.load(folder)
        context = getattr(run.model, "context", None)
        if context is None:
            raise SystemExit(f"{folder}: a {run.model.name} run does not read conversations through an LLM")
        context.cache = False  # every new context runs the LLM (no embedding cache)
        sides[label] = (run, TestClient(create_app({"m": run}, options=ServeOptions(kv_cache_mb=mb))))
    lm = sides["with"][0].model.context.lm
    sides["without"][0].model.context._lm = lm  # one LLM in memory for both ways
    times: dict[str, list[list[float]]] = {label: [] for label in sides}
    tokens: dict[str, list[list[tuple[int, int]]]] = {label: [] for label in sides}
    answers: dict[str, list[list[str]]] = {label: [] for label in sides}
    for n in range(args.conversations):
        order = list(sides) if n % 2 == 0 else list(reversed(sides))
        for label in order:
            run, client = sides[label]
            sid = client.post("/models/m/sessions").json()["session_id"]
            row_t, row_k = [], []
            for text in conversation(n, args.turns):
                start = time.perf_counter()
                response = client.post(f"/models/m/sessions/{sid}/messages", json={"text": text, "k": 10})
                row_t.append(1000 * (time.perf_counter() - start))
                if response.status_code != 200:
                    raise SystemExit(f"message failed: {response.status_code} {response.text[:300]}")
                row_k.append((lm.last_encoding["tokens"], lm.last_encoding["computed"]))
                answers[label].append([r["item_id"] for r in response.json()["recommendations"]])
            times[label].append(row_t)
            tokens[label].append(row_k)
        print(f"conversation {n + 1}/{args.conversations}: turn {args.turns} "
              f"{times['without'][-1][-1]:.0f} ms without, {times['with'][-1][-1]:.0f} ms with", flush=True)
    same = sum(a == b for a, b in zip(answers["with"], answers["without"], strict=True))
    rows = []
    for turn in [int(t) for t in args.report.split(",") if int(t) <= args.turns]:
        def median(label: str, i: int = turn - 1) -> float:
            return statistics.median(r[i] for r in times[label])

        prompt = statistics.median(r[turn - 1][0] for r in tokens["without"])
        run_with = statistics.median(r[turn - 1][1] for r in tokens["with"])
        rows.append({"turn": turn, "prompt tokens": prompt, "without cache ms": median("without"),
                     "with cache ms": median("with"), "tokens run with cache": run_with,
                     "speed-up": median("without") / median("with")})
    store = sides["with"][0].model.context.kv
    chars = len("\n".join(conversation(0, args.turns)))
    head = (f"{cpu_name()}, {os.cpu_count()} cores, {args.threads} torch thread(s); {folder.name} "
            f"({sides['with'][0].model.name}, LLM {lm.identity}); {args.conversations} conversations of {args.turns} "
            f"user messages ({chars} characters at the last turn), median over conversations; the same top-10 with "
            f"and without the cache for {same} of {len(answers['with'])} messages; KV cache at the end: "
            f"{len(store)} sessions, {store.nbytes / 2**20:.0f} MB; load average {load_start:.2f} at the start, "
            f"{os.getloadavg()[0]:.2f} at the end")
    table = text_table([{k: (f"{v:.1f}" if isinstance(v, float) else v) for k, v in r.items()} for r in rows],
                       list(rows[0]))
    print(head)
    print(table)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_json(out.with_suffix(".json"), {"setting": head, "rows": rows, "times_ms": times, "tokens": tokens,
                                          "same_top10": same, "messages": len(answers["with"])})
    atomic_write(out.with_suffix(".md"), lambda f: f.write(
        f"# CRS message latency by turn, with and without the KV cache (`python bench/crs_turns.py`)\n\n"
        f"{head}.\n\n```\n{table}\n```\n"))


if __name__ == "__main__":
    main()
