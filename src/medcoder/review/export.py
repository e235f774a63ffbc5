"""Exports of the review store, each written atomically (temp file + rename,
:mod:`medcoder.atomic`) so a reader never sees half a file:

* labels: ``{id, text, codes, verified}`` JSON Lines, the ``data=jsonl`` format (which reads
  ``id``, ``text`` and ``codes`` and leaves other fields alone), so reviewed notes can be trained
  on; see :func:`note_labels` for which notes and which codes;
* decisions: one CSV row per code of every note, with the model's original decision and
  probability, the current human decision, who made it and when;
* events: the event log, one JSON object per event, in id order.

Why chunks: 100,000 notes do not fit comfortably in memory with their events; each chunk of
notes is read with its codes and events in three queries.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import ColumnElement, or_, select
from sqlalchemy.engine import Connection

from medcoder.atomic import atomic_open
from medcoder.codesets import dotless
from medcoder.review import models as m
from medcoder.review.audit import fully_audited
from medcoder.review.events import NoteState, replay

__all__ = [
    "DECISION_COLUMNS", "NoteRecord", "iter_notes", "labelled", "note_labels", "write_decisions", "write_events",
    "write_labels",
]

_CHUNK = 1000
DECISION_COLUMNS = (
    "bundle_id", "note_id", "note_key", "status", "code", "description", "probability",
    "model_decision", "reasons", "decision", "new_code", "decided_by", "decided_at", "comment",
    "submitted_by",
)


@dataclass
class NoteRecord:
    """A note row, its predicted code rows (display order), its replayed state, its events and
    its audit verdicts (both in id order)."""

    note: Any
    codes: list[Any]
    state: NoteState
    last_at: dict[str, Any]
    events: list[Any] = field(default_factory=list)
    verdicts: list[Any] = field(default_factory=list)


class _CodeRow:
    """A predicted code of ``codes_json`` with attribute access."""

    def __init__(self, d: dict[str, Any]) -> None:
        self.__dict__.update(d)


class _EventRow:
    """An event row with its evidence decoded, the shape :func:`replay` reads."""

    def __init__(self, row: Any) -> None:
        self.__dict__.update(row._mapping)
        self.evidence = json.loads(row.evidence) if row.evidence else None


def labelled() -> ColumnElement[bool]:
    """The notes whose labels are exported: submitted, or drawn for audit, fully audited and
    without a routed code (nobody had anything to submit; every code was checked by the audit).
    A note with routed codes still undecided is not exported on its audit alone: its routed codes
    are the model's uncertain ones, and exporting it would make them labels (or drop them) with
    no human having looked."""
    n = m.notes
    return or_(n.c.submitted_at.is_not(None), fully_audited(n) & (n.c.n_routed == 0))


def iter_notes(conn: Connection, *, submitted_only: bool, bundle_id: str | None,
               first_round_only: bool = False, labelled_only: bool = False) -> Iterator[NoteRecord]:
    """Notes in import order with codes, replayed events and audit verdicts, read in chunks; with
    ``first_round_only`` without the second reviews of double-reviewed notes; with
    ``labelled_only`` only the notes :func:`labelled` selects."""
    n, e, ae = m.notes, m.events, m.audit_events
    last_id = 0
    while True:
        stmt = select(n).where(n.c.id > last_id)
        if labelled_only:
            stmt = stmt.where(labelled())
        if first_round_only:
            stmt = stmt.where(n.c.review_round == 1)
        if submitted_only:
            stmt = stmt.where(n.c.submitted_at.is_not(None))
        if bundle_id:
            stmt = stmt.where(n.c.bundle_id == bundle_id)
        rows = conn.execute(stmt.order_by(n.c.id).limit(_CHUNK)).all()
        if not rows:
            return
        last_id = rows[-1].id
        keys = [r.note_key for r in rows]
        evs: dict[str, list[Any]] = {}
        for row in conn.execute(select(e).where(e.c.note_key.in_(keys)).order_by(e.c.id)):
            evs.setdefault(row.note_key, []).append(_EventRow(row))
        verdicts: dict[str, list[Any]] = {}
        for row in conn.execute(select(ae).where(ae.c.note_key.in_(keys)).order_by(ae.c.id)):
            verdicts.setdefault(row.note_key, []).append(row)
        for note in rows:
            note_codes = [_CodeRow(x) for x in json.loads(note.codes_json)]
            note_events = evs.get(note.note_key, [])
            last_at: dict[str, Any] = {}
            for ev in note_events:
                for code in (ev.code_before, ev.code_after):
                    if code:
                        last_at[code] = ev.at
            yield NoteRecord(note, note_codes, replay([x.code for x in note_codes], note_events), last_at,
                             note_events, verdicts.get(note.note_key, []))


def note_labels(rec: NoteRecord) -> tuple[list[str], bool]:
    """``(codes, verified)`` of one note.

    ``codes``: the reviewer's final codes (:meth:`~medcoder.review.events.NoteState.final_codes`:
    an undecided auto-accepted code stays), then the audit verdicts, in verdict order: a code
    judged ``wrong`` is dropped (in any spelling) and its ``replaced_by`` added; a code judged
    ``correct`` is kept (added back if a reviewer had dropped it). The auditor is the designated,
    independent check, so a verdict overrides a reviewer's decision on the code; an admin's
    correction of that code made at or after the verdict overrides the verdict (the admin is the
    arbiter, and an admin who audited the note may not correct it).

    ``verified``: every auto-accepted code of the note was decided by a reviewer (any decision,
    query included) or given an audit verdict, so the labels do not merely echo the model's
    unchecked auto-accepts (a note without auto-accepted codes is verified)."""
    codes = rec.state.final_codes([(x.code, x.decision) for x in rec.codes])
    corrected: dict[str, Any] = {}
    for ev in rec.events:
        if ev.action == "correct":
            for c in (ev.code_before, ev.code_after):
                if c:
                    corrected[dotless(c)] = ev.at
    judged: set[str] = set()
    for v in rec.verdicts:
        key = dotless(v.code)
        judged.add(key)
        later = corrected.get(key)
        if later is not None and later >= v.at:
            continue
        if v.verdict == "wrong":
            codes = [c for c in codes if dotless(c) != key]
            if v.replaced_by:
                codes.append(v.replaced_by)
        else:
            codes.append(v.code)
    out: dict[str, str] = {}
    for c in codes:
        out.setdefault(dotless(c), c)
    verified = all(dotless(x.code) in judged or rec.state.codes[x.code].current is not None
                   for x in rec.codes if x.decision == "auto_accept")
    return list(out.values()), verified


def write_labels(conn: Connection, path: Path, *, bundle_id: str | None) -> int:
    """The :func:`labelled` notes as ``{id, text, codes, verified}`` lines (:func:`note_labels`);
    returns the number written. Each note once, from its first review: a second review (double
    review) measures agreement, and two label sets of one note would weigh it twice in
    training."""
    count = 0
    with atomic_open(path, "w", encoding="utf-8") as fh:
        for rec in iter_notes(conn, submitted_only=False, bundle_id=bundle_id, first_round_only=True,
                              labelled_only=True):
            codes, verified = note_labels(rec)
            fh.write(json.dumps({"id": rec.note.note_id, "text": rec.note.text, "codes": codes,
                                 "verified": verified}, ensure_ascii=False) + "\n")
            count += 1
    return count


def _cell(value: str) -> str:
    """Free text for a spreadsheet: a leading ``= + - @`` would make Excel run it as a formula
    (CSV injection), so such a cell gets a leading apostrophe."""
    return f"'{value}" if value[:1] in ("=", "+", "-", "@", "\t", "\r") else value


def _decision_rows(rec: NoteRecord) -> Iterator[dict[str, Any]]:
    note = rec.note
    base = {"bundle_id": note.bundle_id, "note_id": note.note_id, "note_key": note.note_key,
            "status": note.status, "submitted_by": note.submitted_by or ""}
    for x in rec.codes:
        st = rec.state.codes.get(x.code)
        at = rec.last_at.get(x.code) if st is not None and st.current else None
        yield {**base, "code": x.code, "description": _cell(x.description), "probability": f"{x.probability:.6f}",
               "model_decision": x.decision, "reasons": ";".join(x.reasons),
               "decision": (st.current or "") if st else "", "new_code": (st.replaced_by or "") if st else "",
               "decided_by": (st.decided_by or "") if st and st.current else "",
               "decided_at": at.isoformat() if at else "", "comment": _cell(st.comment or "") if st else ""}
    for code, st in rec.state.added.items():
        at = rec.last_at.get(code)
        yield {**base, "code": code, "description": "", "probability": "", "model_decision": "",
               "reasons": "", "decision": st.current or "", "new_code": st.replaced_by or "",
               "decided_by": st.decided_by or "", "decided_at": at.isoformat() if at else "",
               "comment": _cell(st.comment or "")}


def write_decisions(conn: Connection, path: Path, *, bundle_id: str | None, submitted_only: bool) -> int:
    """One CSV row per code (predicted or added); returns the number of rows."""
    count = 0
    with atomic_open(path, "w", encoding="utf-8", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=DECISION_COLUMNS)
        writer.writeheader()
        for rec in iter_notes(conn, submitted_only=submitted_only, bundle_id=bundle_id):
            for row in _decision_rows(rec):
                writer.writerow(row)
                count += 1
    return count


def write_events(conn: Connection, path: Path, to_dict: Any) -> int:
    """Every event as one JSON line in id order; ``to_dict`` turns a row into the line's dict."""
    e = m.events
    count, last_id = 0, 0
    with atomic_open(path, "w", encoding="utf-8") as fh:
        while True:
            rows = conn.execute(select(e).where(e.c.id > last_id).order_by(e.c.id).limit(_CHUNK * 5)).all()
            if not rows:
                break
            last_id = rows[-1].id
            for row in rows:
                fh.write(json.dumps(to_dict(row), ensure_ascii=False) + "\n")
                count += 1
    return count
