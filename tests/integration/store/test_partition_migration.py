"""Migration 0006 (day partitions) on a database with rows: seeded under 0003, upgraded, every row
and constraint checked; the legacy tables become one partition each without being scanned or re-indexed."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from alembic import command
from alembic.script import ScriptDirectory

from tests.support.servers import Servers
from worker import migrate

LINE = "+12223334444"
D = dt.timedelta(days=1)


def _psycopg(url: str) -> str:
    return url.replace("postgresql+psycopg://", "postgresql://")


@pytest.fixture
def db_0003(servers: Servers) -> Iterator[str]:
    """A new database migrated to revision 0003 (before day partitions)."""
    name = f"cs_mig_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(servers.admin_dsn, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = servers.url_for(name)
    command.upgrade(migrate.alembic_config(url), "0003")
    yield url
    with psycopg.connect(servers.admin_dsn, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _utc_today(conn: psycopg.Connection[Any]) -> dt.date:
    row = conn.execute("SELECT (now() AT TIME ZONE 'UTC')::date").fetchone()
    assert row is not None
    day: dt.date = row[0]
    return day


def seed(conn: psycopg.Connection[Any], chats: int = 300, days: int = 5) -> None:
    """Chats with `days` days of chat-days (today's still in flight) and their attempts."""
    conn.execute("INSERT INTO lines (phone_number, card_active) VALUES (%s, true)", (LINE,))
    conn.execute(
        "INSERT INTO chats (id, line_phone, service, first_outbound_at, last_outbound_at) "
        "SELECT gen_random_uuid(), %s, 'iMessage', now() - interval '40 days', now() - interval '1 hour' "
        "FROM generate_series(1, %s)",
        (LINE, chats),
    )
    conn.execute(
        """
        INSERT INTO share_days (chat_id, day, status, reason, lease_until, claim_token, attempts, claims,
                                enqueues, finished_at)
        SELECT c.id, (now() AT TIME ZONE 'UTC')::date - d,
               CASE WHEN d = 0 THEN (ARRAY['queued', 'claimed', 'retry', 'unknown'])[1 + n %% 4]
                    ELSE (ARRAY['succeeded', 'succeeded', 'skipped', 'failed'])[1 + n %% 4] END,
               CASE WHEN d > 0 AND n %% 4 = 3 THEN 'day_over: the day ended' END,
               now() + interval '1 minute', gen_random_uuid(), 1 + n %% 2, 1, 1,
               CASE WHEN d > 0 THEN now() - d * interval '1 day' END
        FROM (SELECT id, row_number() OVER (ORDER BY id) AS n FROM chats) c, generate_series(0, %s) d
        """,
        (days - 1,),
    )
    conn.execute(
        """
        INSERT INTO attempts (chat_id, day, attempt_no, claim_token, started_at, finished_at, outcome,
                              http_status)
        SELECT chat_id, day, a, claim_token, now() - interval '1 hour', now() - interval '1 hour',
               CASE WHEN a = attempts THEN 'ok' ELSE 'retryable' END,
               CASE WHEN a = attempts THEN 204 ELSE 503 END
        FROM share_days, generate_series(1, attempts) a
        """
    )
    conn.execute(
        "INSERT INTO audit_events (actor, action, chat_ref, outcome) "
        "SELECT 'cli', 'share', id::text, 'refused' FROM chats"
    )


# share_days' columns as of 0003: later revisions add columns (0007_first_outbound), which the
# rows from before them do not have.
SHARE_DAYS_0003 = (
    "chat_id, day, status, reason, lease_until, claim_token, attempts, claims, lost_claims, enqueues, "
    "confirmed_by_rate_limit, task_id, created_at, claimed_at, finished_at, updated_at"
)


def snapshot(conn: psycopg.Connection[Any]) -> dict[str, list[tuple[Any, ...]]]:
    return {
        "share_days": conn.execute(
            f"SELECT {SHARE_DAYS_0003} FROM share_days ORDER BY chat_id, day"
        ).fetchall(),
        "attempts": conn.execute(
            "SELECT id, chat_id, day, attempt_no, claim_token, started_at, finished_at, outcome, "
            "http_status, linq_code, error, retry_after_s, trace_id, task_id FROM attempts ORDER BY id"
        ).fetchall(),
        "audit_events": conn.execute("SELECT * FROM audit_events ORDER BY id").fetchall(),
    }


def partitions_of(conn: psycopg.Connection[Any], table: str) -> dict[str, str]:
    rows = conn.execute(
        "SELECT c.relname, pg_get_expr(c.relpartbound, c.oid) FROM pg_inherits i "
        "JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = %s::regclass",
        (table,),
    ).fetchall()
    return {r[0]: r[1] for r in rows}


def indexes_of(conn: psycopg.Connection[Any], table: str) -> set[str]:
    return {r[0] for r in conn.execute("SELECT indexname FROM pg_indexes WHERE tablename = %s", (table,))}


def test_a_populated_database_keeps_every_row_and_constraint(db_0003: str) -> None:
    with psycopg.connect(_psycopg(db_0003), autocommit=True) as conn:
        seed(conn)
        before = snapshot(conn)
        today = _utc_today(conn)
        seq_before = conn.execute("SELECT last_value FROM attempts_id_seq").fetchone()
    assert len(before["share_days"]) == 1500
    assert len(before["attempts"]) > 1500

    migrate.upgrade(db_0003)
    migrate.check(db_0003)  # models and migrations agree (`cardshare db check`)

    with psycopg.connect(_psycopg(db_0003), autocommit=True) as conn:
        assert snapshot(conn) == before
        cutover = today + 2 * D
        for table in ("share_days", "attempts"):
            parts = partitions_of(conn, table)
            assert parts.pop(f"{table}_legacy") == f"FOR VALUES FROM (MINVALUE) TO ('{cutover}')"
            # Daily partitions from the cutover to a week ahead, nothing overlapping the legacy range.
            days = [cutover + n * D for n in range((today + 7 * D - cutover).days + 1)]
            assert parts == {f"{table}_p{d:%Y%m%d}": f"FOR VALUES FROM ('{d}') TO ('{d + D}')" for d in days}
        # ATTACH built no index of its own: the legacy tables carry the ones step 1 built
        # CONCURRENTLY (an index built by ATTACH would be named after its columns).
        assert indexes_of(conn, "share_days_legacy") == {
            "share_days_legacy_pkey",
            "share_days_legacy_day_status",
            "share_days_legacy_open",
            "share_days_legacy_failures",
        }
        assert indexes_of(conn, "attempts_legacy") == {"attempts_legacy_pkey", "attempts_legacy_chat_started"}
        validated = conn.execute(
            "SELECT conname, convalidated FROM pg_constraint WHERE conname LIKE %s ORDER BY 1",
            ("ck_%_legacy_bound",),
        ).fetchall()
        assert validated == [("ck_attempts_legacy_bound", True), ("ck_share_days_legacy_bound", True)]
        assert {"ix_audit_events_chat_ref", "ix_audit_events_at"} <= indexes_of(conn, "audit_events")

        # Every constraint still holds, in the legacy range and in a daily partition.
        chat = before["share_days"][0][0]
        for day in (today, cutover):
            with pytest.raises(psycopg.errors.ForeignKeyViolation):
                conn.execute(
                    "INSERT INTO share_days (chat_id, day, status, lease_until) "
                    "VALUES (gen_random_uuid(), %s, 'queued', now())",
                    (day,),
                )
            with pytest.raises(psycopg.errors.ForeignKeyViolation):
                conn.execute(
                    "INSERT INTO attempts (chat_id, day, attempt_no, claim_token, started_at) "
                    "VALUES (%s, %s, 1, gen_random_uuid(), now())",
                    (chat, day + 5 * D if day == cutover else day - 9 * D),
                )
            with pytest.raises(psycopg.errors.CheckViolation):
                conn.execute(
                    "INSERT INTO share_days (chat_id, day, status, lease_until) "
                    "VALUES (%s, %s, 'odd', now())",
                    (chat, day),
                )
        with pytest.raises(psycopg.errors.UniqueViolation):
            conn.execute(
                "INSERT INTO share_days (chat_id, day, status, lease_until) VALUES (%s, %s, 'queued', now())",
                (chat, today),
            )
        # New rows land in their day's partition; attempt ids continue the old sequence.
        conn.execute(
            "INSERT INTO share_days (chat_id, day, status, lease_until) VALUES (%s, %s, 'queued', now())",
            (chat, cutover),
        )
        new_id = conn.execute(
            "INSERT INTO attempts (chat_id, day, attempt_no, claim_token, started_at) "
            "VALUES (%s, %s, 1, gen_random_uuid(), now()) RETURNING id, tableoid::regclass::text",
            (chat, cutover),
        ).fetchone()
        assert new_id is not None
        assert seq_before is not None
        assert new_id[0] > seq_before[0]
        assert new_id[1] == f"attempts_p{cutover:%Y%m%d}"
        # Deleting a chat still reaches its days and attempts, legacy and daily alike.
        conn.execute("DELETE FROM chats WHERE id = %s", (chat,))
        for table in ("share_days", "attempts"):
            left = conn.execute(f"SELECT count(*) FROM {table} WHERE chat_id = %s", (chat,)).fetchone()
            assert left == (0,)
        # The sequence belongs to the new parent: dropping the legacy partition cannot take it along.
        owner = conn.execute(
            "SELECT c.relname FROM pg_depend d JOIN pg_class c ON c.oid = d.refobjid "
            "WHERE d.objid = 'attempts_id_seq'::regclass AND d.deptype = 'a'"
        ).fetchone()
        assert owner == ("attempts",)


def test_an_interrupted_run_with_a_stale_bound_is_redone(db_0003: str) -> None:
    """A first run added its CHECK on an earlier day and stopped; the next run replaces the bound
    (today's rows must fall before the cutover) and finishes."""
    with psycopg.connect(_psycopg(db_0003), autocommit=True) as conn:
        seed(conn, chats=20, days=2)
        today = _utc_today(conn)
        for table in ("share_days", "attempts"):
            conn.execute(
                f"ALTER TABLE {table} ADD CONSTRAINT ck_{table}_legacy_bound "
                f"CHECK (day < '{today + D}') NOT VALID"
            )
        before = snapshot(conn)
    migrate.upgrade(db_0003)
    with psycopg.connect(_psycopg(db_0003), autocommit=True) as conn:
        assert snapshot(conn) == before
        bound = partitions_of(conn, "share_days")["share_days_legacy"]
        assert bound == f"FOR VALUES FROM (MINVALUE) TO ('{today + 2 * D}')"


def test_a_new_database_starts_with_daily_partitions_only(db_0003: str) -> None:
    migrate.upgrade(db_0003)
    with psycopg.connect(_psycopg(db_0003), autocommit=True) as conn:
        today = _utc_today(conn)
        assert conn.execute("SELECT to_regclass('share_days_legacy')").fetchone() == (None,)
        days = sorted(partitions_of(conn, "share_days"))
        assert days[0] == f"share_days_p{today - 2 * D:%Y%m%d}"
        assert days[-1] == f"share_days_p{today + 7 * D:%Y%m%d}"


def test_downgrade_copies_the_rows_back(db_0003: str) -> None:
    with psycopg.connect(_psycopg(db_0003), autocommit=True) as conn:
        seed(conn, chats=30, days=3)
        before = snapshot(conn)
    migrate.upgrade(db_0003)
    command.downgrade(migrate.alembic_config(db_0003), "0003")
    with psycopg.connect(_psycopg(db_0003), autocommit=True) as conn:
        assert snapshot(conn) == before
        kind = conn.execute("SELECT relkind FROM pg_class WHERE relname = 'share_days'").fetchone()
        assert kind == ("r",)


def test_the_head_revision_is_read_without_alembic(database_url: str) -> None:
    """`cardshare` compares the database with the head named in the files (no import of them)."""
    script = ScriptDirectory.from_config(migrate.alembic_config(database_url))
    assert migrate.head_revision() == script.get_current_head()
