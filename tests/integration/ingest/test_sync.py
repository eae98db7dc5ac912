"""Chat sync against the simulator over loopback and real PostgreSQL: pages and cursors, resuming
after a failure, bounded and resumable message lookups, and what the sweep then finds due."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterator, Sequence

import pytest
from sqlalchemy import Engine, text

from tests.support.world import World
from worker.config import Settings
from worker.deps import Deps
from worker.ingest.sync import SyncProgress, run_sync
from worker.keys import SYNC_LOCK
from worker.sharing.passes import QueueDepth
from worker.sharing.sweep import run_sweep
from worker.simulator import SimulatorAdmin
from worker.simulator.client import ChatSpec, MessageSpec
from worker.store.engine import make_engine
from worker.store.ingest import record_webhook_event, sync_cursor
from worker.store.session import transaction

LINE = "+12223334444"
RCS_LINE = "+13334445555"
HOUR_AGO = (dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)).isoformat()
CHATS_ROUTE = "GET /v3/chats"
MESSAGES_ROUTE = "GET /v3/chats/{chat_id}/messages"


@pytest.fixture
def engine(deps: Deps) -> Iterator[Engine]:
    assert deps.settings.database_url
    e = make_engine(deps.settings.database_url, pool_size=2)
    yield e
    e.dispose()


def chat(*, service: str = "iMessage", outbound: bool = False, inbound: bool = False) -> ChatSpec:
    messages: list[MessageSpec] = []
    if outbound:
        messages.append({"is_from_me": True, "sent_at": HOUR_AGO})
    if inbound:
        messages.append({"is_from_me": False, "sent_at": HOUR_AGO})
    return {"id": str(uuid.uuid4()), "line": LINE, "service": service, "messages": messages}  # type: ignore[typeddict-item]


def seed(sim: SimulatorAdmin, world: World) -> tuple[list[str], list[str], list[str]]:
    """250 chats on LINE (3 pages of 100): 100 with an outbound message, 130 iMessage without
    one, 20 SMS; and an RCS-only line whose chats sync must not even list."""
    world.line(LINE)
    sim.add_line(RCS_LINE, line_type="RCS")
    with_outbound = [chat(outbound=True, inbound=True) for _ in range(100)]
    without = [chat(inbound=True) for _ in range(65)] + [chat() for _ in range(65)]
    sms = [chat(service="SMS", outbound=True) for _ in range(20)]
    everything = with_outbound + without + sms
    sim.add_chats([everything[i] for i in range(0, 250, 2)] + [everything[i] for i in range(1, 250, 2)])
    sim.add_chats([{"line": RCS_LINE, "service": "RCS"} for _ in range(5)])
    return [c["id"] for c in with_outbound], [c["id"] for c in without], [c["id"] for c in sms]


def known(deps: Deps) -> dict[str, dt.datetime | None]:
    with deps.sessions() as s:
        return {
            str(r.id): r.first_outbound_at for r in s.execute(text("SELECT id, first_outbound_at FROM chats"))
        }


class Recorder(SyncProgress):
    def __init__(self) -> None:
        self.lines: list[str] = []
        self.chats_seen = 0
        self.lookups_total: int | None = None
        self.lookups_done = 0

    def line(self, phone: str) -> None:
        self.lines.append(phone)

    def chats(self, count: int) -> None:
        self.chats_seen += count

    def lookups(self, total: int) -> None:
        self.lookups_total = total

    def lookup(self) -> None:
        self.lookups_done += 1


def test_sync_pages_every_line_records_imessage_chats_and_finds_outbound(
    world: World, sim: SimulatorAdmin, deps: Deps, engine: Engine
) -> None:
    with_outbound, without, sms = seed(sim, world)
    progress = Recorder()
    report = run_sync(deps, engine, lookups=1000, progress=progress)
    assert report.errors == []
    assert (report.lines, report.pages, report.chats, report.recorded, report.skipped) == (1, 3, 250, 230, 20)
    assert sim.requests()[CHATS_ROUTE] == 3
    assert progress.lines == [LINE]
    assert progress.chats_seen == 250
    chats = known(deps)
    assert set(chats) == set(with_outbound) | set(without)
    assert not set(sms) & set(chats)
    # Every chat without known outbound got one message page; the 100 with one now have it.
    assert (report.chats_looked_up, report.message_pages, report.outbound_found) == (230, 230, 100)
    assert progress.lookups_total == progress.lookups_done == 230
    assert {c for c, at in chats.items() if at is not None} == set(with_outbound)
    assert all(chats[c] == dt.datetime.fromisoformat(HOUR_AGO) for c in with_outbound)
    # And those are exactly what the sweep finds due.
    sent: list[uuid.UUID] = []

    def publish(ids: Sequence[uuid.UUID], day: dt.date) -> int:
        sent.extend(ids)
        return len(ids)

    run_sweep(deps, engine, publish, lambda: QueueDepth(0, 0), queue_lease_s=1800)
    assert sorted(map(str, sent)) == sorted(with_outbound)


def test_a_second_sync_starts_over_and_writes_the_same_facts(
    world: World, sim: SimulatorAdmin, deps: Deps, engine: Engine
) -> None:
    seed(sim, world)
    run_sync(deps, engine, lookups=1000)
    before = known(deps)
    again = run_sync(deps, engine, lookups=1000)
    assert (again.pages, again.resumed, again.chats_looked_up) == (3, 0, 130)  # only still-unknown ones
    assert known(deps) == before
    assert sim.requests()[CHATS_ROUTE] == 6


def test_a_failed_listing_resumes_at_its_cursor(
    world: World, sim: SimulatorAdmin, deps: Deps, engine: Engine
) -> None:
    with_outbound, without, _ = seed(sim, world)
    retries = deps.settings.retry_attempts
    sim.add_faults(
        [
            {"path": "/v3/chats$", "mode": "pass", "times": 1},  # page 1 goes through
            {"path": "/v3/chats$", "status": 503, "code": 3006, "times": retries},  # page 2 never does
        ]
    )
    first = run_sync(deps, engine, lookups=0)
    assert first.pages == 1
    assert len(first.errors) == 1
    assert "HTTP 503" in first.errors[0]
    assert sim.requests()[CHATS_ROUTE] == 1 + retries
    with deps.sessions() as s:
        assert sync_cursor(s, LINE) == "100"
    second = run_sync(deps, engine, lookups=0)
    assert second.errors == []
    assert (second.resumed, second.pages, second.chats) == (1, 2, 150)
    assert sim.requests()[CHATS_ROUTE] == 1 + retries + 2  # page 1 was not read again
    assert set(known(deps)) == set(with_outbound) | set(without)
    with deps.sessions() as s:
        assert sync_cursor(s, LINE) is None
        row = s.execute(text("SELECT pages, chats, finished_at FROM sync_cursors")).one()
    assert (row.pages, row.chats) == (3, 250)
    assert row.finished_at is not None


def test_message_lookups_are_bounded_per_run_and_resume(
    world: World, sim: SimulatorAdmin, deps: Deps, engine: Engine
) -> None:
    world.line(LINE)
    # A long chat: 250 inbound messages, newest first, with the only outbound one the oldest.
    long_chat = str(uuid.uuid4())
    start = dt.datetime.now(dt.UTC) - dt.timedelta(days=2)
    messages: list[MessageSpec] = [{"is_from_me": True, "sent_at": start.isoformat()}]
    messages += [
        {"is_from_me": False, "sent_at": (start + dt.timedelta(minutes=i + 1)).isoformat()}
        for i in range(250)
    ]
    sim.add_chats([{"id": long_chat, "line": LINE, "messages": messages}])
    others = [chat(outbound=True) for _ in range(3)]
    sim.add_chats(others)

    first = run_sync(deps, engine, lookups=2)
    assert first.message_pages == 2
    second = run_sync(deps, engine, lookups=2)
    third = run_sync(deps, engine, lookups=2)
    fourth = run_sync(deps, engine, lookups=2)
    assert [r.message_pages for r in (second, third, fourth)] == [2, 2, 0]
    chats = known(deps)
    assert chats[long_chat] == start
    assert all(chats[c["id"]] is not None for c in others)
    # Three pages for the long chat (resumed at its cursor, never re-read), one for each other.
    assert sim.requests()[MESSAGES_ROUTE] == 3 + 3
    with deps.sessions() as s:
        rows: dict[str, int] = dict(s.execute(text("SELECT chat_id::text, pages FROM message_lookups")).all())
    assert rows[long_chat] == 3


def test_a_chat_linq_no_longer_knows_is_marked_gone(
    world: World, sim: SimulatorAdmin, deps: Deps, engine: Engine
) -> None:
    world.line(LINE)
    gone = world.chat(LINE, outbound_at=False, in_sim=False)
    report = run_sync(deps, engine, lookups=10)
    assert report.not_found == 1
    with deps.sessions() as s:
        assert (
            s.execute(text("SELECT not_found_at FROM chats WHERE id = :c"), {"c": gone}).scalar() is not None
        )


def test_only_the_named_lines_are_synced(
    world: World, sim: SimulatorAdmin, deps: Deps, engine: Engine
) -> None:
    other = "+14445556666"
    world.line(LINE)
    world.line(other)
    sim.add_chats(
        [chat(outbound=True), {"line": other, "messages": [{"is_from_me": True, "sent_at": HOUR_AGO}]}]
    )
    report = run_sync(deps, engine, lines=[other], lookups=10)
    assert (report.lines, report.chats, report.message_pages) == (1, 1, 1)
    with deps.sessions() as s:
        assert s.execute(text("SELECT line_phone FROM chats")).scalars().all() == [other]


def test_one_sync_at_a_time(world: World, deps: Deps, engine: Engine) -> None:
    with engine.connect() as holder:
        assert holder.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": SYNC_LOCK}).scalar()
        report = run_sync(deps, engine)
        holder.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": SYNC_LOCK})
    assert report.ran is False
    assert "another sync is running" in report.one_line()


def test_old_webhook_dedupe_rows_are_pruned(world: World, deps: Deps, engine: Engine) -> None:
    with transaction(deps.sessions) as s:
        for event_id, age in (("old", "8 days"), ("recent", "1 hour")):
            record_webhook_event(
                s, event_id=event_id, webhook_id=None, event_type="message.sent", chat_id=None, delivery="d"
            )
            s.execute(
                text(
                    "UPDATE webhook_events SET received_at = now() - CAST(:age AS interval) "
                    "WHERE event_id = :e"
                ),
                {"age": age, "e": event_id},
            )
    assert run_sync(deps, engine, lookups=0).pruned_events == 1
    with deps.sessions() as s:
        assert s.execute(text("SELECT event_id FROM webhook_events")).scalars().all() == ["recent"]


def test_beat_runs_the_sync_task_daily_on_the_control_queue() -> None:
    import worker.queue.tasks  # noqa: F401 - registers the tasks
    from worker.keys import CONTROL_QUEUE
    from worker.queue.app import app, celery_config

    conf = celery_config(Settings())
    assert conf["beat_schedule"]["sync"]["task"] == "cardshare.sync"
    assert conf["beat_schedule"]["sync"]["schedule"] == dt.timedelta(days=1)
    assert conf["beat_schedule"]["sync"]["options"]["queue"] == CONTROL_QUEUE
    assert conf["task_routes"]["cardshare.sync"] == {"queue": CONTROL_QUEUE}
    # The share task's 60 s limits would kill a long sync; its own end before the next run.
    limits = conf["task_annotations"]["cardshare.sync"]
    assert conf["task_soft_time_limit"] < limits["soft_time_limit"] < limits["time_limit"] < 86400
    assert "cardshare.sync" in app.tasks
    hourly = celery_config(Settings(sync_interval_s=3600))
    assert hourly["beat_schedule"]["sync"]["schedule"] == dt.timedelta(hours=1)


def test_the_sync_task_runs_one_sync(world: World, sim: SimulatorAdmin, settings: Settings) -> None:
    from worker import runtime
    from worker.queue.tasks import sync_task

    world.line(LINE)
    sim.add_chats([chat(outbound=True)])
    runtime.install(runtime.Runtime.build(settings))
    try:
        result = sync_task()
    finally:
        runtime.reset()
    assert result.startswith("sync: 1 lines (0 resumed), 1 pages, 1 chats listed, 1 iMessage chats recorded")
    assert "1 with outbound found" in result
