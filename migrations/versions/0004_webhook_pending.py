"""webhook_pending: signed events whose line cardshare cannot resolve yet

Revision ID: 0004_webhook_pending
Revises: 0003
Create Date: 2026-12-02 01:00:00

Only a new, empty table (and its indexes, built while it is empty): no lock on any existing
table, safe on a populated database, and the code before this revision never reads it.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0004_webhook_pending"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "webhook_pending",
        sa.Column("event_id", sa.String(length=128), nullable=False),
        sa.Column("event_type", sa.String(length=64), nullable=False),
        sa.Column("chat_id", sa.Uuid(), nullable=False),
        sa.Column("activity", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.PrimaryKeyConstraint("event_id", name=op.f("pk_webhook_pending")),
    )
    op.create_index("ix_webhook_pending_chat_id", "webhook_pending", ["chat_id"], unique=False)
    op.create_index("ix_webhook_pending_received_at", "webhook_pending", ["received_at"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_webhook_pending_received_at", table_name="webhook_pending")
    op.drop_index("ix_webhook_pending_chat_id", table_name="webhook_pending")
    op.drop_table("webhook_pending")
