"""The sweep's and recovery's statements: due pages marked `queued`, expired leases re-queued,
poison and past days ended, one row per pass in `sweep_runs`, and the advisory locks that keep
two passes of a kind from walking the table at once."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from sqlalchemy import Engine, text
from sqlalchemy.orm import Session

from worker.errors import StoreUnavailable
from worker.rules.cadence import Policy
from worker.store.due import CARD_IS_ACTIVE, CHAT_IS_DUE, MISSABLE, OPEN, binds

NIL_UUID = uuid.UUID(int=0)  # keyset start: every chat id sorts after it

# --------------------------------------------------------------------------- due pages


@dataclass(frozen=True)
class Page:
    scanned: int
    last_id: uuid.UUID | None
    queued: list[uuid.UUID]


MARK_DUE_PAGE_SQL = text(
    f"""
            WITH due AS (
                SELECT c.id FROM chats c
                JOIN lines l ON l.phone_number = c.line_phone
                WHERE c.id > :after
                  AND {CHAT_IS_DUE}
                  AND {CARD_IS_ACTIVE}
                ORDER BY c.id
                LIMIT :limit
            ), marked AS (
                INSERT INTO share_days AS d (chat_id, day, status, lease_until, enqueues)
                SELECT id, :day, 'queued', now() + make_interval(secs => :qlease), 1 FROM due
                ON CONFLICT (chat_id, day) DO UPDATE SET
                    status = 'queued',
                    lease_until = EXCLUDED.lease_until,
                    enqueues = d.enqueues + 1,
                    lost_claims = d.lost_claims + (d.status = 'claimed')::int,
                    updated_at = now()
                WHERE d.status IN {OPEN}
                  AND d.lease_until < now()
                  AND NOT (d.status = 'claimed' AND d.lost_claims + 1 >= :max_lost)
                RETURNING chat_id
            )
            SELECT (SELECT count(*) FROM due) AS scanned,
                   (SELECT max(id::text) FROM due) AS last_id,
                   ARRAY(SELECT chat_id FROM marked ORDER BY chat_id) AS queued
            """
)


def mark_due_page(
    session: Session,
    *,
    day: dt.date,
    now: dt.datetime,
    policy: Policy,
    after: uuid.UUID | None,
    limit: int,
    queue_lease_s: float,
    max_lost_claims: int,
) -> Page:
    """One keyset page of due chats, marked 'queued' for `day`; returns those to enqueue.

    A chat-day already queued, held or finished is not returned again, so overlapping sweeps
    enqueue each chat-day once (row locks on the conflict make the marking atomic).
    """
    row = session.execute(
        MARK_DUE_PAGE_SQL,
        {
            "after": after or NIL_UUID,
            **binds(now, policy),
            "limit": limit,
            "day": day,
            "qlease": queue_lease_s,
            "max_lost": max_lost_claims,
        },
    ).one()
    last = uuid.UUID(row.last_id) if row.last_id else None
    return Page(scanned=row.scanned, last_id=last, queued=list(row.queued or []))


# --------------------------------------------------------------------------- recovery

# Keyset pages over the day's open rows in (lease_until, chat_id) order (ix_share_days_open, which
# holds only open rows): each page starts where the last one stopped, so a pass reads each row
# once however many are stale. (Ordering every stale row again for each page was quadratic.)
REQUEUE_EXPIRED_SQL = text(
    f"""
            WITH expired AS (
                SELECT chat_id, day, lease_until FROM share_days
                WHERE day = :day AND status IN {OPEN}
                  AND (lease_until, chat_id) > (:after_lease, :after_chat)
                  AND (lease_until < now()
                       OR (:drained AND status = 'queued'
                           AND updated_at < now() - make_interval(secs => :stale)))
                  AND NOT (status = 'claimed' AND lost_claims + 1 >= :max_lost)
                ORDER BY lease_until, chat_id
                LIMIT :limit
                FOR UPDATE SKIP LOCKED
            )
            UPDATE share_days d SET
                status = 'queued',
                lease_until = now() + make_interval(secs => :qlease),
                enqueues = d.enqueues + 1,
                lost_claims = d.lost_claims + (d.status = 'claimed')::int,
                updated_at = now()
            FROM expired e WHERE d.chat_id = e.chat_id AND d.day = e.day
              -- The day again, as a constant: the planner then opens only that day's partition
              -- for the update (through e.day alone it plans every kept day's; test_partitions).
              AND d.day = :day
            RETURNING d.chat_id, e.lease_until AS old_lease
            """
)

# Where a pass starts: before every (lease_until, chat_id).
KEYSET_START = (dt.datetime(1, 1, 1, tzinfo=dt.UTC), NIL_UUID)


@dataclass(frozen=True)
class Requeued:
    chat_ids: list[uuid.UUID]
    # The largest (lease_until, chat_id) of the page, before its update: the next page's start.
    last: tuple[dt.datetime, uuid.UUID] | None


def requeue_expired(
    session: Session,
    *,
    day: dt.date,
    limit: int,
    queue_lease_s: float,
    queue_drained: bool,
    stale_queued_s: float,
    max_lost_claims: int,
    after: tuple[dt.datetime, uuid.UUID] = KEYSET_START,
) -> Requeued:
    """Open chat-days of `day` whose lease ran out (crash, lost message, retry due): re-queue.
    One keyset page, starting after `after`.

    With the broker queue drained, a 'queued' row untouched for `stale_queued_s` lost its
    message (Redis restarted, a publish failed, a killed worker had prefetched it), whatever its
    queue lease says (docs/decisions.md §9).
    """
    rows = session.execute(
        REQUEUE_EXPIRED_SQL,
        {
            "day": day,
            "limit": limit,
            "qlease": queue_lease_s,
            "drained": queue_drained,
            "stale": stale_queued_s,
            "max_lost": max_lost_claims,
            "after_lease": after[0],
            "after_chat": after[1],
        },
    ).all()
    last = max(((r.old_lease, r.chat_id) for r in rows), default=None)
    return Requeued([r.chat_id for r in rows], last)


FAIL_POISONED_SQL = text(
    """
            UPDATE share_days SET status = 'failed', finished_at = now(), updated_at = now(),
                lost_claims = lost_claims + 1,
                reason = 'poison: the worker was lost ' || (lost_claims + 1)
                         || ' times while sharing (crash or kill); not retried today'
            WHERE day = :day AND status = 'claimed' AND lease_until < now()
              AND lost_claims + 1 >= :max_lost
            """
)


def fail_poisoned(session: Session, *, day: dt.date, max_lost_claims: int) -> int:
    """Chat-days whose holder vanished `max_lost_claims` times: stop trying, say why."""
    result = session.execute(FAIL_POISONED_SQL, {"day": day, "max_lost": max_lost_claims})
    return int(getattr(result, "rowcount", 0))


CLOSE_PAST_DAYS_SQL = text(
    f"""
            UPDATE share_days SET status = 'failed', finished_at = now(), updated_at = now(),
                reason = 'day_over: the day ended before the share succeeded'
            WHERE day < :before AND status IN {MISSABLE}
            """
)


def close_past_days(session: Session, *, before: dt.date) -> int:
    """Missed days are not made up (docs/decisions.md §8): end what a past day left open.

    'unknown' stays unknown: it counts neither as shared nor as missed.
    """
    result = session.execute(CLOSE_PAST_DAYS_SQL, {"before": before})
    return int(getattr(result, "rowcount", 0))


# --------------------------------------------------------------------------- runs and locks

START_RUN_SQL = text(
    "INSERT INTO sweep_runs (kind, day, started_at) VALUES (:k, :d, clock_timestamp()) RETURNING id"
)


def start_run(session: Session, kind: str, day: dt.date) -> int:
    return int(session.execute(START_RUN_SQL, {"k": kind, "d": day}).scalar_one())


FINISH_RUN_SQL = text(
    "UPDATE sweep_runs SET finished_at = clock_timestamp(), scanned = :s, enqueued = :e, "
    "error = :err WHERE id = :id"
)


def finish_run(session: Session, run_id: int, *, scanned: int, enqueued: int, error: str | None) -> None:
    session.execute(FINISH_RUN_SQL, {"id": run_id, "s": scanned, "e": enqueued, "err": error})


TRY_LOCK_SQL = text("SELECT pg_try_advisory_lock(:k)")
UNLOCK_SQL = text("SELECT pg_advisory_unlock(:k)")


@contextmanager
def advisory_lock(engine: Engine, key: int) -> Iterator[bool]:
    """Session-level lock on a dedicated connection: released on exit, or when we die."""
    try:
        conn = engine.connect()
    except Exception as exc:  # driver errors at connect time
        raise StoreUnavailable(f"database unavailable: {type(exc).__name__}") from exc
    try:
        got = bool(conn.execute(TRY_LOCK_SQL, {"k": key}).scalar())
        conn.commit()
        try:
            yield got
        finally:
            if got:
                conn.execute(UNLOCK_SQL, {"k": key})
                conn.commit()
    finally:
        conn.close()
