"""day partitions: share_days and attempts partitioned by day; audit_events indexed by chat and age

Revision ID: 0006_day_partitions
Revises: 0005_line_safety
Create Date: 2026-12-02 09:00:00

Why and how: docs/retention.md ("Migrating a live database"). Safe on a populated database with
workers running; no step holds a lock that blocks the share path for longer than a catalog
change. In order:

1. Outside any transaction (no lock that blocks reads or writes): a CHECK (day < cutover) on
   both tables, added NOT VALID (a moment's ACCESS EXCLUSIVE, no scan) and then VALIDATEd (a scan
   under SHARE UPDATE EXCLUSIVE, which lets every statement of the share path run); and, with
   CREATE INDEX CONCURRENTLY, the indexes the partitioned tables will have. The cutover is two
   days after today (UTC): every day a running worker can write, in any time zone, is before it.
2. One short transaction, catalog only: lock both tables, rename them `*_legacy`, create the
   partitioned `share_days` and `attempts`, and ATTACH each legacy table as the partition of
   every day before the cutover. The validated CHECK proves the range, so ATTACH does not scan;
   the indexes built in step 1 match the parents', so ATTACH builds none; the legacy tables keep
   their foreign keys to `chats` and to each other. Then the daily partitions from the cutover
   to a week ahead. An empty database (a new install) drops the old tables instead and starts
   with daily partitions from two days back.
3. Outside any transaction: `audit_events` gets its indexes on (chat_ref, at) and (at),
   CONCURRENTLY.

Each step checks what an interrupted earlier run left (a constraint, an invalid index, tables
already switched) and continues from there. The code before this revision keeps running: its
statements name the same tables and columns (an UPDATE of an attempt by id alone visits every
partition's primary key, which is correct, only slower). The downgrade copies every row back
into plain tables under an exclusive lock: for development databases, not for a live one.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.engine import Connection

revision: str = "0006_day_partitions"
down_revision: str | None = "0005_line_safety"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Frozen copies of what the models and `worker.store.partitions` say today: a migration must do
# the same thing whatever the code becomes.
OPEN = "('queued', 'claimed', 'retry', 'unknown', 'held')"
FAILURES = "('failed', 'unknown')"
# As 0005_line_safety left the check (a partition must match its parent's constraints).
STATUSES = "('queued', 'held', 'claimed', 'retry', 'unknown', 'succeeded', 'skipped', 'failed')"
CUTOVER_DAYS = 2  # after today (UTC): beyond any day a worker in any time zone writes now
BEHIND_DAYS = 2  # a new install's first daily partition, before today
AHEAD_DAYS = 7

# Indexes the legacy tables need so that ATTACH finds them instead of building them.
LEGACY_INDEXES = {
    "share_days_legacy_open": f"ON share_days (day, lease_until, chat_id) WHERE status IN {OPEN}",
    "share_days_legacy_failures": (
        f"ON share_days ((coalesce(finished_at, updated_at))) WHERE status IN {FAILURES}"
    ),
    "attempts_legacy_id_day": "UNIQUE ON attempts (id, day)",
}
AUDIT_INDEXES = {
    "ix_audit_events_chat_ref": "ON audit_events (chat_ref, at)",
    "ix_audit_events_at": "ON audit_events (at)",
}
_CUTOVER = re.compile(r"day < '(\d{4}-\d{2}-\d{2})'")


def _utc_today(bind: Connection) -> dt.date:
    return bind.execute(sa.text("SELECT (now() AT TIME ZONE 'UTC')::date")).scalar_one()  # type: ignore[no-any-return]


def _is_partitioned(bind: Connection, table: str) -> bool:
    kind = bind.execute(
        sa.text("SELECT relkind FROM pg_class WHERE oid = to_regclass(:t)"), {"t": table}
    ).scalar_one_or_none()
    return kind == "p"


def _concurrent_index(bind: Connection, name: str, definition: str) -> None:
    """CREATE INDEX CONCURRENTLY, replacing an invalid leftover of an interrupted earlier run."""
    valid = bind.execute(
        sa.text("SELECT indisvalid FROM pg_index WHERE indexrelid = to_regclass(:n)"), {"n": name}
    ).scalar_one_or_none()
    if valid:
        return
    if valid is not None:
        bind.execute(sa.text(f"DROP INDEX CONCURRENTLY {name}"))
    unique = definition.startswith("UNIQUE ")
    body = definition.removeprefix("UNIQUE ")
    bind.execute(sa.text(f"CREATE {'UNIQUE ' if unique else ''}INDEX CONCURRENTLY {name} {body}"))


def _bound_constraint(bind: Connection, table: str) -> tuple[dt.date, bool] | None:
    """The cutover of `table`'s legacy bound CHECK, and whether it is validated."""
    row = bind.execute(
        sa.text(
            "SELECT pg_get_constraintdef(oid), convalidated FROM pg_constraint "
            "WHERE conrelid = CAST(:t AS regclass) AND conname = :n"
        ),
        {"t": table, "n": f"ck_{table}_legacy_bound"},
    ).one_or_none()
    if row is None:
        return None
    m = _CUTOVER.search(row[0])
    if m is None:
        raise RuntimeError(f"unexpected definition of ck_{table}_legacy_bound: {row[0]}")
    return dt.date.fromisoformat(m.group(1)), bool(row[1])


def _prepare(bind: Connection) -> dt.date:
    """Step 1, in autocommit: the validated bounds and the legacy indexes. Returns the cutover."""
    today = _utc_today(bind)
    found = _bound_constraint(bind, "share_days")
    # Reuse an earlier run's bound while it is still ahead of every writable day.
    cutover = found[0] if found and found[0] > today + dt.timedelta(days=1) else None
    if cutover is None:
        cutover = today + dt.timedelta(days=CUTOVER_DAYS)
    for table in ("share_days", "attempts"):
        existing = _bound_constraint(bind, table)
        if existing is not None and existing[0] != cutover:
            bind.execute(sa.text(f"ALTER TABLE {table} DROP CONSTRAINT ck_{table}_legacy_bound"))
            existing = None
        if existing is None:
            bind.execute(
                sa.text(
                    f"ALTER TABLE {table} ADD CONSTRAINT ck_{table}_legacy_bound "
                    f"CHECK (day < '{cutover.isoformat()}') NOT VALID"
                )
            )
        if existing is None or not existing[1]:
            bind.execute(sa.text(f"ALTER TABLE {table} VALIDATE CONSTRAINT ck_{table}_legacy_bound"))
    for name, definition in LEGACY_INDEXES.items():
        _concurrent_index(bind, name, definition)
    return cutover


def _create_parents() -> None:
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
        sa.CheckConstraint(f"status IN {STATUSES}", name=op.f("ck_share_days_status")),
        sa.ForeignKeyConstraint(
            ["chat_id"], ["chats.id"], name=op.f("fk_share_days_chat_id_chats"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("chat_id", "day", name=op.f("pk_share_days")),
        postgresql_partition_by="RANGE (day)",
    )
    op.create_index(
        "ix_share_days_open",
        "share_days",
        ["day", "lease_until", "chat_id"],
        postgresql_where=sa.text(f"status IN {OPEN}"),
    )
    op.create_index(
        "ix_share_days_failures",
        "share_days",
        [sa.text("coalesce(finished_at, updated_at)")],
        postgresql_where=sa.text(f"status IN {FAILURES}"),
    )
    op.create_table(
        "attempts",
        # The legacy table's sequence, so ids stay unique across the old and the new partitions.
        sa.Column(
            "id",
            sa.BigInteger(),
            server_default=sa.text("nextval('attempts_id_seq'::regclass)"),
            autoincrement=False,
            nullable=False,
        ),
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
        sa.PrimaryKeyConstraint("id", "day", name=op.f("pk_attempts")),
        postgresql_partition_by="RANGE (day)",
    )
    op.create_index("ix_attempts_chat_started", "attempts", ["chat_id", "started_at"])
    # The sequence outlives the legacy table it came with.
    op.execute("ALTER SEQUENCE attempts_id_seq OWNED BY attempts.id")


def _create_day(day: dt.date) -> None:
    """Both tables' partitions of one day (the same statements as `worker.store.partitions`)."""
    lo, hi = day.isoformat(), (day + dt.timedelta(days=1)).isoformat()
    share, attempts = f"share_days_p{day:%Y%m%d}", f"attempts_p{day:%Y%m%d}"
    like = "INCLUDING DEFAULTS INCLUDING CONSTRAINTS INCLUDING STORAGE"
    op.execute(f"CREATE TABLE {share} (LIKE share_days {like})")
    op.execute(f"ALTER TABLE share_days ATTACH PARTITION {share} FOR VALUES FROM ('{lo}') TO ('{hi}')")
    op.execute(f"CREATE TABLE {attempts} (LIKE attempts {like})")
    op.execute(
        f"ALTER TABLE {attempts} ADD CONSTRAINT fk_{attempts}_share_days FOREIGN KEY (chat_id, day) "
        f"REFERENCES {share} (chat_id, day) ON DELETE CASCADE"
    )
    op.execute(f"ALTER TABLE attempts ATTACH PARTITION {attempts} FOR VALUES FROM ('{lo}') TO ('{hi}')")


def _switch(bind: Connection, cutover: dt.date) -> None:
    """Step 2, in the migration's transaction: catalog changes only."""
    # The share path locks share_days before attempts (the claim writes both): the same order.
    op.execute("LOCK TABLE share_days, attempts IN ACCESS EXCLUSIVE MODE")
    populated = bool(
        bind.execute(
            sa.text("SELECT EXISTS (SELECT 1 FROM share_days) OR EXISTS (SELECT 1 FROM attempts)")
        ).scalar_one()
    )
    op.execute("ALTER TABLE share_days RENAME TO share_days_legacy")
    op.execute("ALTER INDEX pk_share_days RENAME TO share_days_legacy_pkey")
    op.execute("ALTER INDEX ix_share_days_day_status RENAME TO share_days_legacy_day_status")
    op.execute("ALTER TABLE attempts RENAME TO attempts_legacy")
    op.execute("ALTER INDEX ix_attempts_chat_started RENAME TO attempts_legacy_chat_started")
    # A partitioned table's primary key includes its partition key: (id, day), built in step 1.
    op.execute(
        "ALTER TABLE attempts_legacy DROP CONSTRAINT pk_attempts, "
        "ADD CONSTRAINT attempts_legacy_pkey PRIMARY KEY USING INDEX attempts_legacy_id_day"
    )
    _create_parents()
    today = _utc_today(bind)
    if populated:
        for table in ("share_days", "attempts"):
            op.execute(
                f"ALTER TABLE {table} ATTACH PARTITION {table}_legacy "
                f"FOR VALUES FROM (MINVALUE) TO ('{cutover.isoformat()}')"
            )
        first = cutover
    else:
        op.execute("DROP TABLE attempts_legacy")
        op.execute("DROP TABLE share_days_legacy")
        first = today - dt.timedelta(days=BEHIND_DAYS)
    day = first
    while day <= today + dt.timedelta(days=AHEAD_DAYS):
        _create_day(day)
        day += dt.timedelta(days=1)


def upgrade() -> None:
    bind = op.get_bind()
    context = op.get_context()
    if not _is_partitioned(bind, "share_days"):
        with context.autocommit_block():
            cutover = _prepare(bind)
        _switch(bind, cutover)
    with context.autocommit_block():
        for name, definition in AUDIT_INDEXES.items():
            _concurrent_index(bind, name, definition)


def downgrade() -> None:
    """Back to plain tables by copying every row (development databases only: see the top)."""
    for name in AUDIT_INDEXES:
        op.drop_index(name, table_name="audit_events")
    op.execute("LOCK TABLE share_days, attempts IN ACCESS EXCLUSIVE MODE")
    op.execute("ALTER TABLE share_days RENAME TO share_days_partitioned")
    op.execute("ALTER TABLE attempts RENAME TO attempts_partitioned")
    for index in ("pk_share_days", "ix_share_days_open", "ix_share_days_failures"):
        op.execute(f"ALTER INDEX {index} RENAME TO {index}_partitioned")
    for index in ("pk_attempts", "ix_attempts_chat_started"):
        op.execute(f"ALTER INDEX {index} RENAME TO {index}_partitioned")
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
        sa.CheckConstraint(f"status IN {STATUSES}", name=op.f("ck_share_days_status")),
        sa.ForeignKeyConstraint(
            ["chat_id"], ["chats.id"], name="fk_share_days_chat_id_chats", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("chat_id", "day", name="pk_share_days"),
    )
    op.create_index("ix_share_days_day_status", "share_days", ["day", "status", "lease_until"])
    op.create_table(
        "attempts",
        sa.Column(
            "id",
            sa.BigInteger(),
            server_default=sa.text("nextval('attempts_id_seq'::regclass)"),
            autoincrement=False,
            nullable=False,
        ),
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
        sa.PrimaryKeyConstraint("id", name="pk_attempts"),
    )
    op.create_index("ix_attempts_chat_started", "attempts", ["chat_id", "started_at"])
    columns = (
        "chat_id, day, status, reason, lease_until, claim_token, attempts, claims, lost_claims, enqueues, "
        "confirmed_by_rate_limit, task_id, created_at, claimed_at, finished_at, updated_at"
    )
    op.execute(f"INSERT INTO share_days ({columns}) SELECT {columns} FROM share_days_partitioned")  # noqa: S608
    columns = (
        "id, chat_id, day, attempt_no, claim_token, started_at, finished_at, outcome, http_status, "
        "linq_code, error, retry_after_s, trace_id, task_id"
    )
    op.execute(f"INSERT INTO attempts ({columns}) SELECT {columns} FROM attempts_partitioned")  # noqa: S608
    op.execute("ALTER SEQUENCE attempts_id_seq OWNED BY attempts.id")
    # Dropping a partitioned table drops its partitions; attempts' reference share_days' ones.
    op.execute("DROP TABLE attempts_partitioned")
    op.execute("DROP TABLE share_days_partitioned")
