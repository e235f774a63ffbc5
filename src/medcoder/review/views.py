"""Plain, immutable values the store hands out (no SQLAlchemy rows leave the package).

Why dataclasses: the web layer may not import SQLAlchemy (import-linter contract
``web-goes-through-review``), and frozen values cannot be mutated behind the store's back.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

__all__ = [
    "CodeView", "Event", "ImportResult", "Lease", "NoteView", "QueueItem", "QueuePage", "User",
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
    """What one import did: notes in the file, newly imported, already present (unchanged)."""

    bundle_id: str
    n_notes: int
    n_imported: int
    n_unchanged: int
    n_routed_codes: int


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
