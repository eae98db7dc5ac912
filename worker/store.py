"""All SQL. Driver errors become StoreUnavailable at this edge.

The database is the arbiter of "once a day": every writer goes through the (chat_id, day)
primary key of share_days, and every state change after a claim is fenced by its token.
Leases use the database clock (now()) so workers on several machines agree on expiry.
"""

from __future__ import annotations

import datetime as dt
import enum
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

from sqlalchemy import Connection, text
from sqlalchemy import exc as sa_exc
from sqlalchemy.orm import Session, sessionmaker

from worker import hotdb
from worker.errors import StoreUnavailable
from worker.hotdb import HotConnection
from worker.rules.cadence import Policy, active_since
from worker.rules.facts import ChatActivity, ChatFacts
from worker.rules.states import AttemptOutcome, DayStatus

OPEN_STATUSES = ("queued", "claimed", "retry", "unknown")
NIL_UUID = uuid.UUID(int=0)  # keyset start: every chat id sorts after it


# The hot-path functions below run one statement each, atomic on its own, so they accept a
# connection in autocommit mode as well as a Session (saves BEGIN/COMMIT round trips).
Db = Session | Connection | HotConnection


# Hot-path statements, built once: text() re-parses its bind parameters on every call.
_LOAD_CHAT_SQL = text(
    """
            SELECT c.id, c.line_phone, c.service, c.is_group, c.first_outbound_at,
                   c.last_outbound_at, c.opted_out, c.not_found_at IS NOT NULL AS not_found,
                   l.card_active, d.status AS status_today,
                   EXISTS (
                       SELECT 1 FROM attempts a
                       WHERE a.chat_id = c.id AND a.day = :day
                         AND (a.outcome = 'unknown' OR a.outcome IS NULL)
                         AND a.started_at > now() - make_interval(secs => :window)
                   ) AS unconfirmed_recent
            FROM chats c
            JOIN lines l ON l.phone_number = c.line_phone
            LEFT JOIN share_days d ON d.chat_id = c.id AND d.day = :day
            WHERE c.id = :chat_id
            """
)

_CLAIM_SQL = text(
    """
            WITH c AS (
            INSERT INTO share_days AS d (chat_id, day, status, lease_until, claim_token, claims,
                                         task_id, claimed_at, attempts)
            VALUES (:chat_id, :day, 'claimed', now() + make_interval(secs => :lease),
                    :token, 1, :task_id, now(), :begin)
            ON CONFLICT (chat_id, day) DO UPDATE SET
                status = 'claimed',
                attempts = d.attempts + :begin,
                lease_until = EXCLUDED.lease_until,
                claim_token = EXCLUDED.claim_token,
                claims = d.claims + 1,
                lost_claims = d.lost_claims + (d.status = 'claimed')::int,
                task_id = EXCLUDED.task_id,
                claimed_at = now(),
                reason = NULL,
                updated_at = now()
            WHERE d.status NOT IN ('succeeded', 'skipped', 'failed')
              AND (d.status = 'queued' OR d.lease_until < now())
              AND NOT (d.status = 'claimed' AND d.lost_claims + 1 >= :max_lost)
            RETURNING d.chat_id, d.day, d.claims, d.lost_claims, d.attempts, d.claim_token
            ), a AS (
                INSERT INTO attempts (chat_id, day, attempt_no, claim_token, started_at, task_id)
                SELECT chat_id, day, attempts, claim_token, clock_timestamp(), :task_id FROM c
                WHERE :begin = 1
                RETURNING id, attempt_no
            )
            SELECT c.claims, c.lost_claims, a.id AS attempt_id, a.attempt_no
            FROM c LEFT JOIN a ON true
            """
)

_BEGIN_ATTEMPT_SQL = text(
    """
            WITH d AS (
                UPDATE share_days SET attempts = attempts + 1, updated_at = now()
                WHERE chat_id = :chat_id AND day = :day AND claim_token = :token
                  AND status = 'claimed'
                RETURNING chat_id, day, attempts, claim_token
            )
            INSERT INTO attempts (chat_id, day, attempt_no, claim_token, started_at, task_id)
            SELECT chat_id, day, attempts, claim_token, clock_timestamp(), :task_id FROM d
            RETURNING id, attempt_no
            """
)

_FINISH_ATTEMPT_SQL = text(
    """
            UPDATE attempts SET finished_at = clock_timestamp(), outcome = :outcome,
                http_status = :status, linq_code = :code, error = :error,
                retry_after_s = :retry_after, trace_id = :trace
            WHERE id = :id
            """
)

_FINISH_SQL = text(
    """
            WITH a AS (
                UPDATE attempts SET finished_at = clock_timestamp(), outcome = :outcome,
                    http_status = :http_status, linq_code = :code, error = :error,
                    retry_after_s = :retry_after, trace_id = :trace
                WHERE id = :attempt_id
            )
            UPDATE share_days SET status = :status, reason = :reason,
                lease_until = now() + make_interval(secs => :delay),
                finished_at = CASE WHEN :final THEN now() END,
                confirmed_by_rate_limit = confirmed_by_rate_limit OR :confirmed,
                updated_at = now()
            WHERE chat_id = :chat_id AND day = :day AND claim_token = :token AND status = 'claimed'
            RETURNING 1
            """
)


@contextmanager
def autocommit(sessions: sessionmaker[Session]) -> Iterator[HotConnection]:
    """A pooled connection in autocommit mode: each statement commits by itself (raw psycopg,
    see `hotdb`)."""
    with hotdb.connect(sessions.kw["bind"]) as conn:
        yield conn


@contextmanager
def transaction(sessions: sessionmaker[Session]) -> Iterator[Session]:
    """One short transaction; connection-level failures surface as StoreUnavailable."""
    try:
        with sessions.begin() as session:
            yield session
    except (sa_exc.OperationalError, sa_exc.InterfaceError) as exc:
        raise StoreUnavailable(f"database unavailable: {type(exc.orig or exc).__name__}") from exc
    except sa_exc.DBAPIError as exc:
        if exc.connection_invalidated:
            raise StoreUnavailable("database connection lost") from exc
        raise


# --------------------------------------------------------------------------- chats and lines


@dataclass(frozen=True)
class ChatRow:
    chat_id: uuid.UUID
    line_phone: str
    facts: ChatFacts
    status_today: str | None
    unconfirmed_recent: bool = False

    @property
    def shared_today(self) -> bool:
        return self.status_today == "succeeded"

    @property
    def day_closed(self) -> bool:
        return self.status_today in ("skipped", "failed")


def load_chat(
    session: Db, chat_id: uuid.UUID, day: dt.date, *, unconfirmed_window_s: float = 300.0
) -> ChatRow | None:
    """The chat's facts, today's status, and whether one of our shares for it ended unknown
    (or never ended) within `unconfirmed_window_s` (Linq's share window)."""
    row = session.execute(
        _LOAD_CHAT_SQL,
        {"chat_id": chat_id, "day": day, "window": unconfirmed_window_s},
    ).one_or_none()
    if row is None:
        return None
    return ChatRow(
        chat_id=row.id,
        line_phone=row.line_phone,
        facts=ChatFacts(
            service=row.service,
            is_group=row.is_group,
            first_outbound_at=row.first_outbound_at,
            last_outbound_at=row.last_outbound_at,
            opted_out=row.opted_out,
            card_active=row.card_active,
            not_found=row.not_found,
        ),
        status_today=row.status_today,
        unconfirmed_recent=row.unconfirmed_recent,
    )


def ensure_lines(session: Session, phones: Sequence[str]) -> None:
    if phones:
        session.execute(
            text("INSERT INTO lines (phone_number) VALUES (:p) ON CONFLICT DO NOTHING"),
            [{"p": p} for p in sorted(set(phones))],
        )


def record_activity(session: Session, facts: Sequence[ChatActivity]) -> None:
    """Upsert chats. Outbound times only widen [first, last]; None leaves a field as it is."""
    if not facts:
        return
    ensure_lines(session, [f.line_phone for f in facts])
    session.execute(
        text(
            """
            INSERT INTO chats AS c (id, line_phone, service, is_group, first_outbound_at,
                                    last_outbound_at, opted_out, opted_out_at, health_status)
            VALUES (:chat_id, :line_phone, :service, coalesce(:is_group, false), :outbound_at,
                    :outbound_at, coalesce(:opted_out, false),
                    CASE WHEN :opted_out THEN now() END, :health_status)
            ON CONFLICT (id) DO UPDATE SET
                line_phone = EXCLUDED.line_phone,
                service = coalesce(:service, c.service),
                is_group = coalesce(:is_group, c.is_group),
                first_outbound_at = CASE
                    WHEN c.first_outbound_at IS NULL THEN EXCLUDED.first_outbound_at
                    WHEN EXCLUDED.first_outbound_at IS NULL THEN c.first_outbound_at
                    ELSE least(c.first_outbound_at, EXCLUDED.first_outbound_at) END,
                last_outbound_at = CASE
                    WHEN c.last_outbound_at IS NULL THEN EXCLUDED.last_outbound_at
                    WHEN EXCLUDED.last_outbound_at IS NULL THEN c.last_outbound_at
                    ELSE greatest(c.last_outbound_at, EXCLUDED.last_outbound_at) END,
                opted_out = CASE WHEN :opted_out IS NULL THEN c.opted_out
                                 WHEN NOT :opted_out AND c.opted_out_at > :inbound_at THEN c.opted_out
                                 ELSE :opted_out END,
                opted_out_at = CASE WHEN :opted_out IS NULL THEN c.opted_out_at
                                    WHEN :opted_out THEN coalesce(c.opted_out_at, now())
                                    WHEN c.opted_out_at > :inbound_at THEN c.opted_out_at END,
                health_status = coalesce(:health_status, c.health_status),
                updated_at = now()
            """
        ),
        [
            {
                "chat_id": f.chat_id,
                "line_phone": f.line_phone,
                "service": f.service,
                "is_group": f.is_group,
                "outbound_at": f.outbound_at,
                "opted_out": f.opted_out,
                "health_status": f.health_status,
                "inbound_at": f.inbound_at,
            }
            for f in facts
        ],
    )


@dataclass(frozen=True)
class CardState:
    phone_number: str
    first_name: str | None
    last_name: str | None
    image_url: str | None
    is_active: bool


def store_cards(session: Session, cards: Sequence[CardState], *, complete: bool) -> int:
    """Cache Linq's card list. With `complete`, lines missing from it have no active card."""
    for card in cards:
        session.execute(
            text(
                """
                INSERT INTO lines (phone_number, first_name, last_name, image_url, card_active,
                                   card_checked_at)
                VALUES (:p, :first, :last, :image, :active, now())
                ON CONFLICT (phone_number) DO UPDATE SET
                    first_name = EXCLUDED.first_name, last_name = EXCLUDED.last_name,
                    image_url = EXCLUDED.image_url, card_active = EXCLUDED.card_active,
                    card_checked_at = now(), updated_at = now()
                """
            ),
            {
                "p": card.phone_number,
                "first": card.first_name,
                "last": card.last_name,
                "image": card.image_url,
                "active": card.is_active,
            },
        )
    if complete:
        session.execute(
            text(
                """
                UPDATE lines SET card_active = false, card_checked_at = now(), updated_at = now()
                WHERE NOT (phone_number = ANY(:listed))
                """
            ),
            {"listed": [c.phone_number for c in cards]},
        )
    return sum(1 for c in cards if c.is_active)


def mark_card_inactive(session: Session, line_phone: str) -> None:
    session.execute(
        text(
            "UPDATE lines SET card_active = false, card_checked_at = now(), updated_at = now() "
            "WHERE phone_number = :p"
        ),
        {"p": line_phone},
    )


def mark_opted_out(session: Session, chat_id: uuid.UUID) -> None:
    session.execute(
        text("UPDATE chats SET opted_out = true, opted_out_at = now(), updated_at = now() WHERE id = :c"),
        {"c": chat_id},
    )


def mark_not_found(session: Session, chat_id: uuid.UUID) -> None:
    session.execute(
        text("UPDATE chats SET not_found_at = now(), updated_at = now() WHERE id = :c"),
        {"c": chat_id},
    )


# --------------------------------------------------------------------------- claim and record


@dataclass(frozen=True)
class Claim:
    chat_id: uuid.UUID
    day: dt.date
    token: uuid.UUID
    claims: int
    lost_claims: int
    first_attempt: tuple[int, int] | None = None  # (attempt id, attempt no) when begun with the claim


def claim(
    session: Db,
    chat_id: uuid.UUID,
    day: dt.date,
    *,
    lease_s: float,
    max_lost_claims: int,
    task_id: str | None,
    begin: bool = False,
) -> Claim | None:
    """Take the chat-day, or None when its day ended (succeeded, skipped, failed) or someone
    holds a live lease. With `begin`, the first attempt row is written by the same statement
    (`Claim.first_attempt`), saving a round trip on every share.

    A queued row is free to take; any other open row only once its lease has expired. A
    'claimed' row whose lease expired lost its holder (crash): that counts toward the poison
    limit, and at the limit the row is left for recovery to mark failed.
    """
    token = uuid.uuid4()
    row = session.execute(
        _CLAIM_SQL,
        {
            "chat_id": chat_id,
            "day": day,
            "lease": lease_s,
            "token": token,
            "task_id": task_id,
            "max_lost": max_lost_claims,
            "begin": int(begin),
        },
    ).one_or_none()
    if row is None:
        return None
    first = (row.attempt_id, row.attempt_no) if begin else None
    return Claim(
        chat_id=chat_id,
        day=day,
        token=token,
        claims=row.claims,
        lost_claims=row.lost_claims,
        first_attempt=first,
    )


def begin_attempt(session: Db, claim_: Claim, *, task_id: str | None) -> tuple[int, int] | None:
    """Write the attempt row before the call; None if the claim was taken over (do not call)."""
    row = session.execute(
        _BEGIN_ATTEMPT_SQL,
        {"chat_id": claim_.chat_id, "day": claim_.day, "token": claim_.token, "task_id": task_id},
    ).one_or_none()
    return None if row is None else (row.id, row.attempt_no)


@dataclass(frozen=True)
class AttemptResult:
    outcome: AttemptOutcome
    http_status: int | None = None
    linq_code: int | None = None
    error: str | None = None
    retry_after_s: float | None = None
    trace_id: str | None = None


def add_lost_claim(session: Db, claim_: Claim) -> int | None:
    """Charge one crash to this chat-day (fenced); the new count, or None if the claim is gone."""
    return session.execute(
        text(
            "UPDATE share_days SET lost_claims = lost_claims + 1, updated_at = now() "
            "WHERE chat_id = :c AND day = :d AND claim_token = :t AND status = 'claimed' "
            "RETURNING lost_claims"
        ),
        {"c": claim_.chat_id, "d": claim_.day, "t": claim_.token},
    ).scalar_one_or_none()


def finish_attempt(session: Db, attempt_id: int, result: AttemptResult) -> None:
    session.execute(
        _FINISH_ATTEMPT_SQL,
        {
            "id": attempt_id,
            "outcome": result.outcome.value,
            "status": result.http_status,
            "code": result.linq_code,
            "error": (result.error or "")[:500] or None,
            "retry_after": result.retry_after_s,
            "trace": result.trace_id,
        },
    )


def finish_day(
    session: Db,
    claim_: Claim,
    status: DayStatus,
    *,
    reason: str | None = None,
    retry_in_s: float | None = None,
    confirmed_by_rate_limit: bool = False,
) -> bool:
    """Record the claim's result, fenced by its token. False: the claim was lost meanwhile.

    Final statuses end the lease now; retry/unknown keep the row closed until `retry_in_s`.
    """
    final = status in (DayStatus.SUCCEEDED, DayStatus.SKIPPED, DayStatus.FAILED)
    result = session.execute(
        text(
            """
            UPDATE share_days SET status = :status, reason = :reason,
                lease_until = now() + make_interval(secs => :delay),
                finished_at = CASE WHEN :final THEN now() END,
                confirmed_by_rate_limit = confirmed_by_rate_limit OR :confirmed,
                updated_at = now()
            WHERE chat_id = :chat_id AND day = :day AND claim_token = :token AND status = 'claimed'
            """
        ),
        {
            "status": status.value,
            "reason": reason,
            "delay": 0.0 if final else float(retry_in_s or 0.0),
            "final": final,
            "confirmed": confirmed_by_rate_limit,
            "chat_id": claim_.chat_id,
            "day": claim_.day,
            "token": claim_.token,
        },
    )
    return bool(getattr(result, "rowcount", 0))


def finish(
    session: Db,
    claim_: Claim,
    attempt_id: int,
    result: AttemptResult,
    status: DayStatus,
    *,
    reason: str | None = None,
    retry_in_s: float | None = None,
    confirmed_by_rate_limit: bool = False,
) -> bool:
    """finish_attempt and finish_day in one statement (the common path of every share)."""
    final = status in (DayStatus.SUCCEEDED, DayStatus.SKIPPED, DayStatus.FAILED)
    row = session.execute(
        _FINISH_SQL,
        {
            "attempt_id": attempt_id,
            "outcome": result.outcome.value,
            "http_status": result.http_status,
            "code": result.linq_code,
            "error": (result.error or "")[:500] or None,
            "retry_after": result.retry_after_s,
            "trace": result.trace_id,
            "status": status.value,
            "reason": reason,
            "delay": 0.0 if final else float(retry_in_s or 0.0),
            "final": final,
            "confirmed": confirmed_by_rate_limit,
            "chat_id": claim_.chat_id,
            "day": claim_.day,
            "token": claim_.token,
        },
    ).first()
    return row is not None


def close_unclaimed(session: Db, chat_id: uuid.UUID, day: dt.date, status: DayStatus, reason: str) -> bool:
    """End a chat-day nobody holds (a not-due chat, a stale day) without a claim."""
    result = session.execute(
        text(
            """
            UPDATE share_days SET status = :status, reason = :reason, lease_until = now(),
                finished_at = now(), updated_at = now()
            WHERE chat_id = :chat_id AND day = :day
              AND (status = 'queued' OR (status IN ('claimed', 'retry', 'unknown') AND lease_until < now()))
            """
        ),
        {"status": status.value, "reason": reason, "chat_id": chat_id, "day": day},
    )
    return bool(getattr(result, "rowcount", 0))


# --------------------------------------------------------------------------- sweep and recovery


@dataclass(frozen=True)
class Page:
    scanned: int
    last_id: uuid.UUID | None
    queued: list[uuid.UUID]


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
        text(
            """
            WITH due AS (
                SELECT c.id FROM chats c
                JOIN lines l ON l.phone_number = c.line_phone
                WHERE c.id > :after
                  AND c.service = 'iMessage' AND NOT c.opted_out AND c.not_found_at IS NULL
                  AND (:groups OR NOT c.is_group)
                  AND c.first_outbound_at <= :now
                  AND coalesce(c.last_outbound_at, c.first_outbound_at) >= :active_since
                  AND l.card_active
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
                WHERE d.status IN ('queued', 'claimed', 'retry', 'unknown')
                  AND d.lease_until < now()
                  AND NOT (d.status = 'claimed' AND d.lost_claims + 1 >= :max_lost)
                RETURNING chat_id
            )
            SELECT (SELECT count(*) FROM due) AS scanned,
                   (SELECT max(id::text) FROM due) AS last_id,
                   ARRAY(SELECT chat_id FROM marked ORDER BY chat_id) AS queued
            """
        ),
        {
            "after": after or NIL_UUID,
            "groups": policy.share_groups,
            "now": now,
            "active_since": active_since(now, policy),
            "limit": limit,
            "day": day,
            "qlease": queue_lease_s,
            "max_lost": max_lost_claims,
        },
    ).one()
    last = uuid.UUID(row.last_id) if row.last_id else None
    return Page(scanned=row.scanned, last_id=last, queued=list(row.queued or []))


def requeue_expired(
    session: Session,
    *,
    day: dt.date,
    limit: int,
    queue_lease_s: float,
    queue_drained: bool,
    stale_queued_s: float,
    max_lost_claims: int,
) -> list[uuid.UUID]:
    """Open chat-days of `day` whose lease ran out (crash, lost message, retry due): re-queue.

    With the broker queue drained, a 'queued' row untouched for `stale_queued_s` lost its
    message (Redis restarted, a publish failed, a killed worker had prefetched it), whatever its
    queue lease says.
    """
    rows = session.execute(
        text(
            """
            WITH expired AS (
                SELECT chat_id, day FROM share_days
                WHERE day = :day AND status IN ('queued', 'claimed', 'retry', 'unknown')
                  AND (lease_until < now()
                       OR (:drained AND status = 'queued'
                           AND updated_at < now() - make_interval(secs => :stale)))
                  AND NOT (status = 'claimed' AND lost_claims + 1 >= :max_lost)
                ORDER BY lease_until
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
            RETURNING d.chat_id
            """
        ),
        {
            "day": day,
            "limit": limit,
            "qlease": queue_lease_s,
            "drained": queue_drained,
            "stale": stale_queued_s,
            "max_lost": max_lost_claims,
        },
    ).all()
    return [r.chat_id for r in rows]


def fail_poisoned(session: Session, *, day: dt.date, max_lost_claims: int) -> int:
    """Chat-days whose holder vanished `max_lost_claims` times: stop trying, say why."""
    result = session.execute(
        text(
            """
            UPDATE share_days SET status = 'failed', finished_at = now(), updated_at = now(),
                lost_claims = lost_claims + 1,
                reason = 'poison: the worker was lost ' || (lost_claims + 1)
                         || ' times while sharing (crash or kill); not retried today'
            WHERE day = :day AND status = 'claimed' AND lease_until < now()
              AND lost_claims + 1 >= :max_lost
            """
        ),
        {"day": day, "max_lost": max_lost_claims},
    )
    return int(getattr(result, "rowcount", 0))


def close_past_days(session: Session, *, before: dt.date) -> int:
    """Missed days are not made up (decisions.md 8): end what a past day left open.

    'unknown' stays unknown: it counts neither as shared nor as missed.
    """
    result = session.execute(
        text(
            """
            UPDATE share_days SET status = 'failed', finished_at = now(), updated_at = now(),
                reason = 'day_over: the day ended before the share succeeded'
            WHERE day < :before AND status IN ('queued', 'claimed', 'retry')
            """
        ),
        {"before": before},
    )
    return int(getattr(result, "rowcount", 0))


def try_advisory_lock(session: Session, key: int) -> bool:
    """Transaction-scoped: released at commit/rollback, so a dead sweeper never holds it."""
    return bool(session.execute(text("SELECT pg_try_advisory_xact_lock(:k)"), {"k": key}).scalar())


def start_run(session: Session, kind: str, day: dt.date) -> int:
    return int(
        session.execute(
            text(
                "INSERT INTO sweep_runs (kind, day, started_at) VALUES (:k, :d, clock_timestamp()) "
                "RETURNING id"
            ),
            {"k": kind, "d": day},
        ).scalar_one()
    )


def finish_run(session: Session, run_id: int, *, scanned: int, enqueued: int, error: str | None) -> None:
    session.execute(
        text(
            "UPDATE sweep_runs SET finished_at = clock_timestamp(), scanned = :s, enqueued = :e, "
            "error = :err WHERE id = :id"
        ),
        {"id": run_id, "s": scanned, "e": enqueued, "err": error},
    )


def audit(
    session: Session, *, actor: str, action: str, chat_ref: str | None, outcome: str, detail: str | None
) -> None:
    session.execute(
        text(
            "INSERT INTO audit_events (actor, action, chat_ref, outcome, detail) "
            "VALUES (:actor, :action, :chat, :outcome, :detail)"
        ),
        {"actor": actor, "action": action, "chat": chat_ref, "outcome": outcome, "detail": detail},
    )


# --------------------------------------------------------------------------- reporting


def day_counts(session: Session, day: dt.date) -> dict[str, int]:
    rows = session.execute(
        text("SELECT status, count(*) AS n FROM share_days WHERE day = :day GROUP BY status"),
        {"day": day},
    ).all()
    return {str(r.status): int(r.n) for r in rows}


def day_reasons(session: Session, day: dt.date) -> dict[str, int]:
    rows = session.execute(
        text(
            """
            SELECT status || ':' || split_part(coalesce(reason, '-'), ':', 1), count(*)
            FROM share_days WHERE day = :day AND status IN ('skipped', 'failed', 'unknown', 'retry')
            GROUP BY 1
            """
        ),
        {"day": day},
    ).all()
    return {str(k): int(n) for k, n in rows}


# =========================================================================== contact cards (issue #5)
# Card writes (cardshare's own count of Linq's per-number write budget) and the read side of
# `cardshare card list`. Everything below is used only by worker/cards.py.


@dataclass(frozen=True)
class WriteSlot:
    """A reserved card write (`write_id` set), or a refusal: `used` writes, next one in `wait_s`."""

    write_id: int | None
    used: int
    wait_s: float


def reserve_card_write(
    session: Session, phone: str, method: str, *, limit: int, window_s: float
) -> WriteSlot:
    """Count this number's writes in the window and, if one is left, record ours before the call."""
    # Two operators writing one number at once must not both take the last slot.
    session.execute(
        text("SELECT pg_advisory_xact_lock(hashtext('cardshare-card-writes'), hashtext(:p))"), {"p": phone}
    )
    left = [
        float(v)
        for v in session.execute(
            text(
                """
                SELECT extract(epoch FROM at + make_interval(secs => :window) - now())
                FROM card_writes
                WHERE phone_number = :p AND counted AND at > now() - make_interval(secs => :window)
                ORDER BY at DESC
                """
            ),
            {"p": phone, "window": window_s},
        ).scalars()
    ]
    if len(left) >= limit:
        # The limit-th newest write is the one whose expiry frees a slot.
        return WriteSlot(None, len(left), max(0.0, left[limit - 1]))
    write_id = session.execute(
        text("INSERT INTO card_writes (phone_number, method) VALUES (:p, :m) RETURNING id"),
        {"p": phone, "m": method},
    ).scalar_one()
    return WriteSlot(int(write_id), len(left) + 1, 0.0)


def finish_card_write(
    session: Session,
    write_id: int,
    *,
    status: int | None,
    code: int | None,
    trace_id: str | None,
    counted: bool,
) -> None:
    session.execute(
        text(
            "UPDATE card_writes SET http_status = :status, linq_code = :code, trace_id = :trace, "
            "counted = :counted WHERE id = :id"
        ),
        {"id": write_id, "status": status, "code": code, "trace": trace_id, "counted": counted},
    )


def card_writes_used(session: Session, phone: str, *, window_s: float) -> int:
    return int(
        session.execute(
            text(
                "SELECT count(*) FROM card_writes WHERE phone_number = :p AND counted "
                "AND at > now() - make_interval(secs => :window)"
            ),
            {"p": phone, "window": window_s},
        ).scalar_one()
    )


@dataclass(frozen=True)
class CachedLine:
    """What the sweep believes about a line's card (the `lines` row)."""

    phone_number: str
    first_name: str | None
    last_name: str | None
    image_url: str | None
    card_active: bool
    card_checked_at: dt.datetime | None


def cached_lines(session: Session, phones: Sequence[str] | None = None) -> dict[str, CachedLine]:
    """Every line (or the given ones) as cached in `lines`."""
    rows = session.execute(
        text(
            """
            SELECT phone_number, first_name, last_name, image_url, card_active, card_checked_at
            FROM lines WHERE :all OR phone_number = ANY(:phones)
            ORDER BY phone_number
            """
        ),
        {"all": phones is None, "phones": list(phones or [])},
    ).all()
    return {r.phone_number: CachedLine(*r) for r in rows}


def due_today_by_line(
    session: Session, phones: Sequence[str], *, day: dt.date, now: dt.datetime, policy: Policy
) -> dict[str, int]:
    """Per line: chats that meet every rule of the day except the card's (still open today)."""
    if not phones:
        return {}
    rows = session.execute(
        text(
            """
            SELECT c.line_phone, count(*) FROM chats c
            LEFT JOIN share_days d ON d.chat_id = c.id AND d.day = :day
            WHERE c.line_phone = ANY(:phones)
              AND c.service = 'iMessage' AND NOT c.opted_out AND c.not_found_at IS NULL
              AND (:groups OR NOT c.is_group)
              AND c.first_outbound_at <= :now
              AND coalesce(c.last_outbound_at, c.first_outbound_at) >= :active_since
              AND (d.status IS NULL OR d.status IN ('queued', 'claimed', 'retry', 'unknown'))
            GROUP BY c.line_phone
            """
        ),
        {
            "phones": list(phones),
            "day": day,
            "groups": policy.share_groups,
            "now": now,
            "active_since": active_since(now, policy),
        },
    ).all()
    return {str(p): int(n) for p, n in rows}


# ------------------------------------------------------------------- ingestion (webhooks, sync, import)
# Chat facts go through record_activity above; these keep the bookkeeping around it.


class Delivery(enum.StrEnum):
    NEW = "new"  # first delivery of the event: act on it
    DUPLICATE = "duplicate"  # Linq's retry of an event already recorded: nothing to do
    REPLAYED = "replayed"  # the very same signed request again: refuse it


def record_webhook_event(
    session: Session,
    *,
    event_id: str,
    webhook_id: str | None,
    event_type: str,
    chat_id: uuid.UUID | None,
    delivery: str,
) -> Delivery:
    """Remember one delivery of a webhook event; say whether the event is new.

    Two deliveries of one new event race on the primary key: the second waits for the first to
    commit, then sees a duplicate.
    """
    inserted = session.execute(
        text(
            """
            INSERT INTO webhook_events (event_id, webhook_id, event_type, chat_id, deliveries)
            VALUES (:event_id, :webhook_id, :event_type, :chat_id, ARRAY[CAST(:delivery AS text)])
            ON CONFLICT (event_id) DO NOTHING
            RETURNING event_id
            """
        ),
        {
            "event_id": event_id,
            "webhook_id": webhook_id,
            "event_type": event_type,
            "chat_id": chat_id,
            "delivery": delivery,
        },
    ).first()
    if inserted is not None:
        return Delivery.NEW
    retried = session.execute(
        text(
            """
            UPDATE webhook_events
            SET deliveries = array_append(deliveries, CAST(:delivery AS text)), last_delivery_at = now()
            WHERE event_id = :event_id AND NOT (CAST(:delivery AS text) = ANY(deliveries))
            RETURNING event_id
            """
        ),
        {"event_id": event_id, "delivery": delivery},
    ).first()
    return Delivery.DUPLICATE if retried is not None else Delivery.REPLAYED


# Dedupe rows must outlive Linq's retry window (~30 minutes); a week is far beyond it.
WEBHOOK_EVENT_RETENTION_S = 7 * 86400.0


def prune_webhook_events(
    session: Session, *, older_than_s: float = WEBHOOK_EVENT_RETENTION_S, limit: int = 10_000
) -> int:
    """Forget dedupe rows far older than Linq's retry window, a bounded batch at a time."""
    result = session.execute(
        text(
            """
            DELETE FROM webhook_events WHERE event_id IN (
                SELECT event_id FROM webhook_events
                WHERE received_at < now() - make_interval(secs => :age)
                LIMIT :limit
            )
            """
        ),
        {"age": older_than_s, "limit": limit},
    )
    return int(getattr(result, "rowcount", 0))


def known_lines(session: Session) -> list[str]:
    return list(session.execute(text("SELECT phone_number FROM lines ORDER BY 1")).scalars())


def sync_cursor(session: Session, line_phone: str) -> str | None:
    """The page an unfinished pass over this line's chats stopped at; None: start from the top."""
    value = session.execute(
        text("SELECT cursor FROM sync_cursors WHERE line_phone = :p"), {"p": line_phone}
    ).scalar()
    return None if value is None else str(value)


def save_sync_page(
    session: Session, line_phone: str, *, next_cursor: str | None, chats: int, fresh: bool
) -> None:
    """After a page is recorded: where the next one starts (None: the pass is complete)."""
    ensure_lines(session, [line_phone])
    session.execute(
        text(
            """
            INSERT INTO sync_cursors AS s (line_phone, cursor, pages, chats, started_at, finished_at)
            VALUES (:p, CAST(:cursor AS text), 1, :chats, now(),
                    CASE WHEN CAST(:cursor AS text) IS NULL THEN now() END)
            ON CONFLICT (line_phone) DO UPDATE SET
                cursor = EXCLUDED.cursor,
                pages = CASE WHEN :fresh THEN 1 ELSE s.pages + 1 END,
                chats = CASE WHEN :fresh THEN 0 ELSE s.chats END + :chats,
                started_at = CASE WHEN :fresh THEN now() ELSE s.started_at END,
                finished_at = EXCLUDED.finished_at,
                updated_at = now()
            """
        ),
        {"p": line_phone, "cursor": next_cursor, "chats": chats, "fresh": fresh},
    )


@dataclass(frozen=True)
class LookupCandidate:
    chat_id: uuid.UUID
    line_phone: str
    cursor: str | None


def lookup_candidates(
    session: Session, *, lines: Sequence[str] | None, include_groups: bool, limit: int
) -> list[LookupCandidate]:
    """iMessage chats with no known outbound message: a lookup cut short first, then never
    looked at, then the longest ago."""
    rows = session.execute(
        text(
            """
            SELECT c.id, c.line_phone, m.cursor FROM chats c
            LEFT JOIN message_lookups m ON m.chat_id = c.id
            WHERE c.first_outbound_at IS NULL AND c.service = 'iMessage'
              AND c.not_found_at IS NULL AND NOT c.opted_out
              AND (:groups OR NOT c.is_group)
              AND (:all_lines OR c.line_phone = ANY(:lines))
            ORDER BY m.cursor IS NULL, m.checked_at NULLS FIRST, c.id
            LIMIT :limit
            """
        ),
        {"groups": include_groups, "all_lines": lines is None, "lines": list(lines or []), "limit": limit},
    ).all()
    return [LookupCandidate(r.id, r.line_phone, r.cursor) for r in rows]


def save_lookup(session: Session, chat_id: uuid.UUID, *, cursor: str | None, pages: int, found: bool) -> None:
    session.execute(
        text(
            """
            INSERT INTO message_lookups AS m (chat_id, cursor, pages, found_outbound, checked_at)
            VALUES (:c, :cursor, :pages, :found, now())
            ON CONFLICT (chat_id) DO UPDATE SET
                cursor = EXCLUDED.cursor, pages = m.pages + EXCLUDED.pages,
                found_outbound = EXCLUDED.found_outbound, checked_at = now()
            """
        ),
        {"c": chat_id, "cursor": cursor, "pages": pages, "found": found},
    )


# =========================================================================== operations (issue #8)
# Read-only queries behind `cardshare status`, `cardshare history` and the status page.


@contextmanager
def read_only(sessions: sessionmaker[Session]) -> Iterator[Session]:
    """A transaction that cannot write: status readers must never change what they report."""
    with transaction(sessions) as session:
        session.execute(text("SET TRANSACTION READ ONLY"))
        yield session


@dataclass(frozen=True)
class DayCount:
    """Chat-days of one line in one status, grouped by the first word of their reason."""

    line_phone: str
    status: str
    kind: str | None
    count: int
    confirmed: int


def day_status_counts(session: Session, day: dt.date) -> list[DayCount]:
    """Every chat-day of `day`, counted per line, status and reason kind ("card_inactive", ...)."""
    rows = session.execute(
        text(
            """
            SELECT c.line_phone, d.status, substring(d.reason FROM '^[a-z_]+') AS kind,
                   count(*) AS n, count(*) FILTER (WHERE d.confirmed_by_rate_limit) AS confirmed
            FROM share_days d JOIN chats c ON c.id = d.chat_id
            WHERE d.day = :day
            GROUP BY 1, 2, 3
            """
        ),
        {"day": day},
    ).all()
    return [DayCount(r.line_phone, r.status, r.kind, int(r.n), int(r.confirmed)) for r in rows]


def unmarked_due_by_line(
    session: Session, *, day: dt.date, now: dt.datetime, policy: Policy
) -> dict[str, int]:
    """Per line: chats due now that no sweep has marked for `day` yet (the sweep's own rules)."""
    rows = session.execute(
        text(
            """
            SELECT c.line_phone, count(*) FROM chats c
            JOIN lines l ON l.phone_number = c.line_phone
            WHERE c.service = 'iMessage' AND NOT c.opted_out AND c.not_found_at IS NULL
              AND (:groups OR NOT c.is_group)
              AND c.first_outbound_at <= :now
              AND coalesce(c.last_outbound_at, c.first_outbound_at) >= :active_since
              AND l.card_active
              AND NOT EXISTS (SELECT 1 FROM share_days d WHERE d.chat_id = c.id AND d.day = :day)
            GROUP BY c.line_phone
            """
        ),
        {"day": day, "groups": policy.share_groups, "now": now, "active_since": active_since(now, policy)},
    ).all()
    return {str(p): int(n) for p, n in rows}


def line_cards(session: Session) -> dict[str, bool]:
    return {str(p): bool(a) for p, a in session.execute(text("SELECT phone_number, card_active FROM lines"))}


@dataclass(frozen=True)
class RunRow:
    kind: str
    day: dt.date
    started_at: dt.datetime
    finished_at: dt.datetime | None
    scanned: int
    enqueued: int
    error: str | None


def last_runs(session: Session) -> dict[str, RunRow]:
    """The newest run of each kind that records runs (by start time)."""
    rows = session.execute(
        text(
            """
            SELECT DISTINCT ON (kind) kind, day, started_at, finished_at, scanned, enqueued, error
            FROM sweep_runs ORDER BY kind, started_at DESC
            """
        )
    ).all()
    return {r.kind: RunRow(*r) for r in rows}


@dataclass(frozen=True)
class FailureRow:
    chat_id: uuid.UUID
    day: dt.date
    line_phone: str
    status: str
    reason: str | None
    at: dt.datetime
    http_status: int | None
    linq_code: int | None
    trace_id: str | None


def recent_failures(session: Session, *, since: dt.date, limit: int) -> list[FailureRow]:
    """Failed and unknown-outcome chat-days since `since`, newest first, with their last attempt."""
    rows = session.execute(
        text(
            """
            SELECT d.chat_id, d.day, c.line_phone, d.status, d.reason,
                   coalesce(d.finished_at, d.updated_at) AS at, a.http_status, a.linq_code, a.trace_id
            FROM share_days d
            JOIN chats c ON c.id = d.chat_id
            LEFT JOIN LATERAL (
                SELECT http_status, linq_code, trace_id FROM attempts
                WHERE chat_id = d.chat_id AND day = d.day ORDER BY attempt_no DESC LIMIT 1
            ) a ON true
            WHERE d.day >= :since AND d.status IN ('failed', 'unknown')
            ORDER BY at DESC, d.chat_id
            LIMIT :limit
            """
        ),
        {"since": since, "limit": limit},
    ).all()
    return [FailureRow(*r) for r in rows]


@dataclass(frozen=True)
class ChatInfo:
    chat_id: uuid.UUID
    line_phone: str
    service: str | None
    is_group: bool
    first_outbound_at: dt.datetime | None
    last_outbound_at: dt.datetime | None
    opted_out: bool
    opted_out_at: dt.datetime | None
    not_found_at: dt.datetime | None
    card_active: bool
    created_at: dt.datetime


def chat_info(session: Session, chat_id: uuid.UUID) -> ChatInfo | None:
    row = session.execute(
        text(
            """
            SELECT c.id, c.line_phone, c.service, c.is_group, c.first_outbound_at, c.last_outbound_at,
                   c.opted_out, c.opted_out_at, c.not_found_at, l.card_active, c.created_at
            FROM chats c JOIN lines l ON l.phone_number = c.line_phone WHERE c.id = :c
            """
        ),
        {"c": chat_id},
    ).one_or_none()
    return None if row is None else ChatInfo(*row)


@dataclass(frozen=True)
class DayRow:
    day: dt.date
    status: str
    reason: str | None
    attempts: int
    claims: int
    lost_claims: int
    enqueues: int
    confirmed_by_rate_limit: bool
    created_at: dt.datetime
    finished_at: dt.datetime | None


def chat_days(session: Session, chat_id: uuid.UUID, *, since: dt.date | None) -> list[DayRow]:
    rows = session.execute(
        text(
            """
            SELECT day, status, reason, attempts, claims, lost_claims, enqueues,
                   confirmed_by_rate_limit, created_at, finished_at
            FROM share_days WHERE chat_id = :c AND (CAST(:since AS date) IS NULL OR day >= :since)
            ORDER BY day DESC
            """
        ),
        {"c": chat_id, "since": since},
    ).all()
    return [DayRow(*r) for r in rows]


@dataclass(frozen=True)
class AttemptRow:
    day: dt.date
    attempt_no: int
    started_at: dt.datetime
    finished_at: dt.datetime | None
    outcome: str | None
    http_status: int | None
    linq_code: int | None
    trace_id: str | None
    error: str | None
    retry_after_s: float | None
    task_id: str | None


def chat_attempts(session: Session, chat_id: uuid.UUID, *, since: dt.date | None) -> list[AttemptRow]:
    rows = session.execute(
        text(
            """
            SELECT day, attempt_no, started_at, finished_at, outcome, http_status, linq_code, trace_id,
                   error, retry_after_s, task_id
            FROM attempts WHERE chat_id = :c AND (CAST(:since AS date) IS NULL OR day >= :since)
            ORDER BY day DESC, attempt_no
            """
        ),
        {"c": chat_id, "since": since},
    ).all()
    return [AttemptRow(*r) for r in rows]


@dataclass(frozen=True)
class AuditRow:
    at: dt.datetime
    actor: str
    action: str
    outcome: str
    detail: str | None


def chat_audit(session: Session, chat_ref: str, *, limit: int = 50) -> list[AuditRow]:
    rows = session.execute(
        text(
            "SELECT at, actor, action, outcome, detail FROM audit_events WHERE chat_ref = :c "
            "ORDER BY at DESC, id DESC LIMIT :limit"
        ),
        {"c": chat_ref, "limit": limit},
    ).all()
    return [AuditRow(*r) for r in rows]
