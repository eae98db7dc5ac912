"""Per-line pace against real Redis and the simulator: the call-time check holds across pacers
(workers, hosts), refuses with the line's next slot, and never lets a call out unpaced."""

from __future__ import annotations

import dataclasses
import datetime as dt
import uuid

import pytest
from sqlalchemy import text

from tests.support.world import World
from worker.deps import Deps
from worker.rules.gate import PACE_LOG_S
from worker.sharing.pace import PaceUnavailable, RedisPacer
from worker.sharing.share import Outcome, share_chat

SHARE_PATH = "/share_contact_card$"


def paced(deps: Deps, per_minute: int, **more: object) -> Deps:
    return dataclasses.replace(
        deps, settings=deps.settings.replace(line_shares_per_minute=per_minute, **more)
    )


def day_row(deps: Deps, chat: uuid.UUID) -> tuple[str, str | None, float]:
    with deps.sessions() as s:
        status, reason, rest = s.execute(
            text(
                "SELECT status, reason, extract(epoch FROM lease_until - now()) FROM share_days "
                "WHERE chat_id = :c"
            ),
            {"c": chat},
        ).one()
    return status, reason, float(rest)


def test_the_cap_holds_across_pacers_and_a_refusal_gets_the_next_slot(redis_url: str) -> None:
    one, two = RedisPacer.from_url(redis_url), RedisPacer.from_url(redis_url)
    try:
        spacing = 10.0
        grants = [
            p.acquire("+12223334444", cap=3, account_cap=None, spacing_s=spacing) for p in (one, two, one)
        ]
        assert all(g.granted for g in grants)
        refused = two.acquire("+12223334444", cap=3, account_cap=None, spacing_s=spacing)
        assert not refused.granted
        # The log frees room a log span after the first grant: that is the slot.
        assert PACE_LOG_S - 2 < refused.wait_s <= PACE_LOG_S
        # The next refusal is a slot later still: refused calls queue up, they do not collide.
        again = one.acquire("+12223334444", cap=3, account_cap=None, spacing_s=spacing)
        assert again.wait_s == pytest.approx(refused.wait_s + spacing, abs=0.5)
        # Another line has its own log.
        assert one.acquire("+13334445555", cap=3, account_cap=None, spacing_s=spacing).granted
        # The account's cap binds across lines.
        assert one.acquire("+14445556666", cap=None, account_cap=1, spacing_s=1.0).granted
        assert not two.acquire("+15556667777", cap=None, account_cap=1, spacing_s=1.0).granted
    finally:
        one.close()
        two.close()


def test_reserve_hands_out_consecutive_slots_per_line(redis_url: str) -> None:
    pacer = RedisPacer.from_url(redis_url)
    try:
        first = pacer.reserve([("+12223334444", 3, 2.0), ("+13334445555", 1, 5.0)]).starts_in_s
        assert first == {"+12223334444": pytest.approx(0, abs=0.2), "+13334445555": pytest.approx(0, abs=0.2)}
        second = pacer.reserve([("+12223334444", 1, 2.0)]).starts_in_s
        assert second["+12223334444"] == pytest.approx(6.0, abs=0.3)
        pacer.reset("+12223334444")
        assert pacer.reserve([("+12223334444", 1, 2.0)]).starts_in_s["+12223334444"] == pytest.approx(
            0, abs=0.2
        )
        windows = pacer.windows(["+12223334444"])
        assert windows["+12223334444"].granted == 0
        assert windows["+12223334444"].scheduled_s == pytest.approx(2.0, abs=0.3)
    finally:
        pacer.close()


def test_a_share_over_the_cap_waits_for_its_slot_and_is_not_called(
    world: World, deps: Deps, today: dt.date
) -> None:
    d = paced(deps, 2)
    line = world.line()
    chats = [world.chat(line) for _ in range(3)]
    results = [share_chat(c, today, d) for c in chats]
    assert [r.outcome for r in results] == [Outcome.SHARED, Outcome.SHARED, Outcome.PACED]
    assert world.sim.shares()["total_accepted"] == 2
    status, reason, rest = day_row(deps, chats[2])
    assert status == "held"
    assert reason is not None
    assert reason.startswith("pace: waiting for its slot at the line's pace (2/min)")
    assert 50 < rest <= PACE_LOG_S
    # A copy of its message before the slot does nothing either.
    again = share_chat(chats[2], today, d)
    assert again.outcome is Outcome.HELD
    assert world.sim.shares()["total_accepted"] == 2
    # Another line is not held up by this one.
    other = world.chat(world.line("+13334445555"))
    assert share_chat(other, today, d).outcome is Outcome.SHARED


def test_a_retry_in_the_run_needs_its_own_slot(world: World, deps: Deps, today: dt.date) -> None:
    d = paced(deps, 1)
    line = world.line()
    chat = world.chat(line)
    world.sim.add_faults([{"path": SHARE_PATH, "mode": "respond", "status": 503, "code": 3006, "times": 1}])
    result = share_chat(chat, today, d)
    assert result.outcome is Outcome.PACED
    assert result.attempts == 1
    status, reason, _ = day_row(deps, chat)
    assert status == "held"
    assert reason is not None
    assert reason.startswith("pace:")
    with deps.sessions() as s:
        outcomes = list(
            s.execute(text("SELECT outcome FROM attempts WHERE chat_id = :c"), {"c": chat}).scalars()
        )
    assert outcomes == ["retryable"]  # one call only: the retry waited


def test_no_redis_means_no_call(world: World, deps: Deps, today: dt.date) -> None:
    dead = RedisPacer.from_url("redis://127.0.0.1:9/0")
    try:
        with pytest.raises(PaceUnavailable):
            dead.acquire("+12223334444", cap=1, account_cap=None, spacing_s=1.0)
        d = dataclasses.replace(paced(deps, 60), pacer=dead)
        chat = world.chat(world.line())
        result = share_chat(chat, today, d)
        assert result.outcome is Outcome.PACED
        assert world.sim.shares()["total_accepted"] == 0
        status, reason, rest = day_row(deps, chat)
        assert status == "held"
        assert reason is not None
        assert "Redis unavailable" in reason
        assert 20 < rest <= 30
        # No pacer at all is the same: paced lines are never shared unpaced.
        assert share_chat(
            world.chat(world.line("+13334445555")), today, dataclasses.replace(d, pacer=None)
        ).outcome is (Outcome.PACED)
        # Pacing off (no caps): no Redis is needed.
        off = dataclasses.replace(paced(deps, 0), pacer=dead)
        assert share_chat(world.chat(world.line("+14445556666")), today, off).outcome is Outcome.SHARED
    finally:
        dead.close()


def test_an_at_risk_line_shares_at_the_reduced_pace(world: World, deps: Deps, today: dt.date) -> None:
    d = paced(deps, 60, at_risk_shares_per_minute=1)
    risky = world.line(reputation="AT_RISK")
    chats = [world.chat(risky) for _ in range(2)]
    assert [share_chat(c, today, d).outcome for c in chats] == [Outcome.SHARED, Outcome.PACED]
    healthy = world.line("+13334445555")
    assert [share_chat(world.chat(healthy), today, d).outcome for _ in range(2)] == [Outcome.SHARED] * 2
