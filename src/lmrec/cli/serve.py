"""``lmrec serve RUN [RUN ...]``: run folders as an HTTP service with a web page (FastAPI + uvicorn)."""

from __future__ import annotations

import argparse
import socket

from lmrec.cli.train import add_threads, set_threads
from lmrec.errors import LmrecError


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
    options = ServeOptions(window_ms=args.batch_window_ms, max_batch=args.max_batch, kv_cache_mb=args.kv_cache_mb,
                           kv_sessions=args.kv_sessions)
    runs = load_runs(args.runs, args.name, args.device)
    app = create_app(runs, session_ttl=args.session_ttl, retrieval=args.retrieval,
                     faiss_options={"nprobe": args.nprobe}, options=options)
    sock = listen(args.host, args.port)
    port = sock.getsockname()[1]
    print(f"lmrec serve: {', '.join(runs)} on http://{args.host}:{port}/ (API docs: /docs)", flush=True)
    uvicorn.Server(uvicorn.Config(app, log_level="warning")).run(sockets=[sock])


def listen(host: str, port: int) -> socket.socket:
    """A socket bound to ``host:port`` (port 0: a free one, picked by the system) for the server to listen on."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise LmrecError(f"--host {host} --port {port}: cannot listen there ({exc.strerror or exc})") from None
    return sock
