"""card writes: cardshare's own record of contact-card POST/PATCH calls

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25 09:00:00

Only adds a table, so the previous code version keeps running during the deploy.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "card_writes",
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("phone_number", sa.String(length=16), nullable=False),
        sa.Column("method", sa.String(length=8), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("http_status", sa.Integer(), nullable=True),
        sa.Column("linq_code", sa.Integer(), nullable=True),
        sa.Column("trace_id", sa.String(length=64), nullable=True),
        sa.Column("counted", sa.Boolean(), server_default=sa.text("true"), nullable=False),
        sa.CheckConstraint("method IN ('POST', 'PATCH')", name=op.f("ck_card_writes_method")),
        sa.CheckConstraint("phone_number ~ '^\\+[1-9][0-9]{6,14}$'", name=op.f("ck_card_writes_e164")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_card_writes")),
    )
    op.create_index("ix_card_writes_phone_at", "card_writes", ["phone_number", "at"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_card_writes_phone_at", table_name="card_writes")
    op.drop_table("card_writes")
