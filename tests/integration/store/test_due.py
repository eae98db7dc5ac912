"""The due rule is written twice: in Python (rules.cadence.why_not_due, with the line's holds in
rules.gate.decide) and as one SQL predicate (store.due) composed into the sweep's pages,
`status` and `card list`. One chat per NotDue reason and per line hold (each on its own line,
so per-line counts name the chat) goes through both; they must agree."""

from __future__ import annotations

import dataclasses
import datetime as dt
import uuid

import pytest
from sqlalchemy import text

from tests.support.sweeps import Collector, sweep
from tests.support.world import World
from worker.deps import Deps
from worker.ops.check import run_check
from worker.rules.cadence import (
    ACTIVE_WINDOW,
    OUTBOUND_TODAY,
    NotDue,
    Policy,
    active_since,
    day_bounds,
    share_day,
)
from worker.rules.gate import HoldReason, Hours, Verdict, decide, hold_kind
from worker.store.cards import due_today_by_line
from worker.store.chats import mark_not_found, mark_opted_out
from worker.store.lines import pause_line, record_status, set_line
from worker.store.reports import unmarked_due_by_line
from worker.store.session import transaction
from worker.store.shares import load_chat

NOW = dt.datetime.now(dt.UTC)
# The start of NOW's day (the lines here keep the default zone, UTC), and an outbound time that is
# within the active window and on NOW's day whatever the time of day.
DAY_START = dt.datetime.combine(NOW.date(), dt.time(0), tzinfo=dt.UTC)
RECENT = max(NOW - dt.timedelta(hours=1), DAY_START + (NOW - DAY_START) / 2)


def closed_hours() -> str:
    """A one-minute sharing window that NOW (UTC) is outside of."""
    minute = NOW.hour * 60 + NOW.minute
    start = (minute + 10) % (24 * 60 - 1)
    return f"{start // 60:02d}:{start % 60:02d}-{(start + 1) // 60:02d}:{(start + 1) % 60:02d}"


# name, how the chat and its line are made, the reason the Python rule must give, and the hold
CASES: list[tuple[str, dict[str, object], NotDue | None, HoldReason | None]] = [
    ("due", {}, None, None),
    ("due_retry_row", {"row": "retry"}, None, None),
    ("due_at_risk", {"reputation": "AT_RISK"}, None, None),
    ("chat_not_found", {"not_found": True}, NotDue.CHAT_NOT_FOUND, None),
    ("not_imessage", {"service": "SMS"}, NotDue.NOT_IMESSAGE, None),
    ("group_chat", {"is_group": True}, NotDue.GROUP_CHAT, None),
    ("opted_out", {"opted_out": True}, NotDue.OPTED_OUT, None),
    ("chat_health", {"health": "CRITICAL"}, NotDue.CHAT_HEALTH, None),
    ("chat_health_opted_out", {"health": "OPTED_OUT"}, NotDue.CHAT_HEALTH, None),
    ("chat_at_risk", {"health": "AT_RISK"}, None, None),
    ("no_outbound", {"outbound": None}, NotDue.NO_OUTBOUND, None),
    ("outbound_later", {"outbound": NOW + dt.timedelta(hours=1)}, NotDue.OUTBOUND_LATER, None),
    ("stale", {"outbound": NOW - dt.timedelta(days=31)}, NotDue.STALE, None),
    # Due under active-window; under outbound-today its day has no outbound message yet: STALE.
    ("outbound_yesterday", {"outbound": DAY_START - dt.timedelta(minutes=1)}, None, None),
    (
        "paused_outbound_yesterday",
        {"outbound": DAY_START - dt.timedelta(minutes=1), "pause": True},
        None,
        HoldReason.LINE_PAUSED,
    ),
    ("card_inactive", {"card": False}, NotDue.CARD_INACTIVE, None),
    ("already_shared", {"row": "succeeded"}, NotDue.ALREADY_SHARED, None),
    ("day_closed", {"row": "skipped"}, NotDue.DAY_CLOSED, None),
    ("line_paused", {"pause": True}, None, HoldReason.LINE_PAUSED),
    ("line_critical", {"reputation": "CRITICAL"}, None, HoldReason.LINE_CRITICAL),
    ("line_flagged", {"status": "FLAGGED"}, None, HoldReason.LINE_FLAGGED),
    ("outside_hours", {"hours": True}, None, HoldReason.OUTSIDE_HOURS),
    # Not due beats held: a paused line's SMS chat is not due at all.
    ("paused_but_sms", {"pause": True, "service": "SMS"}, NotDue.NOT_IMESSAGE, None),
]
# The account-wide pause holds every line, and pace is decided by Redis at call time: both have
# their own tests (tests/integration/sharing/test_gate.py).
SEPARATE = {HoldReason.ACCOUNT_PAUSED, HoldReason.PACE}


def test_the_table_has_one_chat_per_reason() -> None:
    assert {reason for _, _, reason, _ in CASES if reason is not None} == set(NotDue)
    # ... and under outbound-today, a due chat and a held one become STALE.
    stale = {
        n
        for n, _, r, _ in CASES
        if expected_reason(n, r, share_groups=False, due_policy=OUTBOUND_TODAY) is NotDue.STALE and r is None
    }
    assert stale == {"outbound_yesterday", "paused_outbound_yesterday"}
    assert {hold for _, _, _, hold in CASES if hold is not None} == set(HoldReason) - SEPARATE


@dataclasses.dataclass(frozen=True)
class Made:
    name: str
    chat: uuid.UUID
    line: str
    reason: NotDue | None
    hold: HoldReason | None
    has_row: bool


def make(world: World, deps: Deps, day: dt.date) -> list[Made]:
    made = []
    for i, (name, how, reason, hold) in enumerate(CASES):
        rep = how.get("reputation", "HEALTHY")
        line = world.line(f"+1222555{i:04d}", active=bool(how.get("card", True)), reputation=rep)  # type: ignore[arg-type]
        outbound = how.get("outbound", RECENT)
        chat = world.chat(
            line,
            service=str(how.get("service", "iMessage")),
            is_group=bool(how.get("is_group", False)),
            outbound_at=outbound if outbound is not None else False,  # type: ignore[arg-type]
            in_sim=False,
            health=how.get("health"),  # type: ignore[arg-type]
        )
        with transaction(deps.sessions) as s:
            if how.get("not_found"):
                mark_not_found(s, chat)
            if how.get("opted_out"):
                mark_opted_out(s, chat)
            if how.get("pause"):
                assert pause_line(s, line, until=None, reason="maintenance", by="test")
            if how.get("status"):
                assert record_status(s, line, str(how["status"]), at=NOW)
            if how.get("hours"):
                assert set_line(s, line, hours=Hours.parse(closed_hours()))
            if "row" in how:
                s.execute(
                    text(
                        "INSERT INTO share_days (chat_id, day, status, lease_until) "
                        "VALUES (:c, :d, :s, now() - interval '1 minute')"
                    ),
                    {"c": chat, "d": day, "s": how["row"]},
                )
        made.append(Made(name, chat, line, reason, hold, "row" in how))
    return made


# Under outbound-today, a chat whose last outbound message is before its line's day fails STALE,
# which comes before these reasons (and before any hold: not due beats held).
AFTER_STALE = {None, NotDue.CARD_INACTIVE, NotDue.ALREADY_SHARED, NotDue.DAY_CLOSED}


def expected_reason(
    name: str, reason: NotDue | None, *, share_groups: bool, due_policy: str
) -> NotDue | None:
    if reason is NotDue.GROUP_CHAT and share_groups:
        reason = None
    how = next(h for n, h, _, _ in CASES if n == name)
    outbound = how.get("outbound", RECENT)
    if (
        due_policy == OUTBOUND_TODAY
        and reason in AFTER_STALE
        and isinstance(outbound, dt.datetime)
        and outbound < DAY_START
    ):
        return NotDue.STALE
    return reason


@pytest.mark.parametrize("due_policy", [ACTIVE_WINDOW, OUTBOUND_TODAY])
@pytest.mark.parametrize("share_groups", [False, True])
def test_sql_predicate_and_python_rule_select_the_same_chats(
    world: World, deps: Deps, share_groups: bool, due_policy: str
) -> None:
    today = share_day(NOW, deps.settings.zone)
    policy = dataclasses.replace(deps.policy, share_groups=share_groups, due_policy=due_policy)
    assert isinstance(policy, Policy)
    made = make(world, deps, today)
    expected = {
        m.name: expected_reason(m.name, m.reason, share_groups=share_groups, due_policy=due_policy)
        for m in made
    }
    holds = {m.name: m.hold for m in made if m.hold is not None and expected[m.name] is None}

    # The Python rule, over the facts (and the line's state) the share path loads.
    with transaction(deps.sessions) as s:
        rows = {m.name: load_chat(s, m.chat, today) for m in made}
    python = {}
    python_holds = {}
    for name, row in rows.items():
        assert row is not None
        assert row.line is not None
        decision = decide(
            row.facts,
            row.line,
            now=NOW,
            policy=policy,
            shared_today=row.shared_today,
            day_closed=row.day_closed,
        )
        python[name] = decision.not_due
        if decision.verdict is Verdict.HOLD:
            assert decision.held is not None
            python_holds[name] = decision.held.reason
    assert python == expected
    assert python_holds == holds
    due = {m.name for m in made if python[m.name] is None}
    go = due - set(holds)
    # Due once the card is active: `card list` counts those (the card is its own column there).
    due_but_card = due | {m.name for m in made if m.reason is NotDue.CARD_INACTIVE}
    by_line = {m.line: m.name for m in made}
    days = dict.fromkeys(by_line, today)

    with transaction(deps.sessions) as s:
        # status: chats due now that no sweep has marked yet (a held line's too: they wait).
        unmarked = unmarked_due_by_line(s, line_days=days, now=NOW, policy=policy)
        unseen = {m.name for m in made if m.name in due and not m.has_row}
        assert {by_line[line] for line in unmarked} == unseen
        assert set(unmarked.values()) == {1}
        # card list: due today on each line, the card's state aside.
        per_line = due_today_by_line(s, days, now=NOW, policy=policy)
        assert {by_line[line] for line in per_line} == due_but_card
        # check: judges the unmarked chats with the Python rule.
        report = run_check(s, today, policy, now=NOW)
        assert {m.name for m in made if m.chat in report.unseen_due} == unseen

    # The sweep: marks every due chat with no row or an open one whose lease ended; publishes
    # those whose line is open, holds the others naming the hold, and writes nothing for the rest.
    publish = Collector()
    sweep(
        dataclasses.replace(
            deps,
            clock=lambda: NOW,
            settings=deps.settings.replace(share_groups=share_groups, due_policy=due_policy),
        ),
        publish,
    )
    assert {m.name for m in made if m.chat in publish.ids} == go
    with deps.sessions() as s:
        marked = {
            r.chat_id: (r.status, r.reason)
            for r in s.execute(
                text("SELECT chat_id, status, reason FROM share_days WHERE day = :d"), {"d": today}
            )
        }
    held = {m.name: hold_kind(marked[m.chat][1]) for m in made if marked.get(m.chat, ("",))[0] == "held"}
    assert held == {name: hold.value for name, hold in holds.items()}
    untouched = {m.name for m in made if m.chat not in marked}
    assert untouched == {m.name for m in made if python[m.name] is not None and not m.has_row}


@pytest.mark.parametrize(
    "zone",
    ["UTC", "America/New_York", "Asia/Tokyo", "Pacific/Kiritimati", "Pacific/Pago_Pago", "Asia/Kolkata"],
)
def test_the_sql_day_start_is_the_python_one_in_every_zone(deps: Deps, zone: str) -> None:
    """`outbound-today` in SQL starts the line's day where `rules.cadence.active_since` does."""
    from zoneinfo import ZoneInfo

    from worker.store.due import LINE_DAY_START

    policy = dataclasses.replace(deps.policy, due_policy=OUTBOUND_TODAY)
    with deps.sessions() as s:
        for hours in range(0, 48, 5):
            now = NOW + dt.timedelta(hours=hours)
            got = s.execute(
                text(f"SELECT {LINE_DAY_START} FROM (SELECT CAST(:tz AS text) AS timezone) AS l"),
                {"now": now, "zone": "UTC", "tz": zone},
            ).scalar_one()
            z = ZoneInfo(zone)
            assert got == day_bounds(share_day(now, z), z)[0] == active_since(now, policy, z)
