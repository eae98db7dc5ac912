"""drop ix_chats_line_phone: every write to `chats.marked_day` paid for an index no plan needs

Revision ID: 0009_drop_chats_line_phone
Revises: 0008_status_summary
Create Date: 2026-12-03 16:00:00

Why: the sweep moves `chats.marked_day` for every chat it marks, an indexed column, so each of
those updates inserts a new entry into every index of `chats`. `ix_chats_line_phone
(line_phone)` is a prefix of `ix_chats_line_phone_id (line_phone, id)` and of
`ix_chats_line_marked (line_phone, marked_day, id)`: any lookup by line (and the cascade from
`lines`) is served by those, so it costs a quarter of each such update and serves nothing
(bench/README.md §1).

Why this is safe on a populated database with workers running: DROP INDEX CONCURRENTLY, outside
the migration's transaction, waits for the transactions using the index and blocks no reads or
writes of `chats`; the code before this revision names the index nowhere. The downgrade builds
it again CONCURRENTLY (an interrupted build leaves an INVALID index: run the downgrade again).
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0009_drop_chats_line_phone"
down_revision: str | None = "0008_status_summary"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

INDEX = "ix_chats_line_phone"


def upgrade() -> None:
    with op.get_context().autocommit_block():
        op.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {INDEX}")


def downgrade() -> None:
    with op.get_context().autocommit_block():
        op.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {INDEX}")
        op.execute(f"CREATE INDEX CONCURRENTLY {INDEX} ON chats (line_phone)")
