"""Shared fixtures: real PostgreSQL and Redis (embedded unless CARDSHARE_TEST_* URLs are set),
one database per test cloned from a migrated template, and the Linq simulator on loopback."""

from __future__ import annotations

import datetime as dt
import os
import time
import uuid
from collections.abc import Generator, Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest

if not os.environ.get("XDG_RUNTIME_DIR"):
    _runtime = Path("/tmp") / f"cardshare-runtime-{os.getuid()}"
    _runtime.mkdir(mode=0o700, exist_ok=True)
    os.environ["XDG_RUNTIME_DIR"] = str(_runtime)

import psycopg
import redis
from sqlalchemy.engine import make_url

from tests.support.servers import API_KEY, Servers
from tests.support.world import World
from worker import migrate
from worker.config import Secret, Settings
from worker.deps import Deps
from worker.embedded import EmbeddedPostgres, EmbeddedRedis
from worker.linq import ClientPool
from worker.rules.cadence import share_day
from worker.sharing.pace import RedisPacer
from worker.simulator import SimulatorAdmin, SimulatorServer
from worker.store.engine import make_engine, session_factory


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Drills are slow: skipped unless asked for (-m drill, or CARDSHARE_DRILLS=1). Under
    pytest-xdist (scripts/test), the drills share one process and run one after another, as do
    the benchmark harness tests (they write the same result files)."""
    for item in items:
        if "drill" in item.keywords:
            item.add_marker(pytest.mark.xdist_group("drills"))
        elif item.nodeid.startswith("tests/bench/"):
            item.add_marker(pytest.mark.xdist_group("bench"))
    wants = os.environ.get("CARDSHARE_DRILLS") == "1" or "drill" in (config.getoption("-m") or "")
    if wants:
        return
    skip = pytest.mark.skip(reason="fault drill: run with -m drill or CARDSHARE_DRILLS=1")
    for item in items:
        if "drill" in item.keywords:
            item.add_marker(skip)


# A test that starts this close to midnight UTC (the tests' day) may end on the next day, where
# the worker it started judges its chat-days over: it starts after midnight instead.
MIDNIGHT_MARGIN_S = 300.0


def seconds_to_midnight(now: dt.datetime) -> float:
    tomorrow = dt.datetime.combine(now.date() + dt.timedelta(days=1), dt.time(), tzinfo=dt.UTC)
    return (tomorrow - now).total_seconds()


@pytest.hookimpl(hookwrapper=True, tryfirst=True)
def pytest_runtest_protocol(item: pytest.Item) -> Generator[None, None, None]:
    """Outside pytest-timeout's wrapper, so the wait does not count against the test's timeout."""
    left = seconds_to_midnight(dt.datetime.now(dt.UTC))
    if left < MIDNIGHT_MARGIN_S:
        time.sleep(left + 1.0)
    yield


def _admin(dsn: str) -> psycopg.Connection[tuple[object, ...]]:
    return psycopg.connect(dsn, autocommit=True)


@pytest.fixture(scope="session")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Servers]:
    pg: EmbeddedPostgres | None = None
    rs: EmbeddedRedis | None = None
    external_db = os.environ.get("CARDSHARE_TEST_DATABASE_URL")
    external_redis = os.environ.get("CARDSHARE_TEST_REDIS_URL")
    base = tmp_path_factory.mktemp("services")
    if external_db:
        url = Settings.from_env({"DATABASE_URL": external_db}).database_url
        assert url
        sa_base = url
        admin = make_url(url).set(drivername="postgresql", database="postgres")
        admin_dsn = admin.render_as_string(hide_password=False)
    else:
        pg = EmbeddedPostgres(base / "pg")
        sa_base = pg.start()
        admin_dsn = pg.admin_uri
    if external_redis:
        # Under pytest-xdist each process flushes its own database number (gw0 -> /0, gw1 -> /1).
        redis_url = external_redis
        worker = os.environ.get("PYTEST_XDIST_WORKER", "")
        if worker.startswith("gw"):
            parts = urlsplit(external_redis)
            db = int(parts.path.lstrip("/") or 0) + int(worker[2:])
            redis_url = urlunsplit(parts._replace(path=f"/{db}"))
    else:
        rs = EmbeddedRedis(base / "redis")
        redis_url = rs.start()
    template = f"cardshare_tpl_{os.getpid()}"
    servers = Servers(admin_dsn, template, sa_base, redis_url, pg, rs)
    with _admin(admin_dsn) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{template}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{template}"')
    migrate.upgrade(servers.url_for(template))
    yield servers
    with _admin(admin_dsn) as conn:
        for name in [*servers.made, template]:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    if rs is not None:
        rs.stop()
    if pg is not None:
        pg.stop()


@pytest.fixture
def database_url(servers: Servers) -> Iterator[str]:
    """A fresh, migrated database for this test (other processes see its commits)."""
    name = f"cs_{uuid.uuid4().hex[:12]}"
    with _admin(servers.admin_dsn) as conn:
        conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{servers.template}"')
    yield servers.url_for(name)
    with _admin(servers.admin_dsn) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def redis_url(servers: Servers) -> str:
    client = redis.Redis.from_url(servers.redis_url)
    try:
        client.flushdb()
    finally:
        client.close()
    return servers.redis_url


@pytest.fixture(scope="session")
def sim_server() -> Iterator[SimulatorServer]:
    server = SimulatorServer(api_key=API_KEY)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def sim(sim_server: SimulatorServer) -> SimulatorAdmin:
    sim_server.admin.reset()
    return sim_server.admin


@pytest.fixture
def settings(database_url: str, redis_url: str, sim_server: SimulatorServer, tmp_path: Path) -> Settings:
    return Settings(
        database_url=database_url,
        redis_url=redis_url,
        linq_api_key=Secret(API_KEY),
        linq_base_url=sim_server.base_url,
        retry_base_s=0.01,
        retry_cap_s=0.05,
        retry_budget_s=5.0,
        http_read_timeout_s=2.0,
        http_connect_timeout_s=1.0,
        task_soft_time_limit_s=10.0,
        task_time_limit_s=15.0,
        db_pool_size=5,
        data_dir=tmp_path / "data",
        # Paced, through Redis, but far above what a test shares: tests of pace set their own.
        line_shares_per_minute=100_000,
        at_risk_shares_per_minute=100_000,
    )


@pytest.fixture
def sleeps() -> list[float]:
    """Every retry sleep the service asked for (tests do not really sleep)."""
    return []


@pytest.fixture
def deps(settings: Settings, sleeps: list[float]) -> Iterator[Deps]:
    assert settings.database_url
    assert settings.redis_url
    engine = make_engine(settings.database_url, pool_size=5)
    clients = ClientPool(settings)
    pacer = RedisPacer.from_url(settings.redis_url, max_connections=8)
    d = Deps(
        settings=settings,
        sessions=session_factory(engine),
        client=clients.get,
        sleep=sleeps.append,
        pacer=pacer,
    )
    yield d
    pacer.close()
    clients.close()
    engine.dispose()


@pytest.fixture
def world(deps: Deps, sim: SimulatorAdmin) -> World:
    return World(deps=deps, sim=sim)


@pytest.fixture
def today(settings: Settings) -> dt.date:
    return share_day(dt.datetime.now(dt.UTC), settings.zone)
