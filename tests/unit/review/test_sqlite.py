"""SQLite specifics: WAL, a locked database (retried, then one line), migrations on reopen,
and a schema that matches the tables the code queries."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from sqlalchemy import create_engine

from medcoder.review import ReviewError, ReviewStore
from medcoder.review.models import VERSION_TABLE, metadata

from .factory import NOTES


def test_default_store_is_a_wal_file(tmp_path: Path) -> None:
    path = tmp_path / "outputs" / "review" / "review.db"
    ReviewStore.open(f"sqlite:///{path}").close()
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        version = conn.execute("SELECT version_num FROM review_alembic_version").fetchone()[0]
    assert version == "0003"


def test_reopen_and_create_false(tmp_path: Path, predictions: Path) -> None:
    url = f"sqlite:///{tmp_path / 'r.db'}"
    with ReviewStore.open(url) as store:
        store.import_predictions(predictions, NOTES)
    with ReviewStore.open(url, create=False) as store:
        assert store.queue().total == 4
    with pytest.raises(ReviewError, match="no review database"):
        ReviewStore.open(f"sqlite:///{tmp_path / 'missing.db'}", create=False)
    assert not (tmp_path / "missing.db").exists()
    sqlite3.connect(tmp_path / "other.db").execute("CREATE TABLE t (x)").connection.close()
    with pytest.raises(ReviewError, match="not a review database"):
        ReviewStore.open(f"sqlite:///{tmp_path / 'other.db'}", create=False)


def test_locked_database_is_retried_then_one_line(tmp_path: Path, predictions: Path) -> None:
    path = tmp_path / "r.db"
    store = ReviewStore.open(f"sqlite:///{path}", busy_timeout_s=0.1, lock_retries=2)
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN EXCLUSIVE")
    try:
        with pytest.raises(ReviewError) as err:
            store.import_predictions(predictions, NOTES)
        message = str(err.value)
        assert "is locked by another process" in message and "3 tries" in message and "\n" not in message
    finally:
        other.execute("ROLLBACK")
        other.close()
    assert store.import_predictions(predictions, NOTES).n_imported == 4  # free again: works
    store.close()


def test_migrated_schema_matches_the_tables(tmp_path: Path) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    url = f"sqlite:///{tmp_path / 'r.db'}"
    ReviewStore.open(url).close()
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            diff = compare_metadata(MigrationContext.configure(conn, opts={"version_table": VERSION_TABLE}), metadata)
    finally:
        engine.dispose()
    assert diff == []


def test_bad_url_is_one_line() -> None:
    with pytest.raises(ReviewError, match="unsupported database"):
        ReviewStore.open("mysql://u:secret@host/db")
    with pytest.raises(ReviewError, match="not a database URL"):
        ReviewStore.open("not a url")


def test_unreachable_postgres_is_one_line(tmp_path: Path) -> None:
    url = f"postgresql://nobody@/review?host={tmp_path}&port=1"  # plain postgresql:// means psycopg 3
    with pytest.raises(ReviewError) as err:
        ReviewStore.open(url)
    assert str(err.value).startswith("review database postgresql+psycopg://") is False
    assert "review database postgresql://nobody@/review" in str(err.value) and "\n" not in str(err.value)


def test_a_0001_database_is_upgraded_in_place(tmp_path: Path, predictions: Path) -> None:
    """A database at revision 0001 (no probe index) is brought to the newest revision when the store opens it."""
    from importlib import resources

    from alembic import command
    from alembic.config import Config

    path = tmp_path / "r.db"
    engine = create_engine(f"sqlite:///{path}")
    try:
        with engine.begin() as conn:
            config = Config()
            config.set_main_option("script_location", str(resources.files("medcoder.review") / "migrations"))
            config.attributes["connection"] = conn
            command.upgrade(config, "0001")
    finally:
        engine.dispose()
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT version_num FROM review_alembic_version").fetchone()[0] == "0001"
    with ReviewStore.open(f"sqlite:///{path}") as store:
        store.import_predictions(predictions, NOTES)
    with ReviewStore.open(f"sqlite:///{path}", create=False) as store:
        assert store.queue(p_min=0.6).total == 2
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT version_num FROM review_alembic_version").fetchone()[0] == "0003"
        indexes = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
    assert "ix_review_note_codes_note" in indexes
