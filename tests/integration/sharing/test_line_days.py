"""Each line's own day, through the sweep, the share task, closing past days, status and check:
lines on both sides of UTC (Los Angeles, Auckland), across midnight and across DST changes. The
clock is fixed (deps.clock); leases still run on PostgreSQL's."""

from __future__ import annotations

import dataclasses
import datetime as dt
import uuid

import pytest
from sqlalchemy import text

from tests.support.sweeps import Collector, sweep
from tests.support.world import World
from worker.deps import Deps
from worker.errors import InputError
from worker.ops import controls, status
from worker.ops.check import run_check
from worker.sharing.share import Outcome, share_chat
from worker.store.session import transaction

UTC_LINE, LA, AKL, NY = "+12223334444", "+13105550100", "+6495550100", "+12125550100"
D7, D8, D9 = dt.date(2026, 3, 7), dt.date(2026, 3, 8), dt.date(2026, 3, 9)


def at(text_: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text_)


def clocked(deps: Deps, now: dt.datetime) -> Deps:
    return dataclasses.replace(deps, clock=lambda: now)


def day_rows(deps: Deps) -> dict[tuple[uuid.UUID, dt.date], str]:
    with deps.sessions() as s:
        return {
            (r.chat_id, r.day): r.status
            for r in s.execute(text("SELECT chat_id, day, status FROM share_days"))
        }


def test_each_line_shares_in_its_own_day_on_both_sides_of_utc(world: World, deps: Deps) -> None:
    t1 = at("2026-03-08T07:30:00+00:00")  # Los Angeles: 23:30 on the 7th; Auckland: 20:30 on the 8th
    t2 = at("2026-03-08T11:30:00+00:00")  # Los Angeles: 03:30 (PDT) on the 8th; Auckland: 00:30 on the 9th
    world.sim.configure(share_window_s=0.01)  # the simulator's clock is real: two days pass in seconds
    chats = {}
    for phone, zone in ((UTC_LINE, None), (LA, "America/Los_Angeles"), (AKL, "Pacific/Auckland")):
        world.line(phone)
        if zone:
            # Set while every zone is on the 7th (a change may not move a line's day back).
            controls.set_line(clocked(deps, at("2026-03-07T12:00:00+00:00")), phone, zone=zone)
        chats[phone] = world.chat(phone, outbound_at=t1 - dt.timedelta(hours=1))

    first = Collector()
    sweep(clocked(deps, t1), first)
    assert sorted(first.sent) == sorted([(chats[UTC_LINE], D8), (chats[LA], D7), (chats[AKL], D8)])
    # The share task compares with the line's day, not the default zone's.
    assert share_chat(chats[LA], D7, clocked(deps, t1)).outcome is Outcome.SHARED
    assert share_chat(chats[LA], D8, clocked(deps, t1)).outcome is Outcome.NOT_DUE  # not started there
    at_t1 = status.collect(
        deps.sessions, day=None, now=t1, policy=deps.policy, redis_url=None, stall_s=300, pace=deps.pace
    )
    days = {ln.line: ln.view.day for ln in at_t1.lines if ln.view}
    assert days == {UTC_LINE: D8, LA: D7, AKL: D8}
    assert {ln.line: ln.counts.shared for ln in at_t1.lines} == {UTC_LINE: 0, LA: 1, AKL: 0}

    # Four hours later Auckland is on the 9th and Los Angeles on the 8th; UTC is still on the 8th.
    second = Collector()
    report = sweep(clocked(deps, t2), second)
    assert sorted(second.sent) == sorted([(chats[LA], D8), (chats[AKL], D9)])
    rows = day_rows(deps)
    # Auckland's 8th is over (and missed); UTC's 8th is still today and stays open.
    assert rows[(chats[AKL], D8)] == "failed"
    assert rows[(chats[UTC_LINE], D8)] == "queued"
    assert rows[(chats[LA], D7)] == "succeeded"
    assert report.closed_past == 1
    assert share_chat(chats[AKL], D8, clocked(deps, t2)).outcome is Outcome.DAY_OVER
    assert share_chat(chats[AKL], D9, clocked(deps, t2)).outcome is Outcome.SHARED
    assert share_chat(chats[LA], D8, clocked(deps, t2)).outcome is Outcome.SHARED
    with transaction(deps.sessions) as s:
        check8 = run_check(s, D8, deps.policy, now=t2)
    assert chats[AKL] in check8.missed  # its 8th ended unshared
    assert chats[UTC_LINE] in check8.missed  # still queued (open) when checked
    assert chats[LA] not in check8.missed
    assert check8.unseen_due == []


def test_a_25_hour_day_gets_one_share_and_a_23_hour_day_ends_on_time(world: World, deps: Deps) -> None:
    world.sim.configure(share_window_s=0.01)
    world.line(NY)
    controls.set_line(clocked(deps, at("2026-03-07T12:00:00+00:00")), NY, zone="America/New_York")
    chat = world.chat(NY, outbound_at=at("2026-03-07T00:00:00+00:00"))
    # Spring forward: 04:59:59 UTC is still the 7th in New York, 05:00 the 8th.
    last_of_7 = Collector()
    sweep(clocked(deps, at("2026-03-08T04:59:59+00:00")), last_of_7)
    assert last_of_7.sent == [(chat, D7)]
    first_of_8 = Collector()
    sweep(clocked(deps, at("2026-03-08T05:00:00+00:00")), first_of_8)
    assert first_of_8.sent == [(chat, D8)]
    # The 8th is 23 hours long: 04:00 UTC on the 9th is already the 9th.
    assert share_chat(chat, D8, clocked(deps, at("2026-03-09T03:59:00+00:00"))).outcome is Outcome.SHARED
    assert share_chat(chat, D8, clocked(deps, at("2026-03-09T04:00:00+00:00"))).outcome is Outcome.DAY_OVER

    # Fall back: 01:30 happens twice on November 1st; both are one day, with one share.
    fall = world.chat(NY, outbound_at=at("2026-10-31T12:00:00+00:00"))
    nov1 = dt.date(2026, 11, 1)
    first = Collector()
    sweep(clocked(deps, at("2026-11-01T05:30:00+00:00")), first)  # 01:30 EDT
    assert (fall, nov1) in first.sent
    assert share_chat(fall, nov1, clocked(deps, at("2026-11-01T05:30:00+00:00"))).outcome is Outcome.SHARED
    again = Collector()
    sweep(clocked(deps, at("2026-11-01T06:30:00+00:00")), again)  # 01:30 EST, an hour later
    assert (fall, nov1) not in again.sent
    refused = share_chat(fall, nov1, clocked(deps, at("2026-11-01T06:30:00+00:00")))
    assert refused.outcome is Outcome.NOT_DUE
    assert refused.reason
    assert refused.reason.startswith("already_shared")
    # The 1st is 25 hours long: 04:30 UTC on the 2nd is still the 1st.
    assert share_chat(fall, nov1, clocked(deps, at("2026-11-02T04:30:00+00:00"))).outcome is Outcome.NOT_DUE
    assert world.sim.share_count(str(fall)) == 1


def test_a_zone_change_that_moves_the_day_back_is_refused(world: World, deps: Deps) -> None:
    world.line(AKL)
    now = at("2026-03-08T11:30:00+00:00")  # Auckland: the 9th; UTC: the 8th
    controls.set_line(clocked(deps, now), AKL, zone="Pacific/Auckland")
    with pytest.raises(InputError, match=r"move \+6495550100's day back from 2026-03-09 to 2026-03-08"):
        controls.set_line(clocked(deps, now), AKL, zone="default")
    # Forward is fine: from Los Angeles (the 8th, 03:30) to Auckland (the 9th).
    world.line(LA)
    controls.set_line(clocked(deps, now), LA, zone="America/Los_Angeles")
    assert controls.set_line(clocked(deps, now), LA, zone="Pacific/Auckland").message.startswith(LA)
    with pytest.raises(InputError, match="not an IANA time zone"):
        controls.set_line(clocked(deps, now), LA, zone="Mars/Olympus_Mons")
