"""Tables (Alembic's metadata, `migrations/env.py`). The (chat_id, day) primary key of
`share_days` is what enforces once a day."""

from __future__ import annotations

import datetime as dt
import uuid

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Date,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    SmallInteger,
    String,
    Text,
    Uuid,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from worker.rules.facts import E164_PATTERN
from worker.rules.states import ALL_STATUSES, DayStatus
from worker.store.due import OPEN, sql_list

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


def _now() -> Mapped[dt.datetime]:
    return mapped_column(DateTime(timezone=True), nullable=False, server_default=func.now())


class Line(Base):
    """A business phone number, the cached state of its contact card, what Linq says of the line
    (reputation, status) and the operator's controls: pause, time zone, hours, pace."""

    __tablename__ = "lines"
    __table_args__ = (
        CheckConstraint(f"phone_number ~ '{E164_PATTERN}'", name="e164"),
        CheckConstraint("reputation IN ('HEALTHY', 'AT_RISK', 'CRITICAL')", name="reputation"),
        CheckConstraint("linq_status IN ('ACTIVE', 'FLAGGED')", name="linq_status"),
        CheckConstraint(
            "(hours_start IS NULL) = (hours_end IS NULL) AND hours_start >= 0 AND hours_start < hours_end "
            "AND hours_end <= 1440",
            name="hours",
        ),
        CheckConstraint("pace_per_minute >= 0", name="pace"),
    )

    phone_number: Mapped[str] = mapped_column(String(16), primary_key=True)
    first_name: Mapped[str | None] = mapped_column(Text)
    last_name: Mapped[str | None] = mapped_column(Text)
    image_url: Mapped[str | None] = mapped_column(Text)
    card_active: Mapped[bool] = mapped_column(Boolean, nullable=False, server_default=text("false"))
    card_checked_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    line_type: Mapped[str | None] = mapped_column(String(16))
    created_at: Mapped[dt.datetime] = _now()
    updated_at: Mapped[dt.datetime] = _now()
    # Linq's view of the line (GET /v3/phone_numbers, phone_number.status_updated), with when that
    # view was true, so an older webhook never overwrites a newer read.
    reputation: Mapped[str | None] = mapped_column(String(16))
    reputation_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    linq_status: Mapped[str | None] = mapped_column(String(16))
    linq_status_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    # The line's own day and hours (NULL: CARDSHARE_TIMEZONE, all day), and its pace cap (NULL:
    # CARDSHARE_LINE_SHARES_PER_MINUTE). Hours are minutes after local midnight, [start, end).
    timezone: Mapped[str | None] = mapped_column(Text)
    hours_start: Mapped[int | None] = mapped_column(SmallInteger)
    hours_end: Mapped[int | None] = mapped_column(SmallInteger)
    pace_per_minute: Mapped[int | None] = mapped_column(Integer)
    # A pause (`cardshare line pause`): set while paused, NULL once resumed.
    paused_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    paused_until: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    paused_reason: Mapped[str | None] = mapped_column(Text)
    paused_by: Mapped[str | None] = mapped_column(Text)


class AccountControl(Base):
    """The account-wide controls: one row (id 1) at most; no row means nothing is paused."""

    __tablename__ = "account_controls"
    __table_args__ = (CheckConstraint("id = 1", name="singleton"),)

    id: Mapped[int] = mapped_column(SmallInteger, primary_key=True)
    paused_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    paused_until: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    paused_reason: Mapped[str | None] = mapped_column(Text)
    paused_by: Mapped[str | None] = mapped_column(Text)
    updated_at: Mapped[dt.datetime] = _now()


class AccountWarning(Base):
    """Something about the account an operator must act on (an API token expiring or expired, a
    webhook subscription disabled), shown by `status` until acknowledged or superseded."""

    __tablename__ = "account_warnings"
    __table_args__ = (Index("ix_account_warnings_subject", "subject"),)

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    kind: Mapped[str] = mapped_column(String(64), nullable=False)  # the webhook event type
    subject: Mapped[str] = mapped_column(String(200), nullable=False)  # e.g. "api_token tok_..."
    summary: Mapped[str] = mapped_column(Text, nullable=False)
    occurred_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    event_id: Mapped[str | None] = mapped_column(String(128))
    raised_at: Mapped[dt.datetime] = _now()
    acknowledged_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    acknowledged_by: Mapped[str | None] = mapped_column(Text)
    # Superseded by a newer event about the same subject, or resolved by one (a re-enabled
    # subscription); the text says which.
    resolved_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    resolution: Mapped[str | None] = mapped_column(Text)


class Chat(Base):
    """A Linq chat and what cardshare knows of its outbound activity."""

    __tablename__ = "chats"
    __table_args__ = (
        CheckConstraint("service IN ('iMessage', 'SMS', 'RCS')", name="service"),
        # The sweep walks each line's chats not yet marked for the line's today by (marked_day,
        # id) (docs/decisions.md §17); lookups by line and the cascade from lines use its first
        # column. It is the only index on line_phone: each marked_day update writes a new entry
        # into every index of chats, so another one would only slow it (migrations 0009, 0010).
        Index("ix_chats_line_marked", "line_phone", "marked_day", "id"),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    line_phone: Mapped[str] = mapped_column(
        String(16), ForeignKey("lines.phone_number", ondelete="CASCADE"), nullable=False
    )
    service: Mapped[str | None] = mapped_column(String(16))
    is_group: Mapped[bool] = mapped_column(Boolean, nullable=False, server_default=text("false"))
    first_outbound_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    last_outbound_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    opted_out: Mapped[bool] = mapped_column(Boolean, nullable=False, server_default=text("false"))
    opted_out_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    # Linq answered 404/2001 for it: the chat is gone, stop sharing into it.
    not_found_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    health_status: Mapped[str | None] = mapped_column(String(16))
    # The last day (its line's) a pass marked the chat for: the sweep skips chats marked today.
    marked_day: Mapped[dt.date] = mapped_column(Date, nullable=False, server_default=text("'1970-01-01'"))
    created_at: Mapped[dt.datetime] = _now()
    updated_at: Mapped[dt.datetime] = _now()


# The statuses `recent_failures` lists (the status page's "last failures").
FAILURE_STATUSES = sql_list((DayStatus.FAILED, DayStatus.UNKNOWN))


class ShareDay(Base):
    """One row per (chat, day): the claim, the lease and the day's final status.

    Partitioned by day (`store.partitions`, docs/retention.md): each index below exists per day,
    so what a day costs to read or write does not grow with the history.
    """

    __tablename__ = "share_days"
    __table_args__ = (
        CheckConstraint(
            f"status IN {sql_list(ALL_STATUSES)}",
            name="status",
        ),
        # Open chat-days by lease end: recovery walks it in keyset pages, poison and past-day
        # closing read it; it holds only the day's unfinished rows.
        Index(
            "ix_share_days_open",
            "day",
            "lease_until",
            "chat_id",
            postgresql_where=text(f"status IN {OPEN}"),
        ),
        # The last failures, newest first, without reading the days' finished rows.
        Index(
            "ix_share_days_failures",
            text("coalesce(finished_at, updated_at)"),
            postgresql_where=text(f"status IN {FAILURE_STATUSES}"),
        ),
        {"postgresql_partition_by": "RANGE (day)"},
    )

    chat_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("chats.id", ondelete="CASCADE"), primary_key=True
    )
    day: Mapped[dt.date] = mapped_column(Date, primary_key=True)
    status: Mapped[str] = mapped_column(String(16), nullable=False)
    reason: Mapped[str | None] = mapped_column(Text)
    lease_until: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    claim_token: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    attempts: Mapped[int] = mapped_column(Integer, nullable=False, server_default=text("0"))
    claims: Mapped[int] = mapped_column(Integer, nullable=False, server_default=text("0"))
    # Claims taken over from a holder that vanished without an outcome (crash, kill).
    lost_claims: Mapped[int] = mapped_column(Integer, nullable=False, server_default=text("0"))
    enqueues: Mapped[int] = mapped_column(Integer, nullable=False, server_default=text("0"))
    confirmed_by_rate_limit: Mapped[bool] = mapped_column(
        Boolean, nullable=False, server_default=text("false")
    )
    task_id: Mapped[str | None] = mapped_column(Text)
    # The outbound message that made the chat-day due, as known when it was marked: where the
    # "first outbound -> share accepted" latency starts (docs/decisions.md §17).
    outbound_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[dt.datetime] = _now()
    claimed_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[dt.datetime] = _now()


class Attempt(Base):
    """Audit row for one HTTP try; written before the call, completed right after.

    Partitioned by day like `share_days`; the primary key carries the day (a partitioned table's
    keys must), so every statement that finds an attempt by id names its day too. Each day's
    partition references the same day's `share_days` partition (chat_id, day), with ON DELETE
    CASCADE: that key lives on the pair of partitions (`store.partitions`), not on the parents,
    so a day is dropped without a scan of any other.
    """

    __tablename__ = "attempts"
    __table_args__ = (
        CheckConstraint("outcome IN ('ok', 'retryable', 'fatal', 'unknown')", name="outcome"),
        Index("ix_attempts_chat_started", "chat_id", "started_at"),
        {"postgresql_partition_by": "RANGE (day)"},
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    chat_id: Mapped[uuid.UUID] = mapped_column(Uuid, nullable=False)
    day: Mapped[dt.date] = mapped_column(Date, primary_key=True)
    attempt_no: Mapped[int] = mapped_column(Integer, nullable=False)
    claim_token: Mapped[uuid.UUID] = mapped_column(Uuid, nullable=False)
    started_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    finished_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    # NULL while the call is in flight; stays NULL if the process died during it.
    outcome: Mapped[str | None] = mapped_column(String(16))
    http_status: Mapped[int | None] = mapped_column(Integer)
    linq_code: Mapped[int | None] = mapped_column(Integer)
    error: Mapped[str | None] = mapped_column(Text)
    retry_after_s: Mapped[float | None] = mapped_column(Float)
    trace_id: Mapped[str | None] = mapped_column(String(64))
    task_id: Mapped[str | None] = mapped_column(Text)


class SweepRun(Base):
    """One sweep or recovery pass: when, how long, how much it enqueued."""

    __tablename__ = "sweep_runs"
    __table_args__ = (CheckConstraint("kind IN ('sweep', 'recover')", name="kind"),)

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    kind: Mapped[str] = mapped_column(String(16), nullable=False)
    day: Mapped[dt.date] = mapped_column(Date, nullable=False)
    started_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    finished_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    scanned: Mapped[int] = mapped_column(Integer, nullable=False, server_default=text("0"))
    enqueued: Mapped[int] = mapped_column(Integer, nullable=False, server_default=text("0"))
    error: Mapped[str | None] = mapped_column(Text)


class StatusSummary(Base):
    """`cardshare status`'s numbers for today, counted by beat's count pass every
    `CARDSHARE_STATUS_COUNTS_INTERVAL` (docs/retention.md §7): one row per scope ("today").

    `line_days` is the {line: day} the counts are for; a reader whose lines or days differ (a
    line added, a day rolled over) counts for itself. `counts`, `unmarked_due` and `latency`
    are what `ops.status.read_day_counts` and `store.latency` return, as JSON.
    """

    __tablename__ = "status_summaries"

    scope: Mapped[str] = mapped_column(String(16), primary_key=True)
    line_days: Mapped[dict[str, object]] = mapped_column(JSONB, nullable=False)
    counts: Mapped[list[object]] = mapped_column(JSONB, nullable=False)
    unmarked_due: Mapped[dict[str, object]] = mapped_column(JSONB, nullable=False)
    latency: Mapped[list[object]] = mapped_column(JSONB, nullable=False)
    counted_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    seconds: Mapped[float] = mapped_column(Float, nullable=False)


class AuditEvent(Base):
    """Operator and ingestion actions that are not HTTP attempts (e.g. a refused manual share).

    Kept `CARDSHARE_AUDIT_RETENTION_DAYS`; deleted in batches by age (the index on `at`).
    """

    __tablename__ = "audit_events"
    __table_args__ = (
        # `cardshare history CHAT_ID`: a chat's events, newest first.
        Index("ix_audit_events_chat_ref", "chat_ref", "at"),
        Index("ix_audit_events_at", "at"),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    at: Mapped[dt.datetime] = _now()
    actor: Mapped[str] = mapped_column(String(32), nullable=False)
    action: Mapped[str] = mapped_column(String(64), nullable=False)
    # Text, not a foreign key: refused input may name a chat that does not exist.
    chat_ref: Mapped[str | None] = mapped_column(Text)
    outcome: Mapped[str] = mapped_column(String(32), nullable=False)
    detail: Mapped[str | None] = mapped_column(Text)


class CardWrite(Base):
    """One POST/PATCH of a contact card: cardshare's own count of Linq's 3-per-10-minutes budget.

    The row is written before the call (a crash mid-call still counts, as Linq may have seen it)
    and completed right after. `counted` is false for calls Linq refused before its write rules
    (auth, validation, 429) or that never left this machine.
    """

    __tablename__ = "card_writes"
    __table_args__ = (
        CheckConstraint("method IN ('POST', 'PATCH')", name="method"),
        CheckConstraint(f"phone_number ~ '{E164_PATTERN}'", name="e164"),
        Index("ix_card_writes_phone_at", "phone_number", "at"),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    phone_number: Mapped[str] = mapped_column(String(16), nullable=False)
    method: Mapped[str] = mapped_column(String(8), nullable=False)
    at: Mapped[dt.datetime] = _now()
    # NULL while the call is in flight; stays NULL if the process died or the answer never came.
    http_status: Mapped[int | None] = mapped_column(Integer)
    linq_code: Mapped[int | None] = mapped_column(Integer)
    trace_id: Mapped[str | None] = mapped_column(String(64))
    counted: Mapped[bool] = mapped_column(Boolean, nullable=False, server_default=text("true"))


# ------------------------------------------------------------------- ingestion (webhooks, sync, import)


class WebhookEvent(Base):
    """A Linq webhook event that was acted on: the dedupe key for Linq's retries (~30 minutes)."""

    __tablename__ = "webhook_events"
    __table_args__ = (Index("ix_webhook_events_received_at", "received_at"),)

    # `event_id` from the body (the same on every retry and every subscription), else `webhook-id`.
    event_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    webhook_id: Mapped[str | None] = mapped_column(String(128))
    event_type: Mapped[str] = mapped_column(String(64), nullable=False)
    # No foreign key: the row must not depend on the chat outliving it.
    chat_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    # "webhook-id.timestamp" of each accepted delivery. Linq signs every retry afresh, so the same
    # pair arriving twice is a replayed request, not a retry.
    deliveries: Mapped[list[str]] = mapped_column(ARRAY(Text), nullable=False)
    received_at: Mapped[dt.datetime] = _now()
    last_delivery_at: Mapped[dt.datetime] = _now()


class WebhookPending(Base):
    """A signed event that names no line (Linq's schema allows null handles) for a chat cardshare
    does not know yet: kept until the chat turns up (sync, another event), then applied; kept
    at most WEBHOOK_PENDING_RETENTION_S (docs/decisions.md §14)."""

    __tablename__ = "webhook_pending"
    __table_args__ = (
        Index("ix_webhook_pending_chat_id", "chat_id"),
        Index("ix_webhook_pending_received_at", "received_at"),
    )

    event_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    event_type: Mapped[str] = mapped_column(String(64), nullable=False)
    chat_id: Mapped[uuid.UUID] = mapped_column(Uuid, nullable=False)
    activity: Mapped[dict[str, object]] = mapped_column(JSONB, nullable=False)
    received_at: Mapped[dt.datetime] = _now()


class SyncCursor(Base):
    """How far the chat sync got through one line's chats, so a failed run resumes there."""

    __tablename__ = "sync_cursors"

    line_phone: Mapped[str] = mapped_column(
        String(16), ForeignKey("lines.phone_number", ondelete="CASCADE"), primary_key=True
    )
    # The next page to fetch; NULL once the pass reached the end (the next run starts over).
    cursor: Mapped[str | None] = mapped_column(Text)
    pages: Mapped[int] = mapped_column(Integer, nullable=False, server_default=text("0"))
    chats: Mapped[int] = mapped_column(Integer, nullable=False, server_default=text("0"))
    started_at: Mapped[dt.datetime] = _now()
    finished_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[dt.datetime] = _now()


class MessageLookup(Base):
    """A chat whose messages the sync read looking for an outbound one (bounded per run)."""

    __tablename__ = "message_lookups"

    chat_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("chats.id", ondelete="CASCADE"), primary_key=True
    )
    # The next page to read when a run's budget ran out inside this chat; NULL when done.
    cursor: Mapped[str | None] = mapped_column(Text)
    pages: Mapped[int] = mapped_column(Integer, nullable=False, server_default=text("0"))
    found_outbound: Mapped[bool] = mapped_column(Boolean, nullable=False, server_default=text("false"))
    checked_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
