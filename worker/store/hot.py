"""The share path's database access: psycopg directly, in autocommit, on SQLAlchemy's pool.

Every share runs three single-statement writes. Through a SQLAlchemy Connection each spent more
CPU setting up execution contexts, processing parameters and wrapping results than psycopg
spent running it (py-spy: ~12 % of a worker's CPU). Here a statement (`store.sql.Sql`) runs
in psycopg's parameter format on the pooled driver connection. Pooling, connect
arguments and the after-fork check stay SQLAlchemy's; psycopg prepares the statements itself
after a few runs.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg.rows import namedtuple_row
from sqlalchemy import Engine
from sqlalchemy import exc as sa_exc

from worker.errors import StoreUnavailable
from worker.store.sql import Sql


class HotResult:
    """The few Result accessors the store's single-statement functions use."""

    def __init__(self, cursor: psycopg.Cursor[Any]) -> None:
        self._cursor = cursor

    @property
    def rowcount(self) -> int:
        return self._cursor.rowcount

    def _rows(self) -> list[Any]:
        return self._cursor.fetchall() if self._cursor.description is not None else []

    def one_or_none(self) -> Any:
        rows = self._rows()
        if len(rows) > 1:
            raise sa_exc.MultipleResultsFound("expected at most one row")
        return rows[0] if rows else None

    def first(self) -> Any:
        rows = self._rows()
        return rows[0] if rows else None

    def scalar_one_or_none(self) -> Any:
        row = self.one_or_none()
        return None if row is None else row[0]


class HotConnection:
    """Runs store statements on one pooled psycopg connection in autocommit mode."""

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self._conn = conn

    def execute(self, statement: Sql, params: Mapping[str, Any] | None = None) -> HotResult:
        cursor = self._conn.cursor(row_factory=namedtuple_row)
        cursor.execute(statement.driver, params)
        return HotResult(cursor)


@contextmanager
def connect(engine: Engine) -> Iterator[HotConnection]:
    """A pooled connection in autocommit for the duration; StoreUnavailable when the database is
    unreachable. A connection found broken is thrown away, and so is the rest of the pool: after
    a restart of PostgreSQL every idle connection is dead, and each would otherwise fail a task."""
    try:
        # The pool raises the driver's own errors here (only a Connection wraps them).
        pooled = engine.raw_connection()
    except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
        raise StoreUnavailable(f"database unavailable: {type(exc).__name__}") from exc
    except (sa_exc.OperationalError, sa_exc.InterfaceError, sa_exc.TimeoutError) as exc:
        raise StoreUnavailable(f"database unavailable: {type(exc).__name__}") from exc
    conn: psycopg.Connection[Any] = pooled.driver_connection  # type: ignore[assignment]
    try:
        conn.autocommit = True
        yield HotConnection(conn)
    except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
        # Timeouts (statement, lock) are OperationalErrors on a healthy connection: keep it.
        if conn.closed or conn.broken:
            pooled.invalidate(exc)
            engine.dispose(close=False)
            raise StoreUnavailable("database connection lost") from exc
        raise StoreUnavailable(f"database unavailable: {type(exc).__name__}") from exc
    finally:
        if pooled.is_valid:
            try:
                # The same pool serves transactions: hand the connection back as it came.
                conn.autocommit = False
            except psycopg.Error as exc:
                pooled.invalidate(exc)
        pooled.close()
