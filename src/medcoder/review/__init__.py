"""The human half of medcoder: the review store (SQLAlchemy + Alembic), append-only decision
events, users and roles, import of predictions and export of reviewed labels. Pure: no web, no
MLflow (import-linter contract ``review-is-pure``).

``ReviewStore.open(db_url)`` is the entry point; see :mod:`medcoder.review.store`.
"""

from medcoder.review.errors import (
    AuthError,
    ConflictError,
    ForbiddenError,
    LeaseError,
    NotFoundError,
    ReviewError,
)
from medcoder.review.events import ACTIONS
from medcoder.review.queue import STATUSES
from medcoder.review.store import ReviewStore
from medcoder.review.users import MIN_PASSWORD_LEN, ROLES, Throttle
from medcoder.review.views import (
    CodeView,
    Event,
    ImportResult,
    Lease,
    NoteView,
    QueueItem,
    QueuePage,
    User,
)

__all__ = [
    "ACTIONS",
    "MIN_PASSWORD_LEN",
    "ROLES",
    "STATUSES",
    "AuthError",
    "CodeView",
    "ConflictError",
    "Event",
    "ForbiddenError",
    "ImportResult",
    "Lease",
    "LeaseError",
    "NoteView",
    "NotFoundError",
    "QueueItem",
    "QueuePage",
    "ReviewError",
    "ReviewStore",
    "Throttle",
    "User",
    "sqlite_url",
]


def sqlite_url(path: str) -> str:
    """``sqlite:///<path>`` for a database file (the default store lives under
    ``outputs/review/``)."""
    return f"sqlite:///{path}"
