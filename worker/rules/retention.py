"""Pure rules of the day partitions: which days must exist, which are past retention, which may go.

`share_days` and `attempts` are partitioned by day (docs/retention.md). A day is *kept* while it
is at most `retention_days` before today; a kept day is what `check`, `status` and `history`
report. Partitions exist from `BEHIND_DAYS` before today to `AHEAD_DAYS` after it, and one is
dropped only when every day it holds is more than `BEHIND_DAYS` past the oldest kept day: "today"
is the service zone's, and a line's own day (per-line time zones) can lag it by up to two days
(UTC+14 against UTC-12), so the margin is the same on both sides.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

DAY = dt.timedelta(days=1)

# A line's local day can be up to two days behind or ahead of the service zone's.
BEHIND_DAYS = 2
# Created ahead: beat can miss a week of maintenance before a write finds no partition.
AHEAD_DAYS = 7


@dataclass(frozen=True)
class Bounds:
    """A partition's range [lo, hi) of days; None is MINVALUE (lo) or MAXVALUE (hi)."""

    lo: dt.date | None
    hi: dt.date | None

    def covers(self, day: dt.date) -> bool:
        return (self.lo is None or self.lo <= day) and (self.hi is None or day < self.hi)


def wanted_days(today: dt.date, *, behind: int = BEHIND_DAYS, ahead: int = AHEAD_DAYS) -> list[dt.date]:
    """Every day whose partition must exist now: from `behind` days before today to `ahead` after."""
    return [today + DAY * n for n in range(-behind, ahead + 1)]


def missing_days(wanted: Iterable[dt.date], existing: Iterable[Bounds]) -> list[dt.date]:
    """The wanted days that no existing partition covers (the legacy one covers a range)."""
    ranges = list(existing)
    return [d for d in wanted if not any(b.covers(d) for b in ranges)]


def oldest_kept(today: dt.date, retention_days: int) -> dt.date:
    """The oldest day still kept: `retention_days` before today (today itself is day 0)."""
    return today - DAY * retention_days


def past_retention(day: dt.date, today: dt.date, retention_days: int) -> bool:
    """The day is older than retention: its rows are gone (or going) and nothing reports on it."""
    return day < oldest_kept(today, retention_days)


def past_retention_message(day: dt.date, today: dt.date, retention_days: int) -> str:
    """What `check`, `status` and `history` say of a day older than retention."""
    return (
        f"{day} is past retention: CARDSHARE_RETENTION_DAYS={retention_days} keeps "
        f"{oldest_kept(today, retention_days)} to {today}, and older days' chat-days and attempts "
        "are dropped"
    )


def droppable(bounds: Bounds, today: dt.date, retention_days: int) -> bool:
    """Every day the partition holds is past retention by more than the zone margin."""
    if bounds.hi is None:
        return False
    return bounds.hi <= oldest_kept(today, retention_days) - DAY * BEHIND_DAYS


def day_range(first: dt.date, last: dt.date) -> Iterator[dt.date]:
    day = first
    while day <= last:
        yield day
        day += DAY
