"""A/B tests: the arm of each event and feedback, and the impressions table.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-03

``arm`` is nullable: rows stored before (or outside) a test have none, and the upgrade of
an existing store keeps them as they are.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Add ``arm`` to ``events`` and ``feedback``; create ``impressions``."""
    for table in ("events", "feedback"):
        # Batch mode: SQLite alters a table by copying it (render_as_batch in env.py).
        with op.batch_alter_table(table) as batch:
            batch.add_column(sa.Column("arm", sa.String(8), nullable=True))
    op.create_table(
        "impressions",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True),
        sa.Column("user_id", sa.String(128), nullable=False),
        sa.Column("item_id", sa.String(128), nullable=False),
        sa.Column("arm", sa.String(8), nullable=False),
        sa.Column("model_version", sa.String(128), nullable=True),
        sa.Column("rank", sa.Integer(), nullable=False),
        sa.Column("received_at", sa.Float(), nullable=False),
    )
    op.create_index("ix_impressions_received_at", "impressions", ["received_at"])


def downgrade() -> None:
    """Drop ``impressions`` and the ``arm`` columns."""
    op.drop_table("impressions")
    for table in ("feedback", "events"):
        with op.batch_alter_table(table) as batch:
            batch.drop_column("arm")
