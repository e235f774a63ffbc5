"""The review store's tables (SQLAlchemy 2 Core), the shape the Alembic migrations create.

Why Core tables rather than ORM classes: the import writes 100,000 notes in bulk
(``executemany``), and every read builds plain :mod:`medcoder.review.views` values anyway.

Tables are prefixed ``review_`` (and Alembic's version table is ``review_alembic_version``) so a
team's PostgreSQL database can also hold MLflow's tables without a name clash.

* ``review_events`` is the record: append-only (database triggers refuse UPDATE/DELETE), one row
  per decision, ``UNIQUE(note_key, seq)`` for optimistic concurrency.
* ``review_notes.status/version/n_decided/submitted_*`` are a projection of the events, written
  in the same transaction as each event so the queue of 100,000 notes is one indexed query; the
  note page derives its state from the events themselves.
* a note's predicted codes are one JSON document (``codes_json``: the predictions file's
  ``codes``, normalised), read whole by the note page; ``review_note_codes`` repeats only what the
  queue filters on (code, decision, probability), so the import writes 8 small rows per note
  rather than 8 wide ones.
* leases (``holder``/``lease_token``/``lease_expires``) and login throttling are working state,
  not decisions, so they are ordinary mutable columns.
* the audit loop (revision 0003): ``review_audit_events`` (blind verdicts) and
  ``review_audit_lifts`` are append-only like ``review_events``, because a bundle's suspension is
  recomputed from them; ``review_audit_draws`` records each import's seeded draws; a second review
  (double review) is a ``review_notes`` row of its own (``review_round`` 2, ``twin_of``).
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    false,
    true,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator

__all__ = [
    "VERSION_TABLE", "UTCDateTime", "audit_draws", "audit_events", "audit_lifts", "bundles", "code_frequency",
    "events", "imports", "login_failures", "metadata", "note_codes", "note_reasons", "notes", "users",
]

VERSION_TABLE = "review_alembic_version"
ID_LEN = 255
CODE_LEN = 32


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on both dialects (SQLite stores naive text, PostgreSQL
    ``timestamptz``), so lease expiry compares the same way everywhere."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Dialect) -> Any:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the review store; use UTC-aware datetimes")
        value = value.astimezone(timezone.utc)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> Any:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=timezone.utc)
        return value.astimezone(timezone.utc)


# SQLite only autoincrements an INTEGER PRIMARY KEY: BigInteger there would not.
BigId = BigInteger().with_variant(Integer(), "sqlite")

metadata = MetaData()

bundles = Table(
    "review_bundles", metadata,
    Column("bundle_id", String(ID_LEN), primary_key=True),
    Column("codeset_fy", Integer, nullable=True),
    Column("created_at", UTCDateTime, nullable=False),
    # the certified guarantee the audit monitor checks (revision 0003; set by the workflow)
    Column("target_precision", Float, nullable=True),
    Column("delta", Float, nullable=True),
    # the monitor's boundary setting (audited codes where it is tightest), pinned with the
    # guarantee the first time it is set, so a past alarm cannot vanish by changing it
    Column("n_opt", Integer, nullable=True),
)

imports = Table(
    "review_imports", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("bundle_id", String(ID_LEN), ForeignKey("review_bundles.bundle_id"), nullable=False),
    Column("file_name", Text, nullable=False),
    Column("file_sha256", String(64), nullable=False),
    Column("at", UTCDateTime, nullable=False),
    Column("n_notes", Integer, nullable=False),
    Column("n_imported", Integer, nullable=False),
)

notes = Table(
    "review_notes", metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("note_key", String(32), nullable=False, unique=True),
    Column("bundle_id", String(ID_LEN), ForeignKey("review_bundles.bundle_id"), nullable=False),
    Column("note_id", String(ID_LEN), nullable=False),
    Column("import_id", Integer, ForeignKey("review_imports.id"), nullable=False),
    Column("codeset_fy", Integer, nullable=True),
    Column("policy_version", String(ID_LEN), nullable=False),
    Column("input_sha256", String(64), nullable=False),
    Column("text", Text, nullable=False),
    Column("codes_json", Text, nullable=False),
    Column("document_decision", String(32), nullable=False),
    Column("predicted_at", String(64), nullable=False),
    Column("truncated", Boolean, nullable=False),
    Column("n_codes", Integer, nullable=False),
    Column("n_routed", Integer, nullable=False),
    # projection of the events (same transaction as each event)
    Column("status", String(16), nullable=False, server_default="open"),
    Column("version", Integer, nullable=False, server_default="0"),
    Column("n_decided", Integer, nullable=False, server_default="0"),
    Column("submitted_at", UTCDateTime, nullable=True),
    Column("submitted_by", String(64), nullable=True),
    # lease (working state)
    Column("holder", String(64), nullable=True),
    Column("lease_token", String(64), nullable=True),
    Column("lease_expires", UTCDateTime, nullable=True),
    # audit sample and double review (revision 0003): ``audit`` = drawn into the blind audit
    # sample; a second, independent review is its own note row (``review_round`` 2, note id
    # ``<id>#2``) whose ``twin_of`` is the first review's note_key
    Column("audit", Boolean, nullable=False, server_default=false()),
    Column("review_round", Integer, nullable=False, server_default="1"),
    Column("twin_of", String(32), nullable=True),
    UniqueConstraint("bundle_id", "note_id", name="uq_review_notes_bundle_note"),
    Index("ix_review_notes_bundle", "bundle_id", "id"),
    Index("ix_review_notes_bundle_status", "bundle_id", "status", "id"),
    Index("ix_review_notes_status", "status", "id"),
    # audit first: the drawn notes of any bundle; note_key makes "which drawn notes wait for a verdict" index-only
    Index("ix_review_notes_audit", "audit", "bundle_id", "note_key"),
    Index("ix_review_notes_twin_of", "twin_of"),
)

note_codes = Table(
    # what the queue filters on (code, model decision, probability); the full predicted codes
    # (description, reasons, evidence, sources) are one JSON document per note, notes.codes_json
    "review_note_codes", metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("note_key", String(32), ForeignKey("review_notes.note_key"), nullable=False),
    Column("code", String(CODE_LEN), nullable=False),
    Column("decision", String(16), nullable=False),
    Column("probability", Float, nullable=False),
    Index("ix_review_note_codes_code", "code", "note_key"),
    Index("ix_review_note_codes_routed", "decision", "probability", "note_key"),
    # the queue's per-note probe ("has this note a routed code in [p_min, p_max]?"), revision 0002
    Index("ix_review_note_codes_note", "note_key", "decision", "probability"),
)

note_reasons = Table(
    "review_note_reasons", metadata,
    Column("note_key", String(32), ForeignKey("review_notes.note_key"), primary_key=True),
    Column("reason", String(64), primary_key=True),
    Index("ix_review_note_reasons_reason", "reason", "note_key"),
)

events = Table(
    "review_events", metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("note_key", String(32), ForeignKey("review_notes.note_key"), nullable=False),
    Column("seq", Integer, nullable=False),
    Column("at", UTCDateTime, nullable=False),
    Column("username", String(64), nullable=False),
    Column("action", String(16), nullable=False),
    Column("code", String(CODE_LEN), nullable=True),
    Column("code_before", String(CODE_LEN), nullable=True),
    Column("code_after", String(CODE_LEN), nullable=True),
    Column("comment", Text, nullable=True),
    Column("evidence", Text, nullable=True),
    Column("bundle_id", String(ID_LEN), nullable=False),
    Column("codeset_fy", Integer, nullable=True),
    Column("policy_version", String(ID_LEN), nullable=False),
    Column("input_sha256", String(64), nullable=False),
    UniqueConstraint("note_key", "seq", name="uq_review_events_note_seq"),
)

users = Table(
    "review_users", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("username", String(64), nullable=False, unique=True),
    Column("role", String(16), nullable=False),
    Column("password_hash", String(255), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("active", Boolean, nullable=False, server_default=true()),
)

login_failures = Table(
    "review_login_failures", metadata,
    Column("username", String(64), primary_key=True),
    Column("client", String(255), primary_key=True),
    Column("failures", Integer, nullable=False),
    Column("first_at", UTCDateTime, nullable=False),
    Column("locked_until", UTCDateTime, nullable=True),
)


audit_draws = Table(
    # one row per import and kind ("audit": the blind audit sample, "double": the notes given a
    # second review): what was drawn, from how many, with which seed, so a draw can be re-derived
    "review_audit_draws", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("import_id", Integer, ForeignKey("review_imports.id"), nullable=False),
    Column("bundle_id", String(ID_LEN), ForeignKey("review_bundles.bundle_id"), nullable=False),
    Column("kind", String(16), nullable=False),
    Column("seed", BigInteger, nullable=False),
    Column("rate", Float, nullable=False),
    Column("min_per_import", Integer, nullable=False),
    Column("n_eligible", Integer, nullable=False),
    Column("n_drawn", Integer, nullable=False),
    Column("note_keys", Text, nullable=False),
    Column("at", UTCDateTime, nullable=False),
    UniqueConstraint("import_id", "kind", name="uq_review_audit_draws_import_kind"),
)

audit_events = Table(
    # append-only (triggers refuse UPDATE/DELETE, and TRUNCATE on PostgreSQL): one blind verdict
    # per auto-accepted code of an audited note
    "review_audit_events", metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("bundle_id", String(ID_LEN), nullable=False),
    Column("note_key", String(32), ForeignKey("review_notes.note_key"), nullable=False),
    Column("code", String(CODE_LEN), nullable=False),
    Column("verdict", String(16), nullable=False),
    Column("replaced_by", String(CODE_LEN), nullable=True),
    Column("comment", Text, nullable=True),
    Column("username", String(64), nullable=False),
    Column("at", UTCDateTime, nullable=False),
    Column("codeset_fy", Integer, nullable=True),
    Column("policy_version", String(ID_LEN), nullable=False),
    Column("input_sha256", String(64), nullable=False),
    UniqueConstraint("note_key", "code", name="uq_review_audit_events_note_code"),
    Index("ix_review_audit_events_bundle", "bundle_id", "id"),
)

audit_lifts = Table(
    # append-only: an admin's lift of a suspension; the audited stream restarts after
    # ``last_audit_event_id``
    "review_audit_lifts", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("bundle_id", String(ID_LEN), ForeignKey("review_bundles.bundle_id"), nullable=False),
    Column("username", String(64), nullable=False),
    Column("reason", Text, nullable=False),
    Column("at", UTCDateTime, nullable=False),
    Column("last_audit_event_id", BigInteger, nullable=False),
)

code_frequency = Table(
    # training frequency of each code of a bundle (its labels.json), for the agreement reports
    "review_code_frequency", metadata,
    Column("bundle_id", String(ID_LEN), ForeignKey("review_bundles.bundle_id"), primary_key=True),
    Column("code", String(CODE_LEN), primary_key=True),
    Column("n", Integer, nullable=False),
)
