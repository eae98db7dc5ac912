"""Sweeps and recovery passes from the test process, publishing to a collector instead of Redis."""

from __future__ import annotations

import datetime as dt
import threading
import uuid
from collections.abc import Sequence

from worker.deps import Deps
from worker.sharing.passes import QueueDepth, SweepReport
from worker.sharing.recover import run_recover
from worker.sharing.release import run_release
from worker.sharing.sweep import run_sweep
from worker.store.engine import make_engine
from worker.store.plain import PlainDatabase
from worker.store.session import Sessions


class Collector:
    """A publisher that remembers what it was asked to enqueue."""

    def __init__(self) -> None:
        self.sent: list[tuple[uuid.UUID, dt.date]] = []
        self.lock = threading.Lock()

    def __call__(self, ids: Sequence[uuid.UUID], day: dt.date) -> int:
        with self.lock:
            self.sent.extend((i, day) for i in ids)
        return len(ids)

    @property
    def ids(self) -> list[uuid.UUID]:
        return [i for i, _ in self.sent]


def drained() -> QueueDepth:
    return QueueDepth(0, 0)


def busy() -> QueueDepth:
    return QueueDepth(5, 0)


def sweep(deps: Deps, publish: Collector, depth=busy) -> SweepReport:  # type: ignore[no-untyped-def]
    assert deps.settings.database_url
    engine = make_engine(deps.settings.database_url, pool_size=2)
    try:
        return run_sweep(deps, engine, publish, depth, queue_lease_s=1800)
    finally:
        engine.dispose()


def recover(deps: Deps, publish: Collector, depth=busy, *, plain: bool = False) -> SweepReport:  # type: ignore[no-untyped-def]
    """One recovery pass on the pool's sessions (as beat runs it) or, with `plain`, on one
    psycopg connection of its own (as `cardshare recover` runs it)."""
    assert deps.settings.database_url
    if not plain:
        return run_recover(
            Sessions(deps.sessions), deps.settings, deps.clock(), publish, depth, queue_lease_s=1800
        )
    db = PlainDatabase(deps.settings.database_url)
    try:
        return run_recover(db, deps.settings, deps.clock(), publish, depth, queue_lease_s=1800)
    finally:
        db.close()


def release(deps: Deps, publish: Collector) -> SweepReport:
    assert deps.settings.database_url
    engine = make_engine(deps.settings.database_url, pool_size=2)
    try:
        return run_release(deps, engine, publish, queue_lease_s=1800)
    finally:
        engine.dispose()
