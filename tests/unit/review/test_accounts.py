"""Accounts: argon2 hashes, no weak or default password, throttled failed logins."""

from __future__ import annotations

import pytest
from sqlalchemy import create_engine, select

from medcoder.review import AuthError, ReviewError, ReviewStore, User
from medcoder.review import models as m

from .conftest import PASSWORD, FakeClock


def test_users_are_created_with_argon2_hashes(db_url: str) -> None:
    with ReviewStore.open(db_url) as store:  # the default (production) argon2 parameters
        user = store.create_user("alice", PASSWORD, "reviewer")
        assert store.get_user("alice") == user and user.role == "reviewer"
        assert store.authenticate("alice", PASSWORD) == user
    engine = create_engine(db_url)
    try:
        with engine.connect() as conn:
            stored = conn.execute(select(m.users.c.password_hash)).scalar_one()
    finally:
        engine.dispose()
    assert stored.startswith("$argon2id$v=19$m=65536,t=3,p=4$") and PASSWORD not in stored


@pytest.mark.parametrize(("username", "password", "role", "message"), [
    ("bob", "", "reviewer", "at least 12"),
    ("bob", "short-pw", "reviewer", "at least 12"),
    ("bob", PASSWORD, "superuser", "not one of"),
    ("bad name", PASSWORD, "reviewer", "username"),
    ("", PASSWORD, "reviewer", "username"),
])
def test_bad_accounts_are_refused(store: ReviewStore, username: str, password: str, role: str,
                                  message: str) -> None:
    with pytest.raises(ReviewError, match=message):
        store.create_user(username, password, role)
    assert store.users() == []


def test_duplicate_user_is_refused(store: ReviewStore) -> None:
    store.create_user("alice", PASSWORD, "reviewer")
    with pytest.raises(ReviewError, match="already exists"):
        store.create_user("alice", PASSWORD + "!", "admin")
    assert store.get_user("alice").role == "reviewer"


def test_login(store: ReviewStore, alice: User) -> None:
    assert store.authenticate("alice", PASSWORD, client="10.0.0.1") == alice
    with pytest.raises(AuthError, match="invalid username or password") as wrong:
        store.authenticate("alice", PASSWORD + "x", client="10.0.0.1")
    with pytest.raises(AuthError) as unknown:
        store.authenticate("nobody-here", PASSWORD, client="10.0.0.1")
    assert str(wrong.value) == str(unknown.value)  # the message does not tell which users exist


def test_repeated_failures_are_throttled(store: ReviewStore, alice: User, clock: FakeClock) -> None:
    for _ in range(2):
        with pytest.raises(AuthError, match="invalid"):
            store.authenticate("alice", "wrong password!", client="c1")
    with pytest.raises(AuthError, match="try again in 10s"):  # 3rd failure: free=3 used up
        store.authenticate("alice", "wrong password!", client="c1")
    with pytest.raises(AuthError, match="too many failed logins; try again in 10s"):
        store.authenticate("alice", PASSWORD, client="c1")  # even the right password waits
    assert store.authenticate("alice", PASSWORD, client="c2") == alice  # another client is not locked
    clock.advance(11)
    with pytest.raises(AuthError, match="try again in 20s"):  # the wait doubles
        store.authenticate("alice", "wrong password!", client="c1")
    clock.advance(21)
    assert store.authenticate("alice", PASSWORD, client="c1") == alice  # success resets
    with pytest.raises(AuthError, match="^invalid username or password$"):
        store.authenticate("alice", "wrong password!", client="c1")


def test_set_password(store: ReviewStore, alice: User) -> None:
    store.set_password("alice", "a brand new passphrase")
    assert store.authenticate("alice", "a brand new passphrase") == alice
    with pytest.raises(AuthError):
        store.authenticate("alice", PASSWORD)
    with pytest.raises(ReviewError, match="at least 12"):
        store.set_password("alice", "tiny")
