"""Transactions: one short one per unit of work, or autocommit for single statements.

Connection-level failures surface as StoreUnavailable, which callers retry or report.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager

from sqlalchemy import Connection
from sqlalchemy import exc as sa_exc
from sqlalchemy.orm import Session, sessionmaker

from worker.errors import StoreUnavailable
from worker.store import hot, locks
from worker.store.hot import HotConnection
from worker.store.sql import Sql

# The share path's functions run one statement each, atomic on its own, so they accept a
# connection in autocommit mode as well as a Session (saves BEGIN/COMMIT round trips).
Db = Session | Connection | HotConnection

SET_READ_ONLY_SQL = Sql("SET TRANSACTION READ ONLY")
PING_SQL = Sql("SELECT 1")


@contextmanager
def autocommit(sessions: sessionmaker[Session]) -> Iterator[HotConnection]:
    """A pooled connection in autocommit mode: each statement commits by itself (raw psycopg,
    see `hot`)."""
    with hot.connect(sessions.kw["bind"]) as conn:
        yield conn


@contextmanager
def transaction(sessions: sessionmaker[Session]) -> Iterator[Session]:
    """One short transaction; connection-level failures surface as StoreUnavailable."""
    try:
        with sessions.begin() as session:
            yield session
    except (sa_exc.OperationalError, sa_exc.InterfaceError) as exc:
        raise StoreUnavailable(f"database unavailable: {type(exc.orig or exc).__name__}") from exc
    except sa_exc.DBAPIError as exc:
        if exc.connection_invalidated:
            raise StoreUnavailable("database connection lost") from exc
        raise


@contextmanager
def read_only(sessions: sessionmaker[Session]) -> Iterator[Session]:
    """A transaction that cannot write: status readers must never change what they report."""
    with transaction(sessions) as session:
        session.execute(SET_READ_ONLY_SQL)
        yield session


def ping(sessions: sessionmaker[Session]) -> None:
    """One round trip (readiness probes); StoreUnavailable when PostgreSQL does not answer."""
    with transaction(sessions) as session:
        session.execute(PING_SQL)


class Sessions:
    """SQLAlchemy's side of a `store.sql.Database` (the worker's and beat's passes): a session
    per transaction from the pool, locks on a connection of the engine's own."""

    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self.sessions = sessions

    def transaction(self) -> AbstractContextManager[Session]:
        return transaction(self.sessions)

    def advisory_lock(self, key: int) -> AbstractContextManager[bool]:
        return locks.advisory_lock(self.sessions.kw["bind"], key)
