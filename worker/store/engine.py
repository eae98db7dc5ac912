"""Engine and session factories. One engine per process; transactions are short (`session`)."""

from __future__ import annotations

import os
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy import exc as sa_exc
from sqlalchemy.orm import Session, sessionmaker

from worker.config import Settings
from worker.store import schema
from worker.store.plain import CONNECT_ARGS


def make_engine(url: str, *, pool_size: int = 10, max_overflow: int = 10, **kw: Any) -> Engine:
    engine = create_engine(
        url,
        pool_size=pool_size,
        max_overflow=max_overflow,
        # No pre-ping: it costs a round trip per checkout. A dead pooled connection (PostgreSQL
        # restarted) fails its first statement, SQLAlchemy invalidates the pool, and the store
        # reports StoreUnavailable, which the task retries.
        pool_timeout=10,
        connect_args=dict(CONNECT_ARGS),  # the same as the read-only commands' (store.plain)
        **kw,
    )
    return engine


def engine_for(settings: Settings, **kw: Any) -> Engine:
    if settings.database_url is None:
        raise RuntimeError("database_url is not resolved; start the embedded services first")
    return make_engine(settings.database_url, pool_size=settings.db_pool, **kw)


def session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


def dispose_after_fork(engine: Engine) -> None:
    """Pooled connections must not cross a fork (prefork pool): drop them in the child."""

    @event.listens_for(engine, "connect")
    def _remember_pid(dbapi_conn: Any, record: Any) -> None:  # pragma: no cover - trivial
        record.info["pid"] = os.getpid()

    @event.listens_for(engine, "checkout")
    def _check_pid(dbapi_conn: Any, record: Any, proxy: Any) -> None:
        if record.info.get("pid") != os.getpid():
            record.dbapi_connection = proxy.dbapi_connection = None
            raise sa_exc.DisconnectionError("connection belongs to another process")


def schema_revision(engine: Engine) -> str | None:
    """The revision the database is at (None: never migrated): one query, no Alembic."""
    with engine.connect() as conn:
        return schema.revision(conn)
