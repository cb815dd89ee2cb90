"""Every endpoint of `lmrec serve` and its errors, through FastAPI's TestClient (no network)."""

from __future__ import annotations

import concurrent.futures
import json

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient

import lmrec
from helpers import single_thread  # noqa: F401
from lmrec import clock
from lmrec.clock import ManualClock
from lmrec.serve import create_app
from lmrec.serve.service import ADDED
from lmrec.serve.sessions import SessionNotFound, SessionStore

TOKEN = "a-test-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def client(app_runs, tmp_path):
    runs = {name: app_runs(name, tmp_path) for name in ("alpharec", "pop", "crs-pop", "fism")}
    client = TestClient(create_app(runs, session_ttl=60, token=TOKEN))
    client.app_data = runs["alpharec"].data  # the planted data is in memory only: reloads take it from here
    return client


def test_health_and_models(client):
    assert client.get("/health").json() == {"status": "ok", "models": 4}
    models = {m["name"]: m for m in client.get("/models").json()}
    assert set(models) == {"alpharec", "pop", "crs-pop", "fism"}
    assert models["alpharec"]["features"] == ["user", "new_user", "intent", "add_item", "similar"]
    assert models["pop"]["features"] == ["user", "new_user"] and models["fism"]["features"] == ["conversation"]
    assert models["alpharec"]["items"] == 40 and models["alpharec"]["users"] == 30
    assert models["alpharec"]["writes"] and not models["pop"]["writes"]  # pop cannot place an item from its title
    assert 0 < models["alpharec"]["metrics"]["recall@20"] <= 1
    assert client.get("/models/fism").json()["task"] == "crs"


def test_recommend_known_user_matches_the_library(client, app_runs, tmp_path):
    body = client.post("/models/alpharec/recommend", json={"user": "u3", "k": 5}).json()
    direct = app_runs("alpharec", tmp_path / "direct").recommend(user="u3", k=5)
    assert [r["item_id"] for r in body["recommendations"]] == [r.item_id for r in direct]
    assert body["retrieval"] == "exact" and [r["rank"] for r in body["recommendations"]] == [1, 2, 3, 4, 5]


def test_recommend_new_user_intent_exclude(client):
    by_items = client.post("/models/alpharec/recommend", json={"items": ["i4", "i5"], "k": 4}).json()
    by_titles = client.post("/models/alpharec/recommend",
                            json={"titles": ["Movie number 4", "Movie number 5"], "k": 4}).json()
    assert by_items["recommendations"] == by_titles["recommendations"]
    ids = [r["item_id"] for r in by_items["recommendations"]]
    assert not {"i4", "i5"} & set(ids)
    excluded = client.post("/models/alpharec/recommend",
                           json={"items": ["i4", "i5"], "k": 4, "exclude": [ids[0]]}).json()
    assert ids[0] not in [r["item_id"] for r in excluded["recommendations"]]
    kept = client.post("/models/alpharec/recommend", json={"user": "u3", "k": 40, "exclude_seen": False}).json()
    assert len(kept["recommendations"]) == 40
    pop = client.post("/models/pop/recommend", json={"items": ["i4"], "k": 3}).json()
    assert len(pop["recommendations"]) == 3


def test_intent(client, monkeypatch):
    from lmrec.models.cf.alpharec import AlphaRec

    monkeypatch.setattr(AlphaRec, "encode_texts",
                        lambda self, texts: self.z_items[22:28].mean(0, keepdim=True).expand(len(texts), -1))
    body = client.post("/models/alpharec/recommend",
                       json={"user": "u0", "intent": "cluster three please", "alpha": 1.0, "k": 6}).json()
    assert sum(r["item_id"] in {f"i{i}" for i in range(22, 28)} for r in body["recommendations"]) >= 3


@pytest.mark.parametrize(("body", "status", "words"), [
    ({"user": "nobody"}, 404, "unknown user id 'nobody'"),
    ({"items": ["nope"]}, 404, "unknown item id 'nope'"),
    ({"titles": ["Casablanca"]}, 404, "no title"),
    ({"user": "u1", "k": 0}, 422, "k:"),
    ({"user": "u1", "k": 41}, 400, "k=41"),
    ({"user": "u1", "alpha": 2}, 422, "alpha"),
    ({"user": "u1", "intent": "x" * 2001}, 422, "intent"),
    ({"user": "u1", "intent": ""}, 422, "intent"),
    ({"user": 5}, 404, "unknown user id '5'"),  # an integer id is the same id as "5": this data has none
    ({"user": True}, 422, "user"),
    ({"user": 5.5}, 422, "user"),
    ({"user": "u1", "alpha": 0.3}, 400, "alpha=0.3 weighs a stated intention"),
    ({"user": "u1", "retrieval": "faiss"}, 400, "retrieval='faiss': alpharec is served with exact retrieval"),
    ({"user": "u1", "surprise": 1}, 422, "surprise"),
    ({}, 400, "nothing to recommend"),
    ({"user": "u1", "items": ["i1"]}, 400, "either user"),
])
def test_recommend_errors(client, body, status, words):
    response = client.post("/models/alpharec/recommend", json=body)
    assert response.status_code == status and words in response.json()["error"], response.json()


@pytest.mark.parametrize(("body", "field"), [
    ({"user": "u1", "alpha": 0.3}, "alpha"), ({"user": "u1", "retrieval": "faiss"}, "retrieval"),
    ({"user": "u1", "k": 0}, "k"), ({"user": True}, "user"), ({"user": "u1", "intent": ""}, "intent"),
    ({"user": "u1", "items": ["i1"]}, "user"), ({"user": "nobody"}, None),
])
def test_errors_name_the_field_they_are_about(client, body, field):
    """The page shows an error next to the field it names."""
    assert client.post("/models/alpharec/recommend", json=body).json().get("field") == field


def test_more_errors(client):
    assert client.post("/models/nothing/recommend", json={"user": "u1"}).status_code == 404
    malformed = client.post("/models/alpharec/recommend", content=b"{not json",
                            headers={"content-type": "application/json"})
    assert malformed.status_code == 422 and "error" in malformed.json()
    assert client.post("/models/pop/recommend", json={"user": "u1", "intent": "a comedy"}).status_code == 400
    assert client.post("/models/fism/recommend", json={"user": "u1"}).status_code == 400
    assert client.get("/models/pop/items/i1/similar").status_code == 400
    assert client.get("/models/alpharec/items/zzz/similar").status_code == 404
    assert client.post("/models/pop/items", json={"title": "A New Film"}, headers=AUTH).status_code == 400
    assert client.post("/models/alpharec/sessions").status_code == 400
    assert client.get("/nowhere").json() == {"error": "Not Found"}


def test_similar_items(client):
    body = client.get("/models/alpharec/items/i4/similar?k=3").json()
    assert body["item"]["item_id"] == "i4" and len(body["similar"]) == 3
    assert "i4" not in [r["item_id"] for r in body["similar"]]


def test_search_and_users(client):
    hits = client.get("/models/alpharec/items", params={"q": "number 1", "limit": 5}).json()["items"]
    assert hits and all("1" in h["title"] for h in hits)
    users = client.get("/models/alpharec/users?limit=5&offset=2").json()
    assert users == {"users": ["u2", "u3", "u4", "u5", "u6"], "total": 30}


def test_added_item_is_rankable_at_once_and_survives_a_restart(client, app_runs, tmp_path, monkeypatch):
    from lmrec.models.cf.alpharec import AlphaRec

    # the new title's LM vector is cluster 0's direction: it must rank among cluster 0's items for a cluster-0 user
    monkeypatch.setattr(AlphaRec, "encode_texts",
                        lambda self, texts: self.z_items[4:10].mean(0, keepdim=True).expand(len(texts), -1))
    added = client.post("/models/alpharec/items", json={"title": "A Film Nobody Has Seen"}, headers=AUTH)
    assert added.status_code == 201
    item = added.json()["item"]
    assert item["item_id"].startswith("added:") and added.json()["items"] == 41
    top = client.post("/models/alpharec/recommend", json={"user": "u0", "k": 5}).json()["recommendations"]
    assert item["item_id"] in [r["item_id"] for r in top]
    mine = next(r for r in top if r["item_id"] == item["item_id"])
    train = {f"i{i}" for i in client.app_data.train_items(client.app_data.user_index("u0"))}
    assert mine["because"] and {b["item_id"] for b in mine["because"]} <= train  # an added item has its reasons too
    details = client.get(f"/models/alpharec/items/{item['item_id']}").json()
    assert details["added"] and details["popularity"] is None and details["title"] == "A Film Nobody Has Seen"
    assert client.post("/models/alpharec/items", json={"title": "A Film Nobody Has Seen"},
                       headers=AUTH).status_code == 400
    folder = tmp_path / "alpharec"
    tensors_file = folder / ADDED
    assert tensors_file.exists()
    restarted = TestClient(create_app({"alpharec": lmrec.Run.load(folder, data=client.app_data)}))
    again = restarted.post("/models/alpharec/recommend", json={"user": "u0", "k": 5}).json()["recommendations"]
    assert [r["item_id"] for r in again] == [r["item_id"] for r in top]
    similar = restarted.get(f"/models/alpharec/items/{item['item_id']}/similar?k=3").json()
    assert similar["item"]["title"] == "A Film Nobody Has Seen"


def test_concurrent_additions_lose_none(app_runs, tmp_path, monkeypatch):
    """Two apps (as two server processes would) and many threads add items to one run folder at once."""
    from lmrec.models.cf.alpharec import AlphaRec

    monkeypatch.setattr(AlphaRec, "encode_texts",
                        lambda self, texts: torch.ones(len(texts), self.z_items.shape[1]))
    run = app_runs("alpharec", tmp_path)
    clients = [TestClient(create_app({"a": run}, token=TOKEN)),
               TestClient(create_app({"a": lmrec.Run.load(run.folder, data=run.data)}, token=TOKEN))]
    titles = [f"New title {i}" for i in range(24)]
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        codes = list(pool.map(lambda i: clients[i % 2].post("/models/a/items", json={"title": titles[i]},
                                                            headers=AUTH).status_code, range(len(titles))))
    assert codes == [201] * len(titles)
    from lmrec.tensorfile import load_tensors

    tensors, meta = load_tensors(run.folder / ADDED)
    assert sorted(meta["titles"]) == sorted(titles) and len(tensors["vectors"]) == 24


def test_conversation_session(client):
    created = client.post("/models/fism/sessions")
    assert created.status_code == 201
    sid = created.json()["session_id"]
    first = client.post(f"/models/fism/sessions/{sid}/messages", json={"text": "I like Heat (1995) and Alien (1979)"})
    body = first.json()
    assert [m["title"] for m in body["mentioned"]] == ["Heat (1995)", "Alien (1979)"]
    assert len(body["recommendations"]) == 8 and body["turns"] == 1  # 10 movies, the 2 mentioned left out
    assert not {"Heat (1995)", "Alien (1979)"} & {r["title"] for r in body["recommendations"]}
    client.post(f"/models/fism/sessions/{sid}/messages", json={"text": "How about Up (2009)?", "role": "system"})
    transcript = client.get(f"/models/fism/sessions/{sid}").json()
    assert [t["role"] for t in transcript["turns"]] == ["user", "system"]
    assert [m["title"] for m in transcript["mentioned"]] == ["Heat (1995)", "Alien (1979)", "Up (2009)"]
    assert client.post(f"/models/crs-pop/sessions/{sid}/messages", json={"text": "hi"}).status_code == 404
    assert client.post(f"/models/fism/sessions/{sid}/messages", json={"text": ""}).status_code == 422
    assert client.delete(f"/models/fism/sessions/{sid}").status_code == 204
    assert client.get(f"/models/fism/sessions/{sid}").status_code == 404


def test_sessions_expire(app_runs, tmp_path):
    """Expiry reads lmrec's clock; a test clock that starts at 0 is a machine started a moment ago."""
    with clock.use(ManualClock(start=0.0)) as manual:
        client = TestClient(create_app({"fism": app_runs("fism", tmp_path)}, session_ttl=10))
        sid = client.post("/models/fism/sessions").json()["session_id"]
        manual.advance(5)
        assert client.get(f"/models/fism/sessions/{sid}").status_code == 200  # a request: idle from here on
        manual.advance(10)
        assert client.get(f"/models/fism/sessions/{sid}").status_code == 200  # 10 s idle: not more than ttl
        manual.advance(10.5)
        response = client.get(f"/models/fism/sessions/{sid}")
    assert response.status_code == 404 and "expired after 10 s" in response.json()["error"]


def test_a_full_store_drops_the_session_idle_longest():
    store = SessionStore(ttl=60, max_sessions=2)
    with clock.use(ManualClock()) as manual:
        first = store.create("m")
        manual.advance(1)
        second = store.create("m")
        manual.advance(1)
        store.get(first.session_id, "m")  # first is now the more recent
        third = store.create("m")
        assert store.get(first.session_id, "m") and store.get(third.session_id, "m")
        with pytest.raises(SessionNotFound):
            store.get(second.session_id, "m")


def test_sessions_on_the_real_clock_live_until_their_ttl():
    """lmrec's default clock, whatever the machine's uptime (tests/test_clock.py runs this near a monotonic 0)."""
    store = SessionStore(ttl=3600)
    session = store.create("m")
    assert store.get(session.session_id, "m") is session and 0 <= clock.now() - session.last_seen < 3600


def test_faiss_retrieval_on_request(app_runs, tmp_path):
    run = app_runs("alpharec", tmp_path)
    client = TestClient(create_app({"a": run}, retrieval="faiss", faiss_options={"nlist": 4, "nprobe": 4}))
    assert client.get("/models/a").json()["retrieval"] == "faiss"
    body = client.post("/models/a/recommend", json={"user": "u3", "k": 5}).json()
    assert body["retrieval"] == "faiss"
    exact = client.post("/models/a/recommend", json={"user": "u3", "k": 5, "retrieval": "exact"}).json()
    # nprobe = nlist: the IVF search visits every list, so it is exact
    assert [r["item_id"] for r in body["recommendations"]] == [r["item_id"] for r in exact["recommendations"]]
    np.testing.assert_allclose([r["score"] for r in body["recommendations"]],
                               [r["score"] for r in exact["recommendations"]], rtol=1e-5)
    assert [(r["because"], r["reason"]) for r in body["recommendations"]] == \
        [(r["because"], r["reason"]) for r in exact["recommendations"]]  # the same reasons, from the index's vectors


def test_the_intention_is_credited_alike_by_the_index_and_exactly(app_runs, tmp_path, monkeypatch):
    from lmrec.models.cf.alpharec import AlphaRec

    monkeypatch.setattr(AlphaRec, "encode_texts",
                        lambda self, texts: self.z_items[22:28].mean(0, keepdim=True).expand(len(texts), -1))
    client = TestClient(create_app({"a": app_runs("alpharec", tmp_path)}, retrieval="faiss",
                                   faiss_options={"nlist": 4, "nprobe": 4}))
    ask = {"user": "u0", "intent": "cluster three please", "alpha": 1.0, "k": 6}
    plain = {r["item_id"] for r in client.post("/models/a/recommend", json={"user": "u0", "k": 6}).json()[
        "recommendations"]}
    answers = [client.post("/models/a/recommend", json={**ask, "retrieval": how}).json() for how in ("faiss", "exact")]
    assert [a["retrieval"] for a in answers] == ["faiss", "exact"]
    for answer in answers:
        top = answer["recommendations"]
        brought = {r["item_id"] for r in top} - plain
        assert brought and {r["item_id"] for r in top if r["intent"] == "cluster three please"} == brought


def test_the_page_is_served(client):
    page = client.get("/")
    assert page.status_code == 200 and "<title>lmrec</title>" in page.text
    assert client.get("/static/app.js").status_code == 200
    schema = client.get("/openapi.json").json()
    assert "/models/{name}/recommend" in schema["paths"] and json.dumps(schema)


def test_the_llm_is_loaded_once_and_used_one_call_at_a_time_from_many_threads():
    """A server answers from a thread pool: 16 concurrent first messages used to load the LLM 16 times at once."""
    import threading
    import time

    from lmrec.inputs.config import PrepareConfig
    from lmrec.inputs.lookup import ContextFeatures

    loads, active, most = [], [0], [0]
    guard = threading.Lock()

    class FakeLM:
        def encode_contexts(self, contexts, **kwargs):
            with guard:
                active[0] += 1
                most[0] = max(most[0], active[0])
            time.sleep(0.01)
            with guard:
                active[0] -= 1
            return torch.stack([torch.full((4,), float(len(c))) for c in contexts])

    def loader():
        loads.append(1)
        time.sleep(0.2)
        return FakeLM()

    context = ContextFeatures(lm_loader=loader, config=PrepareConfig(), cache=False)
    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        results = list(pool.map(lambda i: context.q([f"context {i}"]), range(16)))
    assert len(loads) == 1 and most[0] == 1
    assert all(torch.equal(r[0], torch.full((4,), float(len(f"context {i}")))) for i, r in enumerate(results))


def test_every_recommendation_says_why_as_the_library_does(client, app_runs, tmp_path):
    body = client.post("/models/alpharec/recommend", json={"items": ["i4", "i5", "i30"], "k": 5}).json()
    direct = app_runs("alpharec", tmp_path / "direct").recommend(items=["i4", "i5", "i30"], k=5)
    assert [[b["item_id"] for b in r["because"]] for r in body["recommendations"]] == \
        [[b.item_id for b in r.because] for r in direct]
    assert [r["reason"] for r in body["recommendations"]] == [r.reason for r in direct]
    assert all(1 <= len(r["because"]) <= 3 and r["reason"].startswith("because you liked ")
               for r in body["recommendations"])
    pop = client.post("/models/pop/recommend", json={"user": "u1", "k": 2}).json()["recommendations"]
    assert all(r["because"] == [] and "no item space" in r["reason"] for r in pop)


def test_an_integer_user_id_is_the_string_id(app_runs, tmp_path):
    """The Python API takes user=5 for "5": so does the service (a dataset with numeric ids)."""
    from helpers import planted_data

    data = planted_data()
    numeric = type(data)(data.name, [str(i) for i in range(data.n_users)], data.catalog, data.train, data.valid,
                         data.test)
    client = TestClient(create_app({"pop": lmrec.fit("pop", numeric)}))
    as_int = client.post("/models/pop/recommend", json={"user": 5, "k": 3, "exclude": ["i1"]})
    as_str = client.post("/models/pop/recommend", json={"user": "5", "k": 3, "exclude": ["i1"]})
    assert as_int.status_code == 200 and as_int.json() == as_str.json()
    assert client.get("/models/pop/users/5").json()["user_id"] == "5"
    # JSON Schema's integer includes 5.0 (schemathesis sends it); 5.5 and true are not ids
    as_float = client.post("/models/pop/recommend", json={"user": 5.0, "k": 3, "exclude": ["i1"]})
    assert as_float.status_code == 200 and as_float.json() == as_str.json()
    for bad in (5.5, True):
        refused = client.post("/models/pop/recommend", json={"user": bad, "k": 3})
        assert refused.status_code == 422 and refused.json()["field"] == "user"


def test_faiss_is_refused_where_the_run_is_served_exactly(client):
    refused = client.post("/models/alpharec/recommend", json={"user": "u1", "retrieval": "faiss"})
    assert refused.status_code == 400 and "--retrieval faiss" in refused.json()["error"]
    assert client.post("/models/alpharec/recommend", json={"user": "u1", "retrieval": "exact"}).status_code == 200
    no_index = client.post("/models/pop/recommend", json={"user": "u1", "retrieval": "faiss"})
    assert no_index.status_code == 400 and "only exact retrieval" in no_index.json()["error"]


def test_item_details(client):
    data = client.app_data
    body = client.get("/models/alpharec/items/i4").json()
    assert body == {"model": "alpharec", "item_id": "i4", "title": "Movie number 4", "fields": {}, "added": False,
                    "popularity": int(data.item_popularity()[4]), "popularity_of": "training users who have the item"}
    assert body["popularity"] > 0
    assert client.get("/models/alpharec/items/nope").status_code == 404
    crs = client.get("/models/fism/items", params={"q": "heat"}).json()["items"][0]
    details = client.get(f"/models/fism/items/{crs['item_id']}").json()
    assert details["title"] == "Heat (1995)" and details["popularity"] is not None


def test_user_history_and_finding_any_user(client):
    data = client.app_data
    u = data.user_index("u7")
    body = client.get("/models/alpharec/users/u7?limit=3").json()
    train = data.user_items(u, ("train",))
    assert body["total"] == len(train) and body["held_out"] == 4  # the planted data holds 2 valid + 2 test back
    assert [h["item_id"] for h in body["history"]] == [data.catalog.ids[i] for i in train[:3]]
    assert client.get("/models/alpharec/users/nobody").status_code == 404
    assert client.get("/models/fism/users/u1").status_code == 400
    found = client.get("/models/alpharec/users", params={"q": "U2"}).json()
    assert found == {"users": ["u2", "u20", "u21", "u22", "u23", "u24", "u25", "u26", "u27", "u28", "u29"],
                     "total": 11}
    pages = [client.get("/models/alpharec/users", params={"limit": 7, "offset": o}).json()["users"]
             for o in range(0, 30, 7)]
    assert sum(pages, []) == [f"u{i}" for i in range(30)]  # paging reaches every user


def test_writes_are_off_unless_allowed_and_need_the_token(app_runs, tmp_path, monkeypatch):
    from lmrec.models.cf.alpharec import AlphaRec

    monkeypatch.setattr(AlphaRec, "encode_texts", lambda self, texts: torch.ones(len(texts), self.z_items.shape[1]))
    run = app_runs("alpharec", tmp_path)
    read_only = TestClient(create_app({"a": run}))
    off = read_only.post("/models/a/items", json={"title": "New"}, headers=AUTH)
    assert off.status_code == 403 and "--allow-writes" in off.json()["error"]
    assert not read_only.get("/models/a").json()["writes"]
    guarded = TestClient(create_app({"a": run}, token=TOKEN, max_added_items=2))
    missing = guarded.post("/models/a/items", json={"title": "New"})
    assert missing.status_code == 401 and missing.headers["www-authenticate"] == "Bearer"
    assert "Authorization: Bearer" in missing.json()["error"]
    wrong = guarded.post("/models/a/items", json={"title": "New"}, headers={"Authorization": "Bearer not-it"})
    assert wrong.status_code == 403 and "not this server's" in wrong.json()["error"]
    assert guarded.post("/models/a/items", json={"title": "New"}, headers={"Authorization": TOKEN}).status_code == 401
    assert [guarded.post("/models/a/items", json={"title": t}, headers=AUTH).status_code
            for t in ("One", "Two", "Three")] == [201, 201, 403]
    capped = guarded.post("/models/a/items", json={"title": "Four"}, headers=AUTH).json()
    assert "has 2 added items, the most this server allows (lmrec serve --max-added-items 2)" in capped["error"]
    from lmrec.tensorfile import load_tensors

    assert load_tensors(run.folder / ADDED)[1]["titles"] == ["One", "Two"]  # the refused one was not written
    assert guarded.get("/models/a").json()["items"] == 42
    assert guarded.get("/models/a/items/i1").status_code == 200  # reads stay open, without a token


def test_a_message_says_where_it_names_each_item(client):
    sid = client.post("/models/fism/sessions").json()["session_id"]
    text = "I like heat (1995), and Alien (1979)!"
    body = client.post(f"/models/fism/sessions/{sid}/messages", json={"text": text}).json()
    assert [(text[m["start"]:m["end"]], m["title"]) for m in body["mentions"]] == \
        [("heat (1995)", "Heat (1995)"), ("Alien (1979)", "Alien (1979)")]
    mentioned = {"Heat (1995)", "Alien (1979)"}
    assert all(r["because"] and {b["title"] for b in r["because"]} <= mentioned
               and r["reason"].startswith("because you mentioned") for r in body["recommendations"])
    crs_pop = client.post("/models/crs-pop/sessions").json()["session_id"]
    top = client.post(f"/models/crs-pop/sessions/{crs_pop}/messages", json={"text": text}).json()["recommendations"]
    assert all(r["because"] == [] and "no item space" in r["reason"] for r in top)
