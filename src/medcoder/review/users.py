"""Accounts: roles, argon2id password hashes, and throttling of repeated failed logins.

Why here and not in the web app: the rules (no default password, a minimum length, how long a
client waits after failures) hold for every door into the store, the account command included.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import datetime, timedelta

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from medcoder.review.errors import ReviewError

__all__ = [
    "MIN_PASSWORD_LEN", "ROLES", "Passwords", "Throttle", "check_new_password", "check_role", "check_username",
]

ROLES: tuple[str, ...] = ("reviewer", "auditor", "admin")
"""reviewer: decides codes; auditor: reads everything, decides nothing; admin: both, plus
corrections of submitted notes and accounts."""
DECIDING_ROLES = ("reviewer", "admin")
MIN_PASSWORD_LEN = 12
_USERNAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")


def check_username(username: str) -> str:
    if not isinstance(username, str) or not _USERNAME.match(username):
        raise ReviewError("username must be 1-64 letters, digits or . _ @ - (starting with a letter or digit)")
    return username


def check_role(role: str) -> str:
    if role not in ROLES:
        raise ReviewError(f"role {role!r} is not one of {', '.join(ROLES)}")
    return role


def check_new_password(password: str) -> None:
    """Refuse an empty or short password: there is no default, and no weak one either."""
    if not isinstance(password, str) or len(password) < MIN_PASSWORD_LEN:
        raise ReviewError(f"a password needs at least {MIN_PASSWORD_LEN} characters",
                          hint="choose a long passphrase; there is no default password")


class Passwords:
    """argon2id hashing and verification with one parameter set (the library's recommended
    one by default; tests pass a cheaper one, still argon2id)."""

    def __init__(self, hasher: PasswordHasher | None = None) -> None:
        self.hasher = hasher or PasswordHasher()
        # verified when the username is unknown, so a wrong name costs the same as a wrong password
        self._dummy = self.hasher.hash("medcoder-review-no-such-user")

    def hash(self, password: str) -> str:
        return self.hasher.hash(password)

    def verify(self, password_hash: str | None, password: str) -> bool:
        """Whether ``password`` matches; an unknown user (``None``) costs one verification too."""
        try:
            return self.hasher.verify(password_hash or self._dummy, password) and password_hash is not None
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return False


@dataclass(frozen=True)
class Throttle:
    """Failed-login policy per (username, client): ``free`` failures inside ``window``, then each
    further failure locks the pair for ``base_s * 2**k`` seconds (at most ``max_s``)."""

    free: int = 5
    window: timedelta = timedelta(minutes=15)
    base_s: float = 2.0
    max_s: float = 900.0

    def lock_after(self, failures: int, now: datetime) -> datetime | None:
        """When the pair may try again after its ``failures``-th failure (None: right away)."""
        if failures < self.free:
            return None
        seconds = min(self.base_s * 2 ** (failures - self.free), self.max_s)
        return now + timedelta(seconds=seconds)

    @staticmethod
    def wait_message(locked_until: datetime, now: datetime) -> str:
        seconds = max(1, math.ceil((locked_until - now).total_seconds()))
        return f"too many failed logins; try again in {seconds}s"
