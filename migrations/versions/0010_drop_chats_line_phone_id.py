"""drop ix_chats_line_phone_id: since the sweep walks (marked_day, id), no plan needs it

Revision ID: 0010_drop_chats_line_phone_id
Revises: 0009_drop_chats_line_phone
Create Date: 2026-12-03 19:00:00

Why: `ix_chats_line_phone_id (line_phone, id)` was built (0005) for the sweep's walk over each
line's chats by key. The sweep now walks `ix_chats_line_marked (line_phone, marked_day, id)`
(0007), whose first column serves every other lookup by line and the cascade from `lines`. Each
chat the sweep or the event path marks moves `chats.marked_day`, an indexed column, so the update
inserts a new entry into every index of `chats`: this one cost about a fifth of the sweep's
PostgreSQL CPU per chat (bench/README.md §1) and served nothing.

Why this is safe on a populated database with workers running: as in 0009, DROP INDEX
CONCURRENTLY outside the migration's transaction blocks no reads or writes of `chats`, and the
code before this revision names the index nowhere. The downgrade builds it again CONCURRENTLY
(an interrupted build leaves an INVALID index: run the downgrade again).
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0010_drop_chats_line_phone_id"
down_revision: str | None = "0009_drop_chats_line_phone"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

INDEX = "ix_chats_line_phone_id"


def upgrade() -> None:
    with op.get_context().autocommit_block():
        op.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {INDEX}")


def downgrade() -> None:
    with op.get_context().autocommit_block():
        op.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {INDEX}")
        op.execute(f"CREATE INDEX CONCURRENTLY {INDEX} ON chats (line_phone, id)")
