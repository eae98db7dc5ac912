"""One share's statements: load the chat, claim its day, write attempts, finish.

This is the hot path: a successful share runs three of these statements (load, claim with the
first attempt row, finish), each atomic on its own, in autocommit on the driver (`store.hot`).
Every write after the claim is fenced by its token, so a worker whose lease was taken over can
neither call Linq nor record anything.
"""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

from worker.rules import bounds
from worker.rules.facts import ChatFacts
from worker.rules.gate import LineState
from worker.rules.states import CLOSED_STATUSES, FINAL_STATUSES, AttemptOutcome, DayStatus
from worker.store.due import FINAL, LEASED
from worker.store.lines import ACCOUNT_JOIN, LINE_STATE_COLUMNS, line_state
from worker.store.sql import Reader, Sql

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from worker.store.session import Db

UTC_ZONE = ZoneInfo("UTC")

# --------------------------------------------------------------------------- load

# Built once: Sql() re-parses its bind parameters on every call.
LOAD_CHAT_SQL = Sql(
    f"""
            SELECT c.id, c.line_phone, c.service, c.is_group, c.first_outbound_at,
                   c.last_outbound_at, c.opted_out, c.not_found_at IS NOT NULL AS not_found,
                   c.health_status, l.card_active, d.status AS status_today, d.reason AS reason_today,
                   coalesce(d.lease_until > now(), false) AS leased_today,
                   {LINE_STATE_COLUMNS},
                   (
                       SELECT EXTRACT(EPOCH FROM now() - max(a.started_at))::float8 FROM attempts a
                       WHERE a.chat_id = c.id AND a.day = :day
                         AND (a.outcome = 'unknown' OR a.outcome IS NULL)
                         AND a.started_at > now() - make_interval(secs => :window)
                   ) AS unconfirmed_age_s
            FROM chats c
            JOIN lines l ON l.phone_number = c.line_phone
            {ACCOUNT_JOIN}
            LEFT JOIN share_days d ON d.chat_id = c.id AND d.day = :day
            WHERE c.id = :chat_id
            """
)


@dataclass(frozen=True)
class ChatRow:
    chat_id: uuid.UUID
    line_phone: str
    facts: ChatFacts
    status_today: str | None
    # Seconds since the newest of our attempts today whose outcome is unknown (or never
    # recorded) started, when that is within Linq's share window; None otherwise.
    unconfirmed_age_s: float | None = None
    line: LineState | None = None
    reason_today: str | None = None
    leased_today: bool = False  # the day's row has a lease that has not ended

    @property
    def unconfirmed_recent(self) -> bool:
        return self.unconfirmed_age_s is not None

    @property
    def shared_today(self) -> bool:
        return self.status_today == DayStatus.SUCCEEDED

    @property
    def day_closed(self) -> bool:
        return self.status_today in CLOSED_STATUSES

    @property
    def held_waiting(self) -> bool:
        """Held, and its rest (a pace slot, a pause's end) has not ended yet."""
        return self.status_today == DayStatus.HELD and self.leased_today


def load_chat(
    session: Reader,
    chat_id: uuid.UUID,
    day: dt.date,
    *,
    unconfirmed_window_s: float = 300.0,
    default_zone: ZoneInfo = UTC_ZONE,
) -> ChatRow | None:
    """The chat's facts, its line's state (for the gate), today's status, and how long ago the
    newest of our shares for it that ended unknown (or never ended) started, if within
    `unconfirmed_window_s` (Linq's share window). One statement: the line and the account
    controls are joined, not read apart."""
    row = session.execute(
        LOAD_CHAT_SQL,
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
            health_status=row.health_status,
        ),
        status_today=row.status_today,
        unconfirmed_age_s=row.unconfirmed_age_s,
        line=line_state(row, default_zone),
        reason_today=row.reason_today,
        leased_today=row.leased_today,
    )


# --------------------------------------------------------------------------- claim

CLAIM_SQL = Sql(
    f"""
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
            WHERE d.status NOT IN {FINAL}
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
        CLAIM_SQL,
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


# --------------------------------------------------------------------------- attempts

BEGIN_ATTEMPT_SQL = Sql(
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


def begin_attempt(session: Db, claim_: Claim, *, task_id: str | None) -> tuple[int, int] | None:
    """Write the attempt row before the call; None if the claim was taken over (do not call)."""
    row = session.execute(
        BEGIN_ATTEMPT_SQL,
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


ADD_LOST_CLAIM_SQL = Sql(
    "UPDATE share_days SET lost_claims = lost_claims + 1, updated_at = now() "
    "WHERE chat_id = :c AND day = :d AND claim_token = :t AND status = 'claimed' "
    "RETURNING lost_claims"
)


def add_lost_claim(session: Db, claim_: Claim) -> int | None:
    """Charge one crash to this chat-day (fenced); the new count, or None if the claim is gone."""
    return session.execute(
        ADD_LOST_CLAIM_SQL,
        {"c": claim_.chat_id, "d": claim_.day, "t": claim_.token},
    ).scalar_one_or_none()


FINISH_ATTEMPT_SQL = Sql(
    """
            UPDATE attempts SET finished_at = clock_timestamp(), outcome = :outcome,
                http_status = :status, linq_code = :code, error = :error,
                retry_after_s = :retry_after, trace_id = :trace
            WHERE id = :id AND day = :day
            """
)


def finish_attempt(session: Db, attempt_id: int, result: AttemptResult, *, day: dt.date) -> None:
    """Record one attempt's answer. `day` names the attempt's partition (attempts are partitioned
    by day: by id alone the statement would look in every day's primary key)."""
    session.execute(
        FINISH_ATTEMPT_SQL,
        {
            "id": attempt_id,
            "day": day,
            "outcome": result.outcome.value,
            "status": result.http_status,
            "code": result.linq_code,
            "error": bounds.clean_text(result.error, bounds.ERROR_MAX),
            "retry_after": result.retry_after_s,
            "trace": result.trace_id,
        },
    )


# --------------------------------------------------------------------------- finish

FINISH_DAY_SQL = Sql(
    """
            UPDATE share_days SET status = :status, reason = :reason,
                lease_until = now() + make_interval(secs => :delay),
                finished_at = CASE WHEN :final THEN now() END,
                confirmed_by_rate_limit = confirmed_by_rate_limit OR :confirmed,
                updated_at = now()
            WHERE chat_id = :chat_id AND day = :day AND claim_token = :token AND status = 'claimed'
            """
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
    final = status in FINAL_STATUSES
    result = session.execute(
        FINISH_DAY_SQL,
        {
            "status": status.value,
            "reason": bounds.clean_text(reason, bounds.REASON_MAX),
            "delay": 0.0 if final else _delay(retry_in_s),
            "final": final,
            "confirmed": confirmed_by_rate_limit,
            "chat_id": claim_.chat_id,
            "day": claim_.day,
            "token": claim_.token,
        },
    )
    return bool(getattr(result, "rowcount", 0))


def _delay(retry_in_s: float | None) -> float:
    """A lease extension that PostgreSQL's make_interval accepts (finite, at most a day)."""
    return bounds.retry_after(retry_in_s) or 0.0


# Fenced by the claim token: a run may record its outcome while its claim is the latest one.
# `retry`/`unknown` with the same token is a claim handed back at shutdown (`hand_back`) that
# nobody has taken since: the run's late answer is still the truth (a 204 must land, or the next
# run would share again), so it may land; any newer claim changed the token.
FINISH_SQL = Sql(
    f"""
            WITH a AS (
                UPDATE attempts SET finished_at = clock_timestamp(), outcome = :outcome,
                    http_status = :http_status, linq_code = :code, error = :error,
                    retry_after_s = :retry_after, trace_id = :trace
                WHERE id = :attempt_id AND day = :day
            )
            UPDATE share_days SET status = :status, reason = :reason,
                lease_until = now() + make_interval(secs => :delay),
                finished_at = CASE WHEN :final THEN now() END,
                confirmed_by_rate_limit = confirmed_by_rate_limit OR :confirmed,
                updated_at = now()
            WHERE chat_id = :chat_id AND day = :day AND claim_token = :token AND status IN {LEASED}
            RETURNING CASE WHEN status = 'succeeded' AND NOT confirmed_by_rate_limit
                           THEN EXTRACT(EPOCH FROM finished_at - outbound_at)::float8 END
                      AS first_outbound_s
            """
)


@dataclass(frozen=True)
class Finished:
    """The outcome landed. `first_outbound_s`: for a share Linq accepted with a 2xx, seconds from
    the outbound message that made the chat-day due to now (docs/decisions.md §17); None when
    that time is unknown, the day is not a success, or a 429 confirmed it."""

    first_outbound_s: float | None = None


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
) -> Finished | None:
    """finish_attempt and finish_day in one statement (the common path of every share). None:
    the claim was lost meanwhile."""
    final = status in FINAL_STATUSES
    row = session.execute(
        FINISH_SQL,
        {
            "attempt_id": attempt_id,
            "outcome": result.outcome.value,
            "http_status": result.http_status,
            "code": result.linq_code,
            "error": bounds.clean_text(result.error, bounds.ERROR_MAX),
            "retry_after": result.retry_after_s,
            "trace": result.trace_id,
            "status": status.value,
            "reason": bounds.clean_text(reason, bounds.REASON_MAX),
            "delay": 0.0 if final else _delay(retry_in_s),
            "final": final,
            "confirmed": confirmed_by_rate_limit,
            "chat_id": claim_.chat_id,
            "day": claim_.day,
            "token": claim_.token,
        },
    ).first()
    return None if row is None else Finished(row.first_outbound_s)


CLOSE_UNCLAIMED_SQL = Sql(
    f"""
            UPDATE share_days SET status = :status, reason = :reason, lease_until = now(),
                finished_at = now(), updated_at = now()
            WHERE chat_id = :chat_id AND day = :day
              AND (status = 'queued' OR (status IN {LEASED} AND lease_until < now()))
            """
)


HOLD_UNCLAIMED_SQL = Sql(
    f"""
            INSERT INTO share_days AS d (chat_id, day, status, reason, lease_until)
            VALUES (:chat_id, :day, 'held', :reason, now() + make_interval(secs => :delay))
            ON CONFLICT (chat_id, day) DO UPDATE SET status = 'held', reason = EXCLUDED.reason,
                lease_until = EXCLUDED.lease_until, updated_at = now()
            WHERE d.status = 'queued' OR (d.status IN {LEASED} AND d.lease_until < now())
            """
)


def hold_unclaimed(session: Db, chat_id: uuid.UUID, day: dt.date, reason: str, *, delay_s: float) -> bool:
    """Hold a chat-day nobody holds (its line is held, or its pace slot is later): it rests for
    `delay_s` (or until an event re-arms it) and is not claimed meanwhile."""
    result = session.execute(
        HOLD_UNCLAIMED_SQL,
        {"chat_id": chat_id, "day": day, "reason": reason[:300], "delay": max(0.0, delay_s)},
    )
    return bool(getattr(result, "rowcount", 0))


def close_unclaimed(session: Db, chat_id: uuid.UUID, day: dt.date, status: DayStatus, reason: str) -> bool:
    """End a chat-day nobody holds (a not-due chat, a stale day) without a claim."""
    result = session.execute(
        CLOSE_UNCLAIMED_SQL,
        {
            "status": status.value,
            "reason": bounds.clean_text(reason, bounds.REASON_MAX),
            "chat_id": chat_id,
            "day": day,
        },
    )
    return bool(getattr(result, "rowcount", 0))


# --------------------------------------------------------------------------- shutdown

HAND_BACK_SQL = Sql(
    """
            WITH d AS (
                SELECT d.chat_id, d.day, d.claim_token, EXISTS (
                    SELECT 1 FROM attempts a
                    WHERE a.chat_id = d.chat_id AND a.day = d.day
                      AND a.claim_token = d.claim_token AND a.finished_at IS NULL
                ) AS in_call
                FROM share_days d
                WHERE d.task_id = ANY(:task_ids) AND d.status = 'claimed'
                FOR UPDATE
            ), u AS (
                UPDATE share_days AS s SET
                    status = CASE WHEN d.in_call THEN 'unknown' ELSE 'retry' END,
                    lease_until = now() + make_interval(secs => CASE WHEN d.in_call THEN :call_s ELSE 0 END),
                    reason = :reason, updated_at = now()
                FROM d
                WHERE s.chat_id = d.chat_id AND s.day = d.day
                RETURNING s.chat_id, s.day, s.status, extract(epoch FROM s.lease_until - now()) AS wait_s
            ), a AS (
                UPDATE attempts SET finished_at = clock_timestamp(), outcome = 'unknown', error = :reason
                FROM d
                WHERE d.in_call AND attempts.chat_id = d.chat_id AND attempts.day = d.day
                  AND attempts.claim_token = d.claim_token AND attempts.finished_at IS NULL
            )
            SELECT chat_id, day, status, wait_s FROM u
            """
)


@dataclass(frozen=True)
class HandedBack:
    chat_id: uuid.UUID
    day: dt.date
    status: DayStatus
    wait_s: float  # until the lease ends: nobody may call Linq for it before


def hand_back(session: Session, task_ids: list[str], *, reason: str, call_s: float) -> list[HandedBack]:
    """Release the chat-days these tasks still hold (a worker stopping), fenced as every write
    after a claim. No Linq call in flight: `retry`, lease ended now. A call in flight: `unknown`
    (its attempt too), lease ending when the call must have ended (`call_s`: connect plus read
    timeout), so no second call overlaps it; the next run's 429 then confirms it if Linq
    accepted it (docs/decisions.md §3). The claim token stays: the task can start no new attempt
    (`begin_attempt` wants `claimed`), but the answer it is waiting for still lands (`finish`)
    unless another worker has claimed the chat-day since."""
    if not task_ids:
        return []
    rows = session.execute(HAND_BACK_SQL, {"task_ids": task_ids, "reason": reason, "call_s": call_s}).all()
    return [HandedBack(r.chat_id, r.day, DayStatus(r.status), max(0.0, float(r.wait_s))) for r in rows]
