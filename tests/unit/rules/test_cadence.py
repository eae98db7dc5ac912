from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import pytest

from worker.rules.cadence import (
    CLOSE_MARGIN_DAYS,
    NotDue,
    Policy,
    close_from,
    day_bounds,
    share_day,
    why_not_due,
)
from worker.rules.facts import ChatFacts

UTC = dt.UTC
NY = ZoneInfo("America/New_York")
SYDNEY = ZoneInfo("Australia/Sydney")


def at(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text)


@pytest.mark.parametrize(
    ("now", "zone", "day"),
    [
        ("2026-03-02T15:04:05+00:00", ZoneInfo("UTC"), "2026-03-02"),
        ("2026-03-02T23:59:59+00:00", ZoneInfo("UTC"), "2026-03-02"),
        ("2026-03-03T00:00:00+00:00", ZoneInfo("UTC"), "2026-03-03"),
        # 02:30 UTC is still the previous evening in New York.
        ("2026-03-03T02:30:00+00:00", NY, "2026-03-02"),
        # US spring forward, 2026-03-08 02:00 local: the day is 23 hours long.
        ("2026-03-08T04:59:59+00:00", NY, "2026-03-07"),
        ("2026-03-08T05:00:00+00:00", NY, "2026-03-08"),
        ("2026-03-09T03:59:59+00:00", NY, "2026-03-08"),
        ("2026-03-09T04:00:00+00:00", NY, "2026-03-09"),
        # US fall back, 2026-11-01: 01:30 local happens twice, both on Nov 1.
        ("2026-11-01T05:30:00+00:00", NY, "2026-11-01"),
        ("2026-11-01T06:30:00+00:00", NY, "2026-11-01"),
        ("2026-11-02T04:59:59+00:00", NY, "2026-11-01"),
        ("2026-11-02T05:00:00+00:00", NY, "2026-11-02"),
        # Southern hemisphere: Sydney leaves DST on 2026-04-05.
        ("2026-04-04T13:00:00+00:00", SYDNEY, "2026-04-05"),
        # The same instant in another zone given as a non-UTC offset.
        ("2026-03-02T20:00:00-05:00", ZoneInfo("UTC"), "2026-03-03"),
    ],
)
def test_share_day(now: str, zone: ZoneInfo, day: str) -> None:
    assert share_day(at(now), zone) == dt.date.fromisoformat(day)


def test_share_day_rejects_naive_time() -> None:
    with pytest.raises(ValueError, match="aware"):
        share_day(dt.datetime(2026, 3, 2, 12, 0), ZoneInfo("UTC"))  # noqa: DTZ001


@pytest.mark.parametrize(
    ("day", "zone", "hours"),
    [
        ("2026-03-08", NY, 23),
        ("2026-11-01", NY, 25),
        ("2026-06-01", NY, 24),
        ("2026-03-08", ZoneInfo("UTC"), 24),
    ],
)
def test_day_bounds_follow_dst(day: str, zone: ZoneInfo, hours: int) -> None:
    start, end = day_bounds(dt.date.fromisoformat(day), zone)
    assert (end - start) == dt.timedelta(hours=hours)
    assert share_day(start, zone) == dt.date.fromisoformat(day)
    assert share_day(end - dt.timedelta(microseconds=1), zone) == dt.date.fromisoformat(day)


NOW = at("2026-03-02T10:00:00+00:00")
POLICY = Policy(zone=ZoneInfo("UTC"), active_days=30, share_groups=False)


def chat(**kw: object) -> ChatFacts:
    base: dict[str, object] = {
        "service": "iMessage",
        "is_group": False,
        "first_outbound_at": at("2026-02-20T09:00:00+00:00"),
        "last_outbound_at": at("2026-03-01T09:00:00+00:00"),
        "opted_out": False,
        "card_active": True,
    }
    base.update(kw)
    return ChatFacts(**base)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("facts", "shared_today", "policy", "expected"),
    [
        (chat(), False, POLICY, None),
        (chat(service="SMS"), False, POLICY, NotDue.NOT_IMESSAGE),
        (chat(service="RCS"), False, POLICY, NotDue.NOT_IMESSAGE),
        (chat(service=None), False, POLICY, NotDue.NOT_IMESSAGE),
        (chat(is_group=True), False, POLICY, NotDue.GROUP_CHAT),
        (chat(is_group=True), False, Policy(zone=ZoneInfo("UTC"), share_groups=True), None),
        (chat(opted_out=True), False, POLICY, NotDue.OPTED_OUT),
        (chat(first_outbound_at=None, last_outbound_at=None), False, POLICY, NotDue.NO_OUTBOUND),
        # First outbound later today: not yet.
        (
            chat(
                first_outbound_at=at("2026-03-02T15:00:00+00:00"),
                last_outbound_at=at("2026-03-02T15:00:00+00:00"),
            ),
            False,
            POLICY,
            NotDue.OUTBOUND_LATER,
        ),
        # First outbound exactly now counts ("at or before now").
        (chat(first_outbound_at=NOW, last_outbound_at=NOW), False, POLICY, None),
        # Last outbound 31 days ago: the business stopped talking; 29 days ago still active.
        (
            chat(
                first_outbound_at=at("2026-01-01T00:00:00+00:00"),
                last_outbound_at=at("2026-01-30T09:00:00+00:00"),
            ),
            False,
            POLICY,
            NotDue.STALE,
        ),
        (
            chat(
                first_outbound_at=at("2026-01-01T00:00:00+00:00"),
                last_outbound_at=at("2026-02-01T11:00:00+00:00"),
            ),
            False,
            POLICY,
            None,
        ),
        (chat(card_active=False), False, POLICY, NotDue.CARD_INACTIVE),
        (chat(), True, POLICY, NotDue.ALREADY_SHARED),
        (chat(not_found=True), False, POLICY, NotDue.CHAT_NOT_FOUND),
        # The first failing rule is reported.
        (chat(service="SMS", card_active=False), False, POLICY, NotDue.NOT_IMESSAGE),
    ],
)
def test_why_not_due(facts: ChatFacts, shared_today: bool, policy: Policy, expected: NotDue | None) -> None:
    assert why_not_due(facts, now=NOW, policy=policy, shared_today=shared_today) == expected


def test_due_in_a_dst_zone_uses_instants_not_wall_clock() -> None:
    # 2026-03-08 03:30 New York (just after spring forward); outbound at 01:59 local the same day.
    now = dt.datetime(2026, 3, 8, 3, 30, tzinfo=NY)
    first = dt.datetime(2026, 3, 8, 1, 59, tzinfo=NY)
    facts = chat(first_outbound_at=first, last_outbound_at=first)
    policy = Policy(zone=NY)
    assert why_not_due(facts, now=now, policy=policy, shared_today=False) is None
    assert share_day(first, NY) == share_day(now, NY) == dt.date(2026, 3, 8)


def test_a_closed_day_is_not_due_but_sharing_wins_the_label() -> None:
    assert (
        why_not_due(chat(), now=NOW, policy=POLICY, shared_today=False, day_closed=True) is NotDue.DAY_CLOSED
    )
    assert (
        why_not_due(chat(), now=NOW, policy=POLICY, shared_today=True, day_closed=False)
        is NotDue.ALREADY_SHARED
    )


def test_close_from_reaches_back_past_any_zone_lag_of_the_last_sweep() -> None:
    assert close_from(None) is None
    last = dt.date(2026, 3, 10)
    assert close_from(last) == last - dt.timedelta(days=CLOSE_MARGIN_DAYS)
    assert CLOSE_MARGIN_DAYS >= 2  # UTC+14 against UTC-12: two calendar days apart
