"""Fixtures for the fault drills (real processes; slow; skipped unless asked for)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import World
from tests.drills.harness import Procs, drill_timing
from worker.config import Settings
from worker.deps import Deps
from worker.linq import ClientPool
from worker.simulator import SimulatorAdmin
from worker.store.engine import make_engine, session_factory


@pytest.fixture
def dsettings(settings: Settings) -> Settings:
    return drill_timing(settings)


@pytest.fixture
def ddeps(dsettings: Settings) -> Iterator[Deps]:
    assert dsettings.database_url
    engine = make_engine(dsettings.database_url, pool_size=5)
    clients = ClientPool(dsettings)
    yield Deps(settings=dsettings, sessions=session_factory(engine), client=clients.get)
    clients.close()
    engine.dispose()


@pytest.fixture
def dworld(ddeps: Deps, sim: SimulatorAdmin) -> World:
    return World(deps=ddeps, sim=sim)


@pytest.fixture
def procs(dsettings: Settings, tmp_path: Path) -> Iterator[Procs]:
    from worker.queue.app import configure

    configure(dsettings)
    p = Procs(dsettings, tmp_path)
    yield p
    p.stop_all()


@pytest.fixture
def dtoday(dsettings: Settings) -> dt.date:
    from worker.rules.cadence import share_day

    return share_day(dt.datetime.now(dt.UTC), dsettings.zone)
