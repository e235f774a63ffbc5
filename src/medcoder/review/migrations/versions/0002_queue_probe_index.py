"""The queue's per-note probe index: ``review_note_codes (note_key, decision, probability)``.

Why: a filtered queue page walks the notes in import order and asks each one "has a routed code
in this probability range?" (an ``EXISTS`` probe), stopping at the page's last note, instead of
materialising every matching note of 100,000 (see :mod:`medcoder.review.queue`). The probe needs
the codes of one note by ``note_key``; no index started with it.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-03
"""

from __future__ import annotations

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_review_note_codes_note", "review_note_codes", ["note_key", "decision", "probability"])


def downgrade() -> None:
    op.drop_index("ix_review_note_codes_note", table_name="review_note_codes")
