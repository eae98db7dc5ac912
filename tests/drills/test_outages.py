"""Drills 3 and 4: the broker restarts empty; the database goes away under load."""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from sqlalchemy import text

from tests.support.drills import SHARE, Figures, check, day_counts, scaled, seed_chats, settle, sweep_now
from tests.support.procs import CONSUMING_S, Procs, timeout_for, wait_until, worker_consuming
from tests.support.world import World
from worker import migrate
from worker.config import Settings
from worker.deps import Deps
from worker.embedded import EmbeddedPostgres, EmbeddedRedis
from worker.linq import ClientPool
from worker.simulator import SimulatorAdmin
from worker.store.engine import make_engine, session_factory

pytestmark = pytest.mark.drill

# Each drill's waits, in seconds; its pytest timeout is sized from the same numbers.
REDIS_CHATS = scaled(3000, 10000)
REDIS_QUEUED_S = 60.0  # a quarter of the chat-days queued by the first sweep
REDIS_SWEEP_JOIN_S = 60.0  # the interrupted sweep gives up
REDIS_RESUME_S = 90.0  # the worker consumes again after the restart
REDIS_SETTLE_S = 240.0
PG_CHATS = scaled(600, 2000)
PG_OUTAGE_S = float(scaled(15, 60))
PG_FIFTH_S = 60.0  # a fifth shared before PostgreSQL stops
PG_SETTLE_S = 240.0


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[EmbeddedRedis]:
    server = EmbeddedRedis(tmp_path / "redis")
    server.start()
    yield server
    server.stop()


@pytest.mark.timeout(
    timeout_for(CONSUMING_S, REDIS_QUEUED_S, REDIS_SWEEP_JOIN_S, REDIS_RESUME_S, REDIS_SETTLE_S)
)
def test_redis_restarted_empty_during_a_sweep(
    world: World, deps: Deps, settings: Settings, own_redis: EmbeddedRedis, tmp_path: Path, today: dt.date
) -> None:
    from worker.queue.app import app, configure

    n = REDIS_CHATS
    fig = Figures("Redis restarted empty during a sweep")
    settings = settings.replace(redis_url=own_redis.url, sweep_page_size=250)
    configure(settings)
    deps = Deps(settings, deps.sessions, deps.client)
    line = world.line()
    chats = seed_chats(deps, world.sim, line, n)
    procs = Procs(settings, tmp_path)
    try:
        procs.worker(concurrency=64)
        procs.beat()
        worker_consuming(app)
        failure: list[BaseException] = []

        def first_sweep() -> None:
            try:
                sweep_now(deps)
            except BaseException as exc:  # the restart cuts the publish; that is the point
                failure.append(exc)

        sweeper = threading.Thread(target=first_sweep)
        sweeper.start()
        wait_until(
            lambda: day_counts(deps, today, None).get("queued", 0) >= n // 4,
            REDIS_QUEUED_S,
            0.01,
            "a quarter queued",
        )
        own_redis.restart()
        restarted = time.monotonic()
        sweeper.join(REDIS_SWEEP_JOIN_S)
        before = day_counts(deps, today, None).get("succeeded", 0)
        resumed = wait_until(
            lambda: day_counts(deps, today, None).get("succeeded", 0) > before + 5,
            REDIS_RESUME_S,
            0.2,
            "the worker to consume again",
        )
        resume_s = time.monotonic() - restarted
        sweep_now(deps)  # "the next sweep"
        seconds = settle(deps, today, chats, timeout=REDIS_SETTLE_S, fig=fig)
        report = check(deps, world.sim, today)
        fig.add(
            chats=n,
            first_sweep_error=type(failure[0]).__name__ if failure else None,
            worker_resumed_after_s=round(resume_s, 1),
            settle_after_restart_s=round(seconds + resumed, 1),
        )
        fig.add_check(report)
        fig.write()
        assert report.missed == []
        assert report.duplicates == []
        assert report.succeeded == n
        assert resume_s <= 60
    finally:
        procs.stop_all()


@pytest.fixture
def own_postgres(tmp_path: Path) -> Iterator[EmbeddedPostgres]:
    server = EmbeddedPostgres(tmp_path / "pg")
    server.start()
    migrate.upgrade(server.url())
    yield server
    server.stop()


@pytest.mark.timeout(timeout_for(CONSUMING_S, PG_FIFTH_S, PG_OUTAGE_S, PG_SETTLE_S))
def test_postgres_stopped_under_load(
    sim: SimulatorAdmin, settings: Settings, own_postgres: EmbeddedPostgres, tmp_path: Path, today: dt.date
) -> None:
    from worker.queue.app import app, configure

    n = PG_CHATS
    outage = PG_OUTAGE_S
    fig = Figures("PostgreSQL stopped under load")
    settings = settings.replace(database_url=own_postgres.url())
    configure(settings)
    engine = make_engine(own_postgres.url(), pool_size=5)
    clients = ClientPool(settings)
    deps = Deps(settings, session_factory(engine), clients.get)
    world = World(deps, sim)
    procs = Procs(settings, tmp_path)
    try:
        line = world.line()
        chats = seed_chats(deps, sim, line, n)
        sim.add_faults([{"path": SHARE, "mode": "pass", "latency_ms": 200}])
        procs.worker(concurrency=64)
        procs.beat()
        worker_consuming(app)
        sweep_now(deps)
        wait_until(
            lambda: day_counts(deps, today, chats).get("succeeded", 0) >= n // 5,
            PG_FIFTH_S,
            0.05,
            "a fifth shared",
        )
        own_postgres.stop()
        stopped_at = time.time()
        time.sleep(outage)
        own_postgres.start_again()
        engine.dispose()
        seconds = settle(deps, today, chats, timeout=PG_SETTLE_S, fig=fig)
        report = check(deps, sim, today)
        # No share call without a claim row: every share Linq accepted has an attempt row of
        # ours for that chat, started before Linq saw it.
        events = [e for e in sim.share_events() if e["outcome"] == "accepted"]
        with deps.sessions() as s:
            rows: dict[Any, Any] = dict(
                s.execute(
                    text(
                        "SELECT chat_id::text, min(extract(epoch FROM started_at)) FROM attempts "
                        "GROUP BY chat_id"
                    )
                ).all()
            )
        unclaimed = [
            e for e in events if e["chat_id"] not in rows or float(rows[e["chat_id"]]) > e["at"] + 0.05
        ]
        during = [e for e in events if stopped_at <= e["at"] <= stopped_at + outage]
        fig.add(
            chats=n,
            outage_s=outage,
            shares_during_outage=len(during),
            calls_without_claim=len(unclaimed),
            settle_after_restart_s=round(seconds, 1),
        )
        fig.add_check(report)
        fig.write()
        assert unclaimed == []
        assert report.missed == []
        assert report.duplicates == []
        assert report.succeeded == n
    finally:
        procs.stop_all()
        clients.close()
        engine.dispose()


@pytest.mark.timeout(timeout_for())
def test_redis_client_survives(own_redis: EmbeddedRedis) -> None:
    """The restart helper really empties Redis (the drills depend on it)."""
    client = redis.Redis.from_url(own_redis.url)
    try:
        client.set("x", "1")
        own_redis.restart()
        assert client.get("x") is None
    finally:
        client.close()
