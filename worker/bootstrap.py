"""A `cardshare` process starts here: settings read once, PostgreSQL and Redis resolved (embedded
ones started if needed), the schema checked, Celery configured, the runtime installed.

Child processes get these settings through their environment (`Settings.to_env()`): the demo's
worker, the sandbox. Nothing else reads the environment for settings.
"""

from __future__ import annotations

import atexit
import contextlib
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

from worker import migrate, runtime
from worker.config import Settings
from worker.errors import CardshareError, SchemaOutOfDate, StoreUnavailable
from worker.logs import register_secret
from worker.rules.cadence import share_day
from worker.rules.retention import wanted_days
from worker.store.engine import make_engine, schema_revision

if TYPE_CHECKING:
    from worker.embedded import EmbeddedServices, Watchdog

# Imported only by the paths that use them: a command against running servers that never queues
# (`status`, `history`, `check`) skips Celery (~0.11-0.2 s), the embedded servers (~0.07-0.15 s)
# and partition upkeep (~0.05-0.1 s), measured with `python -X importtime` on the 2-core box.
QUEUE_APP = "worker.queue.app"


@dataclass
class Booted:
    settings: Settings
    services: EmbeddedServices | None
    watchdog: Watchdog | None = None

    def sessions(self) -> sessionmaker[Session]:
        """The installed runtime's sessions."""
        return runtime.get().sessions

    def close(self) -> None:
        runtime.reset()
        if self.watchdog is not None:
            self.watchdog.stop()
            self.watchdog = None
        if self.services is not None:
            atexit.unregister(self.services.stop)
            self.services.stop()
            self.services = None


def resolve(
    settings: Settings, *, auto_migrate: bool | None = None, broker: bool = True, watch: bool = False
) -> Booted:
    """Make settings concrete: start embedded services for missing URLs, install the runtime.

    Embedded databases are development databases, so they are migrated automatically; a real
    database is only checked (deploys migrate as their own step). `broker=False` (the `db`
    commands): Redis is neither needed nor started, so a migration runs with DATABASE_URL alone.
    With `watch` (the worker, beat, the receiver) a watchdog starts an embedded server that dies
    again on its address.
    """
    register_secret(settings.linq_api_key.get())
    services: EmbeddedServices | None = None
    wants_redis = broker and settings.redis_url is None
    if settings.database_url is None or wants_redis:
        from worker.embedded import EmbeddedServices

        services = EmbeddedServices.start(
            settings.data_dir,
            database=settings.database_url is None,
            redis=wants_redis,
        )
        atexit.register(services.stop)
        settings = settings.replace(
            database_url=settings.database_url or services.database_url,
            redis_url=settings.redis_url or services.redis_url,
        )
    assert settings.database_url is not None
    assert settings.redis_url is not None or not broker
    if auto_migrate is None:
        auto_migrate = services is not None and services.postgres is not None
    rt = runtime.Runtime.build(settings)
    try:
        if auto_migrate:
            migrate.upgrade(settings.database_url)
        else:
            ensure_schema(rt.engine)
        if auto_migrate:
            from worker.ops.retention import ensure_days

            # `db upgrade` and a development database: the coming days' partitions, whatever the
            # migrations did (docs/retention.md); beat keeps them coming after that.
            ensure_days(rt.deps, wanted_days(share_day(rt.deps.clock(), settings.zone)))
    except OperationalError as exc:
        rt.close()
        raise StoreUnavailable(f"cannot reach PostgreSQL: {str(exc.orig).strip().splitlines()[0]}") from exc
    except BaseException:
        rt.close()
        raise
    runtime.install(rt)
    # The Celery app configures itself from the installed settings when first imported; one
    # already loaded (the worker, beat, tests) is configured here.
    queue_app = sys.modules.get(QUEUE_APP)
    if queue_app is not None:
        queue_app.configure(settings)
    watchdog = None
    if watch and services is not None:
        from worker.embedded import Watchdog

        watchdog = Watchdog(services).start()
    return Booted(settings, services, watchdog)


def ensure_schema(engine: Engine) -> None:
    """One query against the revision the migrations' files name as head (`migrate.head_revision`):
    Alembic's ScriptDirectory would import every migration file to find it."""
    migrate.ensure_revision(schema_revision(engine))


def wait_for_schema(
    url: str,
    *,
    timeout_s: float,
    interval_s: float = 2.0,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
    waiting: Callable[[str], None] = lambda reason: None,
) -> str:
    """Wait until PostgreSQL answers and the schema is at this cardshare's head (an init
    container, while the migrate Job runs); the head, or StoreUnavailable / SchemaOutOfDate with
    the last reason once `timeout_s` has passed. `waiting` hears each new reason to wait."""
    sep = "&" if "?" in url else "?"
    quick = url if "connect_timeout=" in url else f"{url}{sep}connect_timeout=5"
    deadline = clock() + timeout_s
    told = ""
    engine = make_engine(quick, pool_size=1, max_overflow=0)
    try:
        while True:
            try:
                ensure_schema(engine)
                return migrate.head_revision()
            except OperationalError as exc:
                last: CardshareError = StoreUnavailable(
                    f"cannot reach PostgreSQL: {str(exc.orig).strip().splitlines()[0]}"
                )
            except SchemaOutOfDate as exc:
                last = exc
            if clock() + interval_s > deadline:
                raise last
            if str(last) != told:
                told = str(last)
                waiting(told)
            sleep(interval_s)
    finally:
        engine.dispose()


@contextlib.contextmanager
def booted(settings: Settings, **kw: Any) -> Iterator[Booted]:
    b = resolve(settings, **kw)
    try:
        yield b
    finally:
        b.close()
