"""ingestion: webhook dedupe, resumable chat sync, message lookups

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-24 06:37:32.168263

Only new tables: the code before this revision never reads them, so it keeps running.

A migration must not break the code version running before it (workers keep running during a
deploy): add before you use, stop using before you drop.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "webhook_events",
        sa.Column("event_id", sa.String(length=128), nullable=False),
        sa.Column("webhook_id", sa.String(length=128), nullable=True),
        sa.Column("event_type", sa.String(length=64), nullable=False),
        sa.Column("chat_id", sa.Uuid(), nullable=True),
        sa.Column("deliveries", postgresql.ARRAY(sa.Text()), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column(
            "last_delivery_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False
        ),
        sa.PrimaryKeyConstraint("event_id", name=op.f("pk_webhook_events")),
    )
    op.create_index("ix_webhook_events_received_at", "webhook_events", ["received_at"], unique=False)
    op.create_table(
        "sync_cursors",
        sa.Column("line_phone", sa.String(length=16), nullable=False),
        sa.Column("cursor", sa.Text(), nullable=True),
        sa.Column("pages", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("chats", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.ForeignKeyConstraint(
            ["line_phone"],
            ["lines.phone_number"],
            name=op.f("fk_sync_cursors_line_phone_lines"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("line_phone", name=op.f("pk_sync_cursors")),
    )
    op.create_table(
        "message_lookups",
        sa.Column("chat_id", sa.Uuid(), nullable=False),
        sa.Column("cursor", sa.Text(), nullable=True),
        sa.Column("pages", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("found_outbound", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.Column("checked_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["chat_id"], ["chats.id"], name=op.f("fk_message_lookups_chat_id_chats"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("chat_id", name=op.f("pk_message_lookups")),
    )


def downgrade() -> None:
    op.drop_table("message_lookups")
    op.drop_table("sync_cursors")
    op.drop_index("ix_webhook_events_received_at", table_name="webhook_events")
    op.drop_table("webhook_events")
