"""Shared test fixtures: where the real (read-only) datasets live, and lmrec's cache of the suite's own."""

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real (read-only) datasets: the first folder of ``$LMREC_DATA`` (where lmrec finds datasets by name; the
    Makefile sets it to ``../shared/data`` when the checkout has one beside it), else ``<repo>/../shared/data``,
    wherever the checkout is; the test is skipped without them."""
    candidates = [Path(p) for p in os.environ.get("LMREC_DATA", "").split(os.pathsep) if p]
    path = next((p for p in candidates if p.is_dir()), (REPO_ROOT / ".." / "shared" / "data").resolve())
    if not path.is_dir():
        pytest.skip(f"no shared data ({path} not found; LMREC_DATA names no folder): real-data tests need it")
    return path


@pytest.fixture(scope="session")
def real_dataset(shared_data: Path) -> Callable[[str], Path]:
    """``real_dataset("movielens-100k")`` -> the folder under shared data, skipping the test when it is missing."""

    def find(name: str) -> Path:
        path = shared_data / name
        if not path.exists():
            pytest.skip(f"{path} not found")
        return path

    return find


@pytest.fixture(scope="session", autouse=True)
def suite_cache(tmp_path_factory: pytest.TempPathFactory, pytestconfig: pytest.Config) -> Iterator[Path]:
    """lmrec's cache (converted models, embeddings) in a folder of the suite's own, never the user's home: beside
    pytest's own temp folders (``/tmp/pytest-of-<user>/lmrec-cache``, kept between sessions so that SmolLM2 is
    converted once), inside ``--basetemp`` when one is given. A test may still point LMREC_CACHE elsewhere."""
    base = tmp_path_factory.getbasetemp()
    folder = (base if pytestconfig.getoption("basetemp") else base.parent) / "lmrec-cache"
    mp = pytest.MonkeyPatch()
    mp.setenv("LMREC_CACHE", str(folder))
    yield folder
    mp.undo()


@pytest.fixture(scope="session", autouse=True)
def fp32_under_auto() -> Iterator[None]:
    """``precision="auto"`` (and the LLM's ``dtype="auto"``) means fp32 in the suite on every machine, in this
    process and the commands it starts (``LMREC_AUTO_PRECISION``), so results compared across tests do not depend
    on the CPU. The tests of the hardware rule unset it; bf16 training is tested by asking for it."""
    mp = pytest.MonkeyPatch()
    mp.setenv("LMREC_AUTO_PRECISION", "fp32")
    yield
    mp.undo()
