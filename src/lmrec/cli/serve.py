"""``lmrec serve RUN [RUN ...]``: run folders as an HTTP service with a web page (FastAPI + uvicorn).

The service reads only, unless ``--allow-writes``: then ``POST /models/{name}/items`` takes new items from clients
that send the bearer token read from ``--token-file`` or the environment variable ``LMREC_SERVE_TOKEN`` (never from
a flag's value, which other users of the machine can see), at most ``--max-added-items`` per run.
"""

from __future__ import annotations

import argparse
import os
import socket
from pathlib import Path

from lmrec.cli.train import add_threads, set_threads
from lmrec.errors import LmrecError

TOKEN_VARIABLE = "LMREC_SERVE_TOKEN"
MIN_TOKEN = 16  # characters


def add_commands(sub: argparse._SubParsersAction, argv: list[str]) -> None:
    serve = sub.add_parser("serve", help="serve run folders over HTTP (JSON API + a web page at /)")
    serve.add_argument("runs", nargs="+", help="run folders")
    serve.add_argument("--name", action="append", help="the name of each run in the API (default: folder names)")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000, help="0: a free port, printed when the server starts")
    serve.add_argument("--retrieval", default="auto", choices=["auto", "exact", "faiss"],
                       help="auto: FAISS for catalogs of 200k items and more")
    serve.add_argument("--nprobe", type=int, default=64, help="FAISS lists searched per query (recall vs speed)")
    serve.add_argument("--session-ttl", dest="session_ttl", type=float, default=1800.0,
                       help="seconds a conversation session lives without a message")
    serve.add_argument("--device", default="cpu", choices=["cpu", "cuda", "mps"])
    serve.add_argument("--allow-writes", dest="allow_writes", action="store_true",
                       help="take new items (POST /models/NAME/items) from clients that send the bearer token")
    serve.add_argument("--token-file", dest="token_file",
                       help=f"the file holding that token (default: the environment variable {TOKEN_VARIABLE})")
    serve.add_argument("--max-added-items", dest="max_added_items", type=int, default=1000,
                       help="items that may be added to each run, in all (default 1000)")
    serve.add_argument("--max-batch", dest="max_batch", type=int, default=32,
                       help="concurrent top-k requests to one model answered by one product (1: no batching)")
    serve.add_argument("--batch-window-ms", dest="batch_window_ms", type=float, default=2.0,
                       help="ms a batch waits for more requests while they arrive together (0: only those waiting)")
    serve.add_argument("--kv-cache-mb", dest="kv_cache_mb", type=float, default=512.0,
                       help="MB of LLM KV cache kept across a conversation's messages, least recently used "
                            "sessions dropped first (0: none; each message reads the whole conversation)")
    serve.add_argument("--kv-sessions", dest="kv_sessions", type=int, default=256,
                       help="conversation sessions whose KV cache is kept at most")
    add_threads(serve)
    serve.set_defaults(func=cmd_serve)


def cmd_serve(args: argparse.Namespace) -> None:
    import uvicorn

    from lmrec.serve.app import create_app, load_runs
    from lmrec.serve.batching import ServeOptions

    set_threads(args)
    token = read_token(args.allow_writes, args.token_file)
    if args.max_added_items < 0:
        raise LmrecError(f"--max-added-items {args.max_added_items}: expected 0 or more")
    options = ServeOptions(window_ms=args.batch_window_ms, max_batch=args.max_batch, kv_cache_mb=args.kv_cache_mb,
                           kv_sessions=args.kv_sessions)
    runs = load_runs(args.runs, args.name, args.device)
    app = create_app(runs, session_ttl=args.session_ttl, retrieval=args.retrieval,
                     faiss_options={"nprobe": args.nprobe}, token=token, max_added_items=args.max_added_items,
                     options=options)
    sock = listen(args.host, args.port)
    port = sock.getsockname()[1]
    writes = f"; writes: on, up to {args.max_added_items} items per run" if token and args.max_added_items else \
        "; read only"
    print(f"lmrec serve: {', '.join(runs)} on http://{args.host}:{port}/ (API docs: /docs{writes})", flush=True)
    uvicorn.Server(uvicorn.Config(app, log_level="warning")).run(sockets=[sock])


def read_token(allow_writes: bool, token_file: str | None) -> str | None:
    """The bearer token writes need: from ``token_file``, else ``$LMREC_SERVE_TOKEN``; None without
    ``allow_writes``. A missing, empty or short token is an error naming where it was read from."""
    if not allow_writes:
        if token_file:
            raise LmrecError("--token-file goes with --allow-writes (without it the server takes no writes)")
        return None
    if token_file:
        try:
            token, where = Path(token_file).read_text(encoding="utf-8").strip(), f"--token-file {token_file}"
        except OSError as exc:
            raise LmrecError(f"--token-file {token_file}: cannot read it ({exc.strerror or exc})") from None
    elif os.environ.get(TOKEN_VARIABLE) is not None:
        token, where = os.environ[TOKEN_VARIABLE].strip(), TOKEN_VARIABLE
    else:
        raise LmrecError(f"--allow-writes needs a token: --token-file PATH, or the environment variable "
                         f"{TOKEN_VARIABLE}")
    if len(token) < MIN_TOKEN or any(c.isspace() for c in token):
        raise LmrecError(f"{where}: expected a token of at least {MIN_TOKEN} characters without spaces, e.g. from "
                         "python -c 'import secrets; print(secrets.token_urlsafe(32))'")
    return token


def listen(host: str, port: int) -> socket.socket:
    """A socket bound to ``host:port`` (port 0: a free one, picked by the system) for the server to listen on.

    Made with ``IPPROTO_TCP`` named: asyncio sets TCP_NODELAY on the connections it accepts only from such a socket,
    and without it every answer on a kept-alive connection after the first waited ~40 ms for the client's delayed
    ACK (Nagle's algorithm; the response goes out in two writes)."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise LmrecError(f"--host {host} --port {port}: cannot listen there ({exc.strerror or exc})") from None
    return sock
