"""The sweep and the recovery pass against real PostgreSQL, Redis and the simulator."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import threading
import uuid
from collections.abc import Sequence

import pytest
import redis
from sqlalchemy import text

from tests.support.sweeps import Collector, busy, drained, recover, sweep
from tests.support.world import World
from worker.deps import Deps
from worker.keys import PARTITIONS_LOCK, RECOVER_LOCK
from worker.rules.cadence import CLOSE_MARGIN_DAYS
from worker.sharing.passes import QueueDepth, SweepReport
from worker.sharing.share import Outcome, share_chat
from worker.store import partitions
from worker.store.cards import CardState, store_cards
from worker.store.plain import PlainDatabase
from worker.store.session import Sessions, transaction
from worker.store.shares import claim


def expire(deps: Deps, chat: uuid.UUID, seconds: int = 1) -> None:
    with transaction(deps.sessions) as s:
        s.execute(
            text(
                "UPDATE share_days SET lease_until = now() - make_interval(secs => :s), "
                "updated_at = now() - interval '1 minute' WHERE chat_id = :c"
            ),
            {"c": chat, "s": seconds},
        )


def test_sweep_enqueues_exactly_the_due_chats(world: World, deps: Deps, today: dt.date) -> None:
    active = world.line("+12223334444")
    inactive = world.line("+13334445555", active=False)
    # The cache says active, Linq says not: the sweep's card refresh must catch it.
    stale = world.line("+14445556666", active=False)
    with transaction(deps.sessions) as s:
        store_cards(s, [CardState(stale, "X", None, None, True)], complete=False)
    due = [world.chat(active) for _ in range(5)]
    world.chat(active, service="SMS")
    world.chat(active, outbound_at=False)
    world.chat(active, is_group=True)
    world.chat(active, outbound_at=dt.datetime.now(dt.UTC) - dt.timedelta(days=45))
    world.chat(active, outbound_at=dt.datetime.now(dt.UTC) + dt.timedelta(hours=1))
    world.chat(inactive)
    world.chat(stale)

    publish = Collector()
    report = sweep(deps, publish)
    assert sorted(publish.ids) == sorted(due)
    assert {d for _, d in publish.sent} == {today}
    assert report.enqueued == 5
    assert report.active_cards == 1
    with deps.sessions() as s:
        assert (
            s.execute(text("SELECT card_active FROM lines WHERE phone_number = :p"), {"p": stale}).scalar()
            is False
        )
        statuses = s.execute(text("SELECT status, count(*) FROM share_days GROUP BY status")).all()
    assert dict(statuses) == {"queued": 5}


def test_second_sweep_enqueues_nothing_and_after_shares_nothing_new(
    world: World, deps: Deps, today: dt.date
) -> None:
    world.line()
    chats = [world.chat() for _ in range(4)]
    first = Collector()
    sweep(deps, first)
    assert sorted(first.ids) == sorted(chats)
    # While the tasks are still queued, a second sweep adds nothing.
    second = Collector()
    assert sweep(deps, second).enqueued == 0
    for chat, day in first.sent:
        assert share_chat(chat, day, deps).outcome is Outcome.SHARED
    third = Collector()
    assert sweep(deps, third).enqueued == 0
    assert world.sim.shares()["total_accepted"] == 4


def test_sweep_pages_by_key(world: World, deps: Deps) -> None:
    world.line()
    chats = {world.chat() for _ in range(23)}
    publish = Collector()
    small = deps.settings.replace(sweep_page_size=5)
    report = sweep(dataclasses.replace(deps, settings=small), publish)
    assert report.scanned == 23
    assert sorted(publish.ids) == sorted(chats)
    assert len(publish.ids) == len(set(publish.ids))


class FailsOnPage(Collector):
    """Publishes pages until page `n` (1-based), whose publish fails as a Redis outage would."""

    def __init__(self, n: int) -> None:
        super().__init__()
        self.n, self.calls = n, 0

    def __call__(self, ids: Sequence[uuid.UUID], day: dt.date) -> int:
        self.calls += 1
        if self.calls == self.n:
            raise redis.ConnectionError("Redis went away mid-sweep")
        return super().__call__(ids, day)


def test_a_publish_that_fails_mid_sweep_stops_it_and_loses_no_chat_day(
    world: World, deps: Deps, today: dt.date
) -> None:
    """Pages publish one behind their mark (sharing.one_behind): a failed publish still stops
    the sweep at the next page, is recorded on its run, and leaves its chat-days 'queued' for
    recovery; no later page is published."""
    world.line()
    chats = {world.chat() for _ in range(20)}
    publish = FailsOnPage(2)
    small = dataclasses.replace(deps, settings=deps.settings.replace(sweep_page_size=5))
    with pytest.raises(redis.ConnectionError, match="mid-sweep"):
        sweep(small, publish)
    assert len(publish.ids) == 5  # page 1 only
    with transaction(deps.sessions) as s:
        found = s.execute(text("SELECT chat_id, status FROM share_days WHERE day = :d"), {"d": today}).all()
        rows: dict[uuid.UUID, str] = {r.chat_id: r.status for r in found}
        error = s.execute(text("SELECT error FROM sweep_runs ORDER BY id DESC LIMIT 1")).scalar_one()
    # Page 2 failed and page 3 was marked while it published; page 4 never was.
    assert len(rows) == 15
    assert set(rows.values()) == {"queued"}
    assert set(publish.ids) < set(rows) <= chats
    assert "ConnectionError: Redis went away mid-sweep" in error
    # Recovery re-enqueues what the failed page left queued, once the queue is seen drained.
    expired = set(rows) - set(publish.ids)
    with transaction(deps.sessions) as s:
        s.execute(
            text("UPDATE share_days SET lease_until = now() - interval '1 s' WHERE chat_id = ANY(:ids)"),
            {"ids": list(expired)},
        )
    again = Collector()
    recover(deps, again)
    assert set(again.ids) == expired


def test_two_sweeps_at_once_enqueue_each_chat_once(world: World, deps: Deps) -> None:
    world.line()
    chats = {world.chat() for _ in range(40)}
    publish = Collector()
    small = dataclasses.replace(deps, settings=deps.settings.replace(sweep_page_size=3))
    barrier = threading.Barrier(2)
    reports: list[SweepReport] = []

    def go() -> None:
        barrier.wait()
        reports.append(sweep(small, publish))

    threads = [threading.Thread(target=go) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sorted(publish.ids) == sorted(chats)
    assert len(publish.ids) == 40
    assert len(reports) == 2


@pytest.mark.parametrize("plain", [False, True], ids=["sessions", "plain"])
def test_recover_requeues_an_expired_claim_and_counts_the_loss(
    world: World, deps: Deps, today: dt.date, plain: bool
) -> None:
    world.line()
    chat = world.chat()
    with transaction(deps.sessions) as s:
        assert claim(s, chat, today, lease_s=60, max_lost_claims=3, task_id="dead") is not None
    publish = Collector()
    assert recover(deps, publish, plain=plain).requeued == 0  # lease still live
    expire(deps, chat)
    assert recover(deps, publish, plain=plain).requeued == 1
    assert publish.ids == [chat]
    with deps.sessions() as s:
        row = s.execute(
            text("SELECT status, lost_claims FROM share_days WHERE chat_id = :c"), {"c": chat}
        ).one()
    assert tuple(row) == ("queued", 1)


def test_a_recovery_on_one_connection_and_one_on_the_pool_do_not_run_at_once(
    world: World, deps: Deps, today: dt.date
) -> None:
    """`cardshare recover` (store.plain) and beat's pass (the pool) take the same lock: while
    one holds it the other does nothing and says so; after it, the lock is free again."""
    world.line()
    chat = world.chat()
    with transaction(deps.sessions) as s:
        assert claim(s, chat, today, lease_s=60, max_lost_claims=3, task_id="dead") is not None
    expire(deps, chat)
    assert deps.settings.database_url
    db = PlainDatabase(deps.settings.database_url)
    try:
        with db.advisory_lock(RECOVER_LOCK) as got:
            assert got
            blocked = recover(deps, Collector())
            assert not blocked.ran
            assert "another recover is running" in blocked.one_line()
        with Sessions(deps.sessions).advisory_lock(RECOVER_LOCK) as got:
            assert got
            assert not recover(deps, Collector(), plain=True).ran
    finally:
        db.close()
    publish = Collector()
    assert recover(deps, publish, plain=True).requeued == 1
    assert publish.ids == [chat]


@pytest.mark.parametrize("plain", [False, True], ids=["sessions", "plain"])
def test_poison_chat_fails_after_three_lost_claims(
    world: World, deps: Deps, today: dt.date, plain: bool
) -> None:
    world.line()
    chat = world.chat()
    publish = Collector()
    for _ in range(3):
        with transaction(deps.sessions) as s:
            assert claim(s, chat, today, lease_s=60, max_lost_claims=3, task_id="crash") is not None
        expire(deps, chat)
        recover(deps, publish, plain=plain)
    with deps.sessions() as s:
        status, reason, claims = s.execute(
            text("SELECT status, reason, claims FROM share_days WHERE chat_id = :c"), {"c": chat}
        ).one()
    assert status == "failed"
    assert reason.startswith("poison")
    assert claims == 3
    assert publish.ids == [chat, chat]
    # Neither the sweep nor a redelivered message takes it again today.
    assert sweep(deps, Collector()).enqueued == 0
    again = share_chat(chat, today, deps)
    assert again.outcome is Outcome.NOT_DUE
    assert again.reason
    assert again.reason.startswith("day_closed")


@pytest.mark.parametrize("plain", [False, True], ids=["sessions", "plain"])
def test_lost_queue_is_requeued_once_the_broker_is_drained(world: World, deps: Deps, plain: bool) -> None:
    world.line()
    chat = world.chat()
    publish = Collector()
    sweep(deps, publish)
    # Queued less than a lease ago: its message may still be on its way.
    assert recover(deps, Collector(), drained, plain=plain).requeued == 0
    with transaction(deps.sessions) as s:
        s.execute(
            text("UPDATE share_days SET updated_at = now() - make_interval(secs => :s)"),
            {"s": deps.settings.lease_s + 1},
        )
    # Messages still in the queue: nothing to recover yet.
    assert recover(deps, Collector(), busy, plain=plain).requeued == 0
    # Redis came back empty (or a killed worker took the message with it): re-queue.
    again = Collector()
    assert recover(deps, again, drained, plain=plain).requeued == 1
    assert again.ids == [chat]


def test_unacked_messages_of_a_dead_worker_do_not_block_recovery() -> None:
    assert QueueDepth(ready=0, unacked=40).drained
    assert not QueueDepth(ready=1, unacked=0).drained


def test_rescheduled_chat_is_requeued_when_its_wait_ends(world: World, deps: Deps, today: dt.date) -> None:
    world.line()
    chat = world.chat()
    world.sim.add_faults(
        [
            {
                "path": "/share_contact_card$",
                "chat_id": str(chat),
                "mode": "respond",
                "status": 429,
                "retry_after": 120,
                "times": 1,
            }
        ]
    )
    assert share_chat(chat, today, deps).outcome is Outcome.RESCHEDULED
    assert recover(deps, Collector()).requeued == 0
    expire(deps, chat)
    publish = Collector()
    assert recover(deps, publish).requeued == 1
    assert share_chat(chat, today, deps).outcome is Outcome.SHARED


def test_past_days_are_closed_not_made_up(world: World, deps: Deps, today: dt.date) -> None:
    world.line()
    chat = world.chat()
    yesterday = today - dt.timedelta(days=1)
    with transaction(deps.sessions) as s:
        s.execute(
            text(
                "INSERT INTO share_days (chat_id, day, status, lease_until) VALUES (:c, :d, 'queued', now())"
            ),
            {"c": chat, "d": yesterday},
        )
    report = sweep(deps, Collector())
    assert report.closed_past == 1
    with deps.sessions() as s:
        assert (
            s.execute(text("SELECT status FROM share_days WHERE day = :d"), {"d": yesterday}).scalar()
            == "failed"
        )


def test_a_sweep_closes_the_days_since_the_last_finished_sweep_only(
    world: World, deps: Deps, today: dt.date
) -> None:
    """A finished sweep closed the days before it: the next one probes the last few days only
    (not every kept partition); with no finished sweep on record it closes every kept day."""
    world.line()
    chat = world.chat()
    sweep(deps, Collector())
    recent = today - dt.timedelta(days=1)
    old = today - dt.timedelta(days=CLOSE_MARGIN_DAYS + 1)
    with transaction(deps.sessions) as s:
        partitions.create_day(s, old, lock_key=PARTITIONS_LOCK)
    with transaction(deps.sessions) as s:
        for day in (recent, old):
            s.execute(
                text(
                    "INSERT INTO share_days (chat_id, day, status, lease_until) "
                    "VALUES (:c, :d, 'queued', now())"
                ),
                {"c": chat, "d": day},
            )

    def status(day: dt.date) -> str:
        with deps.sessions() as s:
            found = s.execute(text("SELECT status FROM share_days WHERE day = :d"), {"d": day})
            return str(found.scalar_one())

    assert sweep(deps, Collector()).closed_past == 1
    assert (status(recent), status(old)) == ("failed", "queued")
    with transaction(deps.sessions) as s:
        s.execute(text("DELETE FROM sweep_runs"))
    assert sweep(deps, Collector()).closed_past == 1
    assert status(old) == "failed"


def test_publisher_puts_celery_messages_on_redis(
    world: World, deps: Deps, redis_url: str, today: dt.date
) -> None:
    from worker.keys import SHARE_QUEUE
    from worker.queue.app import app, configure
    from worker.queue.publish import Publisher, queue_depth

    configure(deps.settings)
    ids = [uuid.uuid4() for _ in range(2500)]
    with Publisher(app) as publish:
        assert publish(ids, today) == 2500
    client = redis.Redis.from_url(redis_url)
    try:
        assert client.llen(SHARE_QUEUE) == 2500
        message = json.loads(client.lindex(SHARE_QUEUE, 0))  # type: ignore[arg-type]
    finally:
        client.close()
    assert message["headers"]["task"] == "cardshare.share_chat"
    assert queue_depth(app) == QueueDepth(ready=2500, unacked=0)


@pytest.mark.parametrize("failing", [401])
def test_sweep_stops_on_auth_failure(world: World, deps: Deps, failing: int) -> None:
    world.line()
    world.chat()
    world.sim.add_faults(
        [{"path": "/contact_card$", "method": "GET", "mode": "respond", "status": failing, "code": 2004}]
    )
    from worker.linq import LinqCallError

    with pytest.raises(LinqCallError):
        sweep(deps, Collector())
    with deps.sessions() as s:
        error = s.execute(text("SELECT error FROM sweep_runs ORDER BY id DESC LIMIT 1")).scalar()
    assert error
    assert "401" in error


def test_sweep_survives_a_card_refresh_outage(world: World, deps: Deps) -> None:
    world.line()
    chat = world.chat()
    world.sim.add_faults(
        [{"path": "/contact_card$", "method": "GET", "mode": "respond", "status": 503, "code": 3006}]
    )
    publish = Collector()
    report = sweep(deps, publish)
    assert report.card_error
    assert "503" in report.card_error
    assert publish.ids == [chat]


def seed_open(deps: Deps, line: str, today: dt.date, n: int, *, status: str, lease: str) -> list[uuid.UUID]:
    """`n` chats with an open chat-day today in `status`, lease ending at `lease` (SQL)."""
    with transaction(deps.sessions) as s:
        ids = list(
            s.execute(
                text(
                    "INSERT INTO chats (id, line_phone, service, first_outbound_at, last_outbound_at) "
                    "SELECT gen_random_uuid(), :l, 'iMessage', now() - interval '1 day', now() "
                    "FROM generate_series(1, :n) RETURNING id"
                ),
                {"l": line, "n": n},
            ).scalars()
        )
        s.execute(
            text(
                "INSERT INTO share_days (chat_id, day, status, lease_until, updated_at) "
                f"SELECT id, :d, :s, {lease}, now() - interval '1 hour' FROM unnest(CAST(:ids AS uuid[])) id"
            ),
            {"d": today, "s": status, "ids": ids},
        )
    return ids


@pytest.mark.parametrize("plain", [False, True], ids=["sessions", "plain"])
def test_recovery_reads_every_stale_row_once_in_keyset_pages(
    world: World, deps: Deps, today: dt.date, plain: bool
) -> None:
    """More stale rows than pages hold, mixed with live leases and poison: one pass re-queues each
    stale row exactly once and leaves the rest (pages go on from where the last stopped)."""
    line = world.line()
    stale = seed_open(deps, line, today, 230, status="retry", lease="now() - interval '1 minute'")
    stale += seed_open(deps, line, today, 40, status="claimed", lease="now() - interval '2 minutes'")
    live = seed_open(deps, line, today, 60, status="retry", lease="now() + interval '10 minutes'")
    lost_queue = seed_open(deps, line, today, 25, status="queued", lease="now() + interval '30 minutes'")
    poison = seed_open(deps, line, today, 5, status="claimed", lease="now() - interval '1 minute'")
    with transaction(deps.sessions) as s:
        s.execute(
            text("UPDATE share_days SET lost_claims = 2 WHERE chat_id = ANY(CAST(:ids AS uuid[]))"),
            {"ids": poison},
        )
    small = Deps(deps.settings.replace(sweep_page_size=50), deps.sessions, deps.client, sleep=deps.sleep)
    publish = Collector()
    # Poison rows are failed by the pass (not re-queued); queued rows whose lease is live wait.
    report = recover(small, publish, busy, plain=plain)
    assert report.requeued == len(stale) == len(publish.ids) == len(set(publish.ids))
    assert set(publish.ids) == set(stale)
    assert report.poisoned == 5
    # With the broker drained, the queued rows untouched for a lease come back too (once).
    drained_publish = Collector()
    assert recover(small, drained_publish, drained, plain=plain).requeued == len(lost_queue)
    assert set(drained_publish.ids) == set(lost_queue)
    assert not set(live) & set(publish.ids + drained_publish.ids)


def test_a_sweep_that_marks_much_of_the_day_analyzes_its_partition(
    world: World, deps: Deps, today: dt.date
) -> None:
    """The planner must not keep planning the share path for an empty partition (issue 17: 13x
    the CPU per share after the sweep marked 1M rows): the sweep analyzes the day it marked."""
    line = world.line()
    with transaction(deps.sessions) as s:
        s.execute(
            text(
                "INSERT INTO chats (id, line_phone, service, first_outbound_at, last_outbound_at) "
                "SELECT gen_random_uuid(), :l, 'iMessage', now() - interval '1 day', now() "
                "FROM generate_series(1, 1500)"
            ),
            {"l": line},
        )
    name = f"share_days_p{today:%Y%m%d}"
    report = sweep(deps, Collector())
    assert report.enqueued == 1500
    assert report.analyzed == name
    with transaction(deps.sessions) as s:
        estimate = s.execute(
            text("SELECT reltuples FROM pg_class WHERE relname = :n"), {"n": name}
        ).scalar_one()
    assert estimate == 1500
    # Nothing new marked: no analyze.
    assert sweep(deps, Collector()).analyzed is None
