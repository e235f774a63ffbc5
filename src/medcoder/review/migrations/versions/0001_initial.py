"""The review store's first schema: bundles, imports, notes and their codes, append-only events
(with triggers refusing UPDATE/DELETE), users and login throttling.

Revision ID: 0001
Revises:
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

_ID = 255
_CODE = 32
_TS = sa.DateTime(timezone=True)
_BIGID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

_SQLITE_TRIGGERS = [
    """CREATE TRIGGER review_events_no_update BEFORE UPDATE ON review_events
       BEGIN SELECT RAISE(ABORT, 'review_events is append-only: no UPDATE'); END""",
    """CREATE TRIGGER review_events_no_delete BEFORE DELETE ON review_events
       BEGIN SELECT RAISE(ABORT, 'review_events is append-only: no DELETE'); END""",
]
_PG_TRIGGERS = [
    """CREATE FUNCTION review_events_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
       BEGIN RAISE EXCEPTION 'review_events is append-only: no %', TG_OP; END $$""",
    """CREATE TRIGGER review_events_no_update_delete BEFORE UPDATE OR DELETE ON review_events
       FOR EACH ROW EXECUTE FUNCTION review_events_append_only()""",
    """CREATE TRIGGER review_events_no_truncate BEFORE TRUNCATE ON review_events
       FOR EACH STATEMENT EXECUTE FUNCTION review_events_append_only()""",
]


def upgrade() -> None:
    op.create_table(
        "review_bundles",
        sa.Column("bundle_id", sa.String(_ID), primary_key=True),
        sa.Column("codeset_fy", sa.Integer, nullable=True),
        sa.Column("created_at", _TS, nullable=False),
    )
    op.create_table(
        "review_imports",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("bundle_id", sa.String(_ID), sa.ForeignKey("review_bundles.bundle_id"), nullable=False),
        sa.Column("file_name", sa.Text, nullable=False),
        sa.Column("file_sha256", sa.String(64), nullable=False),
        sa.Column("at", _TS, nullable=False),
        sa.Column("n_notes", sa.Integer, nullable=False),
        sa.Column("n_imported", sa.Integer, nullable=False),
    )
    op.create_table(
        "review_notes",
        sa.Column("id", _BIGID, primary_key=True, autoincrement=True),
        sa.Column("note_key", sa.String(32), nullable=False, unique=True),
        sa.Column("bundle_id", sa.String(_ID), sa.ForeignKey("review_bundles.bundle_id"), nullable=False),
        sa.Column("note_id", sa.String(_ID), nullable=False),
        sa.Column("import_id", sa.Integer, sa.ForeignKey("review_imports.id"), nullable=False),
        sa.Column("codeset_fy", sa.Integer, nullable=True),
        sa.Column("policy_version", sa.String(_ID), nullable=False),
        sa.Column("input_sha256", sa.String(64), nullable=False),
        sa.Column("text", sa.Text, nullable=False),
        sa.Column("codes_json", sa.Text, nullable=False),
        sa.Column("document_decision", sa.String(32), nullable=False),
        sa.Column("predicted_at", sa.String(64), nullable=False),
        sa.Column("truncated", sa.Boolean, nullable=False),
        sa.Column("n_codes", sa.Integer, nullable=False),
        sa.Column("n_routed", sa.Integer, nullable=False),
        sa.Column("status", sa.String(16), nullable=False, server_default="open"),
        sa.Column("version", sa.Integer, nullable=False, server_default="0"),
        sa.Column("n_decided", sa.Integer, nullable=False, server_default="0"),
        sa.Column("submitted_at", _TS, nullable=True),
        sa.Column("submitted_by", sa.String(64), nullable=True),
        sa.Column("holder", sa.String(64), nullable=True),
        sa.Column("lease_token", sa.String(64), nullable=True),
        sa.Column("lease_expires", _TS, nullable=True),
        sa.UniqueConstraint("bundle_id", "note_id", name="uq_review_notes_bundle_note"),
    )
    op.create_index("ix_review_notes_bundle", "review_notes", ["bundle_id", "id"])
    op.create_index("ix_review_notes_bundle_status", "review_notes", ["bundle_id", "status", "id"])
    op.create_index("ix_review_notes_status", "review_notes", ["status", "id"])
    op.create_table(
        "review_note_codes",
        sa.Column("id", _BIGID, primary_key=True, autoincrement=True),
        sa.Column("note_key", sa.String(32), sa.ForeignKey("review_notes.note_key"), nullable=False),
        sa.Column("code", sa.String(_CODE), nullable=False),
        sa.Column("decision", sa.String(16), nullable=False),
        sa.Column("probability", sa.Float, nullable=False),
    )
    op.create_index("ix_review_note_codes_code", "review_note_codes", ["code", "note_key"])
    op.create_index("ix_review_note_codes_routed", "review_note_codes", ["decision", "probability", "note_key"])
    op.create_table(
        "review_note_reasons",
        sa.Column("note_key", sa.String(32), sa.ForeignKey("review_notes.note_key"), primary_key=True),
        sa.Column("reason", sa.String(64), primary_key=True),
    )
    op.create_index("ix_review_note_reasons_reason", "review_note_reasons", ["reason", "note_key"])
    op.create_table(
        "review_events",
        sa.Column("id", _BIGID, primary_key=True, autoincrement=True),
        sa.Column("note_key", sa.String(32), sa.ForeignKey("review_notes.note_key"), nullable=False),
        sa.Column("seq", sa.Integer, nullable=False),
        sa.Column("at", _TS, nullable=False),
        sa.Column("username", sa.String(64), nullable=False),
        sa.Column("action", sa.String(16), nullable=False),
        sa.Column("code", sa.String(_CODE), nullable=True),
        sa.Column("code_before", sa.String(_CODE), nullable=True),
        sa.Column("code_after", sa.String(_CODE), nullable=True),
        sa.Column("comment", sa.Text, nullable=True),
        sa.Column("evidence", sa.Text, nullable=True),
        sa.Column("bundle_id", sa.String(_ID), nullable=False),
        sa.Column("codeset_fy", sa.Integer, nullable=True),
        sa.Column("policy_version", sa.String(_ID), nullable=False),
        sa.Column("input_sha256", sa.String(64), nullable=False),
        sa.UniqueConstraint("note_key", "seq", name="uq_review_events_note_seq"),
    )
    op.create_table(
        "review_users",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("username", sa.String(64), nullable=False, unique=True),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("password_hash", sa.String(255), nullable=False),
        sa.Column("created_at", _TS, nullable=False),
        sa.Column("active", sa.Boolean, nullable=False, server_default=sa.true()),
    )
    op.create_table(
        "review_login_failures",
        sa.Column("username", sa.String(64), primary_key=True),
        sa.Column("client", sa.String(255), primary_key=True),
        sa.Column("failures", sa.Integer, nullable=False),
        sa.Column("first_at", _TS, nullable=False),
        sa.Column("locked_until", _TS, nullable=True),
    )
    dialect = op.get_bind().dialect.name
    for statement in _PG_TRIGGERS if dialect == "postgresql" else _SQLITE_TRIGGERS:
        op.execute(statement)


def downgrade() -> None:
    dialect = op.get_bind().dialect.name
    if dialect == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS review_events_no_truncate ON review_events")
        op.execute("DROP TRIGGER IF EXISTS review_events_no_update_delete ON review_events")
        op.execute("DROP FUNCTION IF EXISTS review_events_append_only()")
    else:
        op.execute("DROP TRIGGER IF EXISTS review_events_no_update")
        op.execute("DROP TRIGGER IF EXISTS review_events_no_delete")
    for table in ("review_login_failures", "review_users", "review_events", "review_note_reasons",
                  "review_note_codes", "review_notes", "review_imports", "review_bundles"):
        op.drop_table(table)
