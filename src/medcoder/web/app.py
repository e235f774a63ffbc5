"""The review workbench: ``create_app(store, settings)`` builds the FastAPI app.

Why server-rendered pages with plain forms (and htmx only for the code search): every action is an
ordinary POST that works without JavaScript, is CSRF-checked in one place and answers with a
redirect, so a reload never repeats a decision. The keyboard layer (``static/workbench.js``) only
presses those forms. The JSON API under ``/api`` offers the same operations to scripts and has an
OpenAPI spec (``/api/openapi.json``, behind the login like everything except ``/login`` and
``/healthz``).

The app never touches the database: every read and write is a call on the
:class:`medcoder.review.ReviewStore` it is given (import-linter ``web-goes-through-review``).
Store errors carry ids and codes only, never note text, so their messages may be shown.

No ``from __future__ import annotations`` here: FastAPI reads the route signatures at definition
time, and the dependency aliases (``CurrentUser``...) are local to :func:`create_app`.
"""

import base64
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote, urlencode

import jinja2
from fastapi import Depends, FastAPI, Form, Header, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates

# The pure submodules only (errors, event names): the store object is handed in by the workflow, so
# the web layer never imports the SQLAlchemy half of medcoder.review (import-linter).
from medcoder.review.errors import (
    AuthError,
    ConflictError,
    ForbiddenError,
    LeaseError,
    NotFoundError,
    ReviewError,
)
from medcoder.review.events import ACTIONS
from medcoder.review.monitor import EvidenceRule
from medcoder.web import api_models as m
from medcoder.web.present import REASONS, codes_on_note, plain_reason, plain_source, segments
from medcoder.web.reports import ReportSettings, build_report
from medcoder.web.security import (
    LOGIN_COOKIE,
    SESSION_COOKIE,
    Guard,
    SessionCodec,
    SessionData,
    same_token,
)

__all__ = ["AUDITORS", "DECIDERS", "KEYS", "AuditHook", "WebSettings", "create_app"]

log = logging.getLogger("medcoder.web")
HERE = Path(__file__).parent
HTMX_FILE = "htmx-2.0.4.min.js"
#: Roles that may decide and submit; an auditor reads only.
DECIDERS = ("reviewer", "admin")
#: Roles that may audit auto-accepted codes and read the agreement reports (never a reviewer:
#: the audit is a second person's look at what the machine accepted).
AUDITORS = ("auditor", "admin")
#: Called with a bundle id after every audit verdict and every lift, to republish that bundle's
#: audit status (the workflow injects it: the web layer never imports MLflow or tracking). It
#: returns a short line for the log (where the status went) and may raise.
AuditHook = Callable[[str], str]

#: Every key of the note page, shown by ``?`` (and in docs/review.md). One place: the template
#: and the help dialog read it.
KEYS: list[tuple[str, str]] = [
    ("j / ↓", "next code"),
    ("k / ↑", "previous code"),
    ("a or 1", "accept the selected code"),
    ("r or 2", "reject the selected code"),
    ("c or 3", "replace the selected code (search the code set)"),
    ("p or 4", "query the provider about the selected code (with a text)"),
    ("n or 5", "add a missed code (the text selected in the note becomes its evidence)"),
    ("Enter", "in a search box: choose the first result"),
    ("s", "submit the note (once every routed code is decided)"),
    ("h", "hold (claim) this note, to decide on it"),
    ("x", "release the note and go back to the queue"),
    ("g", "go to the queue"),
    ("?", "show or hide these keys"),
    ("Esc", "close a panel or this help"),
]
QUEUE_KEYS: list[tuple[str, str]] = [
    ("j / k", "next / previous note"),
    ("o or Enter", "open the selected note (a reviewer claims it)"),
    ("/", "focus the filters"),
    ("?", "show or hide these keys"),
]

#: Notices chosen by a redirect's ``msg`` parameter (a key, never free text in a URL).
NOTICES = {
    "submitted": "Note submitted. Thank you.",
    "released": "Note released: another reviewer may take it.",
    "lease_renewed": "Your hold on this note had expired; it was renewed (nobody else had taken it) and your "
                     "decision was saved.",
    "logged_out": "You are logged out.",
    "claimed": "You hold this note now: nobody else can decide on it until you submit or release it.",
    "audited": "Verdict recorded.",
    "audit_done": "Every auto-accepted code of that note has a verdict. Thank you.",
    "lifted": "The suspension was lifted and the bundle's status republished (active).",
}


@dataclass(frozen=True)
class WebSettings:
    """How the workbench behaves; built by ``medcoder.workflows.review`` from the config.

    ``secret_key`` signs the cookies (keep it across restarts or every session ends);
    ``cookie_secure`` must be true when served over HTTPS behind a proxy.
    """

    secret_key: str
    lease_seconds: int = 900
    max_body_bytes: int = 65_536
    session_hours: float = 8.0
    cookie_secure: bool = False
    page_size: int = 50
    search_limit: int = 20
    title: str = "medcoder review"
    evidence_rule: EvidenceRule = field(default_factory=EvidenceRule)
    report: ReportSettings = field(default_factory=ReportSettings)


@dataclass(frozen=True)
class Held:
    """A hold read from the note on a GET (shaped like the store's ``Lease``); ``token`` is empty."""

    note_key: str
    username: str
    token: str
    expires_at: datetime | None


class LoginRequired(Exception):
    """No valid session: pages redirect to /login, the API answers 401."""


class Refused(Exception):
    """A request refused before reaching the store (CSRF, role, bad value, unknown note)."""

    def __init__(self, status: int, kind: str, detail: str) -> None:
        super().__init__(detail)
        self.status, self.kind, self.detail = status, kind, detail


def _when(value: datetime | None) -> str:
    if value is None:
        return ""
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    return value.astimezone(timezone.utc).strftime("%H:%M UTC")


def _float(value: str | None, name: str) -> float | None:
    if value is None or value.strip() == "":
        return None
    try:
        x = float(value)
    except ValueError:
        raise Refused(400, "bad_request", f"{name} must be a number between 0 and 1") from None
    if not 0.0 <= x <= 1.0:
        raise Refused(400, "bad_request", f"{name} must be a number between 0 and 1")
    return x


def _int(value: str | None, name: str, *, default: int | None = None) -> int | None:
    if value is None or str(value).strip() == "":
        return default
    try:
        return int(value)
    except ValueError:
        raise Refused(400, "bad_request", f"{name} must be a whole number") from None


def create_app(store: Any, settings: WebSettings, on_audit: AuditHook | None = None) -> FastAPI:
    """The workbench over ``store`` (a :class:`medcoder.review.ReviewStore`).

    ``on_audit(bundle_id)``: republishes the bundle's audit status after an audit verdict or a
    lift (None: nothing is published; ``scripts/review.py action=audit_status`` does it later)."""
    codec = SessionCodec(settings.secret_key, max_age_s=int(settings.session_hours * 3600))
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(HERE / "templates"), autoescape=True,
                             undefined=jinja2.StrictUndefined)
    env.filters["urlkey"] = lambda key: quote(str(key), safe="")
    env.filters["when"] = _when
    env.filters["reason"] = plain_reason
    env.filters["source"] = plain_source
    env.filters["pct"] = lambda p: f"{100 * float(p):.0f} %"
    env.globals.update(title=settings.title, htmx_file=HTMX_FILE, KEYS=KEYS, QUEUE_KEYS=QUEUE_KEYS,
                       DECIDERS=DECIDERS, AUDITORS=AUDITORS)
    templates = Jinja2Templates(env=env)

    app = FastAPI(title="medcoder review workbench", version="1", docs_url=None, redoc_url=None,
                  openapi_url=None,
                  description="JSON API of the review workbench. Every route needs a session cookie "
                              "(POST /login); every POST needs the X-CSRF-Token header (GET /api/me).")
    app.state.store = store
    app.state.settings = settings
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")
    app.add_middleware(Guard, max_body_bytes=settings.max_body_bytes)

    # -- who is asking ----------------------------------------------------------------------------
    def session_of(request: Request) -> SessionData | None:
        return codec.read(request.cookies.get(SESSION_COOKIE))

    def current_user(request: Request) -> Any:
        data = session_of(request)
        user = store.get_user(data.username) if data is not None else None
        if user is None:
            raise LoginRequired
        request.state.session = data
        request.state.user = user
        return user

    CurrentUser = Annotated[Any, Depends(current_user)]  # FastAPI dependency aliases

    def decider(user: CurrentUser) -> Any:
        if user.role not in DECIDERS:
            raise Refused(403, "forbidden", f"role {user.role} may read but not decide")
        return user

    Decider = Annotated[Any, Depends(decider)]

    def auditor(user: CurrentUser) -> Any:
        if user.role not in AUDITORS:
            raise Refused(403, "forbidden", f"role {user.role} may not audit nor read the audit reports: "
                                            "ask an admin for an auditor account")
        return user

    Auditor = Annotated[Any, Depends(auditor)]

    def admin(user: CurrentUser) -> Any:
        if user.role != "admin":
            raise Refused(403, "forbidden", f"role {user.role} may not lift a suspension: only an admin may")
        return user

    Admin = Annotated[Any, Depends(admin)]

    def form_csrf(request: Request, csrf_token: str = Form("")) -> None:
        data = session_of(request)
        if data is None or not same_token(data.csrf, csrf_token):
            raise Refused(403, "csrf", "missing or wrong CSRF token: reload the page and try again")

    FormCsrf = Annotated[None, Depends(form_csrf)]

    def header_csrf(request: Request, x_csrf_token: str | None = Header(None)) -> None:
        data = session_of(request)
        if data is None or not same_token(data.csrf, x_csrf_token):
            raise Refused(403, "csrf", "missing or wrong X-CSRF-Token header (GET /api/me gives it)")

    HeaderCsrf = Annotated[None, Depends(header_csrf)]

    # -- errors -----------------------------------------------------------------------------------
    def is_api(request: Request) -> bool:
        return request.url.path.startswith("/api/")

    @app.exception_handler(LoginRequired)
    async def _login_required(request: Request, exc: LoginRequired) -> Response:
        if is_api(request) or request.method != "GET":
            return JSONResponse({"error": "login_required", "detail": "log in first (POST /login)"}, 401)
        return RedirectResponse("/login", 303)

    @app.exception_handler(Refused)
    async def _refused(request: Request, exc: Refused) -> Response:
        if is_api(request):
            return JSONResponse({"error": exc.kind, "detail": exc.detail}, exc.status)
        return templates.TemplateResponse(request, "error.html", {"user": getattr(request.state, "user", None),
                                                                  "csrf": _csrf(request), "status": exc.status,
                                                                  "detail": exc.detail}, status_code=exc.status)

    @app.exception_handler(ReviewError)
    async def _store_refused(request: Request, exc: ReviewError) -> Response:
        # Any store refusal not handled by its route (e.g. a malformed code in a queue filter).
        return await _refused(request, store_error(exc))

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> Response:
        # Field locations and messages only: pydantic's default body echoes the input back.
        errors = [{"loc": [str(p) for p in e.get("loc", ())], "msg": str(e.get("msg", ""))} for e in exc.errors()]
        return JSONResponse({"error": "invalid_request", "detail": errors}, 422)

    def _csrf(request: Request) -> str:
        data = getattr(request.state, "session", None)
        return data.csrf if data is not None else ""

    def store_error(exc: ReviewError) -> Refused:
        """A store error as an HTTP refusal: lease and version problems are 409 conflicts."""
        if isinstance(exc, (ConflictError, LeaseError)):
            return Refused(409, "conflict" if isinstance(exc, ConflictError) else "lease", str(exc))
        if isinstance(exc, NotFoundError):
            return Refused(404, "not_found", str(exc))
        if isinstance(exc, ForbiddenError):
            return Refused(403, "forbidden", str(exc))
        return Refused(400, "refused", str(exc))

    def load_note(note_key: str) -> Any:
        try:
            return store.note(note_key)
        except KeyError:
            raise Refused(404, "not_found", "no such note") from None
        except ReviewError as exc:
            raise store_error(exc) from None

    # -- public routes ----------------------------------------------------------------------------
    @app.get("/healthz", include_in_schema=False)
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/login", include_in_schema=False)
    def login_page(request: Request) -> Response:
        if (data := session_of(request)) is not None and store.get_user(data.username) is not None:
            return RedirectResponse("/queue", 303)
        return _login_form(request, None, 200)

    def _login_form(request: Request, problem: str | None, status: int, notice: str | None = None) -> Response:
        token, cookie = codec.login_token()
        response = templates.TemplateResponse(request, "login.html", {"user": None, "csrf": token, "problem": problem,
                                                                      "notice": notice}, status_code=status)
        response.set_cookie(LOGIN_COOKIE, cookie, max_age=3600, httponly=True, samesite="strict",
                            secure=settings.cookie_secure, path="/login")
        return response

    @app.post("/login", include_in_schema=False)
    def login(request: Request, username: str = Form(""), password: str = Form(""),
              csrf_token: str = Form("")) -> Response:
        expected = codec.read_login(request.cookies.get(LOGIN_COOKIE))
        if not same_token(expected, csrf_token):
            return _login_form(request, "The login form had expired: please log in again.", 403)
        client = request.client.host if request.client else ""
        try:
            user = store.authenticate(username[:200], password[:1000], client=client)
        except AuthError as exc:
            return _login_form(request, str(exc), 401)
        value, _ = codec.issue(user.username)
        response = RedirectResponse("/queue", 303)
        response.set_cookie(SESSION_COOKIE, value, max_age=codec.max_age_s, httponly=True, samesite="strict",
                            secure=settings.cookie_secure, path="/")
        response.delete_cookie(LOGIN_COOKIE, path="/login")
        return response

    @app.post("/logout", include_in_schema=False)
    def logout(user: CurrentUser, _: FormCsrf) -> Response:
        response = RedirectResponse("/login", 303)
        response.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="strict")
        return response

    # -- pages ------------------------------------------------------------------------------------
    @app.get("/", include_in_schema=False)
    def home(user: CurrentUser) -> Response:
        return RedirectResponse("/queue", 303)

    @app.get("/queue", include_in_schema=False)
    def queue_page(request: Request, user: CurrentUser, bundle: str | None = None,
                   reason: str | None = None, code: str | None = None, p_min: str | None = None,
                   p_max: str | None = None, status: str | None = None, offset: str | None = None,
                   msg: str | None = None) -> Response:
        filters = {"bundle": bundle or "", "reason": reason or "", "code": code or "", "p_min": p_min or "",
                   "p_max": p_max or "", "status": status or ""}
        problem = None
        try:
            lo, hi = _float(p_min, "p_min"), _float(p_max, "p_max")
            start = max(0, _int(offset, "offset", default=0) or 0)
            if status and status not in ("open", "in_progress", "submitted"):
                raise Refused(400, "bad_request", "status must be open, in_progress or submitted")
        except Refused as exc:
            problem, lo, hi, start = exc.detail, None, None, 0
            filters.update(p_min="", p_max="", status="")
        query = {"bundle_id": bundle or None, "reason": reason or None, "code": (code or "").strip() or None,
                 "p_min": lo, "p_max": hi, "status": filters["status"] or None}
        try:
            page = store.queue(**query, offset=start, limit=settings.page_size, user=user)
        except ReviewError as exc:  # e.g. a code filter that is not a code: say so, show the whole queue
            problem = str(exc)
            filters.update(code="")
            page = store.queue(offset=0, limit=settings.page_size, user=user)
        kept = {k: v for k, v in filters.items() if v}
        nav = {
            "prev": urlencode({**kept, "offset": max(0, start - settings.page_size)}) if start > 0 else None,
            "next": urlencode({**kept, "offset": start + settings.page_size})
            if start + settings.page_size < page.total else None,
        }
        return templates.TemplateResponse(request, "queue.html", {
            "user": user, "csrf": _csrf(request), "page": page, "filters": filters, "bundles": store.bundles(),
            "reasons": sorted(REASONS),
            "offset": start, "nav": nav, "problem": problem, "notice": NOTICES.get(msg or ""),
        }, status_code=400 if problem else 200)

    def render_note(request: Request, user: Any, view: Any, lease: Any, *, selected: str | None = None,
                    banner: str | None = None, pending: dict[str, Any] | None = None, status: int = 200,
                    lease_problem: str | None = None, notice: str | None = None) -> Response:
        routed = [c for c in view.codes if c.decision != "auto_accept"]
        auto = [c for c in view.codes if c.decision == "auto_accept"]
        every = [*routed, *view.added, *auto]
        if selected is None or all(c.code != selected for c in every):
            undecided = [c for c in routed if c.current is None]
            selected = (undecided or routed or every or [None])[0]
            selected = selected.code if selected is not None else None
        chosen = next((c for c in every if c.code == selected), None)
        evidence = chosen.evidence if chosen is not None else []
        submitted_by = None
        if view.status == "submitted":
            subs = [e for e in store.events(view.note_key) if e.action == "submit"]
            submitted_by = subs[-1] if subs else None
        writable = lease is not None and view.status != "submitted"
        can_claim = (lease is None and user.role in DECIDERS and view.status != "submitted"
                     and view.holder in (None, user.username))
        return templates.TemplateResponse(request, "note.html", {
            "user": user, "csrf": _csrf(request), "note": view, "routed": routed, "auto": auto,
            "selected": selected, "chosen": chosen, "segments": segments(view.text, evidence),
            "lease": lease, "writable": writable, "all_decided": all(c.current is not None for c in routed),
            "banner": banner, "pending": pending, "lease_problem": lease_problem, "submitted_by": submitted_by,
            "notice": notice, "actions": ACTIONS, "can_claim": can_claim,
        }, status_code=status)

    def try_claim(note_key: str, user: Any) -> tuple[Any, str | None]:
        try:
            return store.claim(note_key, user, lease_seconds=settings.lease_seconds), None
        except LeaseError as exc:
            return None, str(exc)

    def held(view: Any, user: Any) -> Any:
        """The user's live hold on ``view`` as read from the note (no write), or None. Its token is
        not readable: the page's forms send an empty one and :func:`_with_lease` fetches it on POST."""
        if user.role in DECIDERS and view.status != "submitted" and view.holder == user.username:
            return Held(view.note_key, user.username, "", view.lease_expires)
        return None

    def held_elsewhere(view: Any, user: Any) -> str | None:
        if view.status != "submitted" and view.holder is not None and view.holder != user.username:
            return f"note {view.note_id} is held by {view.holder} until {_when(view.lease_expires)}."
        return None

    def audit_pending(note_key: str, user: Any) -> bool:
        """Whether ``user`` may audit (an auditor or an admin: :data:`AUDITORS`) and has verdicts
        still to give on this note: then the review page (probabilities, decisions, reasons,
        evidence) would un-blind the audit."""
        if user.role not in AUDITORS:
            return False
        try:
            view = store.audit_view(note_key, user)
        except (KeyError, ReviewError):  # not drawn for audit (or no such note: load_note says so)
            return False
        return not {c.code for c in view.codes} <= {v.code for v in view.verdicts}

    @app.get("/notes/{note_key}", include_in_schema=False)
    def note_page(request: Request, note_key: str, user: CurrentUser, code: str | None = None,
                  msg: str | None = None) -> Response:
        """Reads only: a GET never takes or renews a hold (POST .../claim does, CSRF-checked).
        An auditor with verdicts still to give on the note is sent to its blind audit page."""
        view = load_note(note_key)
        if audit_pending(note_key, user):
            return RedirectResponse(_audit_url(note_key), 303)
        return render_note(request, user, view, held(view, user), selected=code,
                           lease_problem=held_elsewhere(view, user), notice=NOTICES.get(msg or ""))

    @app.post("/notes/{note_key}/claim", include_in_schema=False)
    def claim_form(request: Request, note_key: str, user: Decider, _: FormCsrf) -> Response:
        view = load_note(note_key)
        if view.status == "submitted":  # nothing to hold: show it (read only)
            return RedirectResponse(_note_url(note_key), 303)
        lease, problem = try_claim(note_key, user)
        if lease is None:  # held by another reviewer: the note, read only, with who holds it until when
            return render_note(request, user, load_note(note_key), None, lease_problem=problem, status=409)
        return RedirectResponse(_note_url(note_key, msg=None if view.holder == user.username else "claimed"), 303)

    def _next_code(note_key: str, after: str | None) -> str | None:
        view = load_note(note_key)
        routed = [c.code for c in view.codes if c.decision != "auto_accept"]
        undecided = [c.code for c in view.codes if c.decision != "auto_accept" and c.current is None]
        if not undecided:
            return None
        if after in routed:
            later = [c for c in routed[routed.index(after) + 1:] if c in undecided]
            if later:
                return later[0]
        return undecided[0]

    def _audit_url(note_key: str, msg: str | None = None) -> str:
        return f"/audit/{quote(note_key, safe='')}" + (f"?{urlencode({'msg': msg})}" if msg else "")

    def _note_url(note_key: str, code: str | None = None, msg: str | None = None) -> str:
        params = {k: v for k, v in (("code", code), ("msg", msg)) if v}
        return f"/notes/{quote(note_key, safe='')}" + (f"?{urlencode(params)}" if params else "")

    def _with_lease(note_key: str, user: Any, token: str, version: int, write: Callable[[str], Any]) -> str | None:
        """Run ``write(token)``; when the lease had expired but nobody else took the note and it
        has not changed, renew the lease and write once more. Returns a notice key, or raises the
        store error the reviewer must be told about.

        An empty ``token`` is a page rendered by a GET (which cannot read the token): when the user
        holds the note now, the token is fetched by re-claiming (same token; this is a CSRF-checked
        POST). Otherwise the write goes on as before: an expired hold nobody else took is renewed
        (version unchanged), a hold of another reviewer or a submitted note is refused."""
        if not token and load_note(note_key).holder == user.username:
            lease, _problem = try_claim(note_key, user)
            token = lease.token if lease is not None else ""
        try:
            write(token)
            return None
        except LeaseError:
            lease, _problem = try_claim(note_key, user)
            if lease is None or load_note(note_key).version != version:
                raise
            write(lease.token)
            return "lease_renewed"

    def _refusal_page(request: Request, user: Any, note_key: str, exc: ReviewError, pending: dict[str, Any],
                      selected: str | None) -> Response:
        """The note again, fresh, with what went wrong and the decision that was NOT saved, ready to
        be applied again (nothing is silently dropped)."""
        view = load_note(note_key)
        lease = None
        if view.status != "submitted":
            lease, _ = try_claim(note_key, user)
            if lease is not None:
                view = load_note(note_key)
        if view.status == "submitted":
            subs = [e for e in store.events(note_key) if e.action == "submit"]
            who = f"{subs[-1].username} at {_when(subs[-1].at)}" if subs else "another reviewer"
            banner = (f"Conflict: this note was already submitted by {who}. Your "
                      f"{'submission' if pending.get('action') == 'submit' else 'decision'} was not recorded.")
            status = 409
        elif isinstance(exc, ConflictError):
            banner = (f"This note changed since your page was loaded (someone else decided on it). Your decision "
                      f"was not saved: it is shown below; check the codes and apply it again. ({exc})")
            status = 409
        elif isinstance(exc, LeaseError):
            banner = f"Your hold on this note has ended and your decision was not saved: {exc}"
            status = 409
        else:
            banner = f"Not saved: {exc}"
            status = 400
        return render_note(request, user, view, lease, selected=selected, banner=banner, pending=pending,
                           status=status)

    @app.post("/notes/{note_key}/decide", include_in_schema=False)
    def decide_form(request: Request, note_key: str, user: Decider, _: FormCsrf,
                    action: str = Form(""), code: str = Form(""), new_code: str = Form(""),
                    comment: str = Form(""), lease: str = Form(""), version: str = Form(""),
                    ev_start: str = Form(""), ev_end: str = Form("")) -> Response:
        if action not in ACTIONS:
            raise Refused(400, "bad_request", f"action must be one of {', '.join(ACTIONS)}")
        expected = _int(version, "version")
        if expected is None:
            raise Refused(400, "bad_request", "the page had no version: reload it")
        start, end = _int(ev_start, "ev_start"), _int(ev_end, "ev_end")
        evidence = [{"start": start, "end": end}] if start is not None and end is not None and end > start >= 0 else None
        new = new_code.strip() or None
        target = new if action == "add" else code
        pending = {"action": action, "code": target, "new_code": new or "", "comment": comment,
                   "ev_start": ev_start, "ev_end": ev_end}
        load_note(note_key)  # 404 before anything else

        def write(token: str) -> None:
            store.decide(note_key, user, action=action, code=target, new_code=new,
                         comment=comment.strip() or None, evidence=evidence, lease_token=token,
                         expected_version=expected)

        try:
            notice = _with_lease(note_key, user, lease, expected, write)
        except ReviewError as exc:
            return _refusal_page(request, user, note_key, exc, pending, target)
        return RedirectResponse(_note_url(note_key, _next_code(note_key, target), notice), 303)

    @app.post("/notes/{note_key}/submit", include_in_schema=False)
    def submit_form(request: Request, note_key: str, user: Decider, _: FormCsrf,
                    lease: str = Form(""), version: str = Form("")) -> Response:
        expected = _int(version, "version")
        if expected is None:
            raise Refused(400, "bad_request", "the page had no version: reload it")
        load_note(note_key)
        try:
            _with_lease(note_key, user, lease, expected,
                        lambda token: store.submit(note_key, user, lease_token=token, expected_version=expected))
        except ReviewError as exc:
            return _refusal_page(request, user, note_key, exc, {"action": "submit"}, None)
        return RedirectResponse("/queue?msg=submitted", 303)

    @app.post("/notes/{note_key}/release", include_in_schema=False)
    def release_form(note_key: str, user: Decider, _: FormCsrf,
                     lease: str = Form("")) -> Response:
        if not lease and load_note(note_key).holder == user.username:  # a page rendered by a GET
            held_now, _problem = try_claim(note_key, user)
            lease = held_now.token if held_now is not None else ""
        with contextlib.suppress(ReviewError):  # an expired or foreign lease: nothing to release
            store.release(note_key, user, lease)
        return RedirectResponse("/queue?msg=released", 303)

    @app.get("/notes/{note_key}/search", include_in_schema=False)
    def search_fragment(request: Request, note_key: str, user: CurrentUser, q: str = "",
                        replacing: str = "") -> Response:
        view = load_note(note_key)
        query = q.strip()[:100]
        others = codes_on_note(view.codes, view.added, without=replacing or None)
        try:
            hits = store.search_codes(view.bundle_id, query, limit=settings.search_limit) if query else []
            rows = [{"code": c, "description": d,
                     "conflicts": store.excludes1_conflicts(view.bundle_id, c, [o for o in others if o != c])}
                    for c, d in hits]
        except ReviewError as exc:  # e.g. the bundle's fiscal-year code set is not available here
            return templates.TemplateResponse(request, "_search_results.html",
                                              {"rows": [], "query": query, "problem": str(exc)})
        return templates.TemplateResponse(request, "_search_results.html",
                                          {"rows": rows, "query": query, "problem": None})

    # -- the audit loop ---------------------------------------------------------------------------
    def republish(bundle_id: str) -> str | None:
        """Run the injected hook; a failure is a problem line on the page (the verdict or lift is
        recorded in the store either way, and ``action=audit_status`` recomputes it from there)."""
        if on_audit is None:
            return None
        try:
            where = on_audit(bundle_id)
        except Exception as exc:  # noqa: BLE001 - any publishing failure must reach the person, not a 500
            log.warning("audit status of bundle %s not republished: %s", bundle_id, type(exc).__name__)
            return (f"Recorded, but the audit status of bundle {bundle_id} could not be published "
                    f"({type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}). Serving "
                    "still sees the previous status: run python scripts/review.py action=audit_status.")
        log.info("audit status of bundle %s republished: %s", bundle_id, where)
        return None

    @app.get("/audit", include_in_schema=False)
    def audit_queue_page(request: Request, user: Auditor, bundle: str | None = None, offset: str | None = None,
                         msg: str | None = None) -> Response:
        start = max(0, _int(offset, "offset", default=0) or 0)
        page = store.audit_queue(user, bundle_id=bundle or None, limit=settings.page_size, offset=start)
        items = list(getattr(page, "items", page))
        total = getattr(page, "total", None)
        nav = {"prev": urlencode({**({"bundle": bundle} if bundle else {}),
                                  "offset": max(0, start - settings.page_size)}) if start > 0 else None,
               "next": urlencode({**({"bundle": bundle} if bundle else {}), "offset": start + settings.page_size})
               if len(items) >= settings.page_size else None}
        return templates.TemplateResponse(request, "audit_queue.html", {
            "user": user, "csrf": _csrf(request), "items": items, "total": total, "bundles": store.bundles(),
            "bundle": bundle or "", "offset": start, "nav": nav, "notice": NOTICES.get(msg or ""),
        })

    def render_audit(request: Request, user: Any, view: Any, *, banner: str | None = None,
                     pending: dict[str, Any] | None = None, notice: str | None = None,
                     status: int = 200) -> Response:
        given = {v.code: v for v in view.verdicts}
        return templates.TemplateResponse(request, "audit_note.html", {
            "user": user, "csrf": _csrf(request), "note": view, "given": given, "banner": banner,
            "pending": pending, "notice": notice,
        }, status_code=status)

    def load_audit(note_key: str, user: Any) -> Any:
        try:
            return store.audit_view(note_key, user)
        except KeyError:
            raise Refused(404, "not_found", "no such note") from None
        except ReviewError as exc:
            raise store_error(exc) from None

    @app.get("/audit/{note_key}", include_in_schema=False)
    def audit_page(request: Request, note_key: str, user: Auditor, msg: str | None = None) -> Response:
        """The BLIND page: the note's text and its auto-accepted codes with their descriptions;
        never the model's probability, decision, reasons or evidence (the view carries none)."""
        return render_audit(request, user, load_audit(note_key, user), notice=NOTICES.get(msg or ""))

    @app.post("/audit/{note_key}/verdict", include_in_schema=False)
    def audit_form(request: Request, note_key: str, user: Auditor, _: FormCsrf, code: str = Form(""),
                   verdict: str = Form(""), replaced_by: str = Form(""), comment: str = Form("")) -> Response:
        view = load_audit(note_key, user)
        pending = {"code": code, "verdict": verdict, "replaced_by": replaced_by, "comment": comment}
        if verdict not in ("correct", "wrong"):
            return render_audit(request, user, view, banner="verdict must be correct or wrong: choose one of the "
                                "two buttons", pending=pending, status=400)
        try:
            store.audit(note_key, user, code=code, verdict=verdict,
                        replaced_by=(replaced_by.strip() or None) if verdict == "wrong" else None,
                        comment=comment.strip() or None)
        except ReviewError as exc:
            refusal = store_error(exc)
            return render_audit(request, user, load_audit(note_key, user), banner=f"Not recorded: {refusal.detail}",
                                pending=pending, status=refusal.status)
        problem = republish(view.bundle_id)
        after = load_audit(note_key, user)
        if problem is not None:
            return render_audit(request, user, after, banner=problem, status=200)
        if {c.code for c in after.codes} <= {v.code for v in after.verdicts}:
            return RedirectResponse("/audit?msg=audit_done", 303)
        return RedirectResponse(_audit_url(note_key, msg="audited"), 303)

    @app.get("/reports", include_in_schema=False)
    def reports_page(request: Request, user: Auditor, bundle: str | None = None,
                     msg: str | None = None) -> Response:
        bundles = list(store.bundles())
        shown = [b for b in bundles if b == bundle] if bundle else bundles
        sections = []
        for bundle_id in shown:
            try:
                report = build_report(store, bundle_id, settings.report, evidence_rule=settings.evidence_rule)
            except ReviewError as exc:
                sections.append({"bundle_id": bundle_id, "report": None, "problem": str(exc), "plot": None})
                continue
            plot = base64.b64encode(report.plot_png).decode("ascii") if report.plot_png else None
            sections.append({"bundle_id": bundle_id, "report": report, "problem": None, "plot": plot})
        return templates.TemplateResponse(request, "reports.html", {
            "user": user, "csrf": _csrf(request), "sections": sections, "bundles": bundles, "bundle": bundle or "",
            "notice": NOTICES.get(msg or ""),
        })

    def render_lift(request: Request, user: Any, bundle_id: str, *, problem: str | None = None,
                    reason: str = "", status: int = 200) -> Response:
        state = None
        try:
            state = store.audit_state(bundle_id, n_opt=settings.report.n_opt, evidence_rule=settings.evidence_rule)
        except ReviewError as exc:
            problem = problem or str(exc)
        return templates.TemplateResponse(request, "lift.html", {
            "user": user, "csrf": _csrf(request), "bundle_id": bundle_id, "state": state, "problem": problem,
            "reason": reason,
        }, status_code=status)

    def known_bundle(bundle_id: str) -> str:
        if bundle_id not in store.bundles():
            raise Refused(404, "not_found", "no such bundle: see /reports for the bundles in the store")
        return bundle_id

    @app.get("/admin/audit/{bundle_id}/lift", include_in_schema=False)
    def lift_page(request: Request, bundle_id: str, user: Admin) -> Response:
        return render_lift(request, user, known_bundle(bundle_id))

    @app.post("/admin/audit/{bundle_id}/lift", include_in_schema=False)
    def lift_form(request: Request, bundle_id: str, user: Admin, _: FormCsrf, reason: str = Form("")) -> Response:
        known_bundle(bundle_id)
        if not reason.strip():
            return render_lift(request, user, bundle_id, status=400,
                               problem="reason is empty: say why the suspension may be lifted (it is recorded)")
        try:
            store.lift(bundle_id, user, reason=reason.strip())
        except ReviewError as exc:
            refusal = store_error(exc)
            return render_lift(request, user, bundle_id, problem=f"Not lifted: {refusal.detail}", reason=reason,
                               status=refusal.status)
        problem = republish(bundle_id)
        if problem is not None:
            return render_lift(request, user, bundle_id, problem=problem)
        return RedirectResponse(f"/reports?{urlencode({'bundle': bundle_id, 'msg': 'lifted'})}", 303)

    # -- JSON API ---------------------------------------------------------------------------------
    api_errors: dict[int | str, dict[str, Any]] = {
        401: {"model": m.ErrorOut, "description": "not logged in"},
        403: {"model": m.ErrorOut, "description": "CSRF token missing/wrong, or role not allowed"},
        404: {"model": m.ErrorOut, "description": "no such note"},
        409: {"model": m.ErrorOut, "description": "stale version, lease not held, or already submitted"},
        400: {"model": m.ErrorOut, "description": "refused by the store (e.g. a code outside the code set)"},
        413: {"model": m.ErrorOut, "description": "request too large"},
        422: {"model": m.ErrorOut, "description": "malformed request"},
    }

    @app.get("/api/openapi.json", include_in_schema=False)
    def openapi_spec(user: CurrentUser) -> JSONResponse:
        return JSONResponse(app.openapi())

    @app.get("/api/me", response_model=m.MeOut, responses=api_errors, tags=["session"])
    def api_me(request: Request, user: CurrentUser) -> m.MeOut:
        """Who is logged in, and the CSRF token every POST must send as ``X-CSRF-Token``."""
        return m.MeOut(username=user.username, role=user.role, csrf_token=_csrf(request))

    @app.get("/api/bundles", response_model=list[str], responses=api_errors, tags=["queue"])
    def api_bundles(user: CurrentUser) -> list[str]:
        return list(store.bundles())

    @app.get("/api/queue", response_model=m.QueueOut, responses=api_errors, tags=["queue"])
    def api_queue(user: CurrentUser, bundle_id: str | None = Query(None, max_length=200),
                  reason: str | None = Query(None, max_length=100), code: str | None = Query(None, max_length=20),
                  p_min: float | None = Query(None, ge=0, le=1), p_max: float | None = Query(None, ge=0, le=1),
                  status: m.Status | None = None, offset: int = Query(0, ge=0, le=10_000_000),
                  limit: int = Query(50, ge=1, le=500)) -> m.QueueOut:
        page = store.queue(bundle_id=bundle_id, reason=reason, code=code, p_min=p_min, p_max=p_max,
                           status=status, offset=offset, limit=limit, user=user)
        return m.QueueOut.of(page)

    @app.get("/api/notes/{note_key}", response_model=m.NoteOut, responses=api_errors, tags=["notes"])
    def api_note(note_key: str, user: CurrentUser) -> m.NoteOut:
        """The note with its text, codes and their current decisions (``version`` goes back with every
        write)."""
        view = load_note(note_key)
        if audit_pending(note_key, user):
            raise Refused(403, "audit_blind", "this note is in your blind audit sample: give your verdicts on its "
                                              "audit page first (/audit/<note_key>)")
        return m.NoteOut.of(view)

    @app.post("/api/notes/{note_key}/claim", response_model=m.LeaseOut, responses=api_errors, tags=["notes"])
    def api_claim(note_key: str, user: Decider, _: HeaderCsrf) -> m.LeaseOut:
        load_note(note_key)
        try:
            lease = store.claim(note_key, user, lease_seconds=settings.lease_seconds)
        except ReviewError as exc:
            raise store_error(exc) from None
        return m.LeaseOut.of(lease)

    @app.post("/api/notes/{note_key}/release", response_model=m.OkOut, responses=api_errors, tags=["notes"])
    def api_release(note_key: str, body: m.ReleaseIn, user: Decider,
                    _: HeaderCsrf) -> m.OkOut:
        load_note(note_key)
        try:
            store.release(note_key, user, body.lease_token)
        except ReviewError as exc:
            raise store_error(exc) from None
        return m.OkOut()

    @app.post("/api/notes/{note_key}/decisions", response_model=m.EventOut, status_code=201, responses=api_errors,
              tags=["notes"])
    def api_decide(note_key: str, body: m.DecisionIn, user: Decider,
                   _: HeaderCsrf) -> m.EventOut:
        """One decision on one code. 409 when the version moved (reload and decide again) or the lease
        is not held: nothing is written then."""
        load_note(note_key)
        evidence = [e.model_dump() for e in body.evidence] if body.evidence else None
        try:
            event = store.decide(note_key, user, action=body.action, code=body.code, new_code=body.new_code,
                                 comment=body.comment, evidence=evidence, lease_token=body.lease_token,
                                 expected_version=body.expected_version)
        except ReviewError as exc:
            raise store_error(exc) from None
        return m.EventOut.of(event)

    @app.post("/api/notes/{note_key}/submit", response_model=m.EventOut, status_code=201, responses=api_errors,
              tags=["notes"])
    def api_submit(note_key: str, body: m.SubmitIn, user: Decider,
                   _: HeaderCsrf) -> m.EventOut:
        load_note(note_key)
        try:
            event = store.submit(note_key, user, lease_token=body.lease_token, expected_version=body.expected_version)
        except ReviewError as exc:
            raise store_error(exc) from None
        return m.EventOut.of(event)

    @app.post("/api/notes/{note_key}/corrections", response_model=m.EventOut, status_code=201,
              responses=api_errors, tags=["notes"])
    def api_correct(note_key: str, body: m.CorrectionIn, user: CurrentUser,
                    _: HeaderCsrf) -> m.EventOut:
        """An admin's correction of a submitted note: a new event, never an edit of an old one."""
        if user.role != "admin":
            raise Refused(403, "forbidden", "only an admin may correct a submitted note")
        load_note(note_key)
        try:
            event = store.correct(note_key, user, code=body.code, action=body.action, new_code=body.new_code,
                                  comment=body.comment)
        except ReviewError as exc:
            raise store_error(exc) from None
        return m.EventOut.of(event)

    @app.get("/api/notes/{note_key}/events", response_model=list[m.EventOut], responses=api_errors, tags=["notes"])
    def api_events(note_key: str, user: CurrentUser) -> list[m.EventOut]:
        load_note(note_key)
        return [m.EventOut.of(e) for e in store.events(note_key)]

    @app.get("/api/codes", response_model=list[m.CodeHit], responses=api_errors, tags=["codes"])
    def api_codes(user: CurrentUser, bundle_id: str = Query(..., max_length=200),
                  q: str = Query(..., min_length=1, max_length=100),
                  limit: int = Query(20, ge=1, le=100)) -> list[m.CodeHit]:
        """Billable codes of the bundle's fiscal-year code set, by code prefix or description words."""
        if bundle_id not in store.bundles():
            raise Refused(404, "not_found", "no such bundle")
        try:
            hits = store.search_codes(bundle_id, q, limit=limit)
        except ReviewError as exc:
            raise store_error(exc) from None
        return [m.CodeHit(code=c, description=d) for c, d in hits]

    return app
