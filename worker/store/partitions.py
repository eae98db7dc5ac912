"""The day partitions of `share_days` and `attempts`: list them, create a day, detach and drop one,
analyze the day a sweep just marked; and the retention deletes of `audit_events` and `sweep_runs`.

Why partitions and how they are managed: docs/retention.md. Each day D has `share_days_pYYYYMMDD`
and `attempts_pYYYYMMDD`, created together; the attempts partition references its own day's
share_days partition (the foreign key lives on the pair, not on the parents, so dropping a day
never scans another day). `share_days_legacy` / `attempts_legacy` are the tables from before
partitioning, attached as one range each by migration 0004 and dropped once all their days are
past retention.

A partition is created as a plain table and then attached: ATTACH PARTITION takes only a SHARE
UPDATE EXCLUSIVE lock on the parent, where CREATE TABLE ... PARTITION OF takes ACCESS EXCLUSIVE
(it would queue every share behind it). A partition is detached CONCURRENTLY, then dropped.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from sqlalchemy import Connection, Engine
from sqlalchemy.orm import Session

from worker.rules.retention import Bounds
from worker.store.sql import Sql

SHARE_DAYS = "share_days"
ATTEMPTS = "attempts"
# Created together, dropped attempts first: each attempts partition references its share_days one.
TABLES = (SHARE_DAYS, ATTEMPTS)
LEGACY_SUFFIX = "legacy"

# Every partition (or detached leftover) this module manages, and nothing else.
NAME = re.compile(r"^(share_days|attempts)_(p\d{8}|legacy)$")
_BOUND = re.compile(r"FROM \((.+?)\) TO \((.+?)\)")


def partition_name(table: str, day: dt.date) -> str:
    return f"{table}_p{day:%Y%m%d}"


def is_partition_name(name: str) -> bool:
    """A name this module gives partitions (Alembic's comparison leaves these tables alone)."""
    return NAME.match(name) is not None


def _bound_value(raw: str) -> dt.date | None:
    raw = raw.strip()
    if raw in ("MINVALUE", "MAXVALUE"):
        return None
    return dt.date.fromisoformat(raw.strip("'"))


def parse_bounds(expr: str) -> Bounds:
    """`FOR VALUES FROM ('2026-03-05') TO ('2026-03-06')` (pg_get_expr of relpartbound)."""
    m = _BOUND.search(expr)
    if m is None:
        raise ValueError(f"not a range partition bound: {expr!r}")
    return Bounds(_bound_value(m.group(1)), _bound_value(m.group(2)))


@dataclass(frozen=True)
class Partition:
    table: str
    name: str
    bounds: Bounds
    # DETACH ... CONCURRENTLY was interrupted: the partition must be FINALIZEd before its drop.
    detach_pending: bool = False


LIST_SQL = Sql(
    """
            SELECT c.relname AS name, pg_get_expr(c.relpartbound, c.oid) AS bound,
                   i.inhdetachpending AS pending
            FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
            WHERE i.inhparent = CAST(:parent AS regclass)
            ORDER BY c.relname
            """
)


def partitions(db: Session | Connection, table: str) -> list[Partition]:
    """`table`'s partitions with their ranges, by name."""
    rows = db.execute(LIST_SQL, {"parent": table}).all()
    return [Partition(table, r.name, parse_bounds(r.bound), bool(r.pending)) for r in rows]


LEFTOVERS_SQL = Sql(
    """
            SELECT relname FROM pg_class
            WHERE relkind = 'r' AND NOT relispartition AND relnamespace = 'public'::regnamespace
              AND relname ~ '^(share_days|attempts)_(p[0-9]{8}|legacy)$'
            ORDER BY relname
            """
)


def leftovers(db: Session | Connection) -> list[str]:
    """Our partitions that were detached but not dropped (a maintenance pass died in between)."""
    return [str(n) for n in db.execute(LEFTOVERS_SQL).scalars()]


def create_day_sql(day: dt.date) -> list[str]:
    """The statements that add `day` to both tables, run in one transaction: a plain table
    shaped like its parent (columns, defaults, CHECK constraints), the attempts table's foreign
    key to its day's share_days table, then ATTACH (it builds the parent's indexes on the empty
    table and clones the parent's foreign key to `chats`)."""
    lo, hi = day.isoformat(), (day + dt.timedelta(days=1)).isoformat()
    share, attempts = partition_name(SHARE_DAYS, day), partition_name(ATTEMPTS, day)
    like = "INCLUDING DEFAULTS INCLUDING CONSTRAINTS INCLUDING STORAGE"
    return [
        f"CREATE TABLE {share} (LIKE {SHARE_DAYS} {like})",
        f"ALTER TABLE {SHARE_DAYS} ATTACH PARTITION {share} FOR VALUES FROM ('{lo}') TO ('{hi}')",
        f"CREATE TABLE {attempts} (LIKE {ATTEMPTS} {like})",
        f"ALTER TABLE {attempts} ADD CONSTRAINT fk_{attempts}_share_days FOREIGN KEY (chat_id, day) "
        f"REFERENCES {share} (chat_id, day) ON DELETE CASCADE",
        f"ALTER TABLE {ATTEMPTS} ATTACH PARTITION {attempts} FOR VALUES FROM ('{lo}') TO ('{hi}')",
    ]


XACT_LOCK_SQL = Sql("SELECT pg_advisory_xact_lock(:k)")


def create_day(session: Session, day: dt.date, *, lock_key: int) -> bool:
    """Add `day`'s partitions to both tables, inside the caller's transaction, unless another
    process did first (creators serialize on the advisory lock `lock_key`). True if made here."""
    session.execute(XACT_LOCK_SQL, {"k": lock_key})
    if partition_of(session, SHARE_DAYS, day) is not None:
        return False
    for statement in create_day_sql(day):
        session.execute(Sql(statement))
    return True


# DETACH ... CONCURRENTLY waits for every transaction that might still read the partition (a long
# `cardshare check`, say): longer than the 15 s a share-path statement may take.
MAINTENANCE_TIMEOUT_SQL = Sql("SET statement_timeout = '10min'")
RESET_TIMEOUT_SQL = Sql("RESET statement_timeout")


@contextmanager
def maintenance_connection(engine: Engine) -> Iterator[Connection]:
    """A pooled connection in autocommit with a long statement timeout, handed back as it came."""
    with engine.connect() as conn:
        conn = conn.execution_options(isolation_level="AUTOCOMMIT")
        conn.execute(MAINTENANCE_TIMEOUT_SQL)
        try:
            yield conn
        finally:
            conn.execute(RESET_TIMEOUT_SQL)


SERVER_VERSION_SQL = Sql("SELECT current_setting('server_version_num')::int")


def detach_sql(partition: Partition, server_version: int) -> str:
    """DETACH without blocking the parent (CONCURRENTLY, PostgreSQL 14+), or FINALIZE one that an
    earlier pass left half done."""
    if partition.detach_pending:
        return f"ALTER TABLE {partition.table} DETACH PARTITION {partition.name} FINALIZE"
    how = " CONCURRENTLY" if server_version >= 140000 else ""
    return f"ALTER TABLE {partition.table} DETACH PARTITION {partition.name}{how}"


def drop(conn: Connection, partition: Partition) -> None:
    """Detach and drop one partition, on a connection in autocommit (CONCURRENTLY cannot run in a
    transaction block). Costs catalog work and unlinking the files, whatever the other days hold."""
    version = int(conn.execute(SERVER_VERSION_SQL).scalar_one())
    conn.execute(Sql(detach_sql(partition, version)))
    conn.execute(Sql(f"DROP TABLE {partition.name}"))


def drop_leftover(conn: Connection, name: str) -> None:
    if not is_partition_name(name):
        raise ValueError(f"{name} is not a partition of ours")
    conn.execute(Sql(f"DROP TABLE IF EXISTS {name}"))


ROWS_ESTIMATE_SQL = Sql(
    "SELECT greatest(reltuples, 0)::bigint FROM pg_class WHERE oid = CAST(:t AS regclass)"
)


def partition_of(db: Session | Connection, table: str, day: dt.date) -> Partition | None:
    """The partition of `table` that holds `day` (a daily one, or the legacy range)."""
    return next((p for p in partitions(db, table) if p.bounds.covers(day) and not p.detach_pending), None)


def rows_estimate(db: Session | Connection, name: str) -> int:
    """pg_class.reltuples: what the planner believes the partition holds (0 before any analyze)."""
    return int(db.execute(ROWS_ESTIMATE_SQL, {"t": name}).scalar_one())


def analyze(session: Session, name: str) -> None:
    """ANALYZE one partition: a sample of 300 x default_statistics_target rows (30,000 by default),
    so it costs about the same for a day of 100k rows as for the legacy table of 100M."""
    if not is_partition_name(name):
        raise ValueError(f"{name} is not a partition of ours")
    session.execute(Sql(f"ANALYZE {name}"))


# --------------------------------------------------------------------------- the other tables

DELETE_AUDIT_SQL = Sql(
    """
            DELETE FROM audit_events WHERE id IN (
                SELECT id FROM audit_events WHERE at < :before ORDER BY at LIMIT :limit
            )
            """
)


def delete_audit_before(session: Session, before: dt.datetime, *, limit: int) -> int:
    """One batch of audit events older than `before` (the index on `at` finds them)."""
    result = session.execute(DELETE_AUDIT_SQL, {"before": before, "limit": limit})
    return int(getattr(result, "rowcount", 0))


DELETE_RUNS_SQL = Sql("DELETE FROM sweep_runs WHERE day < :before")


def delete_runs_before(session: Session, before: dt.date) -> int:
    """Sweep runs of days past retention (about a hundred rows a day)."""
    result = session.execute(DELETE_RUNS_SQL, {"before": before})
    return int(getattr(result, "rowcount", 0))
