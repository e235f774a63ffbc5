"""Engines, transactions and migrations of the review store, for SQLite and PostgreSQL.

Why this module:

* SQLite serves one workstation with nothing to install, but its defaults lose against
  concurrent reviewers: a reader that later writes can fail at once with "database is locked"
  (no busy wait helps a stale WAL snapshot). So every write transaction starts with
  ``BEGIN IMMEDIATE`` (the write lock first, waiting up to ``busy_timeout``), the journal is WAL
  (readers never block the writer), and a lock still held after the wait is retried a few times
  and then becomes one line (:class:`~medcoder.review.errors.ReviewError`), never a traceback.
* PostgreSQL serves a team through ``postgresql+psycopg://``; rows a write depends on are locked
  with ``SELECT ... FOR UPDATE`` (SQLite ignores that clause: its write lock covers the file).
* Statement parameters are hidden from SQLAlchemy's error messages and logs
  (``hide_parameters``): they would carry note text.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import event, inspect, text
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.exc import ArgumentError, OperationalError
from sqlalchemy.pool import StaticPool

from medcoder.review.errors import ReviewError
from medcoder.review.models import VERSION_TABLE

__all__ = ["Database", "display_url"]

log = logging.getLogger(__name__)
T = TypeVar("T")
_MIGRATION_LOCK = 720_020  # pg_advisory_xact_lock key: one migrating process at a time


def display_url(url: str) -> str:
    """The URL without its password, for messages."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return "<unparseable database URL>"


def _is_locked(exc: OperationalError) -> bool:
    message = str(getattr(exc, "orig", exc)).lower()
    return "database is locked" in message or "database table is locked" in message


class Database:
    """One engine plus the transaction helper every store operation runs through."""

    def __init__(self, url: str, *, create: bool, busy_timeout_s: float, lock_retries: int) -> None:
        try:
            parsed = make_url(url)
        except ArgumentError:
            raise ReviewError(f"review.db_url={display_url(url)!r} is not a database URL",
                              hint="e.g. sqlite:///outputs/review/review.db or "
                                   "postgresql+psycopg://user@host/db") from None
        if parsed.drivername == "postgresql":  # the driver this package installs (psycopg 3)
            parsed = parsed.set(drivername="postgresql+psycopg")
        self.url = url
        self.dialect = parsed.get_backend_name()
        if self.dialect not in ("sqlite", "postgresql"):
            raise ReviewError(f"review.db_url: unsupported database {self.dialect!r}",
                              hint="use sqlite:///... or postgresql+psycopg://...")
        self.lock_retries = max(0, int(lock_retries))
        self.busy_timeout_s = float(busy_timeout_s)
        self.sqlite_path: Path | None = None
        if self.dialect == "sqlite":
            self.engine = self._sqlite_engine(parsed, create=create)
        else:
            # no server-side prepared statements (psycopg prepares a statement after 5 runs): a
            # prepared queue query gets PostgreSQL's generic plan, which cannot see that
            # "probability between 0.2 and 0.6" matches 92 % of the codes, guesses it rare and
            # reads every match (75 ms -> 400 ms a page from the 6th page on)
            self.engine = self._create_engine(parsed, pool_pre_ping=True,
                                              connect_args={"prepare_threshold": None})

    # -- engines ---------------------------------------------------------------------------
    @staticmethod
    def _create_engine(url: Any, **kwargs: Any) -> Engine:
        from sqlalchemy import create_engine

        return create_engine(url, hide_parameters=True, future=True, **kwargs)

    def _sqlite_engine(self, parsed: Any, *, create: bool) -> Engine:
        database = parsed.database or ""
        memory = database in ("", ":memory:") or database.startswith("file::memory:")
        kwargs: dict[str, Any] = {
            "connect_args": {"timeout": self.busy_timeout_s, "check_same_thread": False},
        }
        if memory:
            kwargs["poolclass"] = StaticPool
        else:
            path = Path(database).expanduser()
            self.sqlite_path = path.resolve()
            if not path.exists():
                if not create:
                    raise ReviewError(f"no review database at {path}",
                                      hint="import predictions first (it creates the database)")
                path.parent.mkdir(parents=True, exist_ok=True)
        engine = self._create_engine(parsed, **kwargs)
        busy_ms = int(self.busy_timeout_s * 1000)

        @event.listens_for(engine, "connect")
        def _on_connect(dbapi_conn: Any, _record: Any) -> None:
            # Let SQLAlchemy's "begin" event below issue BEGIN itself (pysqlite would defer it).
            dbapi_conn.isolation_level = None
            cursor = dbapi_conn.cursor()
            try:
                if not memory:
                    cursor.execute("PRAGMA journal_mode=WAL")
                    cursor.execute("PRAGMA synchronous=NORMAL")
                cursor.execute(f"PRAGMA busy_timeout={busy_ms}")
                # 64 MB of page cache (default 2 MB): an import of 100,000 notes inserts into
                # indexes on random keys, and with the default cache every insert reads pages back
                cursor.execute("PRAGMA cache_size=-65536")
                cursor.execute("PRAGMA foreign_keys=ON")
            finally:
                cursor.close()

        @event.listens_for(engine, "begin")
        def _on_begin(conn: Connection) -> None:
            mode = conn.get_execution_options().get("medcoder_begin", "DEFERRED")
            conn.exec_driver_sql(f"BEGIN {mode}")

        return engine

    # -- transactions ----------------------------------------------------------------------
    def run(self, fn: Callable[[Connection], T], *, write: bool) -> T:
        """Run ``fn(conn)`` in one transaction (committed when it returns, rolled back when it
        raises). A write takes SQLite's write lock up front. "database is locked" after the busy
        wait is retried ``lock_retries`` times, then raised as one line."""
        attempt = 0
        while True:
            try:
                with self.engine.connect() as conn:
                    if self.dialect == "sqlite":
                        conn = conn.execution_options(medcoder_begin="IMMEDIATE" if write else "DEFERRED")
                    with conn.begin():
                        return fn(conn)
            except OperationalError as exc:
                if not _is_locked(exc):
                    reason = str(exc.orig).strip().splitlines()[0] if exc.orig is not None else type(exc).__name__
                    raise ReviewError(f"review database {self.sqlite_path or display_url(self.url)}: {reason}",
                                      hint="check review.db_url and that the database server is up") from None
                if attempt >= self.lock_retries:
                    raise ReviewError(
                        f"the review database {self.sqlite_path or display_url(self.url)} is locked by "
                        f"another process (waited {self.busy_timeout_s:g}s, {attempt + 1} tries)",
                        hint="close the other program using it, or use PostgreSQL for a team",
                    ) from None
                attempt += 1
                log.warning("review database locked; retry %d of %d", attempt, self.lock_retries)
                time.sleep(min(0.2 * attempt, 1.0))

    def for_update(self) -> bool:
        """Whether ``SELECT ... FOR UPDATE`` means something here (not on SQLite)."""
        return self.dialect != "sqlite"

    # -- schema ----------------------------------------------------------------------------
    def migrate(self, *, create: bool) -> None:
        """Bring the schema to the newest Alembic revision (creating it in an empty database
        only when ``create``)."""
        from alembic import command
        from alembic.config import Config

        def upgrade(conn: Connection) -> None:
            if self.dialect == "postgresql":
                conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _MIGRATION_LOCK})
            if not create and not inspect(conn).has_table(VERSION_TABLE):
                raise ReviewError(f"{self.sqlite_path or display_url(self.url)} is not a review database",
                                  hint="open it with create=True, or check review.db_url")
            config = Config()
            location = resources.files("medcoder.review") / "migrations"
            config.set_main_option("script_location", str(location))
            config.attributes["connection"] = conn
            command.upgrade(config, "head")

        self.run(upgrade, write=True)

    def dispose(self) -> None:
        self.engine.dispose()
