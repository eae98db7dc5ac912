"""The share flow against real PostgreSQL and the simulator over loopback."""

from __future__ import annotations

import datetime as dt
import threading
import uuid

import pytest
from sqlalchemy import text

from tests.support.world import World
from worker.deps import Deps
from worker.linq import LinqGateway
from worker.sharing.share import Outcome, share_chat
from worker.store import shares
from worker.store.session import transaction

SHARE_PATH = "/share_contact_card$"


def attempts(deps: Deps, chat_id: uuid.UUID) -> list[tuple[int, str | None, int | None, int | None]]:
    with deps.sessions() as s:
        return [
            (r.attempt_no, r.outcome, r.http_status, r.linq_code)
            for r in s.execute(
                text(
                    "SELECT attempt_no, outcome, http_status, linq_code FROM attempts "
                    "WHERE chat_id = :c ORDER BY attempt_no"
                ),
                {"c": chat_id},
            )
        ]


def day_row(deps: Deps, chat_id: uuid.UUID, day: dt.date) -> dict[str, object]:
    with deps.sessions() as s:
        row = (
            s.execute(
                text("SELECT * FROM share_days WHERE chat_id = :c AND day = :d"), {"c": chat_id, "d": day}
            )
            .mappings()
            .one()
        )
        return dict(row)


def test_share_succeeds_once_with_an_audit_row(world: World, deps: Deps, today: dt.date) -> None:
    world.line()
    chat = world.chat()
    result = share_chat(chat, today, deps, task_id="t-1")
    assert result.outcome is Outcome.SHARED
    assert world.sim.share_count(str(chat)) == 1
    assert attempts(deps, chat) == [(1, "ok", 204, None)]
    row = day_row(deps, chat, today)
    assert row["status"] == "succeeded"
    assert row["attempts"] == 1
    assert row["finished_at"] is not None
    with deps.sessions() as s:
        trace, task = s.execute(
            text("SELECT trace_id, task_id FROM attempts WHERE chat_id = :c"), {"c": chat}
        ).one()
    assert trace
    assert len(trace) == 32
    assert task == "t-1"


def test_second_share_the_same_day_is_refused(world: World, deps: Deps, today: dt.date) -> None:
    world.line()
    chat = world.chat()
    assert share_chat(chat, today, deps).outcome is Outcome.SHARED
    again = share_chat(chat, today, deps)
    assert again.outcome is Outcome.NOT_DUE
    assert again.reason
    assert again.reason.startswith("already_shared")
    assert world.sim.share_count(str(chat)) == 1


def test_503_503_200_gives_one_share_and_three_audit_rows(
    world: World, deps: Deps, today: dt.date, sleeps: list[float]
) -> None:
    world.line()
    chat = world.chat()
    world.sim.add_faults(
        [
            {
                "path": SHARE_PATH,
                "chat_id": str(chat),
                "mode": "respond",
                "status": 503,
                "code": 3006,
                "times": 2,
            }
        ]
    )
    result = share_chat(chat, today, deps)
    assert result.outcome is Outcome.SHARED
    assert result.attempts == 3
    assert world.sim.share_count(str(chat)) == 1
    assert attempts(deps, chat) == [
        (1, "retryable", 503, 3006),
        (2, "retryable", 503, 3006),
        (3, "ok", 204, None),
    ]
    assert len(sleeps) == 2
    assert all(0 <= s <= deps.settings.retry_cap_s for s in sleeps)


def test_2012_is_not_retried_and_marks_the_card_inactive(world: World, deps: Deps, today: dt.date) -> None:
    line = world.line()
    chat = world.chat(line)
    other = world.chat(line)
    # Linq deactivated the card after our last refresh: the cache still says active.
    world.sim.add_cards([{"phone_number": line, "first_name": "Acme", "is_active": False}])
    result = share_chat(chat, today, deps)
    assert result.outcome is Outcome.SKIPPED
    assert result.reason
    assert result.reason.startswith("card_inactive")
    assert attempts(deps, chat) == [(1, "fatal", 404, 2012)]
    assert day_row(deps, chat, today)["status"] == "skipped"
    with deps.sessions() as s:
        assert (
            s.execute(text("SELECT card_active FROM lines WHERE phone_number = :p"), {"p": line}).scalar()
            is False
        )
    before = world.sim.requests()
    # The line's other chats are skipped without calling Linq again.
    second = share_chat(other, today, deps)
    assert second.outcome is Outcome.NOT_DUE
    assert second.reason
    assert second.reason.startswith("card_inactive")
    assert world.sim.requests() == before


def test_retry_after_is_honoured(world: World, deps: Deps, today: dt.date, sleeps: list[float]) -> None:
    world.line()
    chat = world.chat()
    world.sim.add_faults(
        [
            {
                "path": SHARE_PATH,
                "chat_id": str(chat),
                "mode": "respond",
                "status": 429,
                "code": 1007,
                "retry_after": 3,
                "times": 1,
            }
        ]
    )
    result = share_chat(chat, today, deps)
    assert result.outcome is Outcome.SHARED
    assert sleeps
    assert sleeps[0] >= 3.0
    with deps.sessions() as s:
        assert (
            s.execute(
                text("SELECT retry_after_s FROM attempts WHERE chat_id = :c AND attempt_no = 1"), {"c": chat}
            ).scalar()
            == 3.0
        )


def test_retry_after_beyond_the_budget_reschedules(
    world: World, deps: Deps, today: dt.date, sleeps: list[float]
) -> None:
    world.line()
    chat = world.chat()
    world.sim.add_faults(
        [
            {
                "path": SHARE_PATH,
                "chat_id": str(chat),
                "mode": "respond",
                "status": 429,
                "code": 1007,
                "retry_after": 120,
                "times": 1,
            }
        ]
    )
    result = share_chat(chat, today, deps)
    assert result.outcome is Outcome.RESCHEDULED
    assert result.retry_in_s is not None
    assert result.retry_in_s >= 120
    assert sleeps == []
    row = day_row(deps, chat, today)
    assert row["status"] == "retry"
    with deps.sessions() as s:
        wait = s.execute(
            text("SELECT extract(epoch FROM lease_until - now()) FROM share_days WHERE chat_id = :c"),
            {"c": chat},
        ).scalar()
    assert wait is not None
    assert 115 <= float(wait) <= 121
    assert world.sim.share_count(str(chat)) == 0


def test_transient_failures_exhaust_attempts_then_reschedule(
    world: World, deps: Deps, today: dt.date
) -> None:
    world.line()
    chat = world.chat()
    world.sim.add_faults(
        [{"path": SHARE_PATH, "chat_id": str(chat), "mode": "respond", "status": 500, "code": 3006}]
    )
    result = share_chat(chat, today, deps)
    assert result.outcome is Outcome.RESCHEDULED
    assert result.attempts == deps.settings.retry_attempts == 4
    assert [a[1] for a in attempts(deps, chat)] == ["retryable"] * 4
    assert day_row(deps, chat, today)["status"] == "retry"


def test_concurrent_claims_for_one_chat_day_give_one_share(world: World, deps: Deps, today: dt.date) -> None:
    world.line()
    chat = world.chat()
    # Hold each share call long enough that all threads are inside share_chat together.
    world.sim.add_faults([{"path": SHARE_PATH, "mode": "pass", "latency_ms": 300}])
    barrier = threading.Barrier(8)
    results: list[Outcome] = []
    lock = threading.Lock()

    def go() -> None:
        barrier.wait()
        outcome = share_chat(chat, today, deps).outcome
        with lock:
            results.append(outcome)

    threads = [threading.Thread(target=go) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert results.count(Outcome.SHARED) == 1
    assert set(results) <= {Outcome.SHARED, Outcome.BUSY, Outcome.NOT_DUE}
    assert world.sim.share_count(str(chat)) == 1
    assert len(attempts(deps, chat)) == 1


def test_read_timeout_then_429_confirms_the_share(world: World, deps: Deps, today: dt.date) -> None:
    world.line()
    chat = world.chat()
    # Linq accepts the share but the answer never arrives before our read timeout (2 s).
    world.sim.add_faults(
        [{"path": SHARE_PATH, "chat_id": str(chat), "mode": "accept_then_hang", "hang_s": 4, "times": 1}]
    )
    result = share_chat(chat, today, deps)
    assert result.outcome is Outcome.CONFIRMED
    assert world.sim.share_count(str(chat)) == 1
    assert [(a[1], a[2]) for a in attempts(deps, chat)] == [("unknown", None), ("ok", 429)]
    row = day_row(deps, chat, today)
    assert row["status"] == "succeeded"
    assert row["confirmed_by_rate_limit"] is True


def test_crash_after_linq_accepted_is_confirmed_not_repeated(
    world: World, deps: Deps, today: dt.date, sim_server: object
) -> None:
    world.line()
    chat = world.chat()
    # A first worker claimed, wrote its attempt row, reached Linq ... and died before recording.
    with transaction(deps.sessions) as s:
        claim = shares.claim(s, chat, today, lease_s=60, max_lost_claims=3, task_id="dead")
        assert claim is not None
        assert shares.begin_attempt(s, claim, task_id="dead") is not None
    gateway = LinqGateway.create(deps.settings)
    try:
        gateway.share_contact_card(str(chat))
    finally:
        gateway.close()
    with transaction(deps.sessions) as s:
        s.execute(
            text("UPDATE share_days SET lease_until = now() - interval '1 second' WHERE chat_id = :c"),
            {"c": chat},
        )
    result = share_chat(chat, today, deps, task_id="second")
    assert result.outcome is Outcome.CONFIRMED
    assert world.sim.share_count(str(chat)) == 1
    row = day_row(deps, chat, today)
    assert row["lost_claims"] == 1
    assert row["status"] == "succeeded"


def test_lease_taken_over_means_no_call(world: World, deps: Deps, today: dt.date) -> None:
    world.line()
    chat = world.chat()
    with transaction(deps.sessions) as s:
        first = shares.claim(s, chat, today, lease_s=60, max_lost_claims=3, task_id="a")
        assert first is not None
        s.execute(
            text("UPDATE share_days SET lease_until = now() - interval '1 second' WHERE chat_id = :c"),
            {"c": chat},
        )
        second = shares.claim(s, chat, today, lease_s=60, max_lost_claims=3, task_id="b")
        assert second is not None
        # The first holder's token no longer fences anything.
        assert shares.begin_attempt(s, first, task_id="a") is None
        assert shares.begin_attempt(s, second, task_id="b") is not None


@pytest.mark.parametrize(
    ("status", "code", "outcome", "reason", "column"),
    [
        (404, 2001, Outcome.FAILED, "chat_not_found", "not_found_at"),
        (403, 2024, Outcome.SKIPPED, "opted_out", "opted_out_at"),
        (503, 4004, Outcome.SKIPPED, "deferred", None),
        (409, None, Outcome.FAILED, "permanent", None),
    ],
)
def test_permanent_answers(
    world: World,
    deps: Deps,
    today: dt.date,
    status: int,
    code: int | None,
    outcome: Outcome,
    reason: str,
    column: str | None,
) -> None:
    world.line()
    chat = world.chat()
    world.sim.add_faults(
        [{"path": SHARE_PATH, "chat_id": str(chat), "mode": "respond", "status": status, "code": code}]
    )
    result = share_chat(chat, today, deps)
    assert result.outcome is outcome
    assert result.reason
    assert result.reason.startswith(reason)
    assert len(attempts(deps, chat)) == 1
    if column:
        with deps.sessions() as s:
            assert (
                s.execute(text(f"SELECT {column} FROM chats WHERE id = :c"), {"c": chat}).scalar() is not None
            )
    # Whatever the reason, the chat is not due again today.
    assert share_chat(chat, today, deps).outcome is Outcome.NOT_DUE


def test_non_json_error_body_is_classified_by_status(world: World, deps: Deps, today: dt.date) -> None:
    world.line()
    chat = world.chat()
    world.sim.add_faults(
        [
            {
                "path": SHARE_PATH,
                "chat_id": str(chat),
                "mode": "respond",
                "status": 502,
                "body_raw": "<html>bad gateway</html>",
                "times": 1,
            }
        ]
    )
    result = share_chat(chat, today, deps)
    assert result.outcome is Outcome.SHARED
    assert attempts(deps, chat)[0] == (1, "retryable", 502, None)


def test_garbage_2xx_counts_as_accepted(world: World, deps: Deps, today: dt.date) -> None:
    world.line()
    chat = world.chat()
    world.sim.add_faults(
        [
            {
                "path": SHARE_PATH,
                "chat_id": str(chat),
                "mode": "respond",
                "status": 200,
                "body_raw": "\x00garbage{",
                "times": 1,
            }
        ]
    )
    assert share_chat(chat, today, deps).outcome is Outcome.SHARED


@pytest.mark.parametrize(
    ("kind", "reason"),
    [
        ("sms", "not_imessage"),
        ("no_outbound", "no_outbound"),
        ("group", "group_chat"),
        ("unknown", "unknown chat"),
    ],
)
def test_not_due_chats_are_not_called(
    world: World, deps: Deps, today: dt.date, kind: str, reason: str
) -> None:
    world.line()
    if kind == "sms":
        chat = world.chat(service="SMS")
    elif kind == "no_outbound":
        chat = world.chat(outbound_at=False)
    elif kind == "group":
        chat = world.chat(is_group=True)
    else:
        chat = uuid.uuid4()
    result = share_chat(chat, today, deps)
    assert result.outcome is Outcome.NOT_DUE
    assert result.reason
    assert result.reason.startswith(reason)
    assert world.sim.shares()["total_accepted"] == 0


def test_a_past_day_is_not_made_up(world: World, deps: Deps, today: dt.date) -> None:
    world.line()
    chat = world.chat()
    yesterday = today - dt.timedelta(days=1)
    result = share_chat(chat, yesterday, deps)
    assert result.outcome is Outcome.DAY_OVER
    assert world.sim.share_count(str(chat)) == 0
