"""Plain, immutable values the store hands out (no SQLAlchemy rows leave the package).

Why dataclasses: the web layer may not import SQLAlchemy (import-linter contract
``web-goes-through-review``), and frozen values cannot be mutated behind the store's back.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, NamedTuple

if TYPE_CHECKING:  # scipy is imported only where the monitor runs
    from medcoder.review.monitor import MonitorReport

__all__ = [
    "AuditCode", "AuditEvent", "AuditItem", "AuditLift", "AuditPoint", "AuditState", "AuditVerdict", "AuditView",
    "CodeView", "DoubleReviewPair", "Event", "ImportResult", "Lease", "NoteView", "QueueItem", "QueuePage",
    "RoutedOutcome", "User",
]


@dataclass(frozen=True)
class User:
    """An account: ``role`` is one of :data:`medcoder.review.ROLES`."""

    id: int
    username: str
    role: str


@dataclass(frozen=True)
class Lease:
    """A reviewer's hold on a note until ``expires_at``; ``token`` proves it on every write."""

    note_key: str
    username: str
    token: str
    expires_at: datetime


@dataclass(frozen=True)
class ImportResult:
    """What one import did: notes in the file, newly imported, already present (unchanged);
    ``n_audit`` notes drawn into the blind audit sample, ``n_double`` given a second review."""

    bundle_id: str
    n_notes: int
    n_imported: int
    n_unchanged: int
    n_routed_codes: int
    n_audit: int = 0
    n_double: int = 0


@dataclass(frozen=True)
class QueueItem:
    """One row of the queue; ``status`` is ``open``, ``in_progress`` or ``submitted``."""

    note_key: str
    note_id: str
    bundle_id: str
    status: str
    n_routed: int
    n_decided: int
    reasons: list[str]
    holder: str | None
    lease_expires: datetime | None


@dataclass(frozen=True)
class QueuePage:
    """A page of the queue, the number of notes matching the filters, and progress counts
    (``open``/``in_progress``/``submitted``/``total`` of the bundle, or of every bundle).

    ``total`` is exact unless ``total_capped``: a filter matching many notes is counted only up to
    ``max(1000, offset + limit + 1)`` notes (counting all 100,000 would cost more than the page), and
    then ``total`` is that bound, a lower bound that is always past this page (so "is there a next
    page?" = ``offset + limit < total`` stays right); show it as "1,000+"."""

    items: list[QueueItem]
    total: int
    counts: dict[str, int]
    total_capped: bool = False


@dataclass(frozen=True)
class CodeView:
    """One code of a note as the model predicted it, plus its current human decision.

    ``current`` is None (undecided) or the latest action on the code (``accept``, ``reject``,
    ``replace``, ``query``, ``add``); ``replaced_by`` is set for ``replace``. Codes a reviewer
    added have ``decision == "added"`` and ``probability`` None.
    """

    code: str
    description: str
    probability: float | None
    decision: str
    reasons: list[str]
    evidence: list[dict[str, Any]]
    sources: list[str]
    current: str | None = None
    replaced_by: str | None = None
    comment: str | None = None
    decided_by: str | None = None


@dataclass(frozen=True)
class NoteView:
    """A note, its codes (routed first by probability, auto-accepted last) and the state derived
    from its events; ``version`` is the number of events (pass it back as ``expected_version``)."""

    note_key: str
    note_id: str
    bundle_id: str
    codeset_fy: int | None
    policy_version: str
    input_sha256: str
    text: str
    codes: list[CodeView]
    added: list[CodeView]
    status: str
    version: int
    holder: str | None
    lease_expires: datetime | None
    final_codes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Event:
    """One append-only decision event (see :mod:`medcoder.review.events`)."""

    id: int
    note_key: str
    seq: int
    at: datetime
    username: str
    action: str
    code: str | None
    code_before: str | None
    code_after: str | None
    comment: str | None
    bundle_id: str
    codeset_fy: int | None
    policy_version: str
    input_sha256: str
    evidence: list[dict[str, Any]] | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (``at`` as ISO 8601 UTC), the events export's line."""
        return {
            "id": self.id, "note_key": self.note_key, "seq": self.seq,
            "at": self.at.isoformat(), "username": self.username, "action": self.action,
            "code": self.code, "code_before": self.code_before, "code_after": self.code_after,
            "comment": self.comment, "evidence": self.evidence, "bundle_id": self.bundle_id,
            "codeset_fy": self.codeset_fy, "policy_version": self.policy_version,
            "input_sha256": self.input_sha256,
        }


@dataclass(frozen=True)
class AuditItem:
    """A note drawn for audit that still has auto-accepted codes without a verdict."""

    note_key: str
    note_id: str
    bundle_id: str
    n_codes: int
    n_audited: int


@dataclass(frozen=True)
class AuditCode:
    """An auto-accepted code as the auditor sees it: the code and its description, nothing else."""

    code: str
    description: str


@dataclass(frozen=True)
class AuditVerdict:
    """A verdict already given on one code of the note (by an auditor)."""

    code: str
    verdict: str
    replaced_by: str | None
    username: str
    at: datetime


@dataclass(frozen=True)
class AuditView:
    """The BLIND audit page of a note: its text and auto-accepted codes, sorted by code.

    Why so few fields: seeing the model's probability, decision, reasons or evidence anchors the
    auditor (the issue), so this value does not carry them at all, rather than trusting a page
    not to show them."""

    note_key: str
    note_id: str
    bundle_id: str
    text: str
    codes: list[AuditCode]
    verdicts: list[AuditVerdict]


@dataclass(frozen=True)
class AuditEvent:
    """One append-only audit verdict (``correct`` or ``wrong``) on an auto-accepted code."""

    id: int
    bundle_id: str
    note_key: str
    code: str
    verdict: str
    replaced_by: str | None
    comment: str | None
    username: str
    at: datetime
    codeset_fy: int | None
    policy_version: str
    input_sha256: str


@dataclass(frozen=True)
class AuditLift:
    """An admin's lift of a bundle's suspension; the audited stream restarts after
    ``last_audit_event_id``."""

    id: int
    bundle_id: str
    username: str
    reason: str
    at: datetime
    last_audit_event_id: int


class AuditPoint(NamedTuple):
    """One audited auto-accepted code of the stream (for the precision-over-time plot)."""

    audit_event_id: int
    at: datetime
    code: str
    correct: bool


@dataclass(frozen=True)
class AuditState:
    """A bundle's audited precision now, recomputed from the verdicts and lifts (never stored).

    ``suspended`` is ``report.alarm``; ``alarm_at_time`` the time of the verdict at which it
    fired; ``n_accepted_since`` the auto-accepted codes of notes imported since the last lift
    (or ever); ``warnings`` the too-little-evidence warnings (never a suspension)."""

    bundle_id: str
    target: float
    delta: float
    report: MonitorReport
    suspended: bool
    alarm_at_time: datetime | None
    last_lift: AuditLift | None
    n_accepted_since: int
    last_audit_at: datetime | None
    warnings: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class RoutedOutcome:
    """What the reviewer finally did with one routed code of a submitted (first-round) note.

    ``action``: ``accept``, ``reject``, ``replace``, ``query`` or ``undecided``; ``frequency``: the
    code's training frequency (None when the bundle's frequencies were not given)."""

    note_id: str
    code: str
    reasons: list[str]
    frequency: int | None
    action: str
    replaced_by: str | None


@dataclass(frozen=True)
class DoubleReviewPair:
    """The first and the second reviewer's final action on one routed code of a note that was
    reviewed twice (both reviews submitted)."""

    note_id: str
    code: str
    first_action: str
    second_action: str
    first_replaced_by: str | None
    second_replaced_by: str | None
    first_reviewer: str | None
    second_reviewer: str | None
