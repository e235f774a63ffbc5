"""The review workbench in a real browser: Playwright drives Debian's Chromium against a uvicorn
server on a free loopback port (a background thread), over a SQLite store in a temp folder.

One test does what a coder does (log in, open the queue, claim a note and see the evidence of a
code highlighted, reject a code with its key, replace another through the search, add a missed
code with evidence selected in the text, submit) and then checks the export and the event log.
Others: a second reviewer in another browser context gets the conflict; the XSS note stays inert.

Chromium comes from Debian (``/usr/bin/chromium``; scripts/test.sh installs it): Playwright's own
browser download is not reachable here. A missing browser FAILS these tests, it does not skip
them. ``MEDCODER_REVIEW_SCREENSHOTS=<folder>`` also saves the screenshots there (the README's).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn

from medcoder.web import WebSettings, create_app
from tests.integration.test_review_web import (
    MAIN_TEXT,
    PASSWORD,
    SECRET,
    Clock,
    build_workspace,
    key_of,
    open_store,
)

CHROMIUM = "/usr/bin/chromium"
TIMEOUT_MS = 15_000


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerThread:
    """uvicorn serving ``app`` on 127.0.0.1:<free port> in a daemon thread."""

    def __init__(self, app: Any) -> None:
        self.port = _free_port()
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning", access_log=False,
                                lifespan="off")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> ServerThread:
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("the test server did not start")
            time.sleep(0.05)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: install Debian's chromium (apt-get install chromium; scripts/test.sh "
                    "does it) - Playwright's own browser download is not reachable here", pytrace=False)
    from playwright.sync_api import sync_playwright

    root = tmp_path_factory.mktemp("review_browser")
    ws = build_workspace(root)
    clock = Clock()
    store = open_store(root, ws, clock)
    app = create_app(store, WebSettings(secret_key=SECRET))
    shots = root / "screenshots"
    shots.mkdir()
    with ServerThread(app) as server, sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            yield {"url": server.url, "store": store, "clock": clock, "browser": browser, "root": root,
                   "shots": shots, "ws": ws}
        finally:
            browser.close()
    store.close()


def _page(site: dict[str, Any], username: str) -> Any:
    context = site["browser"].new_context(viewport={"width": 1400, "height": 900})
    context.set_default_timeout(TIMEOUT_MS)
    page = context.new_page()
    page.goto(site["url"] + "/queue")
    assert page.url.endswith("/login")
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", PASSWORD)
    with page.expect_navigation():
        page.click("button[type=submit]")
    assert page.url.endswith("/queue"), page.url
    return page


def _shot(site: dict[str, Any], page: Any, name: str) -> None:
    path = site["shots"] / name
    page.screenshot(path=str(path), full_page=False)
    assert path.stat().st_size > 5000
    extra = os.environ.get("MEDCODER_REVIEW_SCREENSHOTS")
    if extra:
        Path(extra).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, Path(extra) / name)


def _key(page: Any, key: str) -> None:
    """Press ``key`` and wait for the page it leads to."""
    with page.expect_navigation():
        page.keyboard.press(key)


def _selected(page: Any) -> str:
    return page.get_attribute(".code-row.selected", "data-code")


def test_a_coder_reviews_a_note_end_to_end(site: dict[str, Any]) -> None:
    store = site["store"]
    page = _page(site, "alice")
    # 1. the queue
    assert page.locator("tr.queue-row").count() == len(site["ws"].texts)
    page.keyboard.press("?")
    assert page.locator("dialog#keys").is_visible()
    page.keyboard.press("Escape")
    _shot(site, page, "review_queue.png")
    # 2. the note, claimed from the queue (a POST, then the note page), with the evidence of its
    #    first routed code highlighted
    with page.expect_navigation():
        page.click("tr.queue-row button.open-note:text-is('main')")
    assert "You hold this note now" in page.inner_text(".notice")
    assert page.locator("#release-form").is_visible() and page.locator("#claim-form").count() == 0
    assert store.note(key_of(store, "main")).holder == "alice"
    assert _selected(page) == "I10"
    assert page.locator("#note-text mark.ev-attention").count() >= 1
    assert page.locator("#note-text mark.ev-mention").count() >= 1
    assert "".join(page.locator("#note-text mark.ev-attention").all_inner_texts()) == "hipertensión arterial"
    assert page.inner_text("#note-text") == MAIN_TEXT.rstrip("\n") or page.inner_text("#note-text") == MAIN_TEXT
    assert not page.locator("details.auto").get_attribute("open")  # auto-accepted: last, collapsed
    page.keyboard.press("?")
    assert page.locator("dialog#keys").is_visible() and "reject the selected code" in page.inner_text("dialog#keys")
    page.keyboard.press("Escape")
    # 3. reject R50.9 with its key (j j: down to it; its negated mention is marked)
    _key(page, "j")
    _key(page, "j")
    assert _selected(page) == "R50.9"
    assert page.locator("#note-text mark.ev-negated").count() == 1
    _key(page, "r")
    assert page.locator("#code-R50\\.9 .badge-reject").count() == 1
    # accept I10 with its key
    assert _selected(page) == "I10"
    _key(page, "a")
    # 4. replace R10.9 through the search
    assert _selected(page) == "R10.9"
    page.keyboard.press("c")
    search = page.locator("#replace-panel input[type=search]")
    assert search.is_visible()
    search.type("appendicitis")
    page.wait_for_selector("#replace-results button[value='K35.80']")
    _shot(site, page, "review_note.png")
    with page.expect_navigation():
        page.click("#replace-results button[value='K35.80']")
    assert "K35.80" in page.inner_text("#code-R10\\.9 .badge-replace")
    # 5. add a missed code, its evidence selected in the text, then submit
    start = MAIN_TEXT.index("colesterol elevado")
    page.evaluate("""([start, end]) => {
        const box = document.getElementById('note-text');
        const walker = document.createTreeWalker(box, NodeFilter.SHOW_TEXT);
        let pos = 0, node, range = document.createRange(), a = null;
        while ((node = walker.nextNode())) {
            const n = node.data.length;
            if (a === null && start < pos + n) { range.setStart(node, start - pos); a = true; }
            if (end <= pos + n) { range.setEnd(node, end - pos); break; }
            pos += n;
        }
        const sel = window.getSelection(); sel.removeAllRanges(); sel.addRange(range);
    }""", [start, start + len("colesterol elevado")])
    page.keyboard.press("n")
    assert f"characters {start}–{start + len('colesterol elevado')}" in page.inner_text("#add-panel")
    page.locator("#add-panel input[type=search]").type("hyperlipidemia")
    page.wait_for_selector("#add-results button[value='E78.5']")
    with page.expect_navigation():
        page.click("#add-results button[value='E78.5']")
    assert page.locator("#code-E78\\.5").count() == 1
    with page.expect_navigation():
        page.click("#code-E78\\.5 a.select-code")
    assert page.locator("#note-text mark.ev-reviewer").inner_text() == "colesterol elevado"
    assert page.locator("#submit-note").is_enabled()
    _key(page, "s")
    assert page.url.endswith("/queue?msg=submitted")
    assert "Note submitted" in page.inner_text(".notice")
    # 6. the export holds exactly those labels, the event log those events with the user's name
    labels_path, events_path = site["root"] / "labels.jsonl", site["root"] / "events.jsonl"
    store.export_labels(labels_path)
    store.export_events(events_path)
    labels = [json.loads(line) for line in labels_path.read_text().splitlines()]
    main = [row for row in labels if row["id"] == "main"]
    assert len(main) == 1 and main[0]["text"] == MAIN_TEXT
    assert sorted(main[0]["codes"]) == sorted(["I10", "K35.80", "E11.9", "E78.5"])
    key = key_of(store, "main")
    events = [json.loads(line) for line in events_path.read_text().splitlines()]
    mine = [(e["action"], e["code_before"], e["code_after"], e["username"]) for e in events if e["note_key"] == key]
    assert mine == [("reject", "R50.9", None, "alice"), ("accept", "I10", "I10", "alice"),
                    ("replace", "R10.9", "K35.80", "alice"), ("add", None, "E78.5", "alice"),
                    ("submit", None, None, "alice")]
    add = next(e for e in events if e["note_key"] == key and e["action"] == "add")
    assert add["evidence"][0]["start"] == start and add["evidence"][0]["end"] == start + len("colesterol elevado")
    assert all(e["bundle_id"] and e["input_sha256"] and e["policy_version"] for e in events)
    page.context.close()


def test_second_reviewer_gets_the_conflict(site: dict[str, Any]) -> None:
    store, clock = site["store"], site["clock"]
    key = key_of(store, "conflict")
    alice = _page(site, "alice")
    alice.goto(f"{site['url']}/notes/{key}")  # viewing takes no hold: the Claim button (h) does
    assert alice.locator("#claim-form").is_visible() and alice.locator("#submit-note").count() == 0
    assert store.note(key).holder is None
    alice.keyboard.press("?")
    assert "hold (claim) this note" in alice.inner_text("dialog#keys")
    alice.keyboard.press("Escape")
    _key(alice, "h")
    assert alice.locator("#release-form").is_visible() and store.note(key).holder == "alice"
    bob = _page(site, "bob")
    bob.goto(f"{site['url']}/notes/{key}")
    assert "alice" in bob.inner_text("#lease-problem")
    assert bob.locator("#submit-note").count() == 0
    clock.advance(901)  # alice's lease (900 s) runs out while her page stays open
    bob.reload()
    _key(bob, "h")  # bob claims the note now free
    routed = [c.code for c in store.note(key).codes if c.decision == "human_review"]
    for _ in routed:
        _key(bob, "a")
    _key(bob, "s")
    assert bob.url.endswith("/queue?msg=submitted")
    # alice, on her stale page, accepts a code: she is told, and nothing of hers is recorded
    _key(alice, "a")
    banner = alice.inner_text("#banner")
    assert "already submitted by bob" in banner
    events = store.events(key)
    assert [e.action for e in events].count("submit") == 1
    assert {e.username for e in events} == {"bob"}
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    alice.context.close()
    bob.context.close()


def test_xss_note_is_inert_in_the_browser(site: dict[str, Any]) -> None:
    page = _page(site, "alice")
    dialogs: list[str] = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    page.goto(f"{site['url']}/notes/{key_of(site['store'], 'xss')}")
    page.wait_for_timeout(300)
    assert dialogs == []
    assert page.locator("#note-text script, #note-text img").count() == 0
    assert '<script>alert("xss-script")</script>' in page.inner_text("#note-text")
    page.context.close()


def test_logged_out_browser_is_refused_everywhere(site: dict[str, Any]) -> None:
    """Every page sends a logged-out browser to the login page; every API route answers 401; no
    note text on the way."""
    context = site["browser"].new_context()
    context.set_default_timeout(TIMEOUT_MS)
    page = context.new_page()
    key = key_of(site["store"], "main")
    for path in ("/", "/queue", f"/notes/{key}", f"/notes/{key}/search?q=E11", "/api/openapi.json"):
        response = page.goto(site["url"] + path)
        if path.startswith("/api/"):
            assert response is not None and response.status == 401
        else:
            assert page.url == site["url"] + "/login", path
        assert "hipertensión" not in page.content()
    for method, path in (("GET", "/api/queue"), ("GET", f"/api/notes/{key}"), ("POST", f"/api/notes/{key}/claim"),
                         ("POST", f"/notes/{key}/claim"), ("POST", f"/notes/{key}/decide"),
                         ("POST", f"/notes/{key}/submit")):
        response = context.request.fetch(site["url"] + path, method=method, max_redirects=0)
        assert response.status in (401, 303), (method, path, response.status)
        assert "hipertensión" not in response.text()
    context.close()
