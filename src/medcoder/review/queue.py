"""The queue query: notes filtered by bundle, reason, code, probability and status, in import
order, with progress counts.

Why it is shaped this way (100,000 notes, a page under 150 ms): ``status`` is a column the
events keep up to date (``open`` -> ``in_progress`` at the first decision -> ``submitted``), so the
progress counts are one ``GROUP BY`` over the index ``(bundle_id, status, id)``, a page is read
in ``(bundle_id, id)`` order without a sort; the other
filters are ``note_key IN (subquery)`` over narrow covering indexes (code, routed probability,
reason), which the planner evaluates once rather than once per note. Who holds a note is shown
separately (``holder`` while the lease is live): holding is not progress.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import and_, func, select
from sqlalchemy.engine import Connection
from sqlalchemy.sql import ColumnElement

from medcoder.review import models as m
from medcoder.review.codes import normalise_code, spellings
from medcoder.review.errors import ReviewError
from medcoder.review.views import QueueItem, QueuePage

__all__ = ["MAX_PAGE", "STATUSES", "queue_page"]

STATUSES = ("open", "in_progress", "submitted")
MAX_PAGE = 500
n = m.notes


def _filters(*, reason: str | None, code: str | None, p_min: float | None,
             p_max: float | None) -> list[ColumnElement[bool]]:
    where: list[ColumnElement[bool]] = []
    if reason:
        r = m.note_reasons
        where.append(n.c.note_key.in_(select(r.c.note_key).where(r.c.reason == reason)))
    if code or p_min is not None or p_max is not None:
        c = m.note_codes
        if code:
            try:
                cond = [c.c.code.in_(spellings(normalise_code(code)))]
            except ValueError as exc:
                raise ReviewError(f"code filter: {exc}") from None
        else:
            cond = [c.c.decision == "human_review"]
        if p_min is not None:
            cond.append(c.c.probability >= p_min)
        if p_max is not None:
            cond.append(c.c.probability <= p_max)
        where.append(n.c.note_key.in_(select(c.c.note_key).where(and_(*cond))))
    return where


def queue_page(conn: Connection, now: datetime, *, bundle_id: str | None, reason: str | None,
               code: str | None, p_min: float | None, p_max: float | None, status: str | None,
               offset: int, limit: int) -> QueuePage:
    """One page of the queue in import order; ``total`` = notes matching every filter;
    ``counts`` = notes per status (and ``total``) of the bundle (all bundles when None)."""
    if status is not None and status not in STATUSES:
        raise ReviewError(f"the status given is not one of {', '.join(STATUSES)}")
    try:
        offset, limit = max(0, int(offset)), max(0, min(int(limit), MAX_PAGE))
        p_min = None if p_min is None else float(p_min)
        p_max = None if p_max is None else float(p_max)
    except (TypeError, ValueError):
        raise ReviewError("offset and limit must be integers, p_min and p_max numbers") from None
    scope = [n.c.bundle_id == bundle_id] if bundle_id else []
    counts = {s: 0 for s in STATUSES}
    for name, count in conn.execute(select(n.c.status, func.count()).where(*scope).group_by(n.c.status)):
        counts[name] = int(count)
    counts["total"] = sum(counts[s] for s in STATUSES)
    where = scope + _filters(reason=reason, code=code, p_min=p_min, p_max=p_max)
    if status:
        where.append(n.c.status == status)
    if len(where) == len(scope) + (1 if status else 0):  # no other filter: the counts say it
        total = counts[status] if status else counts["total"]
    else:
        total = int(conn.execute(select(func.count()).select_from(n).where(*where)).scalar_one())
    rows = conn.execute(
        select(n.c.note_key, n.c.note_id, n.c.bundle_id, n.c.status, n.c.n_routed, n.c.n_decided, n.c.holder,
               n.c.lease_expires)
        .where(*where).order_by(n.c.id).offset(offset).limit(limit)
    ).all()
    reasons: dict[str, list[str]] = {}
    if rows:
        r = m.note_reasons
        keys = [row.note_key for row in rows]
        for key, reason_name in conn.execute(select(r.c.note_key, r.c.reason).where(r.c.note_key.in_(keys))
                                             .order_by(r.c.note_key, r.c.reason)):
            reasons.setdefault(key, []).append(reason_name)
    items = []
    for row in rows:
        live = row.holder is not None and row.lease_expires is not None and row.lease_expires > now
        items.append(QueueItem(
            note_key=row.note_key, note_id=row.note_id, bundle_id=row.bundle_id, status=row.status,
            n_routed=row.n_routed, n_decided=row.n_decided, reasons=reasons.get(row.note_key, []),
            holder=row.holder if live else None, lease_expires=row.lease_expires if live else None,
        ))
    return QueuePage(items=items, total=total, counts=counts)
