"""The web page of `lmrec serve`, driven in headless Chromium (Playwright) against a real server (the ``server``
fixture of conftest.py: AlphaRec on the planted data as a LightGCN folder, FISM on a tiny INSPIRED): what a person
sees and does in each view, at desktop and phone width, by mouse and by keyboard, and axe-core's accessibility
check."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tools"))
from page_driver import ARGS, DESKTOP, PHONE, axe_script, axe_violations, chromium, overflow  # noqa: E402

pytestmark = [
    pytest.mark.skipif(chromium() is None, reason="no chromium on PATH: install Debian's chromium package to run the "
                                                  "browser tests (.ci/run does)"),
    pytest.mark.skipif(importlib.util.find_spec("playwright") is None,
                       reason="Playwright is not installed: pip install -e '.[test]' to run the browser tests"),
]
TIMEOUT = 120_000  # ms: the server shares 2 cores with the tests


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium(), headless=True, args=ARGS)
        yield browser
        browser.close()


@pytest.fixture
def page(browser, server):
    from playwright.sync_api import expect

    expect.set_options(timeout=TIMEOUT)
    page = browser.new_page(viewport=DESKTOP)
    page.set_default_timeout(TIMEOUT)
    page.url_of = lambda model: f"{server['url']}/?model={model}"  # type: ignore[attr-defined]
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    yield page
    page.close()
    assert errors == [], f"the page's script failed: {errors}"


def explore(page, user: str | None = None):
    """The explore view with a known user's recommendations in."""
    from playwright.sync_api import expect

    page.goto(page.url_of("alpharec"))
    if user is not None:
        page.fill("#user-search", user)
        page.wait_for_function(f"() => document.getElementById('user').value === {user!r}")
    expect(page.locator("#recommendations li .reason").first).to_be_visible()
    expect(page.locator("#status")).to_have_text("")


def test_explore_shows_the_users_history_a_reason_per_item_and_item_details(page, server):
    from playwright.sync_api import expect

    explore(page, "3")
    history = [li.inner_text() for li in page.locator("#user-history-items li").all()]
    expect(page.locator("#user-history-title")).to_have_text("history of user 3")
    assert history and all(t.startswith("Movie number") for t in history)
    expect(page.locator("#user-history-note")).to_contain_text(f"{len(history)} items the model learned them from")
    reasons = page.locator("#recommendations .reason").all_inner_texts()
    assert len(reasons) == 10 and all(r.startswith("because you liked Movie number") for r in reasons)
    named = {t for r in reasons for t in r.removeprefix("because you liked ").replace(" and ", ", ").split(", ")}
    assert named <= set(history)  # the reasons are the user's own items
    first = page.locator("#recommendations li").first
    title = first.locator("button.title").inner_text()
    first.locator("button.title").click()
    expect(page.locator("#details-title")).to_have_text(title)
    facts = page.locator("#details-facts").inner_text()
    assert f"id\n{first.get_attribute('data-item-id')}" in facts and "training users who have the item" in facts
    expect(page.locator("#similar li")).to_have_count(5)
    page.locator("#about summary").click()
    expect(page.locator("#retrieval-note")).to_have_text("Retrieval was exact: every item of the catalog was scored.")


def test_changing_the_user_resets_what_was_shown_of_the_last(page):
    from playwright.sync_api import expect

    explore(page, "3")
    before = page.locator("#recommendations li").first.get_attribute("data-item-id")
    page.locator("#recommendations button.title").first.click()
    expect(page.locator("#details")).to_be_visible()
    page.fill("#user-search", "")
    page.wait_for_timeout(600)
    page.select_option("#user", "17")  # another cluster: other recommendations
    expect(page.locator("#details")).to_be_hidden()
    expect(page.locator("#user-history-title")).to_have_text("history of user 17")
    page.wait_for_function(f"() => document.querySelector('#recommendations li')?.dataset.itemId !== {before!r}")
    assert page.locator("#status").inner_text() == ""


def test_every_user_is_reachable_by_search_and_by_paging(page):
    """Search: every id containing what is typed. Paging: a 610-user list (the API's answer stood in for by the
    browser, as the planted data has 30 users) is walked to its end, 50 at a time."""
    from playwright.sync_api import expect

    explore(page)
    page.fill("#user-search", "2")
    expect(page.locator("#users-range")).to_have_text("1–12 of 12 found")
    assert page.locator("#user option").all_inner_texts() == ["2", "12", *[str(i) for i in range(20, 30)]]
    page.fill("#user-search", "nobody")
    expect(page.locator("#users-range")).to_have_text("no user id contains “nobody”")

    def users(route):
        query = dict(p.split("=") for p in route.request.url.split("?", 1)[1].split("&"))
        offset, limit = int(query["offset"]), int(query["limit"])
        ids = [f"user{i}" for i in range(1, 611)][offset : offset + limit]
        route.fulfill(status=200, content_type="application/json", body=json.dumps({"users": ids, "total": 610}))

    page.route("**/users?*", users)
    page.fill("#user-search", "")
    expect(page.locator("#users-range")).to_have_text("1–50 of 610")
    expect(page.locator("#users-prev")).to_be_disabled()
    for _ in range(12):
        page.click("#users-next")
    expect(page.locator("#users-range")).to_have_text("601–610 of 610")
    expect(page.locator("#users-next")).to_be_disabled()
    assert page.locator("#user option").last.inner_text() == "user610"


def test_a_new_user_built_by_keyboard_alone(page):
    """Arrow keys choose "a new user", Enter in the search picks the first title (the results go, the focus stays),
    Tab reaches a recommendation and Enter opens its details."""
    from playwright.sync_api import expect

    explore(page)
    page.focus("input[name=who][value=user]")
    page.keyboard.press("ArrowDown")
    expect(page.locator("#history-builder")).to_be_visible()
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.id") == "search"
    page.keyboard.type("number 1")
    # the results of the whole query, not of a prefix still shown while "number 1" is answered
    expect(page.locator("#search-results button").first).to_contain_text("number 1")
    first = page.locator("#search-results button").first.inner_text()
    page.keyboard.press("Enter")
    expect(page.locator("#picked button")).to_have_text([f"{first} ×"])
    expect(page.locator("#search-results li")).to_have_count(0)
    assert page.evaluate("document.activeElement.id") == "search" and page.input_value("#search") == ""
    page.wait_for_function("() => [...document.querySelectorAll('#recommendations .reason')].length > 0 && "
                           "[...document.querySelectorAll('#recommendations .reason')].every(r => "
                           f"r.textContent === 'because you liked ' + {first!r})")
    for _ in range(40):
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement.closest('#recommendations') !== null"):
            break
    title = page.evaluate("document.activeElement.textContent")
    page.keyboard.press("Enter")
    expect(page.locator("#details-title")).to_have_text(title)
    expect(page.locator("#details")).to_be_focused()  # the focus follows to what opened, once it is filled


def test_an_error_shows_next_to_its_field_and_no_old_results_beside_it(page):
    from playwright.sync_api import expect

    explore(page, "3")
    page.fill("#k", "0")
    expect(page.locator("#k-error")).to_contain_text("k: Input should be greater than or equal to 1")
    expect(page.locator("#recommendations li")).to_have_count(0)
    field, error = page.locator("#k").bounding_box(), page.locator("#k-error").bounding_box()
    assert 0 <= error["y"] - (field["y"] + field["height"]) < 40 and abs(error["x"] - field["x"]) < 40
    assert page.locator("#results-error").inner_text() == "" and page.locator("#who-error").inner_text() == ""
    page.fill("#k", "4")
    expect(page.locator("#recommendations li")).to_have_count(4)
    expect(page.locator("#k-error")).to_have_text("")


def test_a_loading_state_while_recommendations_are_on_their_way(page):
    from playwright.sync_api import expect

    page.add_init_script("""{ const fetchNow = window.fetch;
      window.fetch = (url, options) => String(url).endsWith('/recommend')
        ? new Promise((done) => setTimeout(done, 1500)).then(() => fetchNow(url, options))
        : fetchNow(url, options); }""")
    page.goto(page.url_of("alpharec"))
    expect(page.locator("#status")).to_have_text("loading…")
    expect(page.locator("#recommendations")).to_have_attribute("aria-busy", "true")
    expect(page.locator("#recommendations li").first).to_be_visible()
    expect(page.locator("#status")).to_have_text("")
    expect(page.locator("#recommendations")).to_have_attribute("aria-busy", "false")


def test_adding_an_item_needs_the_token_and_updates_the_header(page, server):
    from playwright.sync_api import expect

    explore(page)
    expect(page.locator("#model-info")).to_contain_text("; 40 items, 30 users")
    page.fill("#new-title", "A Film Nobody Has Seen")
    page.fill("#token", "not-the-token")
    page.click("#add-item button[type=submit]")
    expect(page.locator("#add-error")).to_have_text("the bearer token is not this server's")
    page.fill("#token", server["token"])
    page.click("#add-item button[type=submit]")
    expect(page.locator("#add-status")).to_have_text("added A Film Nobody Has Seen (41 items now)")
    expect(page.locator("#model-info")).to_contain_text("; 41 items, 30 users")
    expect(page.locator("#add-error")).to_have_text("")


def test_the_chat_marks_what_each_mention_matched_and_gives_reasons(page):
    from playwright.sync_api import expect

    page.goto(page.url_of("fism"))
    expect(page.locator("#send")).to_be_enabled()
    page.fill("#message", "I loved heat (1995) and Alien (1979), what next?")
    page.click("#send")
    marks = page.locator("#transcript .user mark")
    expect(marks).to_have_text(["heat (1995)", "Alien (1979)"])
    assert marks.first.get_attribute("title").startswith("matched Heat (1995) (id ")
    expect(page.locator("#transcript .user .matched")).to_have_text([" → Heat (1995)"])  # written otherwise
    expect(page.locator("#mentioned li")).to_have_text(["Heat (1995)", "Alien (1979)"])
    reasons = page.locator("#chat-recommendations .reason").all_inner_texts()
    assert len(reasons) == 8 and all(r.startswith("because you mentioned ") for r in reasons)
    assert all(set(r.removeprefix("because you mentioned ").split(" and ")) <= {"Heat (1995)", "Alien (1979)"}
               for r in reasons)
    page.fill("#message", "   ")
    page.click("#send")
    expect(page.locator("#message-error")).to_have_text("write a message first")


def test_both_views_fit_a_phone(page):
    from playwright.sync_api import expect

    page.set_viewport_size(PHONE)
    explore(page, "3")
    page.locator("#recommendations button.title").first.click()
    expect(page.locator("#similar li").first).to_be_visible()
    assert overflow(page) <= 0
    for part in ("header h1", "#model", "#model-info", "#recommendations", "#details", "#user-search"):
        box = page.locator(part).bounding_box()
        assert box["x"] >= 0 and box["x"] + box["width"] <= PHONE["width"], (part, box)
    header = page.locator("header").bounding_box()
    assert page.locator("#model-info").bounding_box()["y"] < header["y"] + header["height"]  # inside the header
    page.goto(page.url_of("fism"))
    expect(page.locator("#send")).to_be_enabled()
    page.fill("#message", "I loved Heat (1995), what next?")
    page.click("#send")
    expect(page.locator("#chat-recommendations li").first).to_be_visible()
    assert overflow(page) <= 0
    for part in ("#message", "#send", "#reset", "#transcript", "#chat-recommendations"):
        box = page.locator(part).bounding_box()
        assert box["x"] >= 0 and box["x"] + box["width"] <= PHONE["width"], (part, box)


@pytest.mark.skipif(axe_script() is None, reason="axe-core-python is not installed: pip install -e '.[test]'")
@pytest.mark.parametrize("viewport", [DESKTOP, PHONE], ids=["desktop", "phone"])
def test_no_serious_accessibility_violation(page, viewport):
    """axe-core (WCAG 2 A/AA rules: labels, names, contrast, landmarks, ...) finds nothing serious or critical in
    either view, with recommendations, details and a conversation on screen."""
    from playwright.sync_api import expect

    page.set_viewport_size(viewport)
    explore(page, "3")
    page.locator("#recommendations button.title").first.click()
    expect(page.locator("#similar li").first).to_be_visible()
    page.locator("#about summary").click()
    assert axe_violations(page) == []
    page.goto(page.url_of("fism"))
    expect(page.locator("#send")).to_be_enabled()
    page.fill("#message", "I loved heat (1995) and Alien (1979)")
    page.click("#send")
    expect(page.locator("#chat-recommendations li").first).to_be_visible()
    assert axe_violations(page) == []
