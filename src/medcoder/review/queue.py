"""The queue query: notes filtered by bundle, reason, code, probability and status, in import
order, with progress counts.

Why it is shaped this way (100,000 notes, a page under 150 ms on either database):

* ``status`` is a column the events keep up to date (``open`` -> ``in_progress`` at the first
  decision -> ``submitted``), so the progress counts are one ``GROUP BY`` over the index
  ``(bundle_id, status, id)`` and a page without other filters is read in ``(bundle_id, id)`` order.
* The other filters (reason, code, probability range) are about a note's codes, kept in narrow
  side tables. Each is first sized cheaply (its matching notes counted up to a threshold, over its
  own index). A **narrow** filter (few notes) drives the query: ``note_key IN (subquery)``, the
  planner reads those few notes and the count is exact. A **broad** one (``reason=low_confidence``
  matches every note of the README's predictions, ``p_min=0.2&p_max=0.6`` 92 %) would make that
  subquery materialise ~100,000 keys for every page; instead the page walks the notes in import
  order, probes each with ``EXISTS`` (index ``(note_key, ...)``) and stops at the page's last note,
  and the total is counted only up to :data:`COUNT_CAP` (``QueuePage.total_capped``: "1,000+").
* On SQLite the probability probe wraps ``decision`` and ``probability`` (``decision || ''``,
  ``probability + 0``): without statistics SQLite otherwise probes through the
  ``(decision, probability, note_key)`` index (a range over most codes) rather than by the note's
  key, 250 ms instead of 0.1 ms a page. Not on PostgreSQL: there the wrapped terms hide the column
  statistics, and the planner (which has them: the import ends with ``ANALYZE``) then guesses the
  filter rare and materialises it.

Who holds a note is shown separately (``holder`` while the lease is live): holding is not progress.

Blind audits. A queue row says a note's reasons and routed counts, and its filters (reason, code,
probability range) say which notes have which model outputs; for an auditor that un-blinds the
notes of the audit sample. So with ``hide_audit_pending`` (the store sets it for users whose role
may audit: auditor, admin) every note drawn for audit that still waits for a verdict, and its
second-review twin, is left out of the page, the totals and the counts, whoever is to audit it.
A note comes back once fully audited.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import and_, bindparam, exists, func, literal, select
from sqlalchemy.engine import Connection
from sqlalchemy.sql import ColumnElement, Select

from medcoder.review import models as m
from medcoder.review.audit import audit_blind_ids
from medcoder.review.codes import normalise_code, spellings
from medcoder.review.errors import ReviewError
from medcoder.review.views import QueueItem, QueuePage

__all__ = ["COUNT_CAP", "MAX_PAGE", "STATUSES", "queue_page"]

STATUSES = ("open", "in_progress", "submitted")
MAX_PAGE = 500
#: A broad filter's total is counted up to this many notes (or up to the page's end, if further).
COUNT_CAP = 1000
#: A filter matching fewer notes than ``max(NARROW_MIN, NARROW_FRACTION * notes in scope)`` is
#: narrow: it drives the query (``IN``) and is counted exactly. Above, walking the notes in order
#: meets a match at least every ``1 / NARROW_FRACTION`` notes, so a page of 50 costs ~1,000 probes
#: and the capped count ~20,000.
NARROW_MIN = 2000
NARROW_FRACTION = 0.05
n = m.notes


@dataclass(frozen=True, eq=False)
class _Filter:
    keys: Select[tuple[str]]      # the notes matching (for IN, and for sizing the filter)
    probe: ColumnElement[bool]    # the same, as an EXISTS correlated with review_notes


def _filters(*, reason: str | None, code: str | None, p_min: float | None, p_max: float | None,
             wrap: bool) -> list[_Filter]:
    out: list[_Filter] = []
    if reason:
        r = m.note_reasons
        out.append(_Filter(select(r.c.note_key).where(r.c.reason == reason),
                           exists().where(r.c.note_key == n.c.note_key, r.c.reason == reason)))
    if code or p_min is not None or p_max is not None:
        c = m.note_codes
        if code:
            try:
                named = c.c.code.in_(spellings(normalise_code(code)))
            except ValueError as exc:
                raise ReviewError(f"code filter: {exc}") from None
            cond, probe = [named], [named]
        else:
            cond = [c.c.decision == "human_review"]
            probe = [(c.c.decision.concat(literal("")) if wrap else c.c.decision) == "human_review"]
        prob = c.c.probability + literal(0.0) if wrap else c.c.probability
        if p_min is not None:
            cond.append(c.c.probability >= p_min)
            probe.append(prob >= p_min)
        if p_max is not None:
            cond.append(c.c.probability <= p_max)
            probe.append(prob <= p_max)
        out.append(_Filter(select(c.c.note_key).where(and_(*cond)),
                           exists().where(c.c.note_key == n.c.note_key, *probe)))
    return out


def _size(conn: Connection, f: _Filter, bound: int) -> int:
    """How many notes ``f`` matches, counted up to ``bound`` (over the filter's own index)."""
    sub = f.keys.distinct().limit(bound).subquery()
    return int(conn.execute(select(func.count()).select_from(sub)).scalar_one())


def queue_page(conn: Connection, now: datetime, *, bundle_id: str | None, reason: str | None,
               code: str | None, p_min: float | None, p_max: float | None, status: str | None,
               offset: int, limit: int, hide_audit_pending: bool = False) -> QueuePage:
    """One page of the queue in import order; ``total`` = notes matching every filter (exact, or a
    lower bound past this page with ``total_capped`` when a broad filter matched more than
    :data:`COUNT_CAP`); ``counts`` = notes per status (and ``total``) of the bundle (all bundles
    when None), always exact. ``hide_audit_pending``: leave out (of all three) the notes drawn
    for audit still waiting for a verdict, and their twins (see the module docstring)."""
    if status is not None and status not in STATUSES:
        raise ReviewError(f"the status given is not one of {', '.join(STATUSES)}")
    try:
        offset, limit = max(0, int(offset)), max(0, min(int(limit), MAX_PAGE))
        p_min = None if p_min is None else float(p_min)
        p_max = None if p_max is None else float(p_max)
    except (TypeError, ValueError):
        raise ReviewError("offset and limit must be integers, p_min and p_max numbers") from None
    scope = [n.c.bundle_id == bundle_id] if bundle_id else []
    if hide_audit_pending:
        # read once (index-only: ix_review_notes_audit) rather than as a subquery of each of the
        # page's statements; ints, so rendered inline (no bound-parameter limit)
        blind = sorted({int(i) for row in conn.execute(audit_blind_ids(bundle_id)) for i in row if i is not None})
        if blind:
            scope.append(n.c.id.not_in(bindparam("audit_blind", blind, expanding=True, literal_execute=True)))
    counts = {s: 0 for s in STATUSES}
    for name, count in conn.execute(select(n.c.status, func.count()).where(*scope).group_by(n.c.status)):
        counts[name] = int(count)
    counts["total"] = sum(counts[s] for s in STATUSES)
    filters = _filters(reason=reason, code=code, p_min=p_min, p_max=p_max,
                       wrap=conn.dialect.name == "sqlite")
    where = list(scope)
    if status:
        where.append(n.c.status == status)
    capped = False
    if not filters:  # the counts say it
        total = counts[status] if status else counts["total"]
    else:
        threshold = max(NARROW_MIN, int(NARROW_FRACTION * counts["total"]))
        narrow = [f for f in filters if _size(conn, f, threshold) < threshold]
        where += [n.c.note_key.in_(f.keys) for f in narrow]
        where += [f.probe for f in filters if f not in narrow]
        if narrow:
            total = int(conn.execute(select(func.count()).select_from(n).where(*where)).scalar_one())
        else:
            bound = max(COUNT_CAP, offset + limit + 1)
            sub = select(n.c.id).where(*where).limit(bound + 1).subquery()
            total = int(conn.execute(select(func.count()).select_from(sub)).scalar_one())
            if total > bound:
                total, capped = bound, True
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
    return QueuePage(items=items, total=total, counts=counts, total_capped=capped)
