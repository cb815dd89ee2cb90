"""Shared test fixtures: where the real (read-only) datasets live."""

from collections.abc import Callable
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``<repo>/../shared/data``; the test is skipped when it is absent (real-data tests need it)."""
    path = (REPO_ROOT / ".." / "shared" / "data").resolve()
    if not path.is_dir():
        pytest.skip("../shared/data not found: real-data tests need the shared datasets")
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
