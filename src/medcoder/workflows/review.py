"""``scripts/review.py``: the review workbench from a Hydra config, one ``action`` per run.

* ``action=import``: a predictions file from ``scripts/predict.py`` plus its notes
  (``predictions=... notes=...``), or a notes folder/file plus a bundle (``notes=... bundle=...``):
  the notes are predicted through the one inference path, ``Coder.load(bundle).predict``, the
  predictions written under ``review.predicted_dir`` and imported. One transaction; re-importing
  the same file changes nothing.
* ``action=serve``: the web app on ``host:port`` (127.0.0.1 by default) over ``db_url``.
* ``action=create_user``: ``username=... role=...``; the password comes from the environment
  variable named by ``password_env`` or, on a terminal, a prompt; there is never a default.
* ``action=export``: labels (``{id, text, codes}`` JSONL, the ``data=jsonl`` format), the per-code
  decision table (CSV) and the event log (JSONL) into ``export_dir``.

This is the only module of the workbench that reads a DictConfig: it turns the config into
plain values and objects (:class:`~medcoder.web.WebSettings`, an open
:class:`~medcoder.review.ReviewStore`) at the door.
"""

from __future__ import annotations

import getpass
import hashlib
import json
import logging
import os
import secrets
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medcoder.atomic import atomic_open
from medcoder.errors import ConfigError
from medcoder.review import ROLES, ReviewStore
from medcoder.web import WebSettings, create_app
from medcoder.web.security import AccessLogFilter

__all__ = ["ACTIONS", "ReviewResult", "review_from_config", "settings_from_config"]

log = logging.getLogger("medcoder.review")

ACTIONS = ("serve", "import", "create_user", "export")
SECRET_ENV = "MEDCODER_REVIEW_SECRET"


@dataclass
class ReviewResult:
    """What one run did, as the one line the script prints."""

    line: str


def _text(cfg: Any, key: str) -> str | None:
    value = cfg.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"{key}={value!r} is not valid", hint=f"set {key}=<value> or leave it null")
    return value


def _positive(cfg: Any, key: str, *, low: int = 1, high: int | None = None) -> int:
    value = cfg.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or value < low or (high is not None and value > high):
        span = f">= {low}" + (f" and <= {high}" if high is not None else "")
        raise ConfigError(f"{key}={value!r} is not valid", hint=f"an integer {span}")
    return value


def _sqlite_dir(db_url: str) -> None:
    """Create the folder of a SQLite file database (the default lives under outputs/review/)."""
    for prefix in ("sqlite:///", "sqlite+pysqlite:///"):
        if db_url.startswith(prefix):
            path = db_url[len(prefix):].split("?", 1)[0]
            if path and path != ":memory:":
                Path(path).expanduser().parent.mkdir(parents=True, exist_ok=True)


def open_store(cfg: Any) -> ReviewStore:
    db_url = _text(cfg, "db_url")
    if db_url is None:
        raise ConfigError("db_url is not set", hint="e.g. db_url=sqlite:///outputs/review/review.db")
    _sqlite_dir(db_url)
    # Alembic logs every migration step at INFO under Hydra's logging; one line per run is enough.
    logging.getLogger("alembic").setLevel(logging.WARNING)
    return ReviewStore.open(db_url)


def _secret(cfg: Any) -> str:
    """The cookie-signing secret: ``$MEDCODER_REVIEW_SECRET``, else the secret file (created once,
    mode 0600, so sessions survive a restart)."""
    env = os.environ.get(SECRET_ENV)
    if env:
        if len(env) < 32:
            raise ConfigError(f"${SECRET_ENV} is too short", hint="use at least 32 random characters")
        return env
    path = Path(str(cfg.serve.secret_file)).expanduser()
    if path.is_file():
        value = path.read_text().strip()
        if len(value) < 32:
            raise ConfigError(f"{path}: the session secret is too short", hint="delete it to make a new one")
        return value
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(secrets.token_urlsafe(48))
    return path.read_text().strip()


def settings_from_config(cfg: Any) -> WebSettings:
    """The web app's settings from the ``serve`` group (checked)."""
    s = cfg.serve
    for key in ("lease_seconds", "max_body_bytes", "page_size", "search_limit"):
        _positive(s, key)
    hours = s.session_hours
    if isinstance(hours, bool) or not isinstance(hours, (int, float)) or hours <= 0:
        raise ConfigError(f"serve.session_hours={hours!r} is not valid", hint="a number of hours > 0")
    if not isinstance(s.cookie_secure, bool):
        raise ConfigError(f"serve.cookie_secure={s.cookie_secure!r} is not valid", hint="true or false")
    return WebSettings(secret_key=_secret(cfg), lease_seconds=s.lease_seconds, max_body_bytes=s.max_body_bytes,
                       session_hours=float(hours), cookie_secure=s.cookie_secure, page_size=s.page_size,
                       search_limit=s.search_limit)


# -- actions --------------------------------------------------------------------------------------
def _predict_notes(cfg: Any, notes: str, bundle: str) -> Path:
    """Predict ``notes`` with ``bundle`` (``Coder.load(bundle).predict``, block by block) into a
    predictions file under ``predicted_dir``; its name is fixed by the bundle and the notes, so
    predicting the same notes again replaces the same file."""
    from medcoder.inference import Coder
    from medcoder.inference.batch import NoteSource

    batch_size = _positive(cfg, "batch_size")
    source = NoteSource(notes).scan()
    coder = Coder.load(bundle)
    out_dir = Path(str(cfg.predicted_dir)).expanduser()
    out_dir.mkdir(parents=True, exist_ok=True)
    tag = hashlib.sha256(f"{Path(notes).resolve()}\x00{source.fingerprint}".encode()).hexdigest()[:12]
    out = out_dir / f"{coder.bundle_id}-{tag}.jsonl"
    block: list[tuple[str, str]] = []

    def flush(fh: Any) -> None:
        preds = coder.predict([t for _, t in block], [i for i, _ in block], batch_size=batch_size, progress=False)
        for p in preds:
            fh.write(json.dumps(p.to_dict(), ensure_ascii=False) + "\n")
        block.clear()

    with atomic_open(out, "w", encoding="utf-8") as fh:
        for note_id, text in source:
            block.append((note_id, text))
            if len(block) >= 256:
                flush(fh)
        if block:
            flush(fh)
    log.info("predicted %d notes with bundle %s into %s", source.count, coder.bundle_id, out)
    return out


def import_from_config(cfg: Any) -> ReviewResult:
    predictions, notes, bundle = _text(cfg, "predictions"), _text(cfg, "notes"), _text(cfg, "bundle")
    if notes is None:
        raise ConfigError("notes is not set", hint="notes=<folder of <id>.txt | .jsonl | .csv> (the notes predicted)")
    if predictions is None and bundle is None:
        raise ConfigError("neither predictions nor bundle is set",
                          hint="predictions=<file from scripts/predict.py>, or bundle=<dir> to predict the notes")
    if predictions is not None and bundle is not None:
        raise ConfigError("both predictions and bundle are set", hint="give one: a predictions file, or a bundle")
    store = open_store(cfg)
    try:
        path = Path(predictions) if predictions is not None else _predict_notes(cfg, notes, str(bundle))
        result = store.import_predictions(path, Path(notes))
    finally:
        store.close()
    return ReviewResult(f"imported {result.n_imported} notes ({result.n_unchanged} unchanged, "
                        f"{result.n_routed_codes} routed codes) of bundle {result.bundle_id} from {path}")


def _password(cfg: Any) -> str:
    env = _text(cfg, "password_env")
    if env and os.environ.get(env):
        return os.environ[env]
    if sys.stdin is not None and sys.stdin.isatty():
        first = getpass.getpass("password (12 characters or more): ")
        if getpass.getpass("again: ") != first:
            raise ConfigError("the two passwords differ", hint="run the command again")
        return first
    raise ConfigError(f"no password: ${env} is not set and there is no terminal to ask on",
                      hint=f"export {env}=... (never a default password)")


def create_user_from_config(cfg: Any) -> ReviewResult:
    username, role = _text(cfg, "username"), cfg.get("role")
    if username is None:
        raise ConfigError("username is not set", hint="username=<name>")
    if role not in ROLES:
        raise ConfigError(f"role={role!r} is not valid", hint=f"one of {', '.join(ROLES)}")
    password = _password(cfg)
    store = open_store(cfg)
    try:
        user = store.create_user(username, password, role)
    finally:
        store.close()
    return ReviewResult(f"created user {user.username} ({user.role})")


def export_from_config(cfg: Any) -> ReviewResult:
    out = Path(str(cfg.export_dir)).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    store = open_store(cfg)
    try:
        labels, decisions, events = out / "labels.jsonl", out / "decisions.csv", out / "events.jsonl"
        bundle = _text(cfg, "export_bundle")  # one bundle's notes only (needed when an id is in two bundles)
        n_labels = store.export_labels(labels, bundle_id=bundle)
        n_rows = store.export_decisions_csv(decisions, bundle_id=bundle)
        n_events = store.export_events(events)
    finally:
        store.close()
    return ReviewResult(f"exported {n_labels} reviewed notes to {labels}, {n_rows} code decisions to {decisions} "
                        f"and {n_events} events to {events}")


def log_config(access_log: bool) -> dict[str, Any]:
    """uvicorn's logging: its default formats, plus the filter that drops query strings from the
    access log; or no access log at all."""
    from uvicorn.config import LOGGING_CONFIG

    config = json.loads(json.dumps(LOGGING_CONFIG))
    config.setdefault("filters", {})["no_query"] = {"()": AccessLogFilter}
    config["handlers"]["access"]["filters"] = ["no_query"]
    if not access_log:
        config["loggers"]["uvicorn.access"]["handlers"] = []
        config["loggers"]["uvicorn.access"]["propagate"] = False
    return config


def serve_from_config(cfg: Any) -> ReviewResult:
    import uvicorn

    host = _text(cfg, "host") or "127.0.0.1"
    port = _positive(cfg, "port", low=0, high=65535)
    if not isinstance(cfg.serve.access_log, bool):
        raise ConfigError(f"serve.access_log={cfg.serve.access_log!r} is not valid", hint="true or false")
    settings = settings_from_config(cfg)
    store = open_store(cfg)
    try:
        app = create_app(store, settings)
        print(f"review workbench on http://{host}:{port}/ (Ctrl-C stops it)", flush=True)
        uvicorn.run(app, host=host, port=port, log_config=log_config(cfg.serve.access_log),
                    access_log=cfg.serve.access_log, server_header=False, proxy_headers=False)
    finally:
        store.close()
    return ReviewResult("review workbench stopped")


def review_from_config(cfg: Any) -> ReviewResult:
    """Run the configured ``action``."""
    action = cfg.get("action")
    if action not in ACTIONS:
        raise ConfigError(f"action={action!r} is not valid", hint=f"one of {', '.join(ACTIONS)}")
    return {"serve": serve_from_config, "import": import_from_config, "create_user": create_user_from_config,
            "export": export_from_config}[action](cfg)

