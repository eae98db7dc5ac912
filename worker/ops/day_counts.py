"""A day's chat-day counts: read live, or saved by beat's count pass (docs/retention.md §7).

Counting a day reads every chat-day of it: at a million a day that is seconds of PostgreSQL.
Beat's count pass (`ops.count_pass`, every CARDSHARE_STATUS_COUNTS_INTERVAL seconds) counts
today for every line once and saves it in `status_summaries`; `cardshare status` and the status page
read that row (`saved_today`) while it is younger than three intervals and was counted for the
same lines and days, and count for themselves otherwise (beat down, a line added, a day rolled
over, `status --live`).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from worker.rules.cadence import Policy
from worker.store.latency import DayLatency
from worker.store.reports import DayCount, day_status_counts, unmarked_due_by_line
from worker.store.sql import Reader
from worker.store.summaries import SummaryRow, load_summary

# The chat-days counted per line, status and reason, and per line the due chats no sweep reached.
DayCounts = tuple[list[DayCount], dict[str, int]]
# (session, {line: day} counted, {line: day} of the lines whose day is today, now, policy) ->
# (the counts, when they were read).
CountsReader = Callable[
    [Reader, Mapping[str, dt.date], Mapping[str, dt.date], dt.datetime, Policy],
    tuple[DayCounts, dt.datetime],
]

# A saved count is used while younger than this many count intervals (one late pass is fine).
MAX_AGE_INTERVALS = 3


def read_day_counts(
    s: Reader,
    wanted: Mapping[str, dt.date],
    current: Mapping[str, dt.date],
    now: dt.datetime,
    policy: Policy,
) -> DayCounts:
    """The two statements of `status.collect` that read the whole day."""
    return day_status_counts(s, wanted), unmarked_due_by_line(s, line_days=current, now=now, policy=policy)


@dataclass(frozen=True)
class Saved:
    counts: DayCounts
    latency: list[DayLatency]
    counted_at: dt.datetime
    seconds: float  # how long the pass took to count


def max_age_s(interval_s: float) -> float:
    """How old a saved count may be and still be shown (0: the summary is off)."""
    return MAX_AGE_INTERVALS * interval_s


def _line_days_json(line_days: Mapping[str, dt.date]) -> dict[str, Any]:
    return {phone: day.isoformat() for phone, day in sorted(line_days.items())}


def encode(
    line_days: Mapping[str, dt.date],
    counts: DayCounts,
    latency: list[DayLatency],
    counted_at: dt.datetime,
    seconds: float,
) -> SummaryRow:
    rows, pending = counts
    return SummaryRow(
        line_days=_line_days_json(line_days),
        counts=[
            [r.line_phone, r.status, r.kind, r.count, r.confirmed, r.day.isoformat() if r.day else None]
            for r in rows
        ],
        unmarked_due=dict(sorted(pending.items())),
        latency=[[d.day.isoformat(), d.shares, d.p50_s, d.p99_s] for d in latency],
        counted_at=counted_at,
        seconds=seconds,
    )


def decode(row: SummaryRow) -> Saved:
    rows = [
        DayCount(
            str(p),
            str(st),
            None if k is None else str(k),
            int(n),
            int(c),
            dt.date.fromisoformat(d) if d else None,
        )
        for p, st, k, n, c, d in row.counts
    ]
    pending = {str(p): int(n) for p, n in row.unmarked_due.items()}
    latency = [
        DayLatency(dt.date.fromisoformat(d), int(n), float(p50), float(p99)) for d, n, p50, p99 in row.latency
    ]
    return Saved((rows, pending), latency, row.counted_at, row.seconds)


def saved_today(s: Reader, current: Mapping[str, dt.date], now: dt.datetime, max_age: float) -> Saved | None:
    """The saved counts of today, if counted for exactly these lines' days within `max_age`
    seconds of `now`; else None (the caller counts)."""
    if max_age <= 0 or not current:
        return None
    row = load_summary(s)
    if row is None or row.line_days != _line_days_json(current):
        return None
    age = (now - row.counted_at).total_seconds()
    if not 0 <= age <= max_age:
        return None
    return decode(row)
