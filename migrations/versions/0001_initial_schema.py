"""initial schema

Revision ID: 0001
Revises: (none)
Create Date: 2026-11-24 06:18:20.051629

A migration must not break the code version running before it (workers keep running during a
deploy): add before you use, stop using before you drop.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "audit_events",
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("actor", sa.String(length=32), nullable=False),
        sa.Column("action", sa.String(length=64), nullable=False),
        sa.Column("chat_ref", sa.Text(), nullable=True),
        sa.Column("outcome", sa.String(length=32), nullable=False),
        sa.Column("detail", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_events")),
    )
    op.create_table(
        "lines",
        sa.Column("phone_number", sa.String(length=16), nullable=False),
        sa.Column("first_name", sa.Text(), nullable=True),
        sa.Column("last_name", sa.Text(), nullable=True),
        sa.Column("image_url", sa.Text(), nullable=True),
        sa.Column("card_active", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.Column("card_checked_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("line_type", sa.String(length=16), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.CheckConstraint("phone_number ~ '^\\+[1-9][0-9]{6,14}$'", name=op.f("ck_lines_e164")),
        sa.PrimaryKeyConstraint("phone_number", name=op.f("pk_lines")),
    )
    op.create_table(
        "sweep_runs",
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("scanned", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("enqueued", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.CheckConstraint("kind IN ('sweep', 'recover')", name=op.f("ck_sweep_runs_kind")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sweep_runs")),
    )
    op.create_table(
        "chats",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("line_phone", sa.String(length=16), nullable=False),
        sa.Column("service", sa.String(length=16), nullable=True),
        sa.Column("is_group", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.Column("first_outbound_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_outbound_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("opted_out", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.Column("opted_out_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("not_found_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("health_status", sa.String(length=16), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.CheckConstraint("service IN ('iMessage', 'SMS', 'RCS')", name=op.f("ck_chats_service")),
        sa.ForeignKeyConstraint(
            ["line_phone"], ["lines.phone_number"], name=op.f("fk_chats_line_phone_lines"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_chats")),
    )
    op.create_index("ix_chats_line_phone", "chats", ["line_phone"], unique=False)
    op.create_table(
        "share_days",
        sa.Column("chat_id", sa.Uuid(), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("lease_until", sa.DateTime(timezone=True), nullable=False),
        sa.Column("claim_token", sa.Uuid(), nullable=True),
        sa.Column("attempts", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("claims", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("lost_claims", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("enqueues", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("confirmed_by_rate_limit", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.Column("task_id", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("claimed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.CheckConstraint(
            "status IN ('queued', 'claimed', 'retry', 'unknown', 'succeeded', 'skipped', 'failed')",
            name=op.f("ck_share_days_status"),
        ),
        sa.ForeignKeyConstraint(
            ["chat_id"], ["chats.id"], name=op.f("fk_share_days_chat_id_chats"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("chat_id", "day", name=op.f("pk_share_days")),
    )
    op.create_index("ix_share_days_day_status", "share_days", ["day", "status", "lease_until"], unique=False)
    op.create_table(
        "attempts",
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("chat_id", sa.Uuid(), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("attempt_no", sa.Integer(), nullable=False),
        sa.Column("claim_token", sa.Uuid(), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("outcome", sa.String(length=16), nullable=True),
        sa.Column("http_status", sa.Integer(), nullable=True),
        sa.Column("linq_code", sa.Integer(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("retry_after_s", sa.Float(), nullable=True),
        sa.Column("trace_id", sa.String(length=64), nullable=True),
        sa.Column("task_id", sa.Text(), nullable=True),
        sa.CheckConstraint(
            "outcome IN ('ok', 'retryable', 'fatal', 'unknown')", name=op.f("ck_attempts_outcome")
        ),
        sa.ForeignKeyConstraint(
            ["chat_id", "day"],
            ["share_days.chat_id", "share_days.day"],
            name="fk_attempts_share_days",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_attempts")),
    )
    op.create_index("ix_attempts_chat_started", "attempts", ["chat_id", "started_at"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_attempts_chat_started", table_name="attempts")
    op.drop_table("attempts")
    op.drop_index("ix_share_days_day_status", table_name="share_days")
    op.drop_table("share_days")
    op.drop_index("ix_chats_line_phone", table_name="chats")
    op.drop_table("chats")
    op.drop_table("sweep_runs")
    op.drop_table("lines")
    op.drop_table("audit_events")
