"""The day partitions' rules: which days must exist, which are kept, which partitions may go."""

from __future__ import annotations

import datetime as dt

from worker.rules.retention import (
    AHEAD_DAYS,
    BEHIND_DAYS,
    Bounds,
    droppable,
    missing_days,
    oldest_kept,
    past_retention,
    past_retention_message,
    wanted_days,
)

TODAY = dt.date(2026, 3, 10)
D = dt.timedelta(days=1)


def test_wanted_days_reach_the_zone_margin_behind_and_a_week_ahead() -> None:
    days = wanted_days(TODAY)
    assert days[0] == TODAY - BEHIND_DAYS * D == dt.date(2026, 3, 8)
    assert days[-1] == TODAY + AHEAD_DAYS * D == dt.date(2026, 3, 17)
    assert len(days) == BEHIND_DAYS + AHEAD_DAYS + 1
    assert wanted_days(TODAY, ahead=1) == [TODAY - 2 * D, TODAY - D, TODAY, TODAY + D]


def test_a_legacy_range_covers_its_days_and_daily_partitions_theirs() -> None:
    legacy = Bounds(None, dt.date(2026, 3, 9))  # FROM (MINVALUE) TO ('2026-03-09')
    day = Bounds(dt.date(2026, 3, 9), dt.date(2026, 3, 10))
    assert legacy.covers(dt.date(2020, 1, 1))
    assert legacy.covers(dt.date(2026, 3, 8))
    assert not legacy.covers(dt.date(2026, 3, 9))
    assert day.covers(dt.date(2026, 3, 9))
    assert not day.covers(TODAY)
    assert missing_days(wanted_days(TODAY), [legacy, day]) == [TODAY + n * D for n in range(AHEAD_DAYS + 1)]


def test_today_and_the_retention_days_before_it_are_kept() -> None:
    assert oldest_kept(TODAY, 90) == dt.date(2025, 12, 10)
    assert not past_retention(dt.date(2025, 12, 10), TODAY, 90)
    assert past_retention(dt.date(2025, 12, 9), TODAY, 90)
    assert not past_retention(TODAY, TODAY, 1)
    assert not past_retention(TODAY - D, TODAY, 1)
    assert past_retention(TODAY - 2 * D, TODAY, 1)
    message = past_retention_message(dt.date(2025, 12, 9), TODAY, 90)
    assert message == (
        "2025-12-09 is past retention: CARDSHARE_RETENTION_DAYS=90 keeps 2025-12-10 to 2026-03-10, "
        "and older days' chat-days and attempts are dropped"
    )


def test_a_partition_goes_only_when_all_its_days_are_past_retention_and_the_margin() -> None:
    kept = oldest_kept(TODAY, 3)  # 2026-03-07
    last_droppable = kept - (BEHIND_DAYS + 1) * D  # 2026-03-04
    assert droppable(Bounds(last_droppable, last_droppable + D), TODAY, 3)
    assert not droppable(Bounds(last_droppable + D, last_droppable + 2 * D), TODAY, 3)
    assert not droppable(Bounds(kept, kept + D), TODAY, 3)
    assert not droppable(Bounds(TODAY, TODAY + D), TODAY, 3)
    # The legacy range goes when its last day does; a range without an end never.
    assert droppable(Bounds(None, last_droppable + D), TODAY, 3)
    assert not droppable(Bounds(None, last_droppable + 2 * D), TODAY, 3)
    assert not droppable(Bounds(dt.date(2020, 1, 1), None), TODAY, 3)
