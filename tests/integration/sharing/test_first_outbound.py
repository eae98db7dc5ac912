"""The event path (docs/decisions.md §17) through the real receiver, Redis, a real worker and the
simulator: outbound activity that makes a chat due today queues its share in the same
transaction and publishes it after COMMIT, once per chat-day however many messages arrive; a
held line's chat-day stays held; a publish that fails (Redis down) leaves the row for recovery."""

from __future__ import annotations

import datetime as dt
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from tests.support.procs import CONSUMING_S, Procs, timeout_for, wait_until, worker_consuming
from tests.support.receiver import SECRET, ReceiverServer
from tests.support.world import World
from worker.config import Secret, Settings
from worker.deps import Deps
from worker.embedded import EmbeddedRedis
from worker.ingest.webhooks import create_app
from worker.keys import SHARE_QUEUE
from worker.rules.facts import ChatActivity
from worker.simulator import SimulatorAdmin
from worker.store.chats import record_activity
from worker.store.lines import pause_line
from worker.store.session import transaction

LINE = "+12225550100"
BURST = 100
SHARED_S = 30.0  # the worker shares a published chat-day
QUIET_S = 3.0  # and nothing else arrives after it
RECOVER_S = 60.0  # lease (20 s here) + recovery passes (3 s) + the share


def row(deps: Deps, chat: uuid.UUID, day: dt.date) -> Any:
    with deps.sessions() as s:
        return s.execute(
            text("SELECT * FROM share_days WHERE chat_id = :c AND day = :d"), {"c": chat, "d": day}
        ).one_or_none()


def marked_day(deps: Deps, chat: uuid.UUID) -> dt.date:
    with deps.sessions() as s:
        value = s.execute(text("SELECT marked_day FROM chats WHERE id = :c"), {"c": chat}).scalar_one()
        assert isinstance(value, dt.date)
        return value


def receiver_for(settings: Settings, deps: Deps) -> ReceiverServer:
    from worker.queue.app import app, configure
    from worker.queue.publish import event_path

    configure(settings)
    s = settings.replace(webhook_secrets=(Secret(SECRET),))
    return ReceiverServer(create_app(s, deps.sessions, first_outbound=event_path(app, deps)))


def new_chat(sim: SimulatorAdmin) -> uuid.UUID:
    """A chat Linq knows and cardshare does not yet (no outbound seen)."""
    chat = uuid.uuid4()
    sim.add_chats([{"id": str(chat), "line": LINE, "service": "iMessage"}])
    return chat


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[EmbeddedRedis]:
    server = EmbeddedRedis(tmp_path / "redis")
    server.start()
    yield server
    server.stop()


@pytest.mark.timeout(timeout_for(CONSUMING_S, SHARED_S, QUIET_S))
def test_a_burst_of_message_sent_for_one_chat_is_shared_once_without_a_sweep(
    world: World, sim: SimulatorAdmin, deps: Deps, settings: Settings, tmp_path: Path, today: dt.date
) -> None:
    from worker.queue.app import app

    world.line(LINE)
    chat = new_chat(sim)
    procs = Procs(settings, tmp_path)
    try:
        with receiver_for(settings, deps) as receiver:
            procs.worker(concurrency=8)  # no beat: only the event path can publish
            worker_consuming(app)
            first = dt.datetime.now(dt.UTC)

            def deliver(i: int) -> int:
                sent = (first + dt.timedelta(milliseconds=i)).isoformat()
                return int(
                    sim.deliver_webhook(receiver.url, SECRET, chat_id=str(chat), sent_at=sent)["status"]
                )

            with ThreadPoolExecutor(max_workers=16) as pool:
                statuses = list(pool.map(deliver, range(BURST)))
            assert statuses == [200] * BURST
            wait_until(lambda: sim.share_count(str(chat)) >= 1, SHARED_S, what="the share call")
            time.sleep(QUIET_S)
        assert sim.share_count(str(chat)) == 1
        assert sim.shares()["total_accepted"] == 1
        day = row(deps, chat, today)
        assert day.status == "succeeded"
        assert day.enqueues == 1  # one insert published, once
        # The first message of the burst starts the latency (as known when it was marked).
        assert day.outbound_at is not None
        assert first <= day.outbound_at <= first + dt.timedelta(milliseconds=BURST)
        assert marked_day(deps, chat) == today  # the sweep will not read it again today
    finally:
        procs.stop_all()


def test_a_held_line_keeps_its_chat_day_held_and_nothing_is_published(
    world: World, sim: SimulatorAdmin, deps: Deps, settings: Settings, today: dt.date
) -> None:
    from worker.queue.app import app

    world.line(LINE)
    with transaction(deps.sessions) as s:
        assert pause_line(s, LINE, until=None, reason="maintenance", by="test")
    chat = new_chat(sim)
    with receiver_for(settings, deps) as receiver:
        answer = sim.deliver_webhook(
            receiver.url, SECRET, chat_id=str(chat), sent_at=dt.datetime.now(dt.UTC).isoformat()
        )
    assert answer["status"] == 200
    day = row(deps, chat, today)
    assert day.status == "held"
    assert day.reason.startswith("line_paused:")
    assert day.enqueues == 0
    with app.connection_for_write() as conn:
        assert conn.default_channel.client.llen(SHARE_QUEUE) == 0


def test_activity_that_does_not_make_a_chat_due_marks_nothing(
    world: World, sim: SimulatorAdmin, deps: Deps, settings: Settings, today: dt.date
) -> None:
    world.line(LINE, active=False)  # no active card: not due
    chat = new_chat(sim)
    with receiver_for(settings, deps) as receiver:
        answer = sim.deliver_webhook(
            receiver.url, SECRET, chat_id=str(chat), sent_at=dt.datetime.now(dt.UTC).isoformat()
        )
    assert answer["status"] == 200
    assert row(deps, chat, today) is None


def test_an_import_batch_queues_the_chats_it_made_due(
    world: World, deps: Deps, settings: Settings, today: dt.date, tmp_path: Path
) -> None:
    from worker.ingest.importer import import_file
    from worker.queue.app import app, configure
    from worker.queue.publish import event_path

    configure(settings)
    world.line(LINE)
    chats = sorted(uuid.uuid4() for _ in range(5))
    now = dt.datetime.now(dt.UTC)
    path = tmp_path / "chats.csv"
    path.write_text(
        "chat_id,line,service,last_outbound_at\n"
        + "".join(f"{c},{LINE},iMessage,{(now - dt.timedelta(minutes=1)).isoformat()}\n" for c in chats)
    )
    report = import_file(path, deps.sessions, now=now, first_outbound=event_path(app, deps))
    assert report.imported == 5
    assert [row(deps, c, today).status for c in chats] == ["queued"] * 5
    with app.connection_for_write() as conn:
        assert conn.default_channel.client.llen(SHARE_QUEUE) == 5
    # The same file again: nothing new is marked or published.
    import_file(path, deps.sessions, now=now, first_outbound=event_path(app, deps))
    with app.connection_for_write() as conn:
        assert conn.default_channel.client.llen(SHARE_QUEUE) == 5


@pytest.mark.timeout(timeout_for(CONSUMING_S, RECOVER_S, SHARED_S))
def test_redis_down_at_publish_leaves_the_row_queued_and_recovery_shares_it(
    world: World,
    sim: SimulatorAdmin,
    deps: Deps,
    settings: Settings,
    own_redis: EmbeddedRedis,
    tmp_path: Path,
    today: dt.date,
) -> None:
    from worker.queue.app import app

    # Pace off (no pacer): the only Redis here is the broker that goes down.
    settings = settings.replace(
        redis_url=own_redis.url,
        line_shares_per_minute=0,
        at_risk_shares_per_minute=0,
        lease_s=20.0,
        release_interval_s=1.0,
        recover_interval_s=3.0,
    )
    deps = Deps(settings, deps.sessions, deps.client)
    world.line(LINE)
    chat = new_chat(sim)
    with receiver_for(settings, deps) as receiver:
        own_redis.stop()
        started = time.monotonic()
        answer = sim.deliver_webhook(
            receiver.url, SECRET, chat_id=str(chat), sent_at=dt.datetime.now(dt.UTC).isoformat()
        )
        took = time.monotonic() - started
    # The delivery is recorded and answered although the broker is down, and answered soon.
    assert answer["status"] == 200
    assert took < 10, f"the receiver took {took:.1f}s with Redis down"
    assert row(deps, chat, today).status == "queued"
    assert sim.share_count(str(chat)) == 0

    own_redis.start()
    procs = Procs(settings, tmp_path)
    try:
        procs.worker(concurrency=4)
        procs.beat()  # recovery every 3 s re-enqueues the lost chat-day once its lease passed
        worker_consuming(app)
        wait_until(lambda: sim.share_count(str(chat)) >= 1, RECOVER_S, what="recovery's share")
        time.sleep(QUIET_S)
    finally:
        procs.stop_all()
    assert sim.share_count(str(chat)) == 1
    assert row(deps, chat, today).status == "succeeded"


def test_record_activity_then_a_sweep_skips_chats_the_event_path_marked(
    world: World, deps: Deps, settings: Settings, today: dt.date
) -> None:
    """The sweep reads only chats not marked for their line's today (docs/decisions.md §17)."""
    from tests.support.sweeps import Collector, sweep
    from worker.queue.app import app, configure
    from worker.queue.publish import event_path

    configure(settings)
    world.line(LINE)
    marked, unmarked = sorted(uuid.uuid4() for _ in range(2))
    when = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)
    path = event_path(app, deps)
    with transaction(deps.sessions) as s:
        record_activity(s, [ChatActivity(marked, LINE, service="iMessage", outbound_at=when)])
        queued = path.mark(s, [ChatActivity(marked, LINE, service="iMessage", outbound_at=when)])
        record_activity(s, [ChatActivity(unmarked, LINE, service="iMessage", outbound_at=when)])
    assert queued == [(marked, today)]
    publish = Collector()
    report = sweep(deps, publish)
    assert report.scanned == 1  # only the chat the event path did not mark
    assert [str(c) for c in publish.ids] == [str(unmarked)]
    again = Collector()
    assert sweep(deps, again).scanned == 0
    assert again.ids == []


def test_first_outbound_to_accepted_is_measured_in_the_metric_and_in_status(
    world: World, deps: Deps, settings: Settings, today: dt.date
) -> None:
    """From the message that made the chat-day due to Linq's 2xx: the histogram on success, and
    p50/p99 for the day in `status` (its JSON and page); a chat-day with no outbound time on the
    day (due from yesterday's message) is not counted."""
    from prometheus_client import REGISTRY

    from worker.ops.status import collect
    from worker.ops.status_page import render
    from worker.queue.app import app, configure
    from worker.queue.publish import event_path
    from worker.sharing.share import Outcome, share_chat

    def observed() -> float:
        return REGISTRY.get_sample_value("cardshare_first_outbound_to_share_seconds_count") or 0.0

    configure(settings)
    world.line(LINE)
    fresh = [uuid.uuid4() for _ in range(3)]
    old = world.chat(LINE, outbound_at=dt.datetime.now(dt.UTC) - dt.timedelta(days=2))
    for c in fresh:
        world.sim.add_chats([{"id": str(c), "line": LINE, "service": "iMessage"}])
    sent = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=2)
    path = event_path(app, deps)
    with transaction(deps.sessions) as s:
        facts = [ChatActivity(c, LINE, service="iMessage", outbound_at=sent) for c in fresh]
        record_activity(s, facts)
        assert len(path.mark(s, facts)) == 3
    before = observed()
    for c in [*fresh, old]:
        assert share_chat(c, today, deps).outcome is Outcome.SHARED
    assert observed() == before + 3  # the old chat's day has no outbound time on it
    status = collect(
        deps.sessions, day=None, now=dt.datetime.now(dt.UTC), policy=deps.policy, redis_url=None, stall_s=300
    )
    (lat,) = status.first_outbound
    assert lat.day == today
    assert lat.shares == 3
    assert 2.0 <= lat.p50_s <= lat.p99_s < 60.0
    assert status.as_dict()["first_outbound_to_share"][0]["shares"] == 3
    assert 'data-field="first_outbound"' in render(status)
