"""line safety: reputation and status, pause, the line's own day and hours, pace; held chat-days

Revision ID: 0005_line_safety
Revises: 0004_webhook_pending
Create Date: 2026-12-02 09:00:00

Why this is safe on a populated database with workers running:
- every column added to `lines` is nullable with no default: PostgreSQL only edits the catalog,
  no row is rewritten; the code before this revision never reads them;
- the new tables (`account_controls`, `account_warnings`) are new;
- the checks on `lines` and the widened status check on `share_days` are added NOT VALID (a
  moment's lock, no scan) and then validated, which scans under SHARE UPDATE EXCLUSIVE: reads
  and writes go on. The old status check is dropped only after its wider successor is in place,
  so no moment accepts an unknown status. The code before this revision never writes `held`;
- `ix_chats_line_phone_id` is built CONCURRENTLY, outside the migration's transaction (writes to
  `chats` go on while it builds). If that build fails it leaves an INVALID index: drop it and run
  the upgrade again.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005_line_safety"
down_revision: str | None = "0004_webhook_pending"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

OLD_STATUSES = "('queued', 'claimed', 'retry', 'unknown', 'succeeded', 'skipped', 'failed')"
NEW_STATUSES = "('queued', 'held', 'claimed', 'retry', 'unknown', 'succeeded', 'skipped', 'failed')"

LINE_CHECKS = {
    "ck_lines_reputation": "reputation IN ('HEALTHY', 'AT_RISK', 'CRITICAL')",
    "ck_lines_linq_status": "linq_status IN ('ACTIVE', 'FLAGGED')",
    "ck_lines_hours": (
        "(hours_start IS NULL) = (hours_end IS NULL) AND hours_start >= 0 AND hours_start < hours_end "
        "AND hours_end <= 1440"
    ),
    "ck_lines_pace": "pace_per_minute >= 0",
}


def _checked(table: str, name: str, condition: str) -> None:
    op.execute(f"ALTER TABLE {table} ADD CONSTRAINT {name} CHECK ({condition}) NOT VALID")
    op.execute(f"ALTER TABLE {table} VALIDATE CONSTRAINT {name}")


def upgrade() -> None:
    for name, kind in (
        ("reputation", sa.String(length=16)),
        ("reputation_at", sa.DateTime(timezone=True)),
        ("linq_status", sa.String(length=16)),
        ("linq_status_at", sa.DateTime(timezone=True)),
        ("timezone", sa.Text()),
        ("hours_start", sa.SmallInteger()),
        ("hours_end", sa.SmallInteger()),
        ("pace_per_minute", sa.Integer()),
        ("paused_at", sa.DateTime(timezone=True)),
        ("paused_until", sa.DateTime(timezone=True)),
        ("paused_reason", sa.Text()),
        ("paused_by", sa.Text()),
    ):
        op.add_column("lines", sa.Column(name, kind, nullable=True))
    for name, condition in LINE_CHECKS.items():
        _checked("lines", name, condition)

    op.create_table(
        "account_controls",
        sa.Column("id", sa.SmallInteger(), nullable=False),
        sa.Column("paused_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("paused_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("paused_reason", sa.Text(), nullable=True),
        sa.Column("paused_by", sa.Text(), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.CheckConstraint("id = 1", name=op.f("ck_account_controls_singleton")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_account_controls")),
    )
    op.create_table(
        "account_warnings",
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("kind", sa.String(length=64), nullable=False),
        sa.Column("subject", sa.String(length=200), nullable=False),
        sa.Column("summary", sa.Text(), nullable=False),
        sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("event_id", sa.String(length=128), nullable=True),
        sa.Column("raised_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("acknowledged_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("acknowledged_by", sa.Text(), nullable=True),
        sa.Column("resolved_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("resolution", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_account_warnings")),
    )
    op.create_index("ix_account_warnings_subject", "account_warnings", ["subject"], unique=False)

    # share_days may now be `held`: the wider check first, then the old one goes.
    op.execute(
        f"ALTER TABLE share_days ADD CONSTRAINT ck_share_days_status_v2 CHECK (status IN {NEW_STATUSES}) "
        "NOT VALID"
    )
    op.execute("ALTER TABLE share_days DROP CONSTRAINT ck_share_days_status")
    op.execute("ALTER TABLE share_days VALIDATE CONSTRAINT ck_share_days_status_v2")
    op.execute("ALTER TABLE share_days RENAME CONSTRAINT ck_share_days_status_v2 TO ck_share_days_status")

    with op.get_context().autocommit_block():
        op.execute("CREATE INDEX CONCURRENTLY IF NOT EXISTS ix_chats_line_phone_id ON chats (line_phone, id)")


def downgrade() -> None:
    with op.get_context().autocommit_block():
        op.execute("DROP INDEX CONCURRENTLY IF EXISTS ix_chats_line_phone_id")
    # Held chat-days have no place in the old schema: they end as they would at day's end.
    op.execute(
        "UPDATE share_days SET status = 'skipped', finished_at = now(), updated_at = now() "
        "WHERE status = 'held'"
    )
    op.execute("ALTER TABLE share_days DROP CONSTRAINT ck_share_days_status")
    op.execute(f"ALTER TABLE share_days ADD CONSTRAINT ck_share_days_status CHECK (status IN {OLD_STATUSES})")
    op.drop_index("ix_account_warnings_subject", table_name="account_warnings")
    op.drop_table("account_warnings")
    op.drop_table("account_controls")
    for name in LINE_CHECKS:
        op.execute(f"ALTER TABLE lines DROP CONSTRAINT {name}")
    for name in (
        "paused_by",
        "paused_reason",
        "paused_until",
        "paused_at",
        "pace_per_minute",
        "hours_end",
        "hours_start",
        "timezone",
        "linq_status_at",
        "linq_status",
        "reputation_at",
        "reputation",
    ):
        op.drop_column("lines", name)
