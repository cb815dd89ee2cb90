"""The documentation site (`make docs`, mkdocs.yml) builds offline with warnings as errors: no broken link or anchor,
no reference target that does not resolve, no docstring its parser warns about; every `::: target` of the API
reference is rendered; no page loads anything from another host; the README's links reach their files."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from urllib.parse import unquote

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> tuple[Path, str]:
    pytest.importorskip("mkdocs", reason="the docs extra: pip install -e '.[docs]' (make setup installs it)")
    pytest.importorskip("mkdocstrings_handlers.python", reason="the docs extra: pip install -e '.[docs]'")
    out = tmp_path_factory.mktemp("docs") / "site"
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--config-file", str(ROOT / "mkdocs.yml"),
         "--site-dir", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=300, env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
    log = result.stdout + result.stderr
    assert result.returncode == 0, log[-6000:]
    return out, log


def test_the_docs_build_with_warnings_as_errors(site):
    out, log = site
    assert not [line for line in log.splitlines() if line.startswith(("WARNING", "ERROR"))], log
    assert (out / "index.html").exists() and (out / "guide" / "python.html").exists()
    # the README's quick start is on the home page (included, not copied)
    assert "Nothing touches the model hub" in (out / "index.html").read_text(encoding="utf-8")


def test_every_reference_target_is_rendered(site):
    out, _ = site
    pages = sorted((ROOT / "docs" / "reference").glob("*.md"))
    targets = 0
    for page in pages:
        html = (out / "reference" / page.with_suffix(".html").name).read_text(encoding="utf-8")
        for target in re.findall(r"^::: (\S+)", page.read_text(encoding="utf-8"), flags=re.M):
            assert f'id="{target}"' in html, f"{page.name}: {target} is not rendered"
            targets += 1
    assert targets >= 10


def test_no_page_loads_anything_from_another_host(site):
    out, _ = site
    for page in out.rglob("*.html"):
        html = page.read_text(encoding="utf-8")
        remote = re.findall(r"<(?:script|link|img|iframe)\b[^>]*\b(?:src|href)=\"(?:https?:)?//[^\"]*\"", html)
        assert not remote, f"{page.relative_to(out)}: {remote}"
    assert not [p for p in (out / "assets").rglob("*.css") if "fonts.googleapis" in p.read_text(encoding="utf-8")]


def test_the_readme_links_reach_their_files():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    links = [unquote(link.partition("#")[0]) for link in re.findall(r"\]\(([^)\s]+)\)", text)
             if not re.match(r"[a-z]+:", link)]
    assert len(links) >= 10
    assert not [link for link in links if not (ROOT / link).exists()]
