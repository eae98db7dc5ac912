"""Holds and the release pass against real PostgreSQL, Redis and the simulator: a held line's
chat-days wait (not re-published), go out the same day when the hold lifts, at the line's pace;
a paced line's slots are spread and do not hold up a small line; a day that ends held is
skipped naming its hold, which `check` does not count as missed."""

from __future__ import annotations

import dataclasses
import datetime as dt
import itertools
import uuid

from sqlalchemy import text

from tests.support.sweeps import Collector, recover, release, sweep
from tests.support.world import World
from worker.deps import Deps
from worker.ops import controls
from worker.ops.check import run_check
from worker.rules.gate import Hours, spacing_s
from worker.sharing.share import Outcome, share_chat
from worker.store.lines import pause_line, record_reputation, set_line
from worker.store.session import transaction
from worker.store.sweeps import close_past_days


def rows(deps: Deps, chats: list[uuid.UUID]) -> dict[uuid.UUID, tuple[str, str | None, float, dt.datetime]]:
    with deps.sessions() as s:
        return {
            r.chat_id: (r.status, r.reason, float(r.rest), r.updated_at)
            for r in s.execute(
                text(
                    "SELECT chat_id, status, reason, extract(epoch FROM lease_until - now()) AS rest, "
                    "updated_at FROM share_days WHERE chat_id = ANY(:c)"
                ),
                {"c": chats},
            )
        }


def paced(deps: Deps, per_minute: int) -> Deps:
    return dataclasses.replace(deps, settings=deps.settings.replace(line_shares_per_minute=per_minute))


def test_a_paused_line_waits_and_is_shared_the_same_day_on_resume(
    world: World, deps: Deps, today: dt.date
) -> None:
    line = world.line()
    chats = [world.chat(line) for _ in range(3)]
    other = world.chat(world.line("+13334445555"))
    controls.pause(deps, line, reason="a campaign goes out", until=None, by="ops@test")
    publish = Collector()
    report = sweep(deps, publish)
    assert publish.ids == [other]
    assert report.held == 3
    held = rows(deps, chats)
    assert {v[0] for v in held.values()} == {"held"}
    assert all(
        v[1] and v[1].startswith("line_paused: a campaign goes out, by ops@test") for v in held.values()
    )
    # Neither another sweep, recovery nor the release pass re-publishes them, nor writes them.
    for run in (sweep, recover, release):
        again = Collector()
        run(deps, again)
        assert again.ids == [] or (again.ids == [other] and run is recover)
    assert {c: (v[0], v[1], v[3]) for c, v in rows(deps, chats).items()} == {
        c: (v[0], v[1], v[3]) for c, v in held.items()
    }
    # A message queued before the pause is held by the task itself, without a call.
    assert share_chat(chats[0], today, deps).outcome is Outcome.HELD
    assert world.sim.shares()["total_accepted"] == 0
    done = controls.resume(deps, line)
    assert done.rearmed == 3
    out = Collector()
    release(deps, out)
    assert sorted(out.ids) == sorted(chats)
    assert {d for _, d in out.sent} == {today}
    for chat in chats:
        assert share_chat(chat, today, deps).outcome is Outcome.SHARED
    with deps.sessions() as s:
        actions = [
            tuple(r)
            for r in s.execute(text("SELECT action, chat_ref, outcome FROM audit_events ORDER BY id"))
        ]
    assert actions == [("line.pause", line, "paused"), ("line.resume", line, "resumed")]


def test_the_account_pause_holds_every_line(world: World, deps: Deps, today: dt.date) -> None:
    a, b = world.chat(world.line()), world.chat(world.line("+13334445555"))
    controls.pause(deps, None, reason="incident", until="1h", by="ops@test")
    publish = Collector()
    sweep(deps, publish)
    assert publish.ids == []
    assert {v[1].split(":")[0] for v in rows(deps, [a, b]).values() if v[1]} == {"account_paused"}
    # The account's pause ends by itself: the chat-days rest until then.
    assert all(3500 < v[2] <= 3600 for v in rows(deps, [a, b]).values())
    controls.resume(deps, None)
    out = Collector()
    release(deps, out)
    assert sorted(out.ids) == sorted([a, b])


def test_a_critical_line_is_held_until_linq_clears_it(world: World, deps: Deps, today: dt.date) -> None:
    line = world.line(reputation="CRITICAL")
    chat = world.chat(line)
    publish = Collector()
    sweep(deps, publish)  # the sweep reads CRITICAL from Linq too
    assert publish.ids == []
    status, reason, rest, _ = rows(deps, [chat])[chat]
    assert status == "held"
    assert reason
    assert reason.startswith("line_critical:")
    assert rest > 60  # until the day ends, unless Linq clears the line
    world.sim.set_line_state(line, reputation="AT_RISK")
    # The next sweep reads the new reputation and lets the line's held chat-days go.
    again = Collector()
    sweep(deps, again)
    out = Collector()
    release(deps, out)
    assert out.ids == [chat]
    assert share_chat(chat, today, deps).outcome is Outcome.SHARED


def test_outside_its_hours_a_line_waits_for_the_opening(world: World, deps: Deps, today: dt.date) -> None:
    line = world.line()
    chat = world.chat(line)
    now = dt.datetime.now(dt.UTC)
    minute = now.hour * 60 + now.minute
    start = (minute + 30) % 1380  # opens in about half an hour (or early tomorrow)
    with transaction(deps.sessions) as s:
        set_line(s, line, hours=Hours(start, start + 60))
    publish = Collector()
    sweep(deps, publish)
    assert publish.ids == []
    status, reason, rest, _ = rows(deps, [chat])[chat]
    assert status == "held"
    assert reason
    assert reason.startswith("outside_hours:")
    opening = Hours(start, start + 60).opening(today, deps.settings.zone)
    end = dt.datetime.combine(today + dt.timedelta(days=1), dt.time(0), tzinfo=dt.UTC)
    expected = (min(opening if opening > now else end, end) - now).total_seconds()
    assert abs(rest - expected) < 120


def test_a_paced_line_gets_spread_slots_and_does_not_hold_up_a_small_line(
    world: World, deps: Deps, today: dt.date
) -> None:
    d = paced(deps, 60)
    big = world.line()
    small = world.line("+13334445555")
    big_chats = [world.chat(big, in_sim=False) for _ in range(40)]
    small_chats = [world.chat(small, in_sim=False) for _ in range(3)]
    publish = Collector()
    report = sweep(d, publish)
    spacing = spacing_s(60, d.pace)
    # Only the slots before the next release pass go out now: a handful of the big line's...
    now_count = int(d.settings.release_interval_s / spacing) + 1
    assert len([c for c in publish.ids if c in big_chats]) == now_count
    # ...and every one of the small line's: it is not behind the big one.
    assert set(small_chats) <= set(publish.ids)
    assert report.held == 40 - now_count
    waiting = sorted(
        (v[2], c)
        for c, v in rows(deps, big_chats).items()
        if v[0] == "held" and (v[1] or "").startswith("pace:")
    )
    assert len(waiting) == 40 - now_count
    rests = [r for r, _ in waiting]
    gaps = [b - a for a, b in itertools.pairwise(rests)]
    assert all(abs(g - spacing) < 0.05 for g in gaps), gaps
    # The release pass publishes the slots that came (here: made to come), in slot order.
    with transaction(deps.sessions) as s:
        s.execute(
            text(
                "UPDATE share_days SET lease_until = lease_until - interval '1 hour' WHERE chat_id = ANY(:c)"
            ),
            {"c": [c for _, c in waiting[:5]]},
        )
    out = Collector()
    release(d, out)
    assert out.ids == [c for _, c in waiting[:5]]


def test_a_resumed_big_line_goes_out_at_its_pace_not_at_once(
    world: World, deps: Deps, today: dt.date
) -> None:
    d = paced(deps, 60)
    line = world.line()
    chats = [world.chat(line, in_sim=False) for _ in range(30)]
    with transaction(deps.sessions) as s:
        pause_line(s, line, until=None, reason=None, by="test")
    sweep(d, Collector())
    controls.resume(d, line)
    out = Collector()
    release(d, out)
    assert 0 < len(out.ids) <= int(d.settings.release_interval_s / spacing_s(60, d.pace)) + 1
    kinds = {(v[0], (v[1] or "").split(":")[0]) for v in rows(deps, chats).values()}
    assert kinds == {("queued", ""), ("held", "pace")}


def test_a_day_that_ends_held_is_skipped_naming_the_hold_and_not_missed(
    world: World, deps: Deps, today: dt.date
) -> None:
    line = world.line()
    chat = world.chat(line)
    with transaction(deps.sessions) as s:
        record_reputation(s, line, "CRITICAL", at=dt.datetime.now(dt.UTC) + dt.timedelta(hours=1))
    world.sim.set_line_state(line, reputation="CRITICAL")
    sweep(deps, Collector())
    with transaction(deps.sessions) as s:
        report = run_check(s, today, deps.policy, now=dt.datetime.now(dt.UTC))
    assert report.held == {"line_critical": 1}
    assert report.missed == []
    # The next day begins: the held chat-day ends skipped, naming its hold.
    with transaction(deps.sessions) as s:
        assert close_past_days(s, line_days={line: today + dt.timedelta(days=1)}) == 1
    status, reason, _, _ = rows(deps, [chat])[chat]
    assert status == "skipped"
    assert reason
    assert reason.startswith("line_critical:")
    assert reason.endswith("(its day ended while held)")
    later = dt.datetime.combine(today, dt.time(23, 59), tzinfo=dt.UTC)
    with transaction(deps.sessions) as s:
        final = run_check(s, today, deps.policy, now=later + dt.timedelta(minutes=2))
    assert final.skipped == {"line_critical": 1}
    assert final.missed == []
    assert final.ok
