"""The gate as pure functions: holds and their order, hours across DST, each line's own day,
pace caps and slot spacing, `--until`, and the finish estimate."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import pytest

from worker.rules.cadence import Policy
from worker.rules.facts import ChatFacts
from worker.rules.gate import (
    PACE_LOG_S,
    HoldReason,
    Hours,
    LineState,
    PacePolicy,
    Pause,
    Verdict,
    decide,
    estimate,
    hold_kind,
    hold_lease,
    hold_of,
    line_cap,
    parse_until,
    scheduled_per_minute,
    spacing_s,
)

UTC = ZoneInfo("UTC")
NY = ZoneInfo("America/New_York")
AUCKLAND = ZoneInfo("Pacific/Auckland")
LA = ZoneInfo("America/Los_Angeles")
SYDNEY = ZoneInfo("Australia/Sydney")


def at(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text)


def line(**kw: object) -> LineState:
    return LineState(phone="+12223334444", zone=kw.pop("zone", UTC), **kw)  # type: ignore[arg-type]


NOW = at("2026-03-02T15:00:00+00:00")


def test_an_open_line_is_not_held() -> None:
    assert hold_of(line(), NOW) is None
    assert hold_of(line(reputation="AT_RISK", linq_status="ACTIVE"), NOW) is None


@pytest.mark.parametrize(
    ("state", "reason"),
    [
        (
            {"account_pause": Pause(NOW), "pause": Pause(NOW), "linq_status": "FLAGGED"},
            HoldReason.ACCOUNT_PAUSED,
        ),
        ({"pause": Pause(NOW), "linq_status": "FLAGGED", "reputation": "CRITICAL"}, HoldReason.LINE_PAUSED),
        ({"linq_status": "FLAGGED", "reputation": "CRITICAL"}, HoldReason.LINE_FLAGGED),
        ({"reputation": "CRITICAL", "hours": Hours(0, 60)}, HoldReason.LINE_CRITICAL),
        ({"hours": Hours(0, 60)}, HoldReason.OUTSIDE_HOURS),
    ],
)
def test_holds_are_checked_in_order(state: dict[str, object], reason: HoldReason) -> None:
    held = hold_of(line(**state), NOW)
    assert held is not None
    assert held.reason is reason
    assert held.text().startswith(reason.value + ": ")
    assert hold_kind(held.text()) == reason.value


def test_a_pause_ends_by_itself_at_until() -> None:
    until = NOW + dt.timedelta(hours=1)
    paused = line(pause=Pause(NOW, until, "maintenance", "ops@host"))
    held = hold_of(paused, NOW)
    assert held is not None
    assert held.until == until
    assert "maintenance" in held.detail
    assert "ops@host" in held.detail
    assert hold_of(paused, until) is None
    # Resting until the pause ends; an indefinite hold rests until the day ends.
    assert hold_lease(held, paused, NOW.date(), NOW) == until
    critical = hold_of(line(reputation="CRITICAL"), NOW)
    assert critical is not None
    assert critical.until is None
    assert hold_lease(critical, line(), NOW.date(), NOW) == at("2026-03-03T00:00:00+00:00")


def test_not_due_beats_held() -> None:
    facts = ChatFacts("SMS", False, NOW - dt.timedelta(hours=1), None, False, True)
    decision = decide(facts, line(pause=Pause(NOW)), now=NOW, policy=Policy(zone=UTC), shared_today=False)
    assert decision.verdict is Verdict.NOT_DUE
    ok = ChatFacts("iMessage", False, NOW - dt.timedelta(hours=1), None, False, True)
    held = decide(ok, line(pause=Pause(NOW)), now=NOW, policy=Policy(zone=UTC), shared_today=False)
    assert held.verdict is Verdict.HOLD
    assert decide(ok, line(), now=NOW, policy=Policy(zone=UTC), shared_today=False).verdict is Verdict.GO


@pytest.mark.parametrize(
    ("text", "start", "end"),
    [("09:00-20:00", 540, 1200), ("0:00-24:00", 0, 1440), (" 07:30 - 08:00 ", 450, 480)],
)
def test_hours_parse(text: str, start: int, end: int) -> None:
    hours = Hours.parse(text)
    assert (hours.start, hours.end) == (start, end)


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("20:00-02:00", "across midnight"),
        ("09:00-09:00", "across midnight"),
        ("9-20", "HH:MM-HH:MM"),
        ("25:00-26:00", "00:00 to 24:00"),
        ("10:00-24:30", "00:00 to 24:00"),
    ],
)
def test_hours_refuse_what_they_cannot_mean(text: str, why: str) -> None:
    with pytest.raises(ValueError, match=why):
        Hours.parse(text)


def test_outside_hours_waits_for_the_next_opening_in_the_line_zone() -> None:
    ny = line(zone=NY, hours=Hours.parse("09:00-20:00"))
    # 13:00 UTC is 08:00 in New York (EST): before today's window.
    held = hold_of(ny, at("2026-03-02T13:00:00+00:00"))
    assert held is not None
    assert held.reason is HoldReason.OUTSIDE_HOURS
    assert held.until == at("2026-03-02T14:00:00+00:00")
    assert hold_of(ny, at("2026-03-02T14:00:00+00:00")) is None
    # 01:30 UTC is 20:30 the evening before: after that day's window, so the next morning's.
    late = hold_of(ny, at("2026-03-03T01:30:00+00:00"))
    assert late is not None
    assert late.until == at("2026-03-03T14:00:00+00:00")


def test_hours_keep_wall_clock_times_across_dst() -> None:
    ny = line(zone=NY, hours=Hours.parse("09:00-20:00"))
    # The day before spring forward 09:00 EST is 14:00 UTC; the day of it, 09:00 EDT is 13:00 UTC.
    assert Hours.parse("09:00-20:00").opening(dt.date(2026, 3, 7), NY) == at("2026-03-07T14:00:00+00:00")
    assert Hours.parse("09:00-20:00").opening(dt.date(2026, 3, 8), NY) == at("2026-03-08T13:00:00+00:00")
    assert hold_of(ny, at("2026-03-08T13:30:00+00:00")) is None
    held = hold_of(ny, at("2026-03-08T12:30:00+00:00"))
    assert held is not None
    assert held.until == at("2026-03-08T13:00:00+00:00")
    # A wall time that does not exist (02:30 on spring-forward day) opens just after the gap.
    gap = Hours.parse("02:30-03:30").opening(dt.date(2026, 3, 8), NY)
    assert gap == at("2026-03-08T07:30:00+00:00")  # 03:30 EDT: zoneinfo maps past the gap
    # Fall back: 01:30 happens twice; the window opens at the first.
    assert Hours.parse("01:30-05:00").opening(dt.date(2026, 11, 1), NY) == at("2026-11-01T05:30:00+00:00")


@pytest.mark.parametrize(
    ("zone", "now", "day"),
    [
        # At 10:30 UTC it is already tomorrow in Auckland (UTC+13 in its summer)...
        (AUCKLAND, "2026-03-02T10:30:00+00:00", "2026-03-02"),
        (AUCKLAND, "2026-03-02T11:00:00+00:00", "2026-03-03"),
        # ...and still yesterday in Los Angeles (UTC-8) until 08:00 UTC.
        (LA, "2026-03-03T07:59:59+00:00", "2026-03-02"),
        (LA, "2026-03-03T08:00:00+00:00", "2026-03-03"),
        # Across their DST changes the boundary moves by an hour.
        (LA, "2026-03-09T06:59:59+00:00", "2026-03-08"),
        (LA, "2026-03-09T07:00:00+00:00", "2026-03-09"),
        (AUCKLAND, "2026-04-05T11:59:59+00:00", "2026-04-05"),  # NZDT ends 2026-04-05
        (AUCKLAND, "2026-04-05T12:00:00+00:00", "2026-04-06"),
        (SYDNEY, "2026-10-03T13:59:59+00:00", "2026-10-03"),  # AEDT starts 2026-10-04
        (SYDNEY, "2026-10-03T14:00:00+00:00", "2026-10-04"),
    ],
)
def test_each_line_has_its_own_day(zone: ZoneInfo, now: str, day: str) -> None:
    assert line(zone=zone).today(at(now)) == dt.date.fromisoformat(day)


def test_caps_and_spacing() -> None:
    pace = PacePolicy(line_per_minute=60, at_risk_per_minute=20, release_interval_s=5)
    assert line_cap(line(), pace) == 60
    assert line_cap(line(reputation="AT_RISK"), pace) == 20
    assert line_cap(line(pace_per_minute=10, reputation="AT_RISK"), pace) == 10  # already lower
    assert line_cap(line(pace_per_minute=0), pace) is None  # this line: no cap
    assert line_cap(line(reputation="AT_RISK"), PacePolicy(line_per_minute=0, at_risk_per_minute=20)) == 20
    # The slots leave room for a whole log span plus one release interval.
    assert spacing_s(60, pace) == pytest.approx((PACE_LOG_S + 5) / 60)
    assert scheduled_per_minute(60, pace) == pytest.approx(60 * 60 / 67)
    assert spacing_s(None, pace) == 0.0
    assert scheduled_per_minute(None, pace) is None


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2h", "2026-03-02T17:00:00+00:00"),
        ("1h30m", "2026-03-02T16:30:00+00:00"),
        ("45m", "2026-03-02T15:45:00+00:00"),
        ("1d", "2026-03-03T15:00:00+00:00"),
        ("2026-03-02T18:00", "2026-03-02T23:00:00+00:00"),  # a wall time in the line's zone (NY)
        ("2026-03-02T18:00:00+00:00", "2026-03-02T18:00:00+00:00"),
    ],
)
def test_until_takes_durations_and_times(text: str, expected: str) -> None:
    assert parse_until(text, now=NOW, zone=NY) == at(expected)


@pytest.mark.parametrize(
    ("text", "why"),
    [("yesterday", "neither a duration"), ("2026-03-01T00:00Z", "not in the future"), ("0h", "future")],
)
def test_until_refuses_in_one_line(text: str, why: str) -> None:
    with pytest.raises(ValueError, match=why):
        parse_until(text, now=NOW, zone=NY)


def test_estimate_says_whether_a_line_can_finish_today() -> None:
    pace = PacePolicy(line_per_minute=60, release_interval_s=5)
    # 15:00 UTC: nine hours left, at 60*60/67 = 53.7/min: ~29,000 fit.
    e = estimate(line(), pace, now=NOW, day=NOW.date(), remaining=12_400)
    assert e.can_finish
    big = estimate(line(), pace, now=NOW, day=NOW.date(), remaining=100_000)
    assert not big.can_finish
    assert big.fits == 29_014
    assert big.one_line("+12223334444").startswith("line +12223334444 cannot finish today: 100,000 left")
    # Hours that close at 16:00 leave one hour.
    short = estimate(line(hours=Hours.parse("09:00-16:00")), pace, now=NOW, day=NOW.date(), remaining=12_400)
    assert not short.can_finish
    assert short.fits == 3_223
    # A line held until an event lifts it cannot finish; one paused until 20:00 has 4 hours.
    held = estimate(line(reputation="CRITICAL"), pace, now=NOW, day=NOW.date(), remaining=5)
    assert not held.can_finish
    assert held.blocked is not None
    assert "held (line_critical" in held.one_line("+1")
    later = estimate(
        line(pause=Pause(NOW, at("2026-03-02T20:00:00+00:00"))), pace, now=NOW, day=NOW.date(), remaining=5
    )
    assert later.can_finish
    assert later.seconds_left == 4 * 3600
    # No cap: only the time left matters.
    assert estimate(
        line(), PacePolicy(line_per_minute=0), now=NOW, day=NOW.date(), remaining=10**9
    ).can_finish
