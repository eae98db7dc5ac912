"""first outbound: the chat-day's outbound time, and each chat's last marked day for the sweep

Revision ID: 0007_first_outbound
Revises: 0006_day_partitions
Create Date: 2026-12-02 03:00:00

What it adds (docs/decisions.md §17):
- `share_days.outbound_at` (nullable timestamptz): the outbound message that made the chat-day
  due, as known when it was marked; the "first outbound -> share accepted" latency starts there.
- `chats.marked_day` (date, NOT NULL DEFAULT '1970-01-01'): the last day (the line's day) a
  pass marked the chat for. The sweep walks only chats not yet marked for their line's today.
- `ix_chats_line_marked` on chats (line_phone, marked_day, id): that walk, by key.

Why this is safe on a populated database with workers running:
- `share_days` is partitioned by day: ADD COLUMN on the parent adds the column to every
  partition in the catalog. A nullable column with no default rewrites no partition, and the
  ACCESS EXCLUSIVE lock it takes lasts only for the catalog change (the share path's statements
  wait a moment, none fails). Partitions created later copy the parent's columns;
- `chats.marked_day` has a constant default: since PostgreSQL 11 that is stored once in the
  catalog and no row is rewritten (the same brief lock). Every existing chat reads as "never
  marked", so the first sweep after the upgrade visits every chat, as before;
- the index is built CONCURRENTLY, outside the migration's transaction (writes to `chats` go on
  while it builds). If that build fails it leaves an INVALID index: drop it and run the upgrade
  again (the upgrade also replaces an invalid leftover itself);
- the code before this revision never reads or writes either column.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007_first_outbound"
down_revision: str | None = "0006_day_partitions"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

INDEX = "ix_chats_line_marked"


def upgrade() -> None:
    op.execute("ALTER TABLE share_days ADD COLUMN IF NOT EXISTS outbound_at timestamptz")
    op.execute("ALTER TABLE chats ADD COLUMN IF NOT EXISTS marked_day date NOT NULL DEFAULT '1970-01-01'")
    with op.get_context().autocommit_block():
        bind = op.get_bind()
        valid = bind.execute(
            sa.text("SELECT indisvalid FROM pg_index WHERE indexrelid = to_regclass(:n)"), {"n": INDEX}
        ).scalar_one_or_none()
        if valid is False:
            op.execute(f"DROP INDEX CONCURRENTLY {INDEX}")
        if not valid:
            op.execute(f"CREATE INDEX CONCURRENTLY {INDEX} ON chats (line_phone, marked_day, id)")


def downgrade() -> None:
    with op.get_context().autocommit_block():
        op.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {INDEX}")
    op.execute("ALTER TABLE chats DROP COLUMN IF EXISTS marked_day")
    op.execute("ALTER TABLE share_days DROP COLUMN IF EXISTS outbound_at")
