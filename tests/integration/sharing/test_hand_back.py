"""A stopping worker hands its running chat-days back (store.shares.hand_back): fenced like every
write after a claim, `unknown` with a lease covering the call in flight, `retry` otherwise; the
task's own late answer still lands unless another worker claimed the chat-day since."""

from __future__ import annotations

import datetime as dt
import uuid

from sqlalchemy import text

from tests.support.world import World
from worker.deps import Deps
from worker.rules.states import AttemptOutcome, DayStatus
from worker.store import shares
from worker.store.session import transaction

OK = shares.AttemptResult(outcome=AttemptOutcome.OK, http_status=204)


def claim(deps: Deps, chat: uuid.UUID, day: dt.date, task_id: str, *, begin: bool) -> shares.Claim:
    with transaction(deps.sessions) as s:
        got = shares.claim(s, chat, day, lease_s=120, max_lost_claims=3, task_id=task_id, begin=begin)
    assert got is not None
    return got


def row(deps: Deps, chat: uuid.UUID) -> dict[str, object]:
    with deps.sessions() as s:
        return dict(
            s.execute(
                text(
                    "SELECT d.status, d.reason, extract(epoch FROM d.lease_until - now()) AS lease_left_s, "
                    "d.lost_claims, (SELECT array_agg(a.outcome ORDER BY a.attempt_no) FROM attempts a "
                    "WHERE a.chat_id = d.chat_id) AS outcomes FROM share_days d WHERE d.chat_id = :c"
                ),
                {"c": chat},
            )
            .mappings()
            .one()
        )


def hand_back(deps: Deps, *task_ids: str, call_s: float = 20.0) -> list[shares.HandedBack]:
    with transaction(deps.sessions) as s:
        return shares.hand_back(s, list(task_ids), reason="handed back: test", call_s=call_s)


def test_a_call_in_flight_is_unknown_until_it_must_have_ended_and_its_answer_still_lands(
    world: World, deps: Deps, today: dt.date
) -> None:
    world.line()
    chat = world.chat()
    held = claim(deps, chat, today, "task-1", begin=True)
    (released,) = hand_back(deps, "task-1", "task-other")
    assert (released.chat_id, released.status) == (chat, DayStatus.UNKNOWN)
    assert 19 < released.wait_s <= 20
    r = row(deps, chat)
    assert r["status"] == "unknown"
    assert 19 < float(r["lease_left_s"]) <= 20  # type: ignore[arg-type]
    assert r["outcomes"] == ["unknown"]
    # Nobody may claim it while the call can still be answered.
    with transaction(deps.sessions) as s:
        assert shares.claim(s, chat, today, lease_s=120, max_lost_claims=3, task_id="t2") is None
    # Linq answers the stopping worker after all: its record lands (the token is still the latest).
    assert held.first_attempt is not None
    with transaction(deps.sessions) as s:
        assert shares.finish(s, held, held.first_attempt[0], OK, DayStatus.SUCCEEDED)
    assert row(deps, chat)["status"] == "succeeded"
    assert hand_back(deps, "task-1") == []  # nothing claimed any more


def test_between_attempts_it_is_free_at_once_and_a_newer_claim_fences_the_old_run(
    world: World, deps: Deps, today: dt.date
) -> None:
    world.line()
    chat = world.chat()
    old = claim(deps, chat, today, "task-1", begin=False)
    (released,) = hand_back(deps, "task-1")
    assert released.status is DayStatus.RETRY
    assert released.wait_s < 1
    assert row(deps, chat)["status"] == "retry"
    with transaction(deps.sessions) as s:
        assert shares.begin_attempt(s, old, task_id="task-1") is None  # the old run calls no more
    new = claim(deps, chat, today, "task-2", begin=True)
    assert row(deps, chat)["lost_claims"] == 0  # a hand-back is not a crash
    assert new.first_attempt is not None
    with transaction(deps.sessions) as s:
        assert not shares.finish_day(s, old, DayStatus.SUCCEEDED)
        assert shares.finish(s, new, new.first_attempt[0], OK, DayStatus.SUCCEEDED)
    assert row(deps, chat)["status"] == "succeeded"
