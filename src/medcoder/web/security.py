"""Sessions, CSRF tokens and the ASGI guard around the app.

Why hand-rolled rather than Starlette's ``SessionMiddleware``: the workbench needs exactly two
cookies with fixed, strict attributes (signed, HttpOnly, SameSite=Strict, optionally Secure), a CSRF
token bound to the session, and a login CSRF token before any session exists. Keeping the format
here, in ~100 lines, makes each property testable and keeps note text out of every cookie (a
cookie holds a username, a random token and a timestamp, nothing else).

:class:`Guard` is the outermost layer the app adds itself: it refuses oversized bodies with 413
(also a chunked body that grows past the limit), stamps no-store and other security headers on
every response, and turns any unexpected exception into a bare 500 with an error id, logging
only the exception type and the route: an exception message can carry request or database
values (note text is PHI), so it is never written to a log line or an error page.
"""

from __future__ import annotations

import hmac
import json
import logging
import re
import secrets
import uuid
from dataclasses import dataclass
from typing import Any

from itsdangerous import BadSignature, URLSafeTimedSerializer
from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["AccessLogFilter", "Guard", "SessionCodec", "SessionData", "same_token"]

log = logging.getLogger("medcoder.web")

SESSION_COOKIE = "medcoder_session"
LOGIN_COOKIE = "medcoder_login"
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "x-csrf-token"


@dataclass(frozen=True)
class SessionData:
    """What a session cookie carries: who, and the CSRF token bound to this login."""

    username: str
    csrf: str


class SessionCodec:
    """Signs and checks the session and login cookies (``itsdangerous``, timestamped)."""

    def __init__(self, secret: str | bytes, *, max_age_s: int) -> None:
        if not secret or len(secret) < 16:
            raise ValueError("the session secret must be at least 16 characters")
        self.max_age_s = max_age_s
        self._session = URLSafeTimedSerializer(secret, salt="medcoder-review-session")
        self._login = URLSafeTimedSerializer(secret, salt="medcoder-review-login")

    def issue(self, username: str) -> tuple[str, SessionData]:
        """A fresh session (new CSRF token) for ``username``: cookie value and its data."""
        data = SessionData(username=username, csrf=secrets.token_urlsafe(32))
        return self._session.dumps({"u": data.username, "c": data.csrf}), data

    def read(self, value: str | None) -> SessionData | None:
        """The session in a cookie value, or None when absent, forged or older than max_age."""
        if not value:
            return None
        try:
            raw = self._session.loads(value, max_age=self.max_age_s)
        except BadSignature:
            return None
        if not isinstance(raw, dict) or not isinstance(raw.get("u"), str) or not isinstance(raw.get("c"), str):
            return None
        return SessionData(username=raw["u"], csrf=raw["c"])

    def login_token(self) -> tuple[str, str]:
        """A login-form CSRF token and the signed cookie that carries it (login CSRF defence)."""
        token = secrets.token_urlsafe(32)
        return token, self._login.dumps(token)

    def read_login(self, value: str | None) -> str | None:
        if not value:
            return None
        try:
            token = self._login.loads(value, max_age=3600)
        except BadSignature:
            return None
        return token if isinstance(token, str) else None


def same_token(expected: str | None, given: str | None) -> bool:
    """Constant-time comparison; an absent token never matches."""
    if not expected or not given:
        return False
    return hmac.compare_digest(expected.encode(), given.encode())


class _TooLarge(Exception):
    pass


#: Headers on every response. ``no-store`` everywhere (not only note pages): any page of the
#: workbench may show PHI-adjacent data (ids, codes), and nothing here benefits from a cache.
SECURITY_HEADERS: list[tuple[bytes, bytes]] = [
    (b"cache-control", b"no-store"),
    (b"pragma", b"no-cache"),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"content-security-policy",
     b"default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
     b"object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'"),
]


class Guard:
    """Outer ASGI layer: body limit (413), security headers, and PHI-safe 500s."""

    def __init__(self, app: ASGIApp, *, max_body_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.lower(): v for k, v in scope.get("headers", [])}
        length = headers.get(b"content-length")
        if length is not None:
            try:
                too_big = int(length) > self.max_body_bytes
            except ValueError:
                too_big = True
            if too_big:
                await _plain(send, 413, "request too large")
                return
        started = False
        received = 0
        too_large = False

        async def limited_receive() -> Message:
            nonlocal received, too_large
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body_bytes:
                    too_large = True
                    raise _TooLarge
            return message

        async def send_with_headers(message: Message) -> None:
            nonlocal started
            if too_large:
                # The app may have turned the aborted read into its own error (FastAPI answers 400
                # "error parsing the body"): the answer is 413, whatever the app made of it.
                if not started:
                    started = True
                    await _plain(send, 413, "request too large")
                return
            if message["type"] == "http.response.start":
                started = True
                path = scope.get("path", "")
                extra = [h for h in SECURITY_HEADERS if not (path.startswith("/static/") and h[0] in (b"cache-control", b"pragma"))]
                if path.startswith("/static/"):
                    extra.append((b"cache-control", b"private, max-age=3600"))
                names = {h[0] for h in extra}
                message["headers"] = [h for h in message.get("headers", []) if h[0].lower() not in names] + extra
            await send(message)

        try:
            await self.app(scope, limited_receive, send_with_headers)
        except _TooLarge:
            if not started:
                await _plain(send, 413, "request too large")
        except Exception as exc:  # noqa: BLE001 - the last line of defence: never leak, never crash
            error_id = uuid.uuid4().hex[:12]
            route = scope.get("route")
            where = getattr(route, "path", None) or "unmatched route"
            # Type and route only: the message of an arbitrary exception may hold request values.
            log.error("internal error %s: %s on %s %s", error_id, type(exc).__name__, scope.get("method"), where)
            if not started:
                await _plain(send, 500, f"internal error (id {error_id}); the details are in the server log")


async def _plain(send: Send, status: int, text: str) -> None:
    body = json.dumps({"error": text}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            *SECURITY_HEADERS]})
    await send({"type": "http.response.body", "body": body})


_QUERY = re.compile(r"\?.*$")


class AccessLogFilter(logging.Filter):
    """Drops the query string from uvicorn's access-log lines.

    The workbench puts no note text in URLs, but a query string can still hold what a reviewer
    typed (a code search); the access log keeps method, path and status, which is what an
    operator needs.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        args: Any = record.args
        if isinstance(args, tuple) and len(args) >= 3 and isinstance(args[2], str):
            record.args = (*args[:2], _QUERY.sub("", args[2]), *args[3:])
        return True
