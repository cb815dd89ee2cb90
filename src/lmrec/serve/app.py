"""The ASGI app of ``lmrec serve``: run folders behind a JSON API (OpenAPI at ``/openapi.json``, docs at ``/docs``)
and a web page at ``/``.

Every error about the request is a 4xx with ``{"error": "..."}`` (and ``"field"`` where it was about one): 404
for an unknown model, user, item or session, 400 for a request the run cannot answer as asked, 422 for a malformed
or out-of-range field (from the schemas), 401 / 403 for a refused write.

Writes: ``POST /models/{name}/items`` is the one endpoint that changes a run folder. It is refused (403) unless the
app has a ``token`` (``lmrec serve --allow-writes``), and then needs ``Authorization: Bearer <token>`` (401
without, 403 with another); each run takes at most ``max_added_items``. The read endpoints stay open.
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping
from pathlib import Path

from fastapi import Depends, FastAPI, Query, Request
from fastapi import Path as PathParam
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from lmrec.data.conversations import parse_conversation
from lmrec.errors import UNSET, Argument, LmrecError, UnknownIdError
from lmrec.run import Run
from lmrec.serve import schemas as S
from lmrec.serve.batching import ServeOptions
from lmrec.serve.service import ServedRun, WriteRefused
from lmrec.serve.sessions import SessionNotFound, SessionStore

STATIC = Path(__file__).resolve().parent / "static"
ERRORS = {400: {"model": S.ErrorResponse}, 404: {"model": S.ErrorResponse}, 422: {"model": S.ErrorResponse}}
WRITE_ERRORS = {401: {"model": S.ErrorResponse}, 403: {"model": S.ErrorResponse}}
Name = PathParam(max_length=200, description="a served model (see /models)")
bearer = HTTPBearer(auto_error=False, description="the token `lmrec serve --allow-writes` reads from --token-file "
                                                  "or LMREC_SERVE_TOKEN")
Token = Depends(bearer)


class UnknownModel(UnknownIdError):
    """A model name the service does not serve."""


class Unauthorized(LmrecError):
    """A write without the bearer token (401)."""


def create_app(runs: Mapping[str, Run | ServedRun], session_ttl: float = 1800.0, retrieval: str = "auto",
               faiss_options: dict | None = None, token: str | None = None, max_added_items: int = 1000,
               options: ServeOptions | None = None) -> FastAPI:
    """The app serving ``runs`` (``{name: Run}``, e.g. ``{"alpharec": Run.load("runs/ar")}``); ``token``: the bearer
    token that adding items needs (None: the app takes no writes), ``max_added_items`` per run; ``options``: batching
    and the conversations' KV cache (:class:`lmrec.serve.batching.ServeOptions`)."""
    served = {name: r if isinstance(r, ServedRun) else ServedRun(name, r, retrieval, faiss_options, max_added_items,
                                                                 options)
              for name, r in runs.items()}
    sessions = SessionStore(ttl=session_ttl)
    app = FastAPI(title="lmrec", version=_version(), description=__doc__, responses=ERRORS)

    def get(name: str) -> ServedRun:
        if name not in served:
            raise UnknownModel(f"unknown model {name!r}: served are {', '.join(served)}")
        return served[name]

    def item(run: ServedRun, index: int) -> S.Item:
        return S.Item(item_id=run.item_id(index), title=run.title(index))

    def may_write(credentials: HTTPAuthorizationCredentials | None) -> None:
        if token is None:
            raise WriteRefused("this server takes no writes: start it with `lmrec serve --allow-writes` and a token "
                               "(--token-file or LMREC_SERVE_TOKEN)")
        if credentials is None:
            raise Unauthorized("adding items needs the server's token: send the header Authorization: Bearer <token>")
        if not hmac.compare_digest(credentials.credentials.encode(), token.encode()):
            raise WriteRefused("the bearer token is not this server's")

    # -- errors: 4xx JSON, never a traceback -------------------------------------------------------------------
    @app.exception_handler(LmrecError)
    async def lmrec_error(request: Request, exc: LmrecError) -> JSONResponse:
        status = 404 if isinstance(exc, (UnknownIdError, SessionNotFound)) else 400
        status = 403 if isinstance(exc, WriteRefused) else status
        body: dict = {"error": exc.naming(_json_name)}
        named = next((p.keyword for p in getattr(exc, "parts", ()) if isinstance(p, Argument)), None)
        if named is not None:
            body["field"] = named
        if getattr(exc, "candidates", None) is not None:  # a title that named no item, or several
            body["candidates"] = [{"item_id": i, "title": t, "score": round(s, 1)} for i, t, s in exc.candidates]
        return JSONResponse(body, status_code=status)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        parts = []
        for err in exc.errors():
            loc = [str(p) for p in err.get("loc", ()) if p != "body"]
            if err.get("type") == "json_invalid":  # the location is a character offset, not a field
                parts.append(f"malformed JSON body (at character {loc[-1] if loc else '?'})")
                continue
            parts.append(f"{'.'.join(loc) or 'body'}: {err.get('msg', 'invalid')}")
        fields = [str(p) for p in exc.errors()[0].get("loc", ())[1:2]] if exc.errors() else []
        body = {"error": "; ".join(parts)[:2000], **({"field": fields[0][:200]} if fields else {})}
        return JSONResponse(body, status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return JSONResponse({"error": str(exc.detail)}, status_code=exc.status_code)

    @app.exception_handler(Unauthorized)
    async def unauthorized(request: Request, exc: Unauthorized) -> JSONResponse:
        return JSONResponse({"error": str(exc)}, status_code=401, headers={"WWW-Authenticate": "Bearer"})

    # -- service ---------------------------------------------------------------------------------------------
    @app.get("/health", response_model=S.Health, tags=["service"])
    def health() -> S.Health:
        return S.Health(status="ok", models=len(served))

    @app.get("/models", response_model=list[S.ModelInfo], tags=["service"])
    def models() -> list[S.ModelInfo]:
        return [_info(run, token is not None) for run in served.values()]

    @app.get("/models/{name}", response_model=S.ModelInfo, tags=["service"])
    def model(name: str = Name) -> S.ModelInfo:
        return _info(get(name), token is not None)

    # -- collaborative filtering -----------------------------------------------------------------------------
    @app.post("/models/{name}/recommend", response_model=S.RecommendResponse, tags=["recommend"])
    def recommend(body: S.RecommendRequest, name: str = Name) -> S.RecommendResponse:
        run = get(name)
        top, how, matched = run.recommend(body.user, body.items, body.titles, body.intent, body.alpha, body.k,
                                          body.exclude, body.exclude_seen, body.retrieval)
        return S.RecommendResponse(model=name, retrieval=how, recommendations=[_rec(r) for r in top],
                                   matched=[S.Matched(**m.as_dict()) for m in matched])

    @app.get("/models/{name}/items/{item_id}/similar", response_model=S.SimilarResponse, tags=["recommend"])
    def similar(name: str = Name, item_id: str = PathParam(max_length=S.MAX_ID),
                k: int = Query(10, ge=1, le=1000)) -> S.SimilarResponse:
        run = get(name)
        top = run.similar(item_id, k)
        return S.SimilarResponse(model=name, item=item(run, run.index_of(item_id)), similar=[_rec(r) for r in top])

    @app.get("/models/{name}/items/{item_id}", response_model=S.ItemDetails, tags=["catalog"])
    def item_details(name: str = Name, item_id: str = PathParam(max_length=S.MAX_ID)) -> S.ItemDetails:
        return S.ItemDetails(model=name, **get(name).details(item_id))

    @app.post("/models/{name}/items", response_model=S.AddItemResponse, status_code=201, tags=["catalog"],
              responses=WRITE_ERRORS)
    def add_item(body: S.AddItemRequest, name: str = Name,
                 credentials: HTTPAuthorizationCredentials | None = Token) -> S.AddItemResponse:
        may_write(credentials)
        run = get(name)
        item_id, title = run.add_item(body.title, body.item_id)
        return S.AddItemResponse(model=name, item=S.Item(item_id=item_id, title=title), items=run.n_items)

    @app.get("/models/{name}/items", response_model=S.ItemsResponse, tags=["catalog"])
    def search_items(name: str = Name, q: str = Query("", max_length=S.MAX_TITLE),
                     limit: int = Query(20, ge=1, le=200)) -> S.ItemsResponse:
        hits = get(name).search_titles(q, limit)
        return S.ItemsResponse(items=[S.Item(item_id=i, title=t) for i, t in hits])

    @app.get("/models/{name}/users", response_model=S.UsersResponse, tags=["catalog"])
    def users(name: str = Name, limit: int = Query(50, ge=1, le=1000), offset: int = Query(0, ge=0, le=10**9),
              q: str = Query("", max_length=S.MAX_ID, description="part of the id (any case)")) -> S.UsersResponse:
        ids, total = get(name).users(limit, offset, q)
        return S.UsersResponse(users=ids, total=total)

    @app.get("/models/{name}/users/{user_id}", response_model=S.UserHistory, tags=["catalog"])
    def user_history(name: str = Name, user_id: str = PathParam(max_length=S.MAX_ID),
                     limit: int = Query(50, ge=1, le=1000)) -> S.UserHistory:
        run = get(name)
        items, total, held_out = run.history(user_id, limit)
        return S.UserHistory(model=name, user_id=user_id, history=[item(run, i) for i in items], total=total,
                             held_out=held_out)

    # -- conversations ---------------------------------------------------------------------------------------
    @app.post("/models/{name}/sessions", response_model=S.SessionResponse, status_code=201, tags=["conversation"])
    def create_session(name: str = Name) -> S.SessionResponse:
        run = get(name)
        if "conversation" not in run.features:
            raise LmrecError(f"{name} is a collaborative-filtering run: conversations need a CRS run")
        session = sessions.create(name)
        return S.SessionResponse(session_id=session.session_id, model=name, expires_in=sessions.ttl)

    @app.post("/models/{name}/sessions/{session_id}/messages", response_model=S.MessageResponse,
              tags=["conversation"])
    def message(body: S.MessageRequest, name: str = Name,
                session_id: str = PathParam(max_length=100)) -> S.MessageResponse:
        run = get(name)
        session = sessions.get(session_id, name)
        turn = parse_conversation([f"{body.role}: {body.text}"], "message")[0]
        sample = run.run.conversation_sample(sessions.add(session, turn), conv_id=session_id)
        top = run.converse(sample, body.k)
        mentions = [S.Mention(start=s, end=e, item_id=run.item_id(i), title=run.title(i))
                    for s, e, i in run.run.mentions(body.text)]
        return S.MessageResponse(session_id=session_id, mentions=mentions,
                                 mentioned=[item(run, i) for i in sample.mentioned],
                                 recommendations=[_rec(r) for r in top], turns=len(session.turns))

    @app.get("/models/{name}/sessions/{session_id}", response_model=S.Transcript, tags=["conversation"])
    def transcript(name: str = Name, session_id: str = PathParam(max_length=100)) -> S.Transcript:
        run = get(name)
        turns = sessions.turns(sessions.get(session_id, name))
        mentioned = run.run.conversation_sample(turns).mentioned if turns else []
        return S.Transcript(session_id=session_id, model=name, mentioned=[item(run, i) for i in mentioned],
                            turns=[S.Turn(role=t.role, text=t.text) for t in turns])

    @app.delete("/models/{name}/sessions/{session_id}", status_code=204, tags=["conversation"])
    def end_session(name: str = Name, session_id: str = PathParam(max_length=100)) -> None:
        get(name)
        sessions.delete(session_id, name)

    # -- the page --------------------------------------------------------------------------------------------
    @app.get("/", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(STATIC / "index.html")

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    return app


def _rec(r) -> S.Recommendation:
    because = [S.Because(item_id=b.item_id, title=b.title, similarity=_finite(b.similarity)) for b in r.because]
    return S.Recommendation(rank=r.rank, item_id=r.item_id, title=r.title, score=_finite(r.score), because=because,
                            intent=r.intent, reason=r.reason)


def _json_name(argument: Argument) -> str:
    """An argument as a JSON request names it: the field, with the value given where the message quotes one."""
    return argument.keyword if argument.value is UNSET else f"{argument.keyword}={argument.value!r}"


def _finite(value: float) -> float:
    return value if value == value and abs(value) != float("inf") else 0.0


def _info(run: ServedRun, writes: bool) -> S.ModelInfo:
    test = run.run.metrics.get("test", {})
    block = test.get("all", test) if isinstance(test.get("all"), dict) else test
    metrics = {k: v["mean"] for k, v in block.items() if isinstance(v, dict) and "mean" in v}
    users = getattr(run.run.data, "n_users", None)
    return S.ModelInfo(name=run.name, model=run.model.name, task=run.task, dataset=run.run.data.name,
                       items=run.n_items, users=users, metrics=jsonable_encoder(metrics), retrieval=run.retrieval,
                       features=run.features, writes=writes and "add_item" in run.features)


def _version() -> str:
    from lmrec import __version__

    return __version__


def load_runs(folders: list[str], names: list[str] | None = None, device: str = "cpu") -> dict[str, Run]:
    """``{name: Run}`` for run folders (names: the folder names unless given; they must be distinct)."""
    names = names or [Path(f).resolve().name for f in folders]
    if len(names) != len(folders):
        raise LmrecError(f"{len(names)} names for {len(folders)} run folders")
    if len(set(names)) != len(names):
        raise LmrecError(f"two runs would share a name ({', '.join(names)}): pass --name for each")
    return {name: Run.load(folder, device=device) for name, folder in zip(names, folders, strict=True)}

