"""Fixtures of the review store's tests: every store test runs on SQLite and on a real
PostgreSQL 15 (a throwaway cluster per test session, a fresh database per test)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from argon2 import PasswordHasher

from medcoder.review import ReviewStore, Throttle, User

from ...helpers.postgres import PostgresServer, postgres_server, require_postgres
from .factory import NOTES, write_predictions

PASSWORD = "correct horse battery staple"


class FakeClock:
    """A UTC clock the test moves by hand (lease expiry, login throttling)."""

    def __init__(self) -> None:
        self.now = datetime(2026, 12, 1, 9, 0, tzinfo=timezone.utc)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PostgresServer]:
    # missing binaries FAIL (one line: what to install) unless MEDCODER_SKIP_POSTGRES=1
    require_postgres()
    with postgres_server() as server:
        yield server


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'review' / 'review.db'}"
    return request.getfixturevalue("pg_server").new_database()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def store(db_url: str, clock: FakeClock) -> Iterator[ReviewStore]:
    # argon2id with cheap parameters: the suite creates ~200 accounts on a shared 2-core machine
    # (test_accounts checks the default parameters on a store of its own)
    s = ReviewStore.open(db_url, clock=clock, throttle=Throttle(free=3, base_s=10.0, max_s=60.0),
                         password_hasher=PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1))
    try:
        yield s
    finally:
        s.close()


@pytest.fixture
def predictions(tmp_path: Path) -> Path:
    return write_predictions(tmp_path / "predictions.jsonl")


@pytest.fixture
def loaded(store: ReviewStore, predictions: Path) -> ReviewStore:
    """A store holding the four synthetic notes of bundle-A."""
    store.import_predictions(predictions, NOTES)
    return store


@pytest.fixture
def alice(store: ReviewStore) -> User:
    return store.create_user("alice", PASSWORD, "reviewer")


@pytest.fixture
def bob(store: ReviewStore) -> User:
    return store.create_user("bob", PASSWORD, "reviewer")


@pytest.fixture
def admin(store: ReviewStore) -> User:
    return store.create_user("root.admin", PASSWORD, "admin")

