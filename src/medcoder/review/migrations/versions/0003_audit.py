"""The audit loop's tables: the bundle's certified guarantee (target, δ and the monitor's
``n_opt``, pinned together when first set), the audit and double-review draws,
append-only audit verdicts and lifts (triggers refuse UPDATE/DELETE, and TRUNCATE on PostgreSQL,
as for ``review_events``), and the training frequency of each code.

Why the verdicts and lifts are append-only: the suspension of a bundle is recomputed from them
(:meth:`medcoder.review.ReviewStore.audit_state`), so they are the record; an edited verdict would
silently un-suspend a bundle.

Why a second review is a note row of its own (``review_round`` 2, ``twin_of``): every rule of the
queue, the lease, the events and submit then holds for it unchanged, and its events are its own,
so its reviewer never sees the first reviewer's decisions.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

_ID = 255
_CODE = 32
_TS = sa.DateTime(timezone=True)
_BIGID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_APPEND_ONLY = ("review_audit_events", "review_audit_lifts")


def _sqlite_triggers(table: str) -> list[str]:
    return [
        f"""CREATE TRIGGER {table}_no_update BEFORE UPDATE ON {table}
           BEGIN SELECT RAISE(ABORT, '{table} is append-only: no UPDATE'); END""",
        f"""CREATE TRIGGER {table}_no_delete BEFORE DELETE ON {table}
           BEGIN SELECT RAISE(ABORT, '{table} is append-only: no DELETE'); END""",
    ]


def _pg_triggers(table: str) -> list[str]:
    return [
        f"""CREATE FUNCTION {table}_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
           BEGIN RAISE EXCEPTION '{table} is append-only: no %', TG_OP; END $$""",
        f"""CREATE TRIGGER {table}_no_update_delete BEFORE UPDATE OR DELETE ON {table}
           FOR EACH ROW EXECUTE FUNCTION {table}_append_only()""",
        f"""CREATE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {table}
           FOR EACH STATEMENT EXECUTE FUNCTION {table}_append_only()""",
    ]


def upgrade() -> None:
    op.add_column("review_bundles", sa.Column("target_precision", sa.Float, nullable=True))
    op.add_column("review_bundles", sa.Column("delta", sa.Float, nullable=True))
    op.add_column("review_bundles", sa.Column("n_opt", sa.Integer, nullable=True))
    op.add_column("review_notes", sa.Column("audit", sa.Boolean, nullable=False, server_default=sa.false()))
    op.add_column("review_notes", sa.Column("review_round", sa.Integer, nullable=False, server_default="1"))
    op.add_column("review_notes", sa.Column("twin_of", sa.String(32), nullable=True))
    # audit first: the drawn notes of any bundle (the audit queue, and the queue hiding them from
    # auditors); note_key makes "which drawn notes wait for a verdict" index-only
    op.create_index("ix_review_notes_audit", "review_notes", ["audit", "bundle_id", "note_key"])
    op.create_index("ix_review_notes_twin_of", "review_notes", ["twin_of"])
    op.create_table(
        "review_audit_draws",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("import_id", sa.Integer, sa.ForeignKey("review_imports.id"), nullable=False),
        sa.Column("bundle_id", sa.String(_ID), sa.ForeignKey("review_bundles.bundle_id"), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("seed", sa.BigInteger, nullable=False),
        sa.Column("rate", sa.Float, nullable=False),
        sa.Column("min_per_import", sa.Integer, nullable=False),
        sa.Column("n_eligible", sa.Integer, nullable=False),
        sa.Column("n_drawn", sa.Integer, nullable=False),
        sa.Column("note_keys", sa.Text, nullable=False),
        sa.Column("at", _TS, nullable=False),
        sa.UniqueConstraint("import_id", "kind", name="uq_review_audit_draws_import_kind"),
    )
    op.create_table(
        "review_audit_events",
        sa.Column("id", _BIGID, primary_key=True, autoincrement=True),
        sa.Column("bundle_id", sa.String(_ID), nullable=False),
        sa.Column("note_key", sa.String(32), sa.ForeignKey("review_notes.note_key"), nullable=False),
        sa.Column("code", sa.String(_CODE), nullable=False),
        sa.Column("verdict", sa.String(16), nullable=False),
        sa.Column("replaced_by", sa.String(_CODE), nullable=True),
        sa.Column("comment", sa.Text, nullable=True),
        sa.Column("username", sa.String(64), nullable=False),
        sa.Column("at", _TS, nullable=False),
        sa.Column("codeset_fy", sa.Integer, nullable=True),
        sa.Column("policy_version", sa.String(_ID), nullable=False),
        sa.Column("input_sha256", sa.String(64), nullable=False),
        sa.UniqueConstraint("note_key", "code", name="uq_review_audit_events_note_code"),
    )
    op.create_index("ix_review_audit_events_bundle", "review_audit_events", ["bundle_id", "id"])
    op.create_table(
        "review_audit_lifts",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("bundle_id", sa.String(_ID), sa.ForeignKey("review_bundles.bundle_id"), nullable=False),
        sa.Column("username", sa.String(64), nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("at", _TS, nullable=False),
        sa.Column("last_audit_event_id", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "review_code_frequency",
        sa.Column("bundle_id", sa.String(_ID), sa.ForeignKey("review_bundles.bundle_id"), primary_key=True),
        sa.Column("code", sa.String(_CODE), primary_key=True),
        sa.Column("n", sa.Integer, nullable=False),
    )
    postgres = op.get_bind().dialect.name == "postgresql"
    for table in _APPEND_ONLY:
        for statement in _pg_triggers(table) if postgres else _sqlite_triggers(table):
            op.execute(statement)


def downgrade() -> None:
    postgres = op.get_bind().dialect.name == "postgresql"
    for table in _APPEND_ONLY:
        if postgres:
            op.execute(f"DROP TRIGGER IF EXISTS {table}_no_truncate ON {table}")
            op.execute(f"DROP TRIGGER IF EXISTS {table}_no_update_delete ON {table}")
            op.execute(f"DROP FUNCTION IF EXISTS {table}_append_only()")
        else:
            op.execute(f"DROP TRIGGER IF EXISTS {table}_no_update")
            op.execute(f"DROP TRIGGER IF EXISTS {table}_no_delete")
    for table in ("review_code_frequency", "review_audit_lifts", "review_audit_events", "review_audit_draws"):
        op.drop_table(table)
    op.drop_index("ix_review_notes_twin_of", table_name="review_notes")
    op.drop_index("ix_review_notes_audit", table_name="review_notes")
    with op.batch_alter_table("review_notes") as batch:
        batch.drop_column("twin_of")
        batch.drop_column("review_round")
        batch.drop_column("audit")
    with op.batch_alter_table("review_bundles") as batch:
        batch.drop_column("n_opt")
        batch.drop_column("delta")
        batch.drop_column("target_precision")
