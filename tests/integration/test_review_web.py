"""The review workbench over HTTP (FastAPI TestClient, a real SQLite store in a temp folder).

What is proven here: every route is refused when logged out; CSRF is enforced on every state
change (every POST/PUT/PATCH/DELETE route of the app); opening a note only reads, claiming it is a
POST; a tampered session cookie is no session; a note holding ``<script>`` and
``"><img src=x onerror=...>`` renders inert; note pages send ``Cache-Control: no-store``;
oversized requests get 413; a stale page and an expired lease tell the reviewer and lose no
decision; a second reviewer gets a clear conflict; note text never reaches a log line or an error
page; ``action=import`` with a bundle predicts the notes and imports them. The synthetic notes and predictions built here are also used
by the browser and fuzz tests (``build_workspace``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from medcoder.review import ReviewStore
from medcoder.web import WebSettings, create_app
from medcoder.web.security import AccessLogFilter

REPO = Path(__file__).resolve().parents[2]
BUNDLE = "bundle-web-test"
PASSWORD = "correct horse battery staple"
SECRET = "test-secret-0123456789abcdefghijklmnopqrstuvwxyz"

MAIN_TEXT = ("Mujer de 64 años con hipertensión arterial y diabetes mellitus tipo 2 en tratamiento. "
             "Acude por dolor abdominal en fosa iliaca derecha de dos días. No presenta fiebre. "
             "En la analítica destaca colesterol elevado. Se diagnostica apendicitis aguda.\n")
XSS_TEXT = ('Nota con <script>alert("xss-script")</script> y "><img src=x onerror=alert("xss-img")> '
            "dentro. Paciente con hipertensión arterial y dolor abdominal.\n")


def _span(text: str, phrase: str, source: str, weight: float = 0.4, **extra: Any) -> dict[str, Any]:
    start = text.index(phrase)
    return {"start": start, "end": start + len(phrase), "weight": weight, "source": source, **extra}


def _code(code: str, desc: str, p: float, decision: str, reasons: list[str], evidence: list[dict[str, Any]],
          sources: list[str]) -> dict[str, Any]:
    return {"code": code, "description": desc, "probability": p, "decision": decision, "reasons": reasons,
            "evidence": evidence, "sources": sources}


def _filler(i: int) -> str:
    return (f"Paciente número {i} con hipertensión arterial conocida y dolor abdominal leve. "
            "Afebril. Exploración sin hallazgos.\n")


def note_codes(note_id: str, text: str) -> list[dict[str, Any]]:
    """The predicted codes of a synthetic note: three routed, one auto-accepted (E11.9 only where
    the text says diabetes), evidence as offsets into the text."""
    codes = [
        _code("I10", "Essential (primary) hypertension", 0.62, "human_review", ["low_confidence"],
              [_span(text, "hipertensión arterial", "neural", 0.5), _span(text, "hipertensión", "dictionary", 0.8)],
              ["neural", "dictionary"]),
        _code("R10.9", "Unspecified abdominal pain", 0.48, "human_review", ["low_confidence"],
              [_span(text, "dolor abdominal", "neural", 0.6)], ["neural"]),
    ]
    fever = "fiebre" if "fiebre" in text else None
    if fever:
        codes.append(_code("R50.9", "Fever, unspecified", 0.31, "human_review", ["low_confidence", "negated_mention"],
                           [_span(text, fever, "dictionary", 0.2, negated=True)], []))
    if "diabetes" in text:
        codes.append(_code("E11.9", "Type 2 diabetes mellitus without complications", 0.97, "auto_accept", [],
                           [_span(text, "diabetes mellitus tipo 2", "dictionary", 0.9)], ["dictionary", "neural"]))
    return codes


def prediction(note_id: str, text: str, codes: list[dict[str, Any]], bundle: str = BUNDLE) -> dict[str, Any]:
    routed = any(c["decision"] == "human_review" for c in codes)
    return {"id": note_id, "codes": codes, "document_decision": "human_review" if routed else "auto_accept",
            "document_reasons": sorted({r for c in codes for r in c["reasons"]}), "bundle_id": bundle,
            "codeset_fy": 2026, "policy_version": "1", "input_sha256": hashlib.sha256(text.encode()).hexdigest(),
            "timestamp": "2026-12-03T09:00:00+00:00", "truncated": False}


@dataclass
class Workspace:
    """A predictions file and its notes folder, as scripts/predict.py leaves them."""

    root: Path
    predictions: Path
    notes: Path
    texts: dict[str, str] = field(default_factory=dict)


def build_workspace(root: Path, n_filler: int = 8) -> Workspace:
    """Notes ``main`` (the browser test's), ``xss``, ``conflict`` and ``filler-<i>``."""
    notes = root / "notes"
    notes.mkdir(parents=True, exist_ok=True)
    texts = {"main": MAIN_TEXT, "xss": XSS_TEXT, "conflict": _filler(999)}
    texts.update({f"filler-{i}": _filler(i) for i in range(n_filler)})
    lines = []
    for note_id, text in texts.items():
        (notes / f"{note_id}.txt").write_text(text, encoding="utf-8")
        lines.append(json.dumps(prediction(note_id, text, note_codes(note_id, text)), ensure_ascii=False))
    predictions = root / "predictions.jsonl"
    predictions.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return Workspace(root, predictions, notes, texts)


class Clock:
    """A movable UTC clock for the store: tests expire leases by moving it, not by sleeping."""

    def __init__(self) -> None:
        self.offset = timedelta(0)
        self.lock = threading.Lock()

    def __call__(self) -> datetime:
        with self.lock:
            return datetime.now(timezone.utc) + self.offset

    def advance(self, seconds: float) -> None:
        with self.lock:
            self.offset += timedelta(seconds=seconds)


def open_store(root: Path, ws: Workspace, clock: Clock | None = None) -> ReviewStore:
    """A fresh SQLite store with the workspace imported and users alice, bob (reviewers), audrey
    (auditor) and adam (admin)."""
    store = ReviewStore.open(f"sqlite:///{root / 'review.db'}", clock=clock)
    store.import_predictions(ws.predictions, ws.notes)
    for name, role in (("alice", "reviewer"), ("bob", "reviewer"), ("audrey", "auditor"), ("adam", "admin")):
        store.create_user(name, PASSWORD, role)
    return store


def key_of(store: ReviewStore, note_id: str) -> str:
    items = store.queue(limit=500).items
    return next(i.note_key for i in items if i.note_id == note_id)


_CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


def form_value(html: str, name: str, within: str | None = None) -> str:
    """The value of hidden input ``name`` (in the form with id ``within``, if given)."""
    if within is not None:
        start = html.index(f'id="{within}"')
        html = html[start:]
    match = re.search(rf'name="{name}" value="([^"]*)"', html)
    assert match, f"no {name} in the page"
    return match.group(1)


def login(client: TestClient, username: str, password: str = PASSWORD) -> str:
    """Log in through the form; returns the session's CSRF token."""
    page = client.get("/login")
    token = _CSRF.search(page.text).group(1)
    r = client.post("/login", data={"username": username, "password": password, "csrf_token": token},
                    follow_redirects=False)
    assert r.status_code == 303, r.text
    return client.get("/api/me").json()["csrf_token"]


def claim(client: TestClient, csrf: str, key: str) -> str:
    """Claim the note through the form (what the queue's button does); returns the note page it
    redirects to. Its forms carry an empty lease token: the POST handlers fetch it."""
    r = client.post(f"/notes/{key}/claim", data={"csrf_token": csrf}, follow_redirects=False)
    assert r.status_code == 303, r.text[:300]
    assert r.headers["location"].startswith(f"/notes/{key}")
    page = client.get(r.headers["location"])
    assert page.status_code == 200 and 'id="release-form"' in page.text
    return page.text


def api_lease(client: TestClient, csrf: str, key: str) -> str:
    """The lease token of a note the user holds (re-claiming renews it, same token)."""
    r = client.post(f"/api/notes/{key}/claim", headers={"X-CSRF-Token": csrf})
    assert r.status_code == 200, r.text
    return r.json()["token"]


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    root = tmp_path_factory.mktemp("review_web")
    ws = build_workspace(root)
    clock = Clock()
    store = open_store(root, ws, clock)
    app = create_app(store, WebSettings(secret_key=SECRET, max_body_bytes=16_384, lease_seconds=600))
    yield {"root": root, "ws": ws, "store": store, "app": app, "clock": clock}
    store.close()


def client_for(env: dict[str, Any], username: str | None = None) -> tuple[TestClient, str]:
    client = TestClient(env["app"])
    csrf = login(client, username) if username else ""
    return client, csrf


def _route_list(app: Any) -> list[tuple[str, str]]:
    out = []
    for route in app.routes:
        path = getattr(route, "path", "")
        for method in sorted(getattr(route, "methods", None) or []):
            if method in ("HEAD", "OPTIONS"):
                continue
            out.append((method, path))
    return out


PUBLIC = {("GET", "/login"), ("POST", "/login"), ("GET", "/healthz")}


def test_every_route_is_refused_when_logged_out(env: dict[str, Any]) -> None:
    key = key_of(env["store"], "main")
    client = TestClient(env["app"])
    routes = _route_list(env["app"])
    assert len(routes) >= 20, routes
    checked = 0
    for method, path in routes:
        if (method, path) in PUBLIC or path.startswith("/static"):
            continue
        url = path.replace("{note_key}", key)
        r = client.request(method, url, follow_redirects=False, json={} if method == "POST" else None,
                           params={"bundle_id": BUNDLE, "q": "E11"} if path == "/api/codes" else None)
        assert r.status_code in (303, 401), (method, path, r.status_code)
        if r.status_code == 303:
            assert r.headers["location"] == "/login"
        assert "hipertensión" not in r.text and "Mujer" not in r.text
        checked += 1
    assert checked >= 18
    # a forged or foreign session cookie is no session
    client.cookies.set("medcoder_session", "eyJ1IjoiYWxpY2UifQ.forged.sig")
    assert client.get("/api/me").status_code == 401
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/login").status_code == 200


def test_session_cookie_is_signed_httponly_strict(env: dict[str, Any]) -> None:
    client = TestClient(env["app"])
    page = client.get("/login")
    token = _CSRF.search(page.text).group(1)
    r = client.post("/login", data={"username": "alice", "password": PASSWORD, "csrf_token": token},
                    follow_redirects=False)
    cookie = r.headers["set-cookie"]
    assert "medcoder_session=" in cookie and "HttpOnly" in cookie and "SameSite=strict" in cookie.replace(
        "SameSite=Strict", "SameSite=strict")
    value = client.cookies.get("medcoder_session")
    assert value and cookie.startswith(f"medcoder_session={value}")
    assert client.get("/api/me").json()["username"] == "alice"  # the cookie as issued: 200
    # the same cookie with one character of its signed payload changed is no session: the
    # signature is checked. (Not its last character: the signature is base64 of 20 bytes, whose last
    # character carries two padding bits, so "A" -> "B" there can decode to the same bytes and pass;
    # that made this test fail about one run in sixteen.)
    tampered = ("B" if value[0] != "B" else "C") + value[1:]
    forged = TestClient(env["app"])
    forged.cookies.set("medcoder_session", tampered)
    assert forged.get("/api/me").status_code == 401
    untouched = TestClient(env["app"])
    untouched.cookies.set("medcoder_session", value)
    assert untouched.get("/api/me").status_code == 200


def test_login_needs_its_csrf_token_and_bad_logins_are_throttled(env: dict[str, Any]) -> None:
    client = TestClient(env["app"])
    r = client.post("/login", data={"username": "alice", "password": PASSWORD, "csrf_token": "nope"},
                    follow_redirects=False)
    assert r.status_code == 403 and "medcoder_session" not in r.headers.get("set-cookie", "")
    messages = []
    for _ in range(8):
        token = _CSRF.search(client.get("/login").text).group(1)
        # a name no other test logs in as: the lock this builds must not refuse a later test's login
        r = client.post("/login", data={"username": "mallory", "password": "wrong password!!", "csrf_token": token})
        assert r.status_code == 401
        messages.append(r.text)
    assert any("try again" in m.lower() or "wait" in m.lower() for m in messages), messages[-1][:500]


STATE_CHANGING = {"POST", "PUT", "PATCH", "DELETE"}


def test_csrf_is_enforced_on_every_state_change(env: dict[str, Any]) -> None:
    """Every state-changing route the app has (read from ``app.routes``, so a new route without
    CSRF fails here) refuses a missing, empty, wrong or another session's token with 403."""
    store = env["store"]
    client, csrf = client_for(env, "adam")  # an admin passes every role check: only CSRF can refuse
    key = key_of(store, "filler-0")
    routes = [(m, p) for m, p in _route_list(env["app"]) if m in STATE_CHANGING and p != "/login"]
    assert {("POST", "/logout"), ("POST", "/notes/{note_key}/claim"), ("POST", "/notes/{note_key}/decide"),
            ("POST", "/api/notes/{note_key}/release"), ("POST", "/api/notes/{note_key}/submit"),
            ("POST", "/api/notes/{note_key}/corrections")} <= set(routes), routes
    assert len(routes) >= 10
    _other, other_csrf = client_for(env, "audrey")  # another session's token
    version, n_events = store.note(key).version, store.count_events()
    for method, path in routes:
        url = path.replace("{note_key}", key)
        for token in (None, "", "wrong-token", other_csrf):
            if path.startswith("/api/"):
                headers = {"X-CSRF-Token": token} if token is not None else {}
                r = client.request(method, url, json={}, headers=headers, follow_redirects=False)
                assert r.status_code == 403 and r.json()["error"] == "csrf", (method, path, token, r.status_code)
            else:
                data = {"csrf_token": token} if token is not None else {}
                data.update(lease="", version=str(version), action="accept", code="I10")
                r = client.request(method, url, data=data, follow_redirects=False)
                assert r.status_code == 403 and "CSRF" in r.text, (method, path, token, r.status_code)
    view = store.note(key)  # nothing was written, nobody holds the note, adam is still logged in
    assert view.version == version and view.holder is None and store.count_events() == n_events
    assert client.get("/api/me").status_code == 200
    # with the right token the same forms work
    alice, a_csrf = client_for(env, "alice")
    page = claim(alice, a_csrf, key)
    r = alice.post(f"/notes/{key}/decide", data={"csrf_token": a_csrf, "lease": form_value(page, "lease"),
                                                 "version": form_value(page, "version"), "action": "accept",
                                                 "code": "I10"}, follow_redirects=False)
    assert r.status_code == 303
    assert store.note(key).version == version + 1


def test_opening_a_note_only_reads_and_claiming_is_a_post(env: dict[str, Any]) -> None:
    store = env["store"]
    alice, a_csrf = client_for(env, "alice")
    key = key_of(store, "filler-7")
    queue = alice.get("/queue").text  # a free note is opened by a claim form (POST with the token)
    assert f'action="/notes/{key}/claim"' in queue
    page = alice.get(f"/notes/{key}").text
    assert store.note(key).holder is None  # a GET takes no hold
    assert 'id="claim-form"' in page and 'id="submit-form"' not in page and 'id="release-form"' not in page
    assert alice.post(f"/notes/{key}/claim", follow_redirects=False).status_code == 403
    assert store.note(key).holder is None
    r = alice.post(f"/notes/{key}/claim", data={"csrf_token": a_csrf}, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == f"/notes/{key}?msg=claimed"
    assert store.note(key).holder == "alice"
    page = alice.get(r.headers["location"]).text
    assert 'id="release-form"' in page and 'id="submit-form"' in page and 'id="claim-form"' not in page
    assert "You hold this note now" in page
    # another decider reads it, is told who holds it, and cannot claim it
    bob, b_csrf = client_for(env, "adam")
    b_page = bob.get(f"/notes/{key}").text
    assert "held by alice" in b_page and 'id="claim-form"' not in b_page
    assert f'action="/notes/{key}/claim"' not in bob.get("/queue").text
    r = bob.post(f"/notes/{key}/claim", data={"csrf_token": b_csrf}, follow_redirects=False)
    assert r.status_code == 409 and "held by alice" in r.text and store.note(key).holder == "alice"
    # the page's Release form (rendered by a GET, empty lease token) lets it go
    r = alice.post(f"/notes/{key}/release", data={"csrf_token": a_csrf, "lease": form_value(page, "lease")},
                   follow_redirects=False)
    assert r.status_code == 303 and store.note(key).holder is None
    keys = alice.get(f"/notes/{key}").text
    assert "hold (claim) this note" in keys  # the key help lists h


def test_xss_note_renders_inert(env: dict[str, Any]) -> None:
    client, _ = client_for(env, "alice")
    key = key_of(env["store"], "xss")
    html = client.get(f"/notes/{key}").text
    assert "<script>alert" not in html and "<img src=x" not in html and "onerror=alert" not in html.replace(
        "onerror=alert(&#34;", "")
    assert "&lt;script&gt;alert(&#34;xss-script&#34;)&lt;/script&gt;" in html
    assert "&#34;&gt;&lt;img src=x onerror=alert(&#34;xss-img&#34;)&gt;" in html
    scripts = re.findall(r"<script[^>]*>", html)
    assert scripts == ['<script src="/static/htmx-2.0.4.min.js" defer>', '<script src="/static/workbench.js" defer>']
    csp = client.get(f"/notes/{key}").headers["content-security-policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp
    api = client.get(f"/api/notes/{key}").json()
    assert api["text"] == XSS_TEXT  # the API returns the text as data (JSON), never as HTML


def test_note_pages_send_no_store(env: dict[str, Any]) -> None:
    client, _ = client_for(env, "audrey")
    key = key_of(env["store"], "filler-1")
    for url in (f"/notes/{key}", f"/api/notes/{key}", "/queue", "/api/queue"):
        r = client.get(url)
        assert r.status_code == 200
        assert r.headers["cache-control"] == "no-store", url
        assert r.headers["x-frame-options"] == "DENY"


def test_oversized_requests_get_413(env: dict[str, Any]) -> None:
    client, csrf = client_for(env, "alice")
    key = key_of(env["store"], "filler-1")
    big = "x" * 20_000
    r = client.post(f"/notes/{key}/decide", data={"csrf_token": csrf, "comment": big})
    assert r.status_code == 413
    r = client.post(f"/api/notes/{key}/decisions", content=json.dumps({"comment": big}),
                    headers={"X-CSRF-Token": csrf, "content-type": "application/json"})
    assert r.status_code == 413

    def chunks() -> Iterator[bytes]:  # no Content-Length: counted as it arrives
        for _ in range(10):
            yield b"y" * 4096

    r = client.post("/login", content=chunks(), headers={"content-type": "application/x-www-form-urlencoded"})
    assert r.status_code == 413


def test_queue_filters_progress_and_holder(env: dict[str, Any]) -> None:
    store = env["store"]
    client, csrf = client_for(env, "bob")
    key = key_of(store, "filler-2")
    claim(client, csrf, key)  # bob opens it: he holds it now
    html = client.get("/queue").text
    assert "filler-2" in html and "bob" in html and "open:" in html.replace("open: ", "open:")
    only = client.get("/queue", params={"reason": "negated_mention"}).text
    assert "main" in only and "filler-3" not in only
    by_code = client.get("/api/queue", params={"code": "E11.9"}).json()
    assert {i["note_id"] for i in by_code["items"]} == {"main"}
    high = client.get("/api/queue", params={"p_min": 0.9}).json()
    assert {i["note_id"] for i in high["items"]} <= {"main"}
    assert client.get("/queue", params={"p_min": "abc"}).status_code == 400
    assert client.get("/api/queue", params={"p_min": 2}).status_code == 422
    assert client.get("/api/queue", params={"bundle_id": "other"}).json()["total"] == 0
    bad = client.get("/queue", params={"code": "!!"})
    assert bad.status_code == 400 and "main" in bad.text  # told, and the whole queue still shown
    assert client.get("/api/queue", params={"code": "!!"}).status_code == 400


def test_note_page_shows_evidence_reasons_and_search_with_excludes1(env: dict[str, Any]) -> None:
    client, _ = client_for(env, "alice")
    key = key_of(env["store"], "main")
    html = client.get(f"/notes/{key}").text
    # routed first (by probability), auto-accepted last and collapsed
    assert html.index("code-I10") < html.index("code-R10.9") < html.index("code-R50.9") < html.index("code-E11.9")
    assert re.search(r'<details class="auto">', html)
    assert 'class="ev ev-attention"' in html and "ev-mention" in html
    assert "the model is not sure enough to accept it alone" in html
    negated = client.get(f"/notes/{key}", params={"code": "R50.9"}).text
    assert "ev-negated" in negated and "only negated or hypothetical mentions" in negated
    hits = client.get(f"/notes/{key}/search", params={"q": "type 1 diabetes", "replacing": "R10.9"}).text
    assert "E10.9" in hits and "Excludes1 conflict with E11.9" in hits
    none = client.get(f"/notes/{key}/search", params={"q": "E11", "replacing": "I10"}).text
    assert 'value="E11"' not in none  # billable codes only: the category E11 is not offered
    codes = client.get("/api/codes", params={"bundle_id": BUNDLE, "q": "appendicitis"}).json()
    assert any(c["code"] == "K35.80" for c in codes)


def test_stale_page_tells_the_reviewer_and_keeps_the_decision(env: dict[str, Any]) -> None:
    store = env["store"]
    client, csrf = client_for(env, "alice")
    key = key_of(store, "filler-3")
    page = claim(client, csrf, key)
    lease, version = api_lease(client, csrf, key), int(form_value(page, "version"))
    # the same reviewer's other tab writes first
    r = client.post(f"/api/notes/{key}/decisions", headers={"X-CSRF-Token": csrf},
                    json={"action": "accept", "code": "I10", "lease_token": lease, "expected_version": version})
    assert r.status_code == 201
    stale = client.post(f"/notes/{key}/decide", data={"csrf_token": csrf, "lease": form_value(page, "lease"),
                                                      "version": str(version),
                                                      "action": "query", "code": "R10.9",
                                                      "comment": "Which side is the pain?"})
    assert stale.status_code == 409
    assert "changed since your page was loaded" in stale.text and "Apply my decision again" in stale.text
    assert "Which side is the pain?" in stale.text  # the reviewer's decision is kept on the page
    again = {n: form_value(stale.text, n, "apply-again") for n in ("action", "code", "comment", "lease", "version")}
    assert int(again["version"]) == version + 1
    r = client.post(f"/notes/{key}/decide", data={**again, "csrf_token": csrf}, follow_redirects=False)
    assert r.status_code == 303
    view = store.note(key)
    assert {c.code: c.current for c in view.codes}["R10.9"] == "query"
    # the API says the same with a 409
    r = client.post(f"/api/notes/{key}/decisions", headers={"X-CSRF-Token": csrf},
                    json={"action": "accept", "code": "I10", "lease_token": lease, "expected_version": version})
    assert r.status_code == 409 and r.json()["error"] == "conflict"


def test_expired_lease_is_renewed_when_nobody_took_the_note(env: dict[str, Any]) -> None:
    store, clock = env["store"], env["clock"]
    client, csrf = client_for(env, "alice")
    key = key_of(store, "filler-4")
    page = claim(client, csrf, key)
    lease, version = form_value(page, "lease"), form_value(page, "version")
    clock.advance(601)  # the 600 s lease has expired; nobody else took the note
    r = client.post(f"/notes/{key}/decide", data={"csrf_token": csrf, "lease": lease, "version": version,
                                                  "action": "reject", "code": "R10.9"}, follow_redirects=False)
    assert r.status_code == 303 and "msg=lease_renewed" in r.headers["location"]
    assert "renewed" in client.get(r.headers["location"]).text
    assert {c.code: c.current for c in store.note(key).codes}["R10.9"] == "reject"


def test_second_reviewer_gets_a_clear_conflict(env: dict[str, Any]) -> None:
    store, clock = env["store"], env["clock"]
    alice, a_csrf = client_for(env, "alice")
    bob, b_csrf = client_for(env, "bob")
    key = key_of(store, "conflict")
    a_page = claim(alice, a_csrf, key)
    a_lease, a_version = api_lease(alice, a_csrf, key), form_value(a_page, "version")
    b_page = bob.get(f"/notes/{key}")
    assert "alice" in b_page.text and "can read this note but not decide" in b_page.text
    assert 'id="submit-form"' not in b_page.text
    assert bob.post(f"/api/notes/{key}/claim", headers={"X-CSRF-Token": b_csrf}).status_code == 409
    clock.advance(601)  # alice walked away; her lease expired and bob takes the note
    assert 'id="claim-form"' in bob.get(f"/notes/{key}").text  # free again, but not held until bob claims
    b_page = claim(bob, b_csrf, key)
    b_lease = form_value(b_page, "lease")
    for code in [c.code for c in store.note(key).codes if c.decision == "human_review"]:
        v = store.note(key).version
        r = bob.post(f"/notes/{key}/decide", data={"csrf_token": b_csrf, "lease": b_lease, "version": str(v),
                                                   "action": "accept", "code": code}, follow_redirects=False)
        assert r.status_code == 303, r.text[:300]
    v = store.note(key).version
    r = bob.post(f"/notes/{key}/submit", data={"csrf_token": b_csrf, "lease": b_lease, "version": str(v)},
                 follow_redirects=False)
    assert r.status_code == 303
    # alice comes back to her stale page and submits
    r = alice.post(f"/notes/{key}/submit", data={"csrf_token": a_csrf, "lease": form_value(a_page, "lease"),
                                                  "version": a_version})
    assert r.status_code == 409
    assert "already submitted by bob" in r.text
    r = alice.post(f"/api/notes/{key}/submit", headers={"X-CSRF-Token": a_csrf},
                   json={"lease_token": a_lease, "expected_version": int(a_version)})
    assert r.status_code == 409
    events = store.events(key)
    assert [e.action for e in events].count("submit") == 1 and {e.username for e in events} == {"bob"}
    assert [e.seq for e in events] == list(range(1, len(events) + 1))


def test_auditor_reads_but_cannot_decide(env: dict[str, Any]) -> None:
    client, csrf = client_for(env, "audrey")
    key = key_of(env["store"], "filler-5")
    page = client.get(f"/notes/{key}").text
    assert 'id="submit-form"' not in page and "hipertensión" in page and 'id="claim-form"' not in page
    assert f'action="/notes/{key}/claim"' not in client.get("/queue").text  # the queue only links
    assert client.post(f"/notes/{key}/claim", data={"csrf_token": csrf}).status_code == 403
    r = client.post(f"/notes/{key}/decide", data={"csrf_token": csrf, "action": "accept", "code": "I10",
                                                  "version": "0", "lease": "x"})
    assert r.status_code == 403
    assert client.post(f"/api/notes/{key}/claim", headers={"X-CSRF-Token": csrf}).status_code == 403


def test_code_outside_the_code_set_is_refused(env: dict[str, Any]) -> None:
    client, csrf = client_for(env, "alice")
    key = key_of(env["store"], "filler-5")
    lease = client.post(f"/api/notes/{key}/claim", headers={"X-CSRF-Token": csrf}).json()["token"]
    v = client.get(f"/api/notes/{key}").json()["version"]
    for bad in ("ZZZ.99", "E11"):  # not a code; not billable
        r = client.post(f"/api/notes/{key}/decisions", headers={"X-CSRF-Token": csrf},
                        json={"action": "replace", "code": "I10", "new_code": bad, "lease_token": lease,
                              "expected_version": v})
        assert r.status_code == 400, r.text
    assert client.get(f"/api/notes/{key}").json()["version"] == v
    assert client.get("/api/notes/nosuchnote").status_code == 404
    assert client.get("/notes/nosuchnote").status_code == 404


def test_submit_waits_for_every_routed_code_and_added_codes_can_be_removed(env: dict[str, Any]) -> None:
    store = env["store"]
    client, csrf = client_for(env, "alice")
    key = key_of(store, "filler-6")
    page = claim(client, csrf, key)
    assert re.search(r'id="submit-note" disabled', page)
    lease = form_value(page, "lease")

    def post(url: str, **data: str) -> Any:
        return client.post(url, data={"csrf_token": csrf, "lease": lease, "version": str(store.note(key).version),
                                      **data}, follow_redirects=False)

    r = post(f"/notes/{key}/submit")
    assert r.status_code == 400 and "Not saved" in r.text
    text = env["ws"].texts["filler-6"]
    start = text.index("Exploración")
    assert post(f"/notes/{key}/decide", action="add", new_code="E78.5", ev_start=str(start),
                ev_end=str(start + 11)).status_code == 303
    added = store.note(key).added
    assert [a.code for a in added] == ["E78.5"] and added[0].evidence[0]["start"] == start
    page = client.get(f"/notes/{key}", params={"code": "E78.5"}).text
    assert "Remove" in page and "ev-reviewer" in page
    assert post(f"/notes/{key}/decide", action="reject", code="E78.5").status_code == 303
    for c in [c.code for c in store.note(key).codes if c.decision == "human_review"]:
        assert post(f"/notes/{key}/decide", action="accept", code=c).status_code == 303
    assert not re.search(r'id="submit-note" disabled', client.get(f"/notes/{key}").text)
    assert post(f"/notes/{key}/submit").status_code == 303
    view = store.note(key)
    assert view.status == "submitted" and "E78.5" not in view.final_codes


def test_note_text_never_in_logs_or_error_pages(env: dict[str, Any], caplog: pytest.LogCaptureFixture,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    store = env["store"]
    client, csrf = client_for(env, "alice")
    key = key_of(store, "main")
    caplog.set_level(logging.DEBUG)
    client.get(f"/notes/{key}")
    client.get(f"/notes/{key}/search", params={"q": "hipertensión arterial"})

    def boom(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError(f"driver failed on {MAIN_TEXT}")  # an exception that carries note text

    monkeypatch.setattr(store, "queue", boom)
    r = TestClient(env["app"], raise_server_exceptions=False)
    login(r, "alice")
    resp = r.get("/queue")
    assert resp.status_code == 500 and "internal error" in resp.text
    for text in (MAIN_TEXT, "hipertensión", "Mujer de 64"):
        assert text not in resp.text
        assert all(text not in rec.getMessage() for rec in caplog.records), text
    assert any("internal error" in rec.getMessage() and "RuntimeError" in rec.getMessage() for rec in caplog.records)


def test_access_log_filter_drops_query_strings() -> None:
    record = logging.LogRecord("uvicorn.access", logging.INFO, "", 0, '%s - "%s %s HTTP/%s" %d',
                               ("127.0.0.1:5000", "GET", "/notes/abc/search?q=hipertensi%C3%B3n", "1.1", 200), None)
    AccessLogFilter().filter(record)
    assert record.getMessage() == '127.0.0.1:5000 - "GET /notes/abc/search HTTP/1.1" 200'


def test_serve_logging_config_filters_the_access_log() -> None:
    """What ``action=serve`` hands uvicorn: its own logging config plus the query-string filter."""
    import logging.config

    from medcoder.workflows.review import log_config

    config = log_config(True)
    assert config["handlers"]["access"]["filters"] == ["no_query"]
    logging.config.dictConfig(config)
    access = logging.getLogger("uvicorn.access")
    handler = next(h for h in access.handlers if h.filters)
    record = logging.LogRecord("uvicorn.access", logging.INFO, "", 0, '%s - "%s %s HTTP/%s" %d',
                               ("127.0.0.1:1", "GET", "/queue?code=E11.9", "1.1", 200), None)
    assert all(f.filter(record) for f in handler.filters) and "?" not in record.getMessage()
    assert log_config(False)["loggers"]["uvicorn.access"]["handlers"] == []


def test_openapi_spec_behind_login(env: dict[str, Any]) -> None:
    assert TestClient(env["app"]).get("/api/openapi.json").status_code == 401
    client, _ = client_for(env, "audrey")
    spec = client.get("/api/openapi.json").json()
    assert spec["openapi"].startswith("3.")
    assert {"/api/queue", "/api/notes/{note_key}", "/api/notes/{note_key}/decisions",
            "/api/notes/{note_key}/submit"} <= set(spec["paths"])
    assert not any(p.startswith("/notes") or p == "/login" for p in spec["paths"])


def test_vendored_htmx_matches_its_recorded_sha256() -> None:
    static = REPO / "src" / "medcoder" / "web" / "static"
    recorded = dict(reversed(line.split()) for line in (static / "htmx.sha256").read_text().splitlines() if line)
    assert list(recorded) == ["htmx-2.0.4.min.js"]
    for name, sha in recorded.items():
        assert hashlib.sha256((static / name).read_bytes()).hexdigest() == sha, name
    assert sorted(p.name for p in static.glob("*.js")) == ["htmx-2.0.4.min.js", "workbench.js"]


def test_review_config_actions(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """scripts/review.py's workflow: import (twice: nothing changes), create_user (password from the
    environment, none -> one-line error), export."""
    from medcoder.errors import ConfigError
    from medcoder.workflows.review import review_from_config
    from tests.helpers.configs import compose_named

    ws = build_workspace(tmp_path / "ws", n_filler=1)
    db = f"sqlite:///{tmp_path / 'db' / 'review.db'}"
    base = [f"paths.root_dir={tmp_path}", f"db_url={db}"]
    imp = compose_named("review", [*base, "action=import", f"predictions={ws.predictions}", f"notes={ws.notes}"])
    assert "imported 4 notes" in review_from_config(imp).line
    assert "imported 0 notes (4 unchanged" in review_from_config(imp).line
    monkeypatch.delenv("MEDCODER_REVIEW_PASSWORD", raising=False)
    monkeypatch.setattr("sys.stdin", None)
    user = compose_named("review", [*base, "action=create_user", "username=carla"])
    with pytest.raises(ConfigError, match="no password"):
        review_from_config(user)
    monkeypatch.setenv("MEDCODER_REVIEW_PASSWORD", PASSWORD)
    assert review_from_config(user).line == "created user carla (reviewer)"
    out = compose_named("review", [*base, "action=export", f"export_dir={tmp_path / 'export'}"])
    assert "exported" in review_from_config(out).line
    assert (tmp_path / "export" / "events.jsonl").exists()
    with pytest.raises(ConfigError, match="action"):
        review_from_config(compose_named("review", [*base, "action=nope"]))


def test_import_predicts_a_notes_folder_with_a_bundle(tiny_bundle: dict[str, Any], tmp_path: Path) -> None:
    """``action=import notes=<folder> bundle=<dir>``: the notes are predicted through
    ``Coder.load(bundle).predict`` and imported under the bundle's id, with the codes it routes."""
    from medcoder.inference import Coder
    from medcoder.workflows.review import review_from_config
    from tests.helpers.configs import compose_named

    bundle_dir = tiny_bundle["result"].bundle_dir
    bundle_id = tiny_bundle["result"].manifest.bundle_id
    rows = [json.loads(line) for line in Path(tiny_bundle["corpus"]["test"]).read_text().splitlines()][:4]
    notes = tmp_path / "notes"
    notes.mkdir()
    for row in rows:
        (notes / f"{row['id']}.txt").write_text(row["text"], encoding="utf-8")
    db = f"sqlite:///{tmp_path / 'review.db'}"
    cfg = compose_named("review", [f"paths.root_dir={tmp_path}", f"db_url={db}", "action=import",
                                   f"notes={notes}", f"bundle={bundle_dir}"])
    line = review_from_config(cfg).line
    assert f"imported {len(rows)} notes" in line and bundle_id in line, line
    want = {p.id: p for p in Coder.load(bundle_dir).predict([r["text"] for r in rows], [r["id"] for r in rows],
                                                           progress=False)}
    store = ReviewStore.open(db)
    try:
        assert store.bundles() == [bundle_id]
        items = store.queue(limit=100).items
        assert sorted(i.note_id for i in items) == sorted(want)
        for item in items:
            view = store.note(item.note_key)
            assert view.bundle_id == bundle_id
            assert view.text == next(r["text"] for r in rows if r["id"] == item.note_id)
            expected = want[item.note_id]
            assert view.input_sha256 == expected.input_sha256
            assert sorted((c.code, c.decision) for c in view.codes) == sorted(
                (c.code, c.decision) for c in expected.codes), item.note_id
            assert sorted(c.code for c in view.codes if c.decision == "human_review") == sorted(
                c.code for c in expected.codes if c.decision == "human_review")
    finally:
        store.close()
