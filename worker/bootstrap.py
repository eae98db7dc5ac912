"""Resolve where PostgreSQL and Redis are, start embedded ones if needed, install the runtime."""

from __future__ import annotations

import atexit
import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass

from sqlalchemy.exc import OperationalError

from worker import migrate, runtime
from worker.config import Settings
from worker.embedded import EmbeddedServices
from worker.errors import CardshareError, StoreUnavailable
from worker.logs import register_secret


class SchemaOutOfDate(CardshareError):
    """The database schema is not at the code's revision: run `cardshare db upgrade`."""

    exit_code = 2


@dataclass
class Booted:
    settings: Settings
    services: EmbeddedServices | None

    def close(self) -> None:
        runtime.reset()
        if self.services is not None:
            atexit.unregister(self.services.stop)
            self.services.stop()
            self.services = None


def resolve(settings: Settings, *, auto_migrate: bool | None = None) -> Booted:
    """Make settings concrete: start embedded services for missing URLs, export them to children.

    Embedded databases are development databases, so they are migrated automatically; a real
    database is only checked (deploys migrate as their own step).
    """
    register_secret(settings.linq_api_key.get())
    services: EmbeddedServices | None = None
    if settings.embedded:
        services = EmbeddedServices.start(
            settings.data_dir,
            database=settings.database_url is None,
            redis=settings.redis_url is None,
        )
        atexit.register(services.stop)
        settings = settings.replace(
            database_url=settings.database_url or services.database_url,
            redis_url=settings.redis_url or services.redis_url,
        )
    assert settings.database_url is not None
    assert settings.redis_url is not None
    # Child processes (a worker started by the demo, celery itself) find the same servers.
    os.environ["DATABASE_URL"] = settings.database_url
    os.environ["REDIS_URL"] = settings.redis_url
    if auto_migrate is None:
        auto_migrate = services is not None and services.postgres is not None
    try:
        if auto_migrate:
            migrate.upgrade(settings.database_url)
        else:
            ensure_schema(settings.database_url)
    except OperationalError as exc:
        raise StoreUnavailable(f"cannot reach PostgreSQL: {str(exc.orig).strip().splitlines()[0]}") from exc
    from worker import celery_app

    celery_app.configure(settings)
    runtime.install(runtime.Runtime.build(settings))
    return Booted(settings, services)


def ensure_schema(url: str) -> None:
    from alembic.script import ScriptDirectory

    head = ScriptDirectory.from_config(migrate.alembic_config(url)).get_current_head()
    current = migrate.current(url)
    if current != head:
        raise SchemaOutOfDate(
            f"database schema is at {current or 'nothing'}, this cardshare needs {head}: "
            "run `cardshare db upgrade`"
        )


@contextlib.contextmanager
def booted(settings: Settings, **kw: bool | None) -> Iterator[Booted]:
    b = resolve(settings, **kw)
    try:
        yield b
    finally:
        b.close()
