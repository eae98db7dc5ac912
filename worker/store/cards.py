"""Contact cards: the card cache on `lines` that the sweep reads, and `card_writes`, cardshare's own
count of Linq's 3 writes per 10 minutes per number (docs/linq-contract.md §4.4)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from sqlalchemy.orm import Session

from worker.rules import bounds
from worker.rules.cadence import Policy
from worker.store.due import CHAT_IS_DUE, DAY_IS_OPEN, binds
from worker.store.lines import LINE_DAYS, line_days_params
from worker.store.sql import Sql

# --------------------------------------------------------------------------- the card cache


@dataclass(frozen=True)
class CardState:
    phone_number: str
    first_name: str | None
    last_name: str | None
    image_url: str | None
    is_active: bool


# A sweep that finds the cache as it was writes nothing (issue 17 point 4): an unchanged card is
# only written again once its check is an hour old, so `card_checked_at` is true to the hour.
# (An INSERT ... ON CONFLICT DO UPDATE WHERE would still lock, and so log, every row: a plain
# UPDATE with the condition, then an INSERT for a new line, write nothing when nothing changed.)
CHECKED_WITHIN = "interval '1 hour'"
STALE_CHECK = "({t}card_checked_at IS NULL OR {t}card_checked_at < now() - " + CHECKED_WITHIN + ")"

UPDATE_CARD_SQL = Sql(
    f"""
                UPDATE lines SET first_name = :first, last_name = :last, image_url = :image,
                    card_active = :active, card_checked_at = now(), updated_at = now()
                WHERE phone_number = :p
                  AND ((first_name, last_name, image_url, card_active)
                       IS DISTINCT FROM (CAST(:first AS text), CAST(:last AS text), CAST(:image AS text),
                                         CAST(:active AS boolean))
                       OR {STALE_CHECK.format(t="")})
                """
)
STORE_CARD_SQL = Sql(
    """
                INSERT INTO lines (phone_number, first_name, last_name, image_url, card_active,
                                   card_checked_at)
                VALUES (:p, :first, :last, :image, :active, now())
                ON CONFLICT (phone_number) DO NOTHING
                """
)
UNLISTED_CARDS_INACTIVE_SQL = Sql(
    f"""
                UPDATE lines SET card_active = false, card_checked_at = now(), updated_at = now()
                WHERE NOT (phone_number = ANY(:listed)) AND (card_active OR {STALE_CHECK.format(t="")})
                """
)


def store_cards(session: Session, cards: Sequence[CardState], *, complete: bool) -> int:
    """Cache Linq's card list. With `complete`, lines missing from it have no active card."""
    for card in cards:
        values = {
            "p": card.phone_number,
            "first": card.first_name,
            "last": card.last_name,
            "image": card.image_url,
            "active": card.is_active,
        }
        session.execute(STORE_CARD_SQL, values)
        session.execute(UPDATE_CARD_SQL, values)
    if complete:
        session.execute(UNLISTED_CARDS_INACTIVE_SQL, {"listed": [c.phone_number for c in cards]})
    return sum(1 for c in cards if c.is_active)


MARK_CARD_INACTIVE_SQL = Sql(
    "UPDATE lines SET card_active = false, card_checked_at = now(), updated_at = now() "
    "WHERE phone_number = :p"
)


def mark_card_inactive(session: Session, line_phone: str) -> None:
    """2012 from Linq: the line has no active card now (docs/decisions.md §5)."""
    session.execute(MARK_CARD_INACTIVE_SQL, {"p": line_phone})


@dataclass(frozen=True)
class CachedLine:
    """What the sweep believes about a line's card (the `lines` row)."""

    phone_number: str
    first_name: str | None
    last_name: str | None
    image_url: str | None
    card_active: bool
    card_checked_at: dt.datetime | None


CACHED_LINES_SQL = Sql(
    """
            SELECT phone_number, first_name, last_name, image_url, card_active, card_checked_at
            FROM lines WHERE :all OR phone_number = ANY(:phones)
            ORDER BY phone_number
            """
)


def cached_lines(session: Session, phones: Sequence[str] | None = None) -> dict[str, CachedLine]:
    """Every line (or the given ones) as cached in `lines`."""
    rows = session.execute(CACHED_LINES_SQL, {"all": phones is None, "phones": list(phones or [])}).all()
    return {r.phone_number: CachedLine(*r) for r in rows}


DUE_TODAY_BY_LINE_SQL = Sql(
    f"""
            SELECT c.line_phone, count(*) FROM chats c
            JOIN lines l ON l.phone_number = c.line_phone
            JOIN {LINE_DAYS} ON ld.line_phone = c.line_phone
            LEFT JOIN share_days d ON d.chat_id = c.id AND d.day = ld.day
            WHERE {CHAT_IS_DUE}
              AND {DAY_IS_OPEN}
            GROUP BY c.line_phone
            """
)


def due_today_by_line(
    session: Session, line_days: Mapping[str, dt.date], *, now: dt.datetime, policy: Policy
) -> dict[str, int]:
    """Per line: chats that meet every rule of the line's day (`{line: day}`) except the card's,
    and are not finished (held ones count: they wait)."""
    if not line_days:
        return {}
    rows = session.execute(DUE_TODAY_BY_LINE_SQL, {**line_days_params(line_days), **binds(now, policy)}).all()
    return {str(p): int(n) for p, n in rows}


# --------------------------------------------------------------------------- card writes


@dataclass(frozen=True)
class WriteSlot:
    """A reserved card write (`write_id` set), or a refusal: `used` writes, next one in `wait_s`."""

    write_id: int | None
    used: int
    wait_s: float


CARD_WRITE_LOCK_SQL = Sql("SELECT pg_advisory_xact_lock(hashtext('cardshare-card-writes'), hashtext(:p))")
WRITES_IN_WINDOW_SQL = Sql(
    """
                SELECT extract(epoch FROM at + make_interval(secs => :window) - now())
                FROM card_writes
                WHERE phone_number = :p AND counted AND at > now() - make_interval(secs => :window)
                ORDER BY at DESC
                """
)
INSERT_CARD_WRITE_SQL = Sql("INSERT INTO card_writes (phone_number, method) VALUES (:p, :m) RETURNING id")


def reserve_card_write(
    session: Session, phone: str, method: str, *, limit: int, window_s: float
) -> WriteSlot:
    """Count this number's writes in the window and, if one is left, record ours before the call."""
    # Two operators writing one number at once must not both take the last slot.
    session.execute(CARD_WRITE_LOCK_SQL, {"p": phone})
    rows = session.execute(WRITES_IN_WINDOW_SQL, {"p": phone, "window": window_s})
    left = [float(v) for v in rows.scalars()]
    if len(left) >= limit:
        # The limit-th newest write is the one whose expiry frees a slot.
        return WriteSlot(None, len(left), max(0.0, left[limit - 1]))
    write_id = session.execute(INSERT_CARD_WRITE_SQL, {"p": phone, "m": method}).scalar_one()
    return WriteSlot(int(write_id), len(left) + 1, 0.0)


FINISH_CARD_WRITE_SQL = Sql(
    "UPDATE card_writes SET http_status = :status, linq_code = :code, trace_id = :trace, "
    "counted = :counted WHERE id = :id"
)


def finish_card_write(
    session: Session,
    write_id: int,
    *,
    status: int | None,
    code: int | None,
    trace_id: str | None,
    counted: bool,
) -> None:
    """Linq's answer to a card write, bounded to the columns (`rules.bounds`)."""
    b = bounds.bound_answer(status=status, code=code, trace_id=trace_id)
    session.execute(
        FINISH_CARD_WRITE_SQL,
        {
            "id": write_id,
            "status": b.http_status,
            "code": b.linq_code,
            "trace": b.trace_id,
            "counted": counted,
        },
    )


CARD_WRITES_USED_SQL = Sql(
    "SELECT count(*) FROM card_writes WHERE phone_number = :p AND counted "
    "AND at > now() - make_interval(secs => :window)"
)


def card_writes_used(session: Session, phone: str, *, window_s: float) -> int:
    return int(session.execute(CARD_WRITES_USED_SQL, {"p": phone, "window": window_s}).scalar_one())
