"""Pure rules: what day it is, and whether a chat is due on it. No I/O, no clock reads.

`why_not_due` is the due rule in Python (docs/decisions.md §2). Its SQL twin is
`worker.store.due`; a table test runs one chat per `NotDue` reason through both.
"""

from __future__ import annotations

import datetime as dt
import enum
from dataclasses import dataclass
from zoneinfo import ZoneInfo

from worker.rules.facts import ChatFacts

# Chat health statuses that gate a chat out (Linq's chat-health guide: a pre-send gate;
# docs/decisions.md §2).
UNHEALTHY = ("CRITICAL", "OPTED_OUT")


class NotDue(enum.StrEnum):
    """Why a chat is not shared into today, in the order the rules are checked."""

    CHAT_NOT_FOUND = "chat_not_found"
    NOT_IMESSAGE = "not_imessage"
    GROUP_CHAT = "group_chat"
    OPTED_OUT = "opted_out"
    CHAT_HEALTH = "chat_health"
    NO_OUTBOUND = "no_outbound"
    OUTBOUND_LATER = "outbound_later"
    STALE = "stale"
    CARD_INACTIVE = "card_inactive"
    ALREADY_SHARED = "already_shared"
    DAY_CLOSED = "day_closed"


EXPLANATIONS: dict[NotDue, str] = {
    NotDue.CHAT_NOT_FOUND: "Linq no longer knows this chat (404/2001)",
    NotDue.NOT_IMESSAGE: "the chat is not an iMessage chat",
    NotDue.GROUP_CHAT: "the chat is a group chat and group sharing is off (CARDSHARE_SHARE_GROUPS)",
    NotDue.OPTED_OUT: "the recipient opted out (403/2024) and has not written since",
    NotDue.CHAT_HEALTH: "Linq rates the chat's health CRITICAL or OPTED_OUT: no share goes into it",
    NotDue.NO_OUTBOUND: "no outbound message has been seen in this chat",
    NotDue.OUTBOUND_LATER: "the first outbound message is later than now",
    NotDue.STALE: (
        "no outbound message within the active window (CARDSHARE_ACTIVE_DAYS), or, under "
        "CARDSHARE_DUE_POLICY=outbound-today, none yet on this day"
    ),
    NotDue.CARD_INACTIVE: "the sending line has no active contact card",
    NotDue.ALREADY_SHARED: "the card was already shared into this chat today",
    NotDue.DAY_CLOSED: "today's share already ended as skipped or failed, for a stated reason",
}


def explain(reason: NotDue) -> str:
    """A NotDue as a person reads it: its code and what it means."""
    return f"{reason.value} ({EXPLANATIONS[reason]})"


ACTIVE_WINDOW = "active-window"
OUTBOUND_TODAY = "outbound-today"


@dataclass(frozen=True)
class Policy:
    """The configurable parts of "due". `due_policy` (CARDSHARE_DUE_POLICY): `active-window`, a
    chat with an outbound message in the last `active_days` days is due every day; or
    `outbound-today`, a chat is due on a day only once it had an outbound message on that day
    (the line's day, in its zone; docs/decisions.md §17)."""

    zone: ZoneInfo
    active_days: int = 30
    share_groups: bool = False
    due_policy: str = ACTIVE_WINDOW

    @property
    def outbound_today(self) -> bool:
        return self.due_policy == OUTBOUND_TODAY


def share_day(now: dt.datetime, zone: ZoneInfo) -> dt.date:
    """The calendar day `now` falls on in `zone`. `now` must be aware."""
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    return now.astimezone(zone).date()


# Two zones' calendar days differ by at most two (UTC+14 against UTC-12); one more for safety.
CLOSE_MARGIN_DAYS = 3


def close_from(last_swept: dt.date | None) -> dt.date | None:
    """The oldest day a sweep must still close (None: every past day). A sweep that finished on
    its day X closed every day before its lines' earliest day, which is at least X minus two:
    the days older than that were closed then, and probing them again (every kept partition's
    `unknown` rows through the open index) is what made a sweep with nothing due grow with
    retention (bench/README.md §5)."""
    if last_swept is None:
        return None
    return last_swept - dt.timedelta(days=CLOSE_MARGIN_DAYS)


def day_bounds(day: dt.date, zone: ZoneInfo) -> tuple[dt.datetime, dt.datetime]:
    """[start, end) of `day` in `zone`, as aware UTC datetimes (23 or 25 hours across DST)."""
    start = dt.datetime.combine(day, dt.time(0), tzinfo=zone)
    end = dt.datetime.combine(day + dt.timedelta(days=1), dt.time(0), tzinfo=zone)
    return start.astimezone(dt.UTC), end.astimezone(dt.UTC)


def why_not_due(
    chat: ChatFacts,
    *,
    now: dt.datetime,
    policy: Policy,
    shared_today: bool,
    day_closed: bool = False,
    zone: ZoneInfo | None = None,
) -> NotDue | None:
    """None when the chat is due now; else the first rule it fails. `zone` is the line's (its
    day decides `outbound-today`); None: the default zone."""
    if chat.not_found:
        return NotDue.CHAT_NOT_FOUND
    if chat.service != "iMessage":
        return NotDue.NOT_IMESSAGE
    if chat.is_group and not policy.share_groups:
        return NotDue.GROUP_CHAT
    if chat.opted_out:
        return NotDue.OPTED_OUT
    if chat.health_status in UNHEALTHY:
        return NotDue.CHAT_HEALTH
    if chat.first_outbound_at is None:
        return NotDue.NO_OUTBOUND
    if chat.first_outbound_at > now:
        return NotDue.OUTBOUND_LATER
    last = chat.last_outbound_at or chat.first_outbound_at
    if last < active_since(now, policy, zone):
        return NotDue.STALE
    if not chat.card_active:
        return NotDue.CARD_INACTIVE
    if shared_today:
        return NotDue.ALREADY_SHARED
    if day_closed:
        return NotDue.DAY_CLOSED
    return None


def active_since(now: dt.datetime, policy: Policy, zone: ZoneInfo | None = None) -> dt.datetime:
    """The oldest last-outbound time that still makes the chat due now: `active_days` ago, or,
    under `outbound-today`, the start of the line's day (in `zone`, default the policy's)."""
    if policy.outbound_today:
        z = zone or policy.zone
        return day_bounds(share_day(now, z), z)[0]
    return now - dt.timedelta(days=policy.active_days)
