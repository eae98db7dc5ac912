"""status summary: today's numbers counted by beat, so `cardshare status` reads one row

Revision ID: 0008_status_summary
Revises: 0007_first_outbound
Create Date: 2026-12-02 08:30:00

What it adds (docs/retention.md §7):
- `status_summaries` (scope text primary key, line_days, counts, unmarked_due, latency jsonb,
  counted_at timestamptz, seconds float8): beat's count pass writes the row "today" every
  CARDSHARE_STATUS_COUNTS_INTERVAL seconds; `cardshare status` and the status page read it
  instead of counting a day of chat-days themselves.

Why this is safe on a populated database with workers running: a new, empty table; nothing
before this revision reads or writes it, and until the first count pass writes it every reader
counts for itself, as before.
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0008_status_summary"
down_revision: str | None = "0007_first_outbound"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE IF NOT EXISTS status_summaries (
            scope varchar(16) NOT NULL,
            line_days jsonb NOT NULL,
            counts jsonb NOT NULL,
            unmarked_due jsonb NOT NULL,
            latency jsonb NOT NULL,
            counted_at timestamptz NOT NULL,
            seconds float8 NOT NULL,
            CONSTRAINT pk_status_summaries PRIMARY KEY (scope)
        )
        """
    )


def downgrade() -> None:
    op.execute("DROP TABLE IF EXISTS status_summaries")
