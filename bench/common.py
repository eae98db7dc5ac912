"""Benchmark plumbing: dedicated embedded servers, fresh state, bulk seeding, child processes,
tables, and (at the bottom) everything bench/ takes from worker/.

Every import of a worker module by bench/ is in this file, so moving worker's modules around
is a change here only (bench/sweep_child.py, run as its own process, takes them from here too;
bench/naive_app.py imports nothing from worker/).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psycopg
import redis

from worker import migrate
from worker.embedded import EmbeddedPostgres, EmbeddedRedis
from worker.embedded import free_port as free_port  # re-exported for bench/webhooks.py

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

    from worker.config import Settings
    from worker.simulator import SimulatorServer

LINE = "+12125550100"
API_KEY = "bench-key"


@dataclass
class Servers:
    postgres: EmbeddedPostgres
    redis: EmbeddedRedis
    root: Path

    @property
    def database_url(self) -> str:
        return self.postgres.url()

    @property
    def dsn(self) -> str:
        return self.database_url.replace("postgresql+psycopg://", "postgresql://")

    def pids(self) -> list[int]:
        """The postmaster (pg_ctl daemonized it out of our process tree; backends are its
        children) and the Redis server: for `repeat.Bench.track` and per-server CPU."""
        return [self.postgres_pid(), self.redis_pid()]

    def postgres_pid(self) -> int:
        return int((self.postgres.pgdata / "postmaster.pid").read_text().split()[0])

    def redis_pid(self) -> int:
        return int((self.redis.directory / "redis.pid").read_text().strip())

    def migrate(self, url: str) -> None:
        """cardshare's migrations on another database of this server (they make its partitions)."""
        migrate.upgrade(url)

    def versions(self) -> dict[str, str]:
        """Server versions, for the results' machine section."""
        with psycopg.connect(self.dsn) as conn:
            pg = conn.execute("SHOW server_version").fetchone()
        info = redis.Redis.from_url(self.redis.url).info("server")
        return {"postgresql_server": str(pg[0] if pg else "?"), "redis_server": str(info["redis_version"])}


@contextmanager
def servers(stat_statements: bool = False, *, track_planning: bool = False) -> Iterator[Servers]:
    root = Path(tempfile.mkdtemp(prefix="cardshare-bench-"))
    pg = EmbeddedPostgres(root / "pg")
    pg.start()
    if stat_statements:
        # Planning time only when asked: its counters add a lock per statement.
        planning = {"pg_stat_statements.track_planning": "on"} if track_planning else {}
        pg.configure(shared_preload_libraries="pg_stat_statements", **planning)
        pg.start()  # re-read the socket after the restart
    redis = EmbeddedRedis(root / "redis")
    redis.start()
    migrate.upgrade(pg.url())
    try:
        yield Servers(pg, redis, root)
    finally:
        redis.stop()
        pg.stop()
        subprocess.run(["rm", "-rf", str(root)], check=False)


def reset_state(srv: Servers) -> None:
    """Fresh state for a run: every table emptied (all but alembic_version, so a new table
    cannot be forgotten) and Redis flushed. TRUNCATE gives tables new files, so no run reads
    pages another run left; what a run seeds next is as warm in run 1 as in run 3."""
    with psycopg.connect(srv.dsn, autocommit=True) as conn:
        tables = [
            r[0]
            for r in conn.execute(
                "SELECT quote_ident(tablename) FROM pg_tables "
                "WHERE schemaname = 'public' AND tablename <> 'alembic_version'"
            )
        ]
        if tables:
            conn.execute(f"TRUNCATE {', '.join(tables)} RESTART IDENTITY CASCADE")
    redis.Redis.from_url(srv.redis.url).flushall()


def seed_due_chats(dsn: str, n: int, *, line: str = LINE) -> None:
    """n due iMessage chats on one line with an active card, generated inside PostgreSQL
    (after `reset_state`, or on its own: it empties the tables it fills)."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("TRUNCATE share_days, attempts, chats, lines CASCADE")
        conn.execute(
            "INSERT INTO lines (phone_number, first_name, card_active, card_checked_at) "
            "VALUES (%s, 'Bench', true, now())",
            (line,),
        )
        conn.execute(
            """
            INSERT INTO chats (id, line_phone, service, is_group, first_outbound_at, last_outbound_at)
            SELECT gen_random_uuid(), %s, 'iMessage', false, now() - interval '2 hours',
                   now() - interval '1 hour'
            FROM generate_series(1, %s)
            """,
            (line, n),
        )
        conn.execute("VACUUM ANALYZE chats")


def run_child(
    module: str, args: Sequence[str], env: dict[str, str] | None = None, timeout: float = 3600
) -> Any:
    """Run `python -m module args` and return the JSON its last stdout line holds."""
    done = subprocess.run(
        [sys.executable, "-m", module, *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=timeout,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"{module} failed:\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    widths = [max(len(str(h)), *(len(str(r[i])) for r in rows)) for i, h in enumerate(headers)]
    line = "| " + " | ".join(str(h).ljust(w) for h, w in zip(headers, widths, strict=True)) + " |"
    sep = "| " + " | ".join("-" * w for w in widths) + " |"
    body = ["| " + " | ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)) + " |" for r in rows]
    return "\n".join([line, sep, *body])


# --- What bench/ uses from worker/ (imported inside the functions: a child process that needs
# one part does not load the rest, and the import order of worker's modules stays theirs).


def simulator(api_key: str = API_KEY) -> SimulatorServer:
    """The Linq simulator on loopback, in this process (use as a context manager, or start())."""
    from worker.simulator import SimulatorServer

    return SimulatorServer(api_key=api_key)


# The sweep and end-to-end benchmarks measure throughput on one line: pacing (a per-line cap of
# 60/min by default) is off there unless a benchmark turns it on (bench/pacing.py measures it).
UNPACED = {"line_shares_per_minute": 0, "at_risk_shares_per_minute": 0}


def bench_settings(**fields: Any) -> Settings:
    """cardshare's Settings (unpaced unless given); `linq_api_key` is given as plain text."""
    from worker.config import Secret, Settings

    return Settings(**{**UNPACED, **fields, "linq_api_key": Secret(fields.get("linq_api_key", API_KEY))})


def settings_from_env(**overrides: Any) -> Settings:
    """Settings from the environment (a child process), with overrides; plain-text linq_api_key.
    Unpaced unless the environment or the overrides say otherwise."""
    from worker.config import Secret, Settings

    if "linq_api_key" in overrides:
        overrides["linq_api_key"] = Secret(overrides["linq_api_key"])
    unpaced = {k: v for k, v in UNPACED.items() if Settings.env_name(k) not in os.environ}
    return Settings.from_env().replace(**{**unpaced, **overrides})


def configure_celery(settings: Settings) -> Any:
    """cardshare's Celery app, configured for these settings."""
    from worker.celery_app import app, configure

    configure(settings)
    return app


def worker_command(**kw: Any) -> list[str]:
    """The `celery worker` command line cardshare runs (pool, concurrency, loglevel)."""
    from worker.queue.publish import worker_command as command

    return command(**kw)


def share_task() -> Any:
    """cardshare's share task (the naive sweep publishes it one apply_async at a time)."""
    from worker.queue.tasks import share_chat

    return share_chat


def engine(url: str, *, pool_size: int = 2) -> Engine:
    from worker.store.engine import make_engine

    return make_engine(url, pool_size=pool_size)


@contextmanager
def sweeper(settings: Settings, app: Any, *, queue_lease_s: float = 1800) -> Iterator[Callable[[], Any]]:
    """A full cardshare sweep, ready to run: engine, Linq clients and deps are built before
    (outside any timing) and closed after. Calling it runs one sweep and returns its report."""
    from worker.deps import Deps
    from worker.linq import ClientPool
    from worker.queue.publish import Publisher, queue_depth
    from worker.sharing.pace import RedisPacer
    from worker.sharing.sweep import run_sweep
    from worker.store.engine import session_factory

    assert settings.database_url
    assert settings.redis_url
    eng = engine(settings.database_url)
    clients = ClientPool(settings)
    pacer = RedisPacer.from_url(settings.redis_url)
    deps = Deps(settings, session_factory(eng), clients.get, pacer=pacer)

    def sweep() -> Any:
        with Publisher(app) as publish:
            return run_sweep(deps, eng, publish, lambda: queue_depth(app), queue_lease_s=queue_lease_s)

    try:
        yield sweep
    finally:
        pacer.close()
        clients.close()
        eng.dispose()


def webhook_receiver_command(port: int) -> list[str]:
    """`cardshare webhooks --port PORT` as a subprocess command line."""
    return [sys.executable, "-c", "from worker.cli.main import main; main()", "webhooks", "--port", str(port)]


@contextmanager
def releaser(settings: Settings, app: Any, *, queue_lease_s: float = 1800) -> Iterator[Callable[[], Any]]:
    """cardshare's release pass (what beat runs every CARDSHARE_RELEASE_INTERVAL), ready to run."""
    from worker.deps import Deps
    from worker.linq import ClientPool
    from worker.queue.publish import Publisher
    from worker.sharing.pace import RedisPacer
    from worker.sharing.release import run_release
    from worker.store.engine import session_factory

    assert settings.database_url
    assert settings.redis_url
    eng = engine(settings.database_url)
    clients = ClientPool(settings)
    pacer = RedisPacer.from_url(settings.redis_url)
    deps = Deps(settings, session_factory(eng), clients.get, pacer=pacer)

    def release() -> Any:
        with Publisher(app) as publish:
            return run_release(deps, eng, publish, queue_lease_s=queue_lease_s)

    try:
        yield release
    finally:
        pacer.close()
        clients.close()
        eng.dispose()


def partition_name(table: str, day: Any) -> str:
    """The name cardshare gives `table`'s partition of `day` (share_days_pYYYYMMDD)."""
    from worker.store.partitions import partition_name as name

    return name(table, day)


def retention_policy() -> tuple[int, int]:
    """(CARDSHARE_RETENTION_DAYS's default, the days kept behind it for per-line time zones)."""
    from worker.config import Settings
    from worker.rules.retention import BEHIND_DAYS

    return Settings().retention_days, BEHIND_DAYS
