"""EmbeddingCache / CachedEncoder / encode_catalog against a fake encoder that counts its work."""

import json
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

import lmrec.text.cache as cache_module
from lmrec.errors import EmbeddingError
from lmrec.text import CachedEncoder, EmbeddingCache, TextEncoder, cache_key, encode_catalog


class FakeEncoder:
    """Deterministic vectors from a text's hash; counts calls and texts; can be told to misbehave."""

    def __init__(self, identity: str = "fake:v1", dim: int = 8, out_dim: int | None = None, nan_at: int | None = None):
        self.identity = identity
        self.dim = dim
        self.out_dim = dim if out_dim is None else out_dim
        self.nan_at = nan_at
        self.calls = 0
        self.encoded: list[str] = []

    def vector(self, text: str) -> np.ndarray:
        seed = int.from_bytes(cache_key(self.identity, text)[:4], "little")
        return np.random.default_rng(seed).standard_normal(self.out_dim).astype(np.float32)

    def encode(self, texts: Sequence[str], batch_size: int = 64, progress: bool = False) -> np.ndarray:
        self.calls += 1
        self.encoded.extend(texts)
        out = np.stack([self.vector(t) for t in texts]) if texts else np.zeros((0, self.out_dim), np.float32)
        if self.nan_at is not None:
            out[self.nan_at, 3] = np.nan
        return out


TITLES = ["Toy Story (1995)", "Heat (1995)", "Jumanji (1995)", "Casino (1995)"]


def expected(encoder: FakeEncoder, texts: Sequence[str]) -> np.ndarray:
    return np.stack([encoder.vector(t) for t in texts])


def test_fake_and_cached_encoders_satisfy_the_protocol(tmp_path):
    fake = FakeEncoder()
    cached = CachedEncoder(fake, EmbeddingCache(tmp_path))
    assert isinstance(fake, TextEncoder) and isinstance(cached, TextEncoder)
    assert cached.identity == fake.identity and cached.dim == fake.dim


def test_second_run_encodes_nothing(tmp_path):
    fake = FakeEncoder()
    cached = CachedEncoder(fake, EmbeddingCache(tmp_path))
    first = cached.encode(TITLES)
    assert fake.calls == 1 and cached.last_encoded == 4
    second = cached.encode(TITLES)
    assert fake.calls == 1 and cached.last_encoded == 0 and cached.last_hits == 4
    assert first.dtype == np.float32 and first.shape == (4, 8)
    np.testing.assert_array_equal(first, second)
    np.testing.assert_array_equal(first, expected(fake, TITLES))


def test_partial_overlap_encodes_only_new_texts_in_input_order(tmp_path):
    fake = FakeEncoder()
    cached = CachedEncoder(fake, EmbeddingCache(tmp_path))
    cached.encode(TITLES[:2])
    fake.encoded.clear()
    texts = ["Casino (1995)", "Heat (1995)", "Jumanji (1995)", "Toy Story (1995)"]
    out = cached.encode(texts)
    assert sorted(fake.encoded) == ["Casino (1995)", "Jumanji (1995)"]
    np.testing.assert_array_equal(out, expected(fake, texts))


def test_duplicates_are_encoded_once(tmp_path):
    fake = FakeEncoder()
    cached = CachedEncoder(fake, EmbeddingCache(tmp_path))
    texts = ["a", "b", "a", "c", "b", "a"]
    out = cached.encode(texts)
    assert fake.encoded == ["a", "b", "c"]
    np.testing.assert_array_equal(out, expected(fake, texts))
    assert EmbeddingCache(tmp_path).count(fake.identity) == 3


def test_chunks_are_stored_as_they_finish(tmp_path):
    fake = FakeEncoder()
    cached = CachedEncoder(fake, EmbeddingCache(tmp_path), chunk_size=3)
    cached.encode([f"t{i}" for i in range(7)])
    assert fake.calls == 3
    assert len(list(EmbeddingCache(tmp_path).folder(fake.identity).glob("shard-*.npz"))) == 3


def test_cache_survives_reopening_from_disk(tmp_path):
    fake = FakeEncoder()
    first = CachedEncoder(fake, EmbeddingCache(tmp_path)).encode(TITLES)
    other = FakeEncoder()  # same identity, fresh counters, fresh cache object
    again = CachedEncoder(other, EmbeddingCache(tmp_path)).encode(TITLES)
    assert other.calls == 0
    np.testing.assert_array_equal(first, again)
    folder = EmbeddingCache(tmp_path).folder(fake.identity)
    assert (folder / "identity.txt").read_text() == "fake:v1"
    assert not [p for p in folder.iterdir() if p.name.startswith(".tmp")]


def test_different_identities_do_not_collide(tmp_path):
    cache = EmbeddingCache(tmp_path)
    a, b = FakeEncoder("fake:a"), FakeEncoder("fake:b", dim=5)
    va = CachedEncoder(a, cache).encode(TITLES)
    vb = CachedEncoder(b, cache).encode(TITLES)
    assert a.calls == 1 and b.calls == 1 and vb.shape == (4, 5)
    assert cache.folder("fake:a") != cache.folder("fake:b")
    np.testing.assert_array_equal(CachedEncoder(a, EmbeddingCache(tmp_path)).encode(TITLES), va)


def test_wrong_dimension_raises_naming_identity_and_shapes(tmp_path):
    bad = FakeEncoder("fake:bad", dim=8, out_dim=7)
    with pytest.raises(EmbeddingError) as info:
        CachedEncoder(bad, EmbeddingCache(tmp_path)).encode(TITLES)
    message = str(info.value)
    assert "fake:bad" in message and "(4, 7)" in message and "(4, 8)" in message
    assert EmbeddingCache(tmp_path).count("fake:bad") == 0  # nothing bad was stored


def test_nan_raises_naming_the_text_index(tmp_path):
    bad = FakeEncoder("fake:nan", nan_at=2)
    with pytest.raises(EmbeddingError, match=r"fake:nan.*text 2 \('Jumanji"):
        CachedEncoder(bad, EmbeddingCache(tmp_path)).encode(TITLES)
    assert EmbeddingCache(tmp_path).count("fake:nan") == 0


def test_unreadable_shard_is_skipped_and_recomputed(tmp_path):
    fake = FakeEncoder()
    CachedEncoder(fake, EmbeddingCache(tmp_path)).encode(TITLES[:2])
    folder = EmbeddingCache(tmp_path).folder(fake.identity)
    (folder / "shard-99999999999999999999-garbage.npz").write_bytes(b"not a zip")
    other = FakeEncoder()
    with pytest.warns(UserWarning, match="unreadable shard"):
        out = CachedEncoder(other, EmbeddingCache(tmp_path)).encode(TITLES)
    assert sorted(other.encoded) == sorted(TITLES[2:])
    np.testing.assert_array_equal(out, expected(fake, TITLES))


def test_compact_merges_shards_without_losing_vectors(tmp_path):
    fake = FakeEncoder()
    cache = EmbeddingCache(tmp_path)
    for title in TITLES:
        CachedEncoder(fake, cache).encode([title])
    cache.compact(fake.identity)
    assert len(list(cache.folder(fake.identity).glob("shard-*.npz"))) == 1
    other = FakeEncoder()
    np.testing.assert_array_equal(CachedEncoder(other, EmbeddingCache(tmp_path)).encode(TITLES), expected(fake, TITLES))
    assert other.calls == 0


def test_encode_catalog_uses_default_root_from_env(tmp_path, monkeypatch):
    monkeypatch.setenv("LMREC_CACHE", str(tmp_path))
    fake = FakeEncoder()
    out = encode_catalog(TITLES, fake, progress=False)
    assert out.shape == (4, 8)
    assert (tmp_path / "embeddings" / EmbeddingCache(tmp_path / "embeddings").folder(fake.identity).name).is_dir()
    encode_catalog(TITLES, fake, progress=True)
    assert fake.calls == 1


def test_empty_input(tmp_path):
    fake = FakeEncoder()
    out = CachedEncoder(fake, EmbeddingCache(tmp_path)).encode([])
    assert out.shape == (0, 8) and fake.calls == 0


# --- keys that end in NUL bytes (S32 used to drop them) --------------------------------------------------------


def texts_with_nul_suffix(identity: str, suffix: bytes, n: int, skip: Sequence[str] = ()) -> list[str]:
    """The first ``n`` texts ``t<i>`` whose cache key ends in ``suffix`` (found by brute force)."""
    found: list[str] = []
    i = 0
    while len(found) < n:
        text = f"t{i}"
        if cache_key(identity, text).endswith(suffix) and text not in skip:
            found.append(text)
        i += 1
    return found


@pytest.fixture(scope="module")
def nul_texts() -> list[str]:
    """3 texts whose key ends in one NUL byte, 1 whose key ends in two (~65k hashes, < 0.1 s), 2 ordinary ones."""
    double = texts_with_nul_suffix("fake:v1", b"\x00\x00", 1)
    single = texts_with_nul_suffix("fake:v1", b"\x00", 3, skip=double)
    return single + double + ["Heat (1995)", "Casino (1995)"]


def shards(tmp_path, identity: str = "fake:v1") -> list[Path]:
    return sorted(EmbeddingCache(tmp_path).folder(identity).glob("shard-*.npz"))


def test_keys_ending_in_nul_bytes_are_found_on_the_next_run(tmp_path, nul_texts):
    assert cache_key("fake:v1", nul_texts[3]).endswith(b"\x00\x00")
    fake = FakeEncoder()
    first = CachedEncoder(fake, EmbeddingCache(tmp_path)).encode(nul_texts)
    assert fake.calls == 1 and len(shards(tmp_path)) == 1
    for _ in range(2):  # fresh cache objects (a new run each time): nothing encoded, no shard added
        other = FakeEncoder()
        cached = CachedEncoder(other, EmbeddingCache(tmp_path))
        again = cached.encode(nul_texts)
        assert other.calls == 0 and cached.last_hits == len(nul_texts)
        np.testing.assert_array_equal(again, first)
        assert len(shards(tmp_path)) == 1
    assert EmbeddingCache(tmp_path).count("fake:v1") == len(nul_texts)


def write_old_format_shard(folder, identity: str, texts: Sequence[str], vectors: np.ndarray) -> None:
    """A shard as the code before V32 keys wrote it: ``keys`` S32 (trailing NULs dropped by numpy)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "identity.txt").write_text(identity, encoding="utf-8")
    keys = np.array([cache_key(identity, t) for t in texts], dtype="S32")
    np.savez(folder / "shard-00000000000000000001-oldformt.npz", keys=keys, vectors=vectors)


def test_old_format_s32_shards_are_read_back_exactly(tmp_path, nul_texts):
    fake = FakeEncoder()
    folder = EmbeddingCache(tmp_path).folder(fake.identity)
    write_old_format_shard(folder, fake.identity, nul_texts, expected(fake, nul_texts))
    with np.load(next(folder.glob("shard-*.npz"))) as data:  # the old format really loses the NULs
        assert data["keys"].dtype == np.dtype("S32")
        assert len(data["keys"][0]) < 32 and len(data["keys"][3]) < 31
    other = FakeEncoder()
    cached = CachedEncoder(other, EmbeddingCache(tmp_path))
    out = cached.encode(nul_texts)
    assert other.calls == 0 and cached.last_hits == len(nul_texts)
    np.testing.assert_array_equal(out, expected(fake, nul_texts))
    # a new-format shard next to it, then compaction: one V32 shard that still holds every text
    CachedEncoder(FakeEncoder(), EmbeddingCache(tmp_path)).encode(TITLES)
    cache = EmbeddingCache(tmp_path)
    cache.compact(fake.identity)
    [merged] = shards(tmp_path)
    with np.load(merged) as data:
        assert data["keys"].dtype == np.dtype("V32") and len(data["keys"]) == len(nul_texts) + 2  # + 2 new titles
    last = FakeEncoder()
    out = CachedEncoder(last, EmbeddingCache(tmp_path)).encode([*nul_texts, *TITLES])
    assert last.calls == 0
    np.testing.assert_array_equal(out, expected(fake, [*nul_texts, *TITLES]))


# --- compaction while another process writes -------------------------------------------------------------------

_WRITER = """
import json, sys
import numpy as np
from lmrec.text.cache import EmbeddingCache, cache_key
root, identity, texts = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
vectors = [
    np.random.default_rng(int.from_bytes(cache_key(identity, t)[:4], "little")).standard_normal(8) for t in texts
]
EmbeddingCache(root).put(identity, texts, np.array(vectors, dtype=np.float32))
"""


def test_compact_keeps_a_shard_another_process_wrote_after_the_index_was_read(tmp_path):
    fake = FakeEncoder()
    cache = EmbeddingCache(tmp_path)  # process A (this one)
    CachedEncoder(fake, cache).encode(TITLES[:2])
    CachedEncoder(fake, cache).encode(TITLES[2:3])
    assert cache.count(fake.identity) == 3  # A has read the index: 2 shards
    theirs = ["Jumanji (1995)", "GoldenEye (1995)", "Sabrina (1995)"]
    src = str(Path(__file__).resolve().parents[2] / "src")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([src, os.environ.get("PYTHONPATH", "")])}
    subprocess.run(  # process B adds a shard A has not seen
        [sys.executable, "-c", _WRITER, str(tmp_path), fake.identity, json.dumps(theirs)],
        check=True,
        env=env,
        timeout=60,
    )
    assert len(shards(tmp_path)) == 3
    cache.compact(fake.identity)
    assert len(shards(tmp_path)) == 1
    texts = [*TITLES[:3], *theirs]
    fresh = FakeEncoder()
    out = CachedEncoder(fresh, EmbeddingCache(tmp_path)).encode(texts)
    assert fresh.calls == 0
    np.testing.assert_array_equal(out, expected(fake, texts))


def test_compact_leaves_a_shard_written_while_it_runs(tmp_path, monkeypatch):
    """A shard that appears after compact listed the folder is neither merged nor deleted."""
    fake = FakeEncoder()
    for title in TITLES[:3]:
        CachedEncoder(fake, EmbeddingCache(tmp_path)).encode([title])
    real_read = cache_module._read_shard
    late: list[str] = []

    def read_then_someone_writes(shard):
        if not late:  # another writer, between the listing and the deletion
            late.append("Casino (1995)")
            CachedEncoder(FakeEncoder(), EmbeddingCache(tmp_path)).encode(late)
        return real_read(shard)

    monkeypatch.setattr(cache_module, "_read_shard", read_then_someone_writes)
    EmbeddingCache(tmp_path).compact(fake.identity)
    monkeypatch.undo()
    assert len(shards(tmp_path)) == 2  # the merged one and the late one
    fresh = FakeEncoder()
    texts = [*TITLES[:3], *late]
    np.testing.assert_array_equal(CachedEncoder(fresh, EmbeddingCache(tmp_path)).encode(texts), expected(fake, texts))
    assert fresh.calls == 0
