"""A run folder stands on its own (its data inside, checksummed), titles match honestly with one matcher, and many
users' recommendations and the vectors come out as files."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient

import lmrec
from helpers import planted_data, single_thread  # noqa: F401
from lmrec import cli
from lmrec.data.catalog import ItemCatalog
from lmrec.data.interactions import SplitData
from lmrec.data.titles import AmbiguousTitle, TitleIndex, TitleNotFound, title_words
from lmrec.errors import DataFormatError, LmrecError
from lmrec.models.queries import KnownUsers
from lmrec.serve import create_app

MOVIES = ["Matrix, The (1999)", "Matrix Reloaded, The (2003)", "Psycho (1960)", "Psycho (1998)",
          "Shawshank Redemption, The (1994)", "Emma (1996)", "Emma (1996)", "Amélie (2001)", "Heat (1995)",
          "Up (2009)"]


def test_title_words_drop_case_accents_punctuation_and_articles():
    assert title_words("Matrix, The (1999)") == ("matrix", "1999")
    assert title_words("the matrix") == ("matrix", None)
    assert title_words("Amélie (2001)") == ("amelie", "2001")
    assert title_words("The") == ("the", None)  # an article alone stays a word


def test_exact_then_normalized_then_fuzzy_and_never_a_silent_guess():
    index = TitleIndex([str(i) for i in range(len(MOVIES))], MOVIES, "movies")
    m = index.match("Matrix, The (1999)")
    assert (m.item_id, m.how) == ("0", "exact")
    assert [(index.match(q).item_id, index.match(q).how) for q in ("The Matrix", "matrix", "MATRIX (1999)",
                                                                    "amelie", "The Matrix Reloaded")] == \
        [("0", "normalized")] * 3 + [("7", "normalized"), ("1", "normalized")]
    fuzzy = index.match("Shawshank Redemtion")
    assert (fuzzy.item_id, fuzzy.how) == ("4", "fuzzy") and 88 <= fuzzy.score < 100
    assert index.match("Psycho (1998)").item_id == "3"
    with pytest.raises(AmbiguousTitle, match=r"'Psycho' matches 2 items .*'Psycho \(1960\)' \(2\).*give the year"):
        index.match("Psycho")
    with pytest.raises(AmbiguousTitle) as twins:  # one title listed twice: the ids tell them apart
        index.match("Emma (1996)")
    assert [c[0] for c in twins.value.candidates] == ["5", "6"]
    with pytest.raises(TitleNotFound, match=r"no title in movies matches 'Not A Real Movie \(2099\)'") as missing:
        index.match("Not A Real Movie (2099)")
    assert missing.value.candidates and all(score < 88 for _, _, score in missing.value.candidates)
    with pytest.raises(TitleNotFound):
        index.match("Father of the Bride")
    with pytest.raises(AmbiguousTitle, match="'Star Wars' matches 2 items"):
        TitleIndex(["a", "b"], ["Star Wars: Episode IV (1977)", "Star Wars: Episode V (1980)"]).match("Star Wars")
    assert TitleIndex(["a"], ["The Restless Lantern: a pirate story"]).match("restless lantern").how == "normalized"
    index.add("new-1", "Brand New Gadget")
    assert index.match("brand new gadget").item_id == "new-1"
    assert [index.ids[i] for i in index.search("matrix")] == ["0", "1"]  # the exact words first
    assert index.search("psyco") and index.ids[index.search("psyco")[0]] in ("2", "3")


@pytest.fixture
def movie_data() -> SplitData:
    data = planted_data()
    titles = MOVIES + [f"Movie number {i}" for i in range(len(MOVIES), data.n_items)]
    catalog = ItemCatalog(data.catalog.ids, titles)
    return SplitData("movies", data.user_ids, catalog, data.train, data.valid, data.test, data.protocol)


def test_a_run_loads_recommends_and_serves_with_its_data_gone(movie_data, tmp_path):
    run = lmrec.fit("lightgcn", movie_data, {"epochs": 2, "progress": False}, out=tmp_path / "run", emb_dim=8)
    assert (tmp_path / "run" / "data" / "snapshot.json").exists()
    loaded = lmrec.Run.load(tmp_path / "run")  # the data was never on disk: made in memory
    assert loaded.data.checksum() == movie_data.checksum()
    assert loaded.recommend(user="u3", k=5) == run.recommend(user="u3", k=5)
    client = TestClient(create_app({"m": loaded}))
    assert client.post("/models/m/recommend", json={"user": "u3", "k": 3}).status_code == 200
    shutil.move(tmp_path / "run", tmp_path / "moved")
    assert lmrec.Run.load(tmp_path / "moved").recommend(user="u3", k=5) == run.recommend(user="u3", k=5)
    other = planted_data(1, name="movies")
    with pytest.raises(LmrecError, match="checksum"):
        lmrec.Run.load(tmp_path / "moved", data=other)


def test_titles_say_what_they_matched_in_python_the_cli_and_the_service(movie_data, tmp_path, capsys):
    run = lmrec.fit("pop", movie_data, out=tmp_path / "pop")
    recs = run.recommend(titles=["The Matrix", "Shawshank Redemtion"], k=3)
    assert [(m.query, m.item_id, m.how) for m in recs.matched] == [("The Matrix", movie_data.catalog.ids[0],
                                                                    "normalized"),
                                                                   ("Shawshank Redemtion", movie_data.catalog.ids[4],
                                                                    "fuzzy")]
    assert all(r.item_id not in (movie_data.catalog.ids[0], movie_data.catalog.ids[4]) for r in recs)
    with pytest.raises(TitleNotFound):
        run.recommend(titles=["Not A Real Movie (2099)"])
    assert cli.main(["recommend", str(tmp_path / "pop"), "--title", "matrix", "-k", "2"]) == 0
    assert "matched: 'matrix' -> 'Matrix, The (1999)'" in capsys.readouterr().out
    assert cli.main(["recommend", str(tmp_path / "pop"), "--title", "Psycho"]) == 2
    assert "'Psycho' matches 2 items" in capsys.readouterr().err
    client = TestClient(create_app({"pop": lmrec.Run.load(tmp_path / "pop")}))
    answer = client.post("/models/pop/recommend", json={"titles": ["the matrix"], "k": 2}).json()
    assert answer["matched"] == [{"query": "the matrix", "item_id": movie_data.catalog.ids[0],
                                  "title": "Matrix, The (1999)", "how": "normalized", "score": 100.0}]
    missing = client.post("/models/pop/recommend", json={"titles": ["Not A Real Movie (2099)"]})
    assert missing.status_code == 404 and missing.json()["candidates"]
    ambiguous = client.post("/models/pop/recommend", json={"titles": ["Psycho"]})
    assert ambiguous.status_code == 400 and len(ambiguous.json()["candidates"]) == 2


def test_added_items_are_found_by_search_and_by_title_matching_alike(movie_data, tmp_path, monkeypatch):
    features = np.random.default_rng(0).normal(size=(movie_data.n_items, 8)).astype(np.float32)
    lmrec.fit(lmrec.get_model("alpharec")(features=features, n_negatives=8, mlp_ratio=1.0), movie_data,
                    {"epochs": 1, "progress": False}, out=tmp_path / "ar")
    token = "a-token-of-16-characters-or-more"
    client = TestClient(create_app({"ar": lmrec.Run.load(tmp_path / "ar")}, token=token),
                        headers={"Authorization": f"Bearer {token}"})
    import torch

    from lmrec.models.cf.alpharec import AlphaRec

    monkeypatch.setattr(AlphaRec, "encode_texts", lambda self, texts: torch.ones(len(texts), 8))  # no LM here
    added = client.post("/models/ar/items", json={"title": "Brand New Gadget"})
    assert added.status_code == 201
    new_id = added.json()["item"]["item_id"]
    assert [i["item_id"] for i in client.get("/models/ar/items", params={"q": "new gadget"}).json()["items"]] == \
        [new_id]
    as_history = client.post("/models/ar/recommend", json={"titles": ["brand new gadget"]})
    assert as_history.status_code == 400 and "added through the service" in as_history.json()["error"]


def test_every_users_top_k_to_a_file_and_the_vectors_out(movie_data, tmp_path, capsys):
    run = lmrec.fit("lightgcn", movie_data, {"epochs": 2, "progress": False}, out=tmp_path / "run", emb_dim=8)
    frame = run.recommend_many(k=4)
    assert list(frame.columns) == ["user", "rank", "item", "title", "score"]
    assert len(frame) == 4 * movie_data.n_users and frame.groupby("user")["rank"].apply(list).map(
        lambda r: r == [1, 2, 3, 4]).all()
    one = run.recommend(user="u7", k=4)
    assert frame[frame.user == "u7"]["item"].tolist() == [r.item_id for r in one]
    seen = set(movie_data.catalog.ids[i] for i in movie_data.user_items(movie_data.user_index("u7")))
    assert not seen & set(frame[frame.user == "u7"]["item"])
    (tmp_path / "users.txt").write_text("u1\nu2\n")
    assert cli.main(["recommend", str(tmp_path / "run"), "--users", str(tmp_path / "users.txt"), "-k", "3",
                     "--out", str(tmp_path / "r.parquet")]) == 0
    assert pd.read_parquet(tmp_path / "r.parquet")["user"].tolist() == ["u1"] * 3 + ["u2"] * 3
    assert cli.main(["recommend", str(tmp_path / "run"), "--all-users", "--out", str(tmp_path / "r.txt")]) == 2
    assert "--out: expected a .csv or .parquet file" in capsys.readouterr().err
    for fmt in ("parquet", "npy"):
        assert cli.main(["export", str(tmp_path / "run"), "--out", str(tmp_path / fmt), "--format", fmt]) == 0
    users, items = pd.read_parquet(tmp_path / "parquet" / "users.parquet"), pd.read_parquet(
        tmp_path / "parquet" / "items.parquet")
    u = np.stack(users.set_index("user").loc["u7", "vector"])
    scores = np.stack(items["vector"].to_list()) @ u
    np.testing.assert_allclose(scores, run.model.score(KnownUsers(np.array([movie_data.user_index("u7")])))[0].numpy(),
                               rtol=1e-5, atol=1e-6)
    assert json.loads((tmp_path / "npy" / "items.json").read_text()) == movie_data.catalog.ids
    assert np.load(tmp_path / "npy" / "users.npy").shape == (movie_data.n_users, 8)
    with pytest.raises(LmrecError, match="does not score by a dot product"):
        lmrec.fit("pop", movie_data).export_vectors(tmp_path / "pop")


def test_a_damaged_snapshot_is_an_error(movie_data, tmp_path):
    lmrec.fit("pop", movie_data, out=tmp_path / "run")
    pairs = pd.read_parquet(tmp_path / "run" / "data" / "interactions.parquet")
    pairs.iloc[1:].to_parquet(tmp_path / "run" / "data" / "interactions.parquet")
    with pytest.raises(DataFormatError, match="changed or damaged"):
        lmrec.Run.load(tmp_path / "run")
