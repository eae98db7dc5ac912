"""The bookkeeping around incoming activity: webhook events (Linq's retries deduped), the chat
sync's cursors, and its message lookups. Chat facts themselves go through `chats.record_activity`."""

from __future__ import annotations

import enum
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from worker.store.chats import ensure_lines
from worker.store.sql import Reader, Sql

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

# --------------------------------------------------------------------------- webhook events


class Delivery(enum.StrEnum):
    NEW = "new"  # first delivery of the event: act on it
    DUPLICATE = "duplicate"  # Linq's retry of an event already recorded: nothing to do
    REPLAYED = "replayed"  # the very same signed request again: refuse it


INSERT_EVENT_SQL = Sql(
    """
            INSERT INTO webhook_events (event_id, webhook_id, event_type, chat_id, deliveries)
            VALUES (:event_id, :webhook_id, :event_type, :chat_id, ARRAY[CAST(:delivery AS text)])
            ON CONFLICT (event_id) DO NOTHING
            RETURNING event_id
            """
)
ADD_DELIVERY_SQL = Sql(
    """
            UPDATE webhook_events
            SET deliveries = array_append(deliveries, CAST(:delivery AS text)), last_delivery_at = now()
            WHERE event_id = :event_id AND NOT (CAST(:delivery AS text) = ANY(deliveries))
            RETURNING event_id
            """
)


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
        INSERT_EVENT_SQL,
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
    retried = session.execute(ADD_DELIVERY_SQL, {"event_id": event_id, "delivery": delivery}).first()
    return Delivery.DUPLICATE if retried is not None else Delivery.REPLAYED


# Dedupe rows must outlive Linq's retry window (~30 minutes, docs/linq-contract.md §7.2); a week
# is far beyond it.
WEBHOOK_EVENT_RETENTION_S = 7 * 86400.0

PRUNE_EVENTS_SQL = Sql(
    """
            DELETE FROM webhook_events WHERE event_id IN (
                SELECT event_id FROM webhook_events
                WHERE received_at < now() - make_interval(secs => :age)
                LIMIT :limit
            )
            """
)


def prune_webhook_events(
    session: Session, *, older_than_s: float = WEBHOOK_EVENT_RETENTION_S, limit: int = 10_000
) -> int:
    """Forget dedupe rows far older than Linq's retry window, a bounded batch at a time."""
    result = session.execute(PRUNE_EVENTS_SQL, {"age": older_than_s, "limit": limit})
    return int(getattr(result, "rowcount", 0))


# --------------------------------------------------------------------------- pending events

# An event whose line is unknown waits for its chat this long (a week: sync runs daily).
WEBHOOK_PENDING_RETENTION_S = 7 * 86400.0

LINE_OF_CHAT_SQL = Sql("SELECT line_phone FROM chats WHERE id = :c")


def line_of_chat(session: Session, chat_id: uuid.UUID) -> str | None:
    value = session.execute(LINE_OF_CHAT_SQL, {"c": chat_id}).scalar()
    return None if value is None else str(value)


ADD_PENDING_SQL = Sql(
    """
            INSERT INTO webhook_pending (event_id, event_type, chat_id, activity)
            VALUES (:event_id, :event_type, :chat_id, CAST(:activity AS jsonb))
            ON CONFLICT (event_id) DO NOTHING
            """
)


def add_pending(
    session: Session, *, event_id: str, event_type: str, chat_id: uuid.UUID, activity_json: str
) -> None:
    session.execute(
        ADD_PENDING_SQL,
        {"event_id": event_id, "event_type": event_type, "chat_id": chat_id, "activity": activity_json},
    )


@dataclass(frozen=True)
class PendingEvent:
    event_id: str
    event_type: str
    activity: dict[str, object]
    line_phone: str


TAKE_RESOLVABLE_SQL = Sql(
    """
            DELETE FROM webhook_pending p USING chats c
            WHERE p.chat_id = c.id AND p.event_id IN (
                SELECT q.event_id FROM webhook_pending q JOIN chats k ON k.id = q.chat_id
                ORDER BY q.received_at LIMIT :limit FOR UPDATE OF q SKIP LOCKED
            )
            RETURNING p.event_id, p.event_type, p.activity, c.line_phone, p.received_at
            """
)


def take_resolvable(session: Reader, *, limit: int = 1000) -> list[PendingEvent]:
    """Pending events whose chat is known now, removed from the table (apply them in the same
    transaction), oldest first."""
    rows = sorted(session.execute(TAKE_RESOLVABLE_SQL, {"limit": limit}).all(), key=lambda r: r.received_at)
    return [PendingEvent(r.event_id, r.event_type, dict(r.activity), r.line_phone) for r in rows]


PRUNE_PENDING_SQL = Sql(
    "DELETE FROM webhook_pending WHERE received_at < now() - make_interval(secs => :age) RETURNING event_id"
)


def prune_pending(session: Reader, *, older_than_s: float = WEBHOOK_PENDING_RETENTION_S) -> list[str]:
    """Give up on pending events older than the retention; their ids, for the log."""
    return [r.event_id for r in session.execute(PRUNE_PENDING_SQL, {"age": older_than_s})]


PENDING_COUNT_SQL = Sql("SELECT count(*) FROM webhook_pending")


def pending_count(session: Session) -> int:
    return int(session.execute(PENDING_COUNT_SQL).scalar_one())


# --------------------------------------------------------------------------- sync cursors

SYNC_CURSOR_SQL = Sql("SELECT cursor FROM sync_cursors WHERE line_phone = :p")


def sync_cursor(session: Session, line_phone: str) -> str | None:
    """The page an unfinished pass over this line's chats stopped at; None: start from the top."""
    value = session.execute(SYNC_CURSOR_SQL, {"p": line_phone}).scalar()
    return None if value is None else str(value)


SAVE_SYNC_PAGE_SQL = Sql(
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
)


def save_sync_page(
    session: Session, line_phone: str, *, next_cursor: str | None, chats: int, fresh: bool
) -> None:
    """After a page is recorded: where the next one starts (None: the pass is complete)."""
    ensure_lines(session, [line_phone])
    session.execute(
        SAVE_SYNC_PAGE_SQL, {"p": line_phone, "cursor": next_cursor, "chats": chats, "fresh": fresh}
    )


# --------------------------------------------------------------------------- message lookups


@dataclass(frozen=True)
class LookupCandidate:
    chat_id: uuid.UUID
    line_phone: str
    cursor: str | None


LOOKUP_CANDIDATES_SQL = Sql(
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
)


def lookup_candidates(
    session: Session, *, lines: Sequence[str] | None, include_groups: bool, limit: int
) -> list[LookupCandidate]:
    """iMessage chats with no known outbound message: a lookup cut short first, then never
    looked at, then the longest ago."""
    rows = session.execute(
        LOOKUP_CANDIDATES_SQL,
        {"groups": include_groups, "all_lines": lines is None, "lines": list(lines or []), "limit": limit},
    ).all()
    return [LookupCandidate(r.id, r.line_phone, r.cursor) for r in rows]


SAVE_LOOKUP_SQL = Sql(
    """
            INSERT INTO message_lookups AS m (chat_id, cursor, pages, found_outbound, checked_at)
            VALUES (:c, :cursor, :pages, :found, now())
            ON CONFLICT (chat_id) DO UPDATE SET
                cursor = EXCLUDED.cursor, pages = m.pages + EXCLUDED.pages,
                found_outbound = EXCLUDED.found_outbound, checked_at = now()
            """
)


def save_lookup(session: Session, chat_id: uuid.UUID, *, cursor: str | None, pages: int, found: bool) -> None:
    session.execute(SAVE_LOOKUP_SQL, {"c": chat_id, "cursor": cursor, "pages": pages, "found": found})
