"""A throwaway PostgreSQL 15 server for tests: ``initdb`` + ``pg_ctl`` from the machine's
installed binaries, listening only on a unix socket in a temp folder, deleted at the end.

Why not a mock or a shared server: the review store's contract (triggers that refuse UPDATE and
DELETE on events, ``UNIQUE(note_key, seq)`` under concurrent writers, ``FOR UPDATE``) is exactly
what a mock would not check, and a shared server would mix test runs.

``initdb`` refuses to run as root and CI runs as root, so as root the cluster belongs to
``nobody`` (any unprivileged account works: ``MEDCODER_PG_USER``) and every server command runs
through ``runuser -u``; as any other user it runs directly. No TCP port is opened
(``listen_addresses=''``); durability is switched off (fsync, full-page writes) for speed.

Missing binaries FAIL the tests that need them (:func:`require_postgres`), with one line saying what
to install: the README test command and CI run where PostgreSQL 15 is installed, and a silent skip
would hide that the store's PostgreSQL half was never tested. ``MEDCODER_SKIP_POSTGRES=1`` skips
them instead, on purpose and with that reason.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["PG_BIN", "SKIP_ENV", "PostgresServer", "missing_postgres", "postgres_available", "postgres_server",
           "require_postgres"]

PG_BIN = Path(os.environ.get("MEDCODER_PG_BIN", "/usr/lib/postgresql/15/bin"))
#: Set to ``1`` to skip (rather than fail) the PostgreSQL tests on a machine without PostgreSQL 15.
SKIP_ENV = "MEDCODER_SKIP_POSTGRES"
_TOOLS = ("initdb", "pg_ctl", "postgres")


def postgres_available() -> bool:
    """Whether the PostgreSQL binaries the fixture needs are installed."""
    return all((PG_BIN / tool).is_file() for tool in _TOOLS)


def missing_postgres() -> str | None:
    """One line saying what is missing and what to install, or None when the binaries are there."""
    missing = [tool for tool in _TOOLS if not (PG_BIN / tool).is_file()]
    if not missing:
        return None
    return (f"PostgreSQL 15 binaries missing ({', '.join(missing)} not in {PG_BIN}): "
            f"apt-get install postgresql-15 (or set MEDCODER_PG_BIN; {SKIP_ENV}=1 skips these tests)")


def require_postgres() -> None:
    """Fail the calling test (one line, no traceback) when PostgreSQL 15 is not installed, or skip
    it when ``MEDCODER_SKIP_POSTGRES=1`` says so explicitly."""
    import pytest

    if os.environ.get(SKIP_ENV, "").strip() == "1":
        pytest.skip(f"{SKIP_ENV}=1: PostgreSQL tests skipped on request")
    message = missing_postgres()
    if message is not None:
        pytest.fail(message, pytrace=False)


class PostgresServer:
    """One running cluster; :meth:`new_database` hands each test a fresh, empty database."""

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="medcoder-pg-"))
        self.data = self.root / "data"
        self.log = self.root / "server.log"
        self.port = 5432  # only names the socket file: no TCP
        self.run_as: str | None = None
        if os.geteuid() == 0:
            self.run_as = os.environ.get("MEDCODER_PG_USER", "nobody")
            entry = pwd.getpwnam(self.run_as)
            os.chown(self.root, entry.pw_uid, entry.pw_gid)
        os.chmod(self.root, 0o700)

    def _cmd(self, *args: str) -> list[str]:
        if self.run_as is None:
            return list(args)
        return ["runuser", "-u", self.run_as, "--", *args]

    def _run(self, *args: str) -> None:
        proc = subprocess.run(self._cmd(*args), capture_output=True, text=True, timeout=120, cwd=self.root)
        if proc.returncode != 0:
            log = self.log.read_text(errors="replace")[-2000:] if self.log.exists() else ""
            raise RuntimeError(f"{' '.join(args[:2])} failed ({proc.returncode}): "
                               f"{proc.stderr.strip()[-2000:]}\n{log}")

    def start(self) -> PostgresServer:
        self._run(str(PG_BIN / "initdb"), "-D", str(self.data), "-U", "postgres", "-A", "trust",
                  "-E", "UTF8", "--no-locale", "--no-sync")
        options = (f"-k {self.root} -c listen_addresses='' -p {self.port} -F -c full_page_writes=off "
                   "-c synchronous_commit=off -c max_connections=50")
        self._run(str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-l", str(self.log), "-o", options,
                  "-w", "-t", "60", "start")
        return self

    def stop(self) -> None:
        try:
            if (self.data / "postmaster.pid").exists():
                self._run(str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "stop")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)

    def url(self, database: str = "postgres", schema: str | None = None) -> str:
        """A SQLAlchemy URL (psycopg 3) over the socket; with ``schema``, every connection's
        ``search_path`` is that schema alone."""
        url = f"postgresql+psycopg://postgres@/{database}?host={self.root}&port={self.port}"
        return url if schema is None else f"{url}&options=-csearch_path%3D{schema}"

    def new_database(self) -> str:
        """An empty, private namespace and the URL that sees only it.

        Why a schema and not a ``CREATE DATABASE``: each database is ~7 MB of files, so a test
        session of 50+ of them spent seconds copying and deleting; an empty schema is as
        isolated for the store (its tables, triggers and version table all live in it)."""
        import psycopg

        name = f"t_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(host=str(self.root), port=self.port, user="postgres", dbname="postgres",
                             autocommit=True) as conn:
            conn.execute(f'CREATE SCHEMA "{name}"')
        return self.url("postgres", schema=name)


@contextmanager
def postgres_server() -> Iterator[PostgresServer]:
    """Start a cluster, yield it, stop and delete it (also when the tests fail)."""
    server = PostgresServer()
    try:
        server.start()
        yield server
    finally:
        server.stop()
