"""Drive lmrec's web page in headless Chromium (Debian's chromium on PATH, through Python Playwright): explore a CF
run (a user found by id, a new user built by searching titles, an intention, then the user again with their
history, the intention and an item's details), chat with a CRS
run, and take a screenshot of each view at desktop (1280 px) and phone (420 px) width. Used by
tests/serve/test_server.py and for the screenshots under docs/serve/:

    python tools/page_driver.py URL OUT_DIR --cf-model ml-alpharec --user 1 --search "toy story" \
        --crs-model rta --message "I loved Heat (1995) and Alien (1979), what next?"
"""

from __future__ import annotations

import argparse
import importlib.util
import shutil
from pathlib import Path

ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run"]
DESKTOP = {"width": 1280, "height": 860}
PHONE = {"width": 420, "height": 860}


def chromium() -> str | None:
    """The Chromium on PATH (Debian's ``chromium``, or ``chromium-browser``), None without one."""
    return shutil.which("chromium") or shutil.which("chromium-browser")


def axe_script() -> Path | None:
    """axe-core's script, as the PyPI package axe-core-python ships it (None where it is not installed)."""
    spec = importlib.util.find_spec("axe_core_python")
    return Path(spec.origin).parent / "axe.min.js" if spec and spec.origin else None


def axe_violations(page, impacts: tuple[str, ...] = ("serious", "critical")) -> list[str]:
    """axe-core's violations of ``impacts`` on the page as it is now: one line each (rule, impact, nodes)."""
    page.add_script_tag(path=str(axe_script()))
    result = page.evaluate("() => axe.run(document, {resultTypes: ['violations']})")
    return [f"{v['id']} ({v['impact']}): {v['help']} at " + ", ".join(str(n["target"]) for n in v["nodes"][:5])
            for v in result["violations"] if v["impact"] in impacts]


def overflow(page) -> int:
    """How many pixels the page is wider than its window (0: nothing to scroll sideways)."""
    return page.evaluate("() => document.documentElement.scrollWidth - window.innerWidth")


def wait_for_recommendations(page, timeout: float = 180_000) -> None:
    """Until the list is in and nothing is loading (the first intention loads the text encoder: minutes on a busy
    2-core machine)."""
    page.wait_for_function("() => { const items = [...document.querySelectorAll('#recommendations li')];"
                           " return items.length >= 3 && items.every(li => li.querySelector('.reason'))"
                           " && document.getElementById('status').textContent === ''; }", timeout=timeout)


def drive(url: str, out: Path, cf_model: str, user: str, search: str, crs_model: str, message: str,
          intent: str = "something dark and tense", executable: str | None = None) -> dict[str, Path]:
    """Returns {"explore", "explore-phone", "chat", "chat-phone": png}; asserts along the way that titles and
    reasons appear. ``executable``: the browser (default :func:`chromium`)."""
    from playwright.sync_api import expect, sync_playwright

    out.mkdir(parents=True, exist_ok=True)
    shots = {}
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=executable or chromium(), headless=True, args=ARGS)
        page = browser.new_page(viewport=DESKTOP)
        page.goto(f"{url}/?model={cf_model}")
        recommendations = page.locator("#recommendations li")
        expect(recommendations.first).to_be_visible(timeout=60_000)
        page.fill("#user-search", user)
        page.wait_for_function(f"() => document.getElementById('user').value === {user!r}", timeout=30_000)
        expect(page.locator("#user-history-title")).to_have_text(f"history of user {user}", timeout=30_000)
        page.check("input[name=who][value=new]")
        for nth in (0, 1):
            page.fill("#search", search)
            page.locator("#search-results button").nth(nth).click()
        expect(page.locator("#picked li")).to_have_count(2)
        page.fill("#intent", intent)
        page.fill("#alpha", "0.7")
        page.dispatch_event("#alpha", "input")
        page.wait_for_timeout(1000)  # the debounce before the refresh with the intention is sent
        wait_for_recommendations(page)
        page.check("input[name=who][value=user]")  # back to the user of the data, the intention kept
        expect(page.locator("#user-history-title")).to_have_text(f"history of user {user}", timeout=30_000)
        wait_for_recommendations(page)
        recommendations.first.locator("button.title").click()
        expect(page.locator("#details")).to_be_visible(timeout=30_000)
        expect(page.locator("#similar li").first).to_be_visible(timeout=30_000)
        shots["explore"] = out / "lmrec-serve-explore.png"
        page.screenshot(path=str(shots["explore"]), full_page=True)
        page.set_viewport_size(PHONE)
        assert overflow(page) <= 0, f"the explore view is {overflow(page)} px wider than a phone"
        shots["explore-phone"] = out / "lmrec-serve-explore-phone.png"
        page.screenshot(path=str(shots["explore-phone"]), full_page=True)

        page.set_viewport_size(DESKTOP)
        page.goto(f"{url}/?model={crs_model}")
        expect(page.locator("#send")).to_be_enabled(timeout=30_000)
        page.fill("#message", message)
        page.click("#send")
        expect(page.locator("#chat-recommendations li").first).to_be_visible(timeout=180_000)
        expect(page.locator("#transcript mark").first).to_be_visible()
        assert page.locator("#chat-recommendations li").count() >= 3
        shots["chat"] = out / "lmrec-serve-chat.png"
        page.screenshot(path=str(shots["chat"]), full_page=True)
        page.set_viewport_size(PHONE)
        assert overflow(page) <= 0, f"the chat view is {overflow(page)} px wider than a phone"
        shots["chat-phone"] = out / "lmrec-serve-chat-phone.png"
        page.screenshot(path=str(shots["chat-phone"]), full_page=True)
        browser.close()
    return shots


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("url")
    parser.add_argument("out", type=Path)
    parser.add_argument("--cf-model", required=True)
    parser.add_argument("--user", required=True)
    parser.add_argument("--search", required=True)
    parser.add_argument("--crs-model", required=True)
    parser.add_argument("--message", required=True)
    parser.add_argument("--intent", default="something dark and tense")
    args = parser.parse_args()
    for name, path in drive(args.url, args.out, args.cf_model, args.user, args.search, args.crs_model, args.message,
                            args.intent).items():
        print(f"{name}: {path}")
