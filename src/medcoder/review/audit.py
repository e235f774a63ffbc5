"""The audit sample and the double-review draw made at import, and the rules of both.

Why a seeded draw recorded in the database: the audited precision is only an estimate of the
precision of *all* auto-accepted codes if the audited notes are a random sample of them, and a
draw anyone can re-derive (seed, the predictions file's sha256, the eligible notes in file order)
and that is written in the same transaction as the import cannot be quietly re-rolled.

Why a second review is a note of its own: see revision 0003. Its note id is ``<id>#2`` and its
``twin_of`` the first review's note key; a note whose ``<id>#2`` is taken (or too long) is not
eligible, so the draw stays a pure function of the file and the store.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
from sqlalchemy import ColumnElement, FromClause, Select, func, insert, select
from sqlalchemy.engine import Connection

from medcoder.review import models as m
from medcoder.review.errors import ReviewError

__all__ = [
    "AUDIT_ROLES", "TWIN_SUFFIX", "VERDICTS", "AuditPlan", "audit_blind_ids", "audit_counts", "audit_pending_keys", "draw_indices",
    "fully_audited", "n_to_draw", "twin_id", "write_draw",
]

AUDIT_ROLES: tuple[str, ...] = ("auditor", "admin")
VERDICTS: tuple[str, ...] = ("correct", "wrong")
TWIN_SUFFIX = "#2"
_STREAM = {"audit": 0, "double": 1}


def twin_id(note_id: str) -> str:
    """The note id of a note's second review."""
    return f"{note_id}{TWIN_SUFFIX}"


@dataclass(frozen=True)
class AuditPlan:
    """What an import draws: ``audit_rate`` of the notes with an auto-accepted code (at least
    ``min_audit`` when the rate is above 0) and ``double_review_rate`` of those with a routed code,
    both seeded by ``audit_seed`` and the file's sha256."""

    audit_rate: float = 0.05
    audit_seed: int = 0
    min_audit: int = 1
    double_review_rate: float = 0.0

    def __post_init__(self) -> None:
        for name in ("audit_rate", "double_review_rate"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
                raise ReviewError(f"{name}={value!r} must be a number in [0, 1]",
                                  hint=f"e.g. review.{name}=0.05; 0 draws none")
        for name in ("audit_seed", "min_audit"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ReviewError(f"{name}={value!r} must be a whole number >= 0")


def n_to_draw(rate: float, n_eligible: int, minimum: int) -> int:
    """``min(eligible, max(minimum, round(rate * eligible)))``, or 0 when ``rate`` is 0."""
    if rate <= 0 or n_eligible <= 0:
        return 0
    return min(n_eligible, max(minimum, int(math.floor(rate * n_eligible + 0.5))))


def draw_indices(n_eligible: int, n: int, *, seed: int, file_sha256: str, kind: str) -> list[int]:
    """``n`` of ``range(n_eligible)`` without replacement, sorted; the same for the same seed,
    file and kind (the two kinds draw from independent streams)."""
    if n <= 0:
        return []
    entropy = [int(seed), _STREAM[kind], *(int(file_sha256[i:i + 8], 16) for i in range(0, 64, 8))]
    rng = np.random.default_rng(entropy)
    return sorted(int(i) for i in rng.choice(n_eligible, size=n, replace=False))


def write_draw(conn: Connection, *, import_id: int, bundle_id: str, kind: str, plan: AuditPlan,
               n_eligible: int, note_keys: Sequence[str], now: datetime) -> None:
    """Record one draw (``kind`` ``audit`` or ``double``) of an import."""
    rate = plan.audit_rate if kind == "audit" else plan.double_review_rate
    conn.execute(insert(m.audit_draws).values(
        import_id=import_id, bundle_id=bundle_id, kind=kind, seed=plan.audit_seed, rate=float(rate),
        min_per_import=plan.min_audit if kind == "audit" else 0, n_eligible=n_eligible,
        n_drawn=len(note_keys), note_keys=json.dumps(list(note_keys)), at=now,
    ))


def audit_counts(notes: FromClause) -> tuple[Any, Any]:
    """``(auto-accepted codes, audit verdicts)`` of each row of ``notes`` (the notes table or an
    alias of it), as correlated scalar subqueries."""
    nc, ae = m.note_codes, m.audit_events
    n_codes = (select(func.count()).select_from(nc)
               .where(nc.c.note_key == notes.c.note_key, nc.c.decision == "auto_accept").scalar_subquery())
    n_audited = select(func.count()).select_from(ae).where(ae.c.note_key == notes.c.note_key).scalar_subquery()
    return n_codes, n_audited


def fully_audited(notes: FromClause) -> ColumnElement[bool]:
    """The note was drawn for audit and every auto-accepted code of it has a verdict."""
    n_codes, n_audited = audit_counts(notes)
    return notes.c.audit.is_(True) & (n_audited >= n_codes)


def audit_pending_keys(bundle_id: str | None = None) -> Select[tuple[str]]:
    """The keys of the notes drawn for audit that still wait for a verdict (of ``bundle_id``, or
    of every bundle)."""
    pa = m.notes.alias("audit_pending")
    n_codes, n_audited = audit_counts(pa)
    stmt = select(pa.c.note_key).where(pa.c.audit.is_(True), n_audited < n_codes)
    return stmt.where(pa.c.bundle_id == bundle_id) if bundle_id else stmt


def audit_blind_ids(bundle_id: str | None = None) -> Any:
    """``(id, twin id or None)`` rows of the notes an auditor must not see in the queue: those
    drawn for audit that still wait for a verdict, and their second-review twins. Ids, not keys: every index of
    ``review_notes`` holds the row id, so ``id NOT IN (this)`` is checked without reading the
    notes' rows (the queue's counts stay an index-only ``GROUP BY``)."""
    pa, tw = m.notes.alias("audit_blind"), m.notes.alias("audit_twin")
    n_codes, n_audited = audit_counts(pa)
    stmt = (select(pa.c.id, tw.c.id.label("twin_id"))
            .select_from(pa.outerjoin(tw, tw.c.twin_of == pa.c.note_key))
            .where(pa.c.audit.is_(True), n_audited < n_codes))
    return stmt.where(pa.c.bundle_id == bundle_id) if bundle_id else stmt
