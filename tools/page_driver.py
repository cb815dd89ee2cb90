"""Drive lmrec's web page in headless Chromium (Debian's chromium on PATH, through Python Playwright): explore a CF
run (a user, then a new user built by searching titles, with an intention), chat with a CRS run, and take a
screenshot of each view. Used by tests/serve/test_server.py and for the screenshots under docs/."""

from __future__ import annotations

import shutil
from pathlib import Path

ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run"]


def chromium() -> str | None:
    """The Chromium on PATH (Debian's ``chromium``, or ``chromium-browser``), None without one."""
    return shutil.which("chromium") or shutil.which("chromium-browser")


def drive(url: str, out: Path, cf_model: str, user: str, search: str, crs_model: str, message: str,
          intent: str = "something dark and tense", executable: str | None = None) -> dict[str, Path]:
    """Returns {"explore": png, "chat": png}; asserts along the way that titles appear. ``executable``: the browser
    (default :func:`chromium`)."""
    from playwright.sync_api import expect, sync_playwright

    out.mkdir(parents=True, exist_ok=True)
    shots = {}
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=executable or chromium(), headless=True, args=ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 860})
        page.goto(f"{url}/?model={cf_model}")
        recommendations = page.locator("#recommendations li")
        expect(recommendations.first).to_be_visible(timeout=60_000)
        page.select_option("#user", user)
        page.check("input[name=who][value=new]")
        page.fill("#search", search)
        page.locator("#search-results li").first.click()
        page.locator("#search-results li").nth(1).click()
        expect(page.locator("#history li")).to_have_count(2)
        page.fill("#intent", intent)
        page.fill("#alpha", "0.7")
        page.dispatch_event("#alpha", "input")
        expect(recommendations.first).to_be_visible(timeout=60_000)
        page.wait_for_timeout(1500)  # the debounce before the refresh with the intention is sent
        # its answer is in: the first intention loads the text encoder, minutes on a loaded 2-core machine
        page.wait_for_load_state("networkidle", timeout=180_000)
        page.wait_for_function("() => { const items = [...document.querySelectorAll('#recommendations li')];"
                               " return items.length >= 5 && items.every(li => li.innerText.trim()); }",
                               timeout=180_000)
        recommendations.first.click()
        expect(page.locator("#similar li").first).to_be_visible(timeout=30_000)
        shots["explore"] = out / "lmrec-serve-explore.png"
        page.screenshot(path=str(shots["explore"]), full_page=True)

        page.goto(f"{url}/?model={crs_model}")
        page.fill("#message", message)
        page.click("#message-form button[type=submit]")
        expect(page.locator("#chat-recommendations li").first).to_be_visible(timeout=120_000)
        expect(page.locator("#mentioned li").first).to_be_visible()
        assert page.locator("#chat-recommendations li").count() >= 3
        shots["chat"] = out / "lmrec-serve-chat.png"
        page.screenshot(path=str(shots["chat"]), full_page=True)
        browser.close()
    return shots
