"""The human half of medcoder: the review store (SQLAlchemy + Alembic), append-only decision
events, users and roles, import of predictions and export of reviewed labels, the blind audit
sample, double review, and the audited-precision monitor (:mod:`medcoder.review.monitor`). Pure:
no web, no MLflow (import-linter contract ``review-is-pure``).

``ReviewStore.open(db_url)`` is the entry point; see :mod:`medcoder.review.store`.
"""

from medcoder.review.audit import AUDIT_ROLES, VERDICTS
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
    AuditCode,
    AuditEvent,
    AuditItem,
    AuditLift,
    AuditPoint,
    AuditState,
    AuditVerdict,
    AuditView,
    CodeView,
    DoubleReviewPair,
    Event,
    ImportResult,
    Lease,
    NoteView,
    QueueItem,
    QueuePage,
    RoutedOutcome,
    User,
)

__all__ = [
    "ACTIONS",
    "AUDIT_ROLES",
    "VERDICTS",
    "AuditCode",
    "AuditEvent",
    "AuditItem",
    "AuditLift",
    "AuditPoint",
    "AuditState",
    "AuditVerdict",
    "AuditView",
    "DoubleReviewPair",
    "RoutedOutcome",
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
