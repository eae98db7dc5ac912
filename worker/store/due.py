"""The due rule in SQL, and the status lists, written once (docs/decisions.md §2).

`rules.cadence.why_not_due` is the same rule in Python. The fragments below are composed into
every statement that selects due chats (the sweep's page, `status`, `card list`), so a change to
the rule is one edit here and one there; `tests/integration/store/test_due.py` runs one chat per
`NotDue` reason through both and fails if they disagree.

Aliases: `c` is a `chats` row, `l` its `lines` row (CHAT_IS_DUE reads the line's zone:
every statement joins it), `d` its `share_days` row for the day, `ld`
each line's own day. Holds (a paused or CRITICAL line, hours, pace) are not in the predicate:
they are a line's state, judged by `rules.gate` once per line, and a held chat is still due.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable

from worker.rules.cadence import UNHEALTHY, Policy, active_since
from worker.rules.states import (
    FINAL_STATUSES,
    LEASED_STATUSES,
    MISSABLE_STATUSES,
    OPEN_STATUSES,
    REQUEUABLE_STATUSES,
    DayStatus,
)


def sql_list(statuses: Iterable[DayStatus]) -> str:
    """`('queued', 'claimed')`: statuses as an SQL list literal (they are our own constants)."""
    return "(" + ", ".join(f"'{s.value}'" for s in statuses) + ")"


OPEN = sql_list(OPEN_STATUSES)
FINAL = sql_list(FINAL_STATUSES)
LEASED = sql_list(LEASED_STATUSES)
MISSABLE = sql_list(MISSABLE_STATUSES)
REQUEUABLE = sql_list(REQUEUABLE_STATUSES)
_UNHEALTHY = "(" + ", ".join(f"'{h}'" for h in UNHEALTHY) + ")"

# The start of the line's day (`outbound-today`): local midnight of :now in the line's zone, as
# `rules.cadence.day_bounds` computes it.
LINE_DAY_START = """(date_trunc('day', CAST(:now AS timestamptz) AT TIME ZONE coalesce(l.timezone, :zone))
                     AT TIME ZONE coalesce(l.timezone, :zone))"""

# Every chat-level rule (NotDue from CHAT_NOT_FOUND to STALE); binds `binds()`. A NULL first
# outbound time fails `<= :now`, which is NO_OUTBOUND. STALE follows CARDSHARE_DUE_POLICY: the
# last outbound within the active window, or on the line's day (`rules.cadence.active_since`).
CHAT_IS_DUE = f"""c.service = 'iMessage' AND NOT c.opted_out AND c.not_found_at IS NULL
                  AND (:groups OR NOT c.is_group)
                  AND coalesce(c.health_status, '') NOT IN {_UNHEALTHY}
                  AND c.first_outbound_at <= :now
                  AND coalesce(c.last_outbound_at, c.first_outbound_at) >= CASE
                      WHEN :today_only THEN {LINE_DAY_START}
                      ELSE CAST(:active_since AS timestamptz) END"""

# CARD_INACTIVE: the sending line's cached card.
CARD_IS_ACTIVE = "l.card_active"

# ALREADY_SHARED and DAY_CLOSED: no row yet, or a row still open (`d` LEFT JOINed for the day).
DAY_IS_OPEN = f"(d.status IS NULL OR d.status IN {OPEN})"

# No chat-day row for the line's day at all (`ld`, each line's own day: `store.lines.LINE_DAYS`):
# neither a sweep nor a manual share has reached the chat. `ld.day` comes from a join, which the
# planner cannot prune by, so the same days are named again as a bound array (`:ld_days`): the
# anti-join then opens those days' partitions only, not every day kept (docs/retention.md §7).
DAY_UNMARKED = """NOT EXISTS (SELECT 1 FROM share_days d WHERE d.chat_id = c.id AND d.day = ld.day
                                AND d.day = ANY(CAST(:ld_days AS date[])))"""
# The same for one day given as `:day` (the event path): PostgreSQL prunes share_days to that
# day's partition when it plans, instead of planning every day's (1.5 ms a statement here).
DAY_UNMARKED_ON = "NOT EXISTS (SELECT 1 FROM share_days d WHERE d.chat_id = c.id AND d.day = :day)"


def binds(now: dt.datetime, policy: Policy) -> dict[str, object]:
    """The parameters CHAT_IS_DUE reads."""
    return {
        "groups": policy.share_groups,
        "now": now,
        "active_since": active_since(now, policy),
        "today_only": policy.outbound_today,
        "zone": policy.zone.key,
    }
