"""Transactions on a psycopg connection of their own, without SQLAlchemy.

For the commands that run a little SQL and exit (`cardshare status`, `history`, `check`,
`share`, `recover`): one connection, the same connect options as the engine's (`store.engine`),
one transaction per block (READ ONLY for the readers). The
rows are psycopg's named tuples (by attribute and by position, as SQLAlchemy's rows from
`text()`), the values psycopg's own, as SQLAlchemy hands them on from a `text()` statement.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg.rows import namedtuple_row

from worker.errors import StoreUnavailable
from worker.store.locks import TRY_LOCK_SQL, UNLOCK_SQL
from worker.store.sql import Sql

# A statement that runs longer than this is a bug or a lock pile-up; fail it rather than hold a
# worker thread (and its lease) hostage.
STATEMENT_TIMEOUT_MS = 15_000
CONNECT_ARGS: dict[str, Any] = {
    "connect_timeout": 5,
    "options": f"-c statement_timeout={STATEMENT_TIMEOUT_MS} -c lock_timeout=5000",
    "application_name": "cardshare",
}
SET_READ_ONLY = Sql("SET TRANSACTION READ ONLY")


def conninfo(url: str) -> str:
    """libpq's form of a cardshare DATABASE_URL (`postgresql+psycopg://` is SQLAlchemy's)."""
    return "postgresql://" + url.split("://", 1)[1]


class TooManyRows(RuntimeError):
    """`one_or_none` or `one` found more than one row: a bug in the statement."""


class Rows:
    """The Result accessors the store's read functions use."""

    def __init__(self, rows: list[Any], rowcount: int = -1) -> None:
        self._rows = rows
        self.rowcount = rowcount  # rows an UPDATE or DELETE changed, as on SQLAlchemy's Result

    def __iter__(self) -> Iterator[Any]:
        return iter(self._rows)

    def all(self) -> list[Any]:
        return list(self._rows)

    def first(self) -> Any:
        return self._rows[0] if self._rows else None

    def one_or_none(self) -> Any:
        if len(self._rows) > 1:
            raise TooManyRows(f"expected at most one row, got {len(self._rows)}")
        return self.first()

    def one(self) -> Any:
        if len(self._rows) != 1:
            raise TooManyRows(f"expected one row, got {len(self._rows)}")
        return self._rows[0]

    def scalar(self) -> Any:
        row = self.first()
        return None if row is None else row[0]

    def scalar_one_or_none(self) -> Any:
        row = self.one_or_none()
        return None if row is None else row[0]

    def scalars(self) -> Rows:
        return Rows([r[0] for r in self._rows])


class PlainConnection:
    """Runs `Sql` statements on one psycopg connection (a `store.sql.Reader`)."""

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self._conn = conn

    def execute(
        self, statement: Sql, params: Mapping[str, Any] | Sequence[Mapping[str, Any]] | None = None, /
    ) -> Rows:
        with self._conn.cursor(row_factory=namedtuple_row) as cur:
            if isinstance(params, Sequence):
                # A list of parameter sets runs the statement once per set, as with SQLAlchemy.
                cur.executemany(statement.driver, params)
                return Rows([], cur.rowcount)
            cur.execute(statement.driver, params)
            return Rows(cur.fetchall() if cur.description is not None else [], cur.rowcount)


def _unavailable(exc: psycopg.Error) -> StoreUnavailable:
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return StoreUnavailable(f"cannot reach PostgreSQL: {first}")


class PlainDatabase:
    """One connection, opened on first use, for a short-lived reading process."""

    def __init__(self, url: str) -> None:
        self._conninfo = conninfo(url)
        self._conn: psycopg.Connection[Any] | None = None

    def _connection(self) -> psycopg.Connection[Any]:
        if self._conn is None:
            try:
                self._conn = psycopg.connect(self._conninfo, **CONNECT_ARGS)
            except psycopg.OperationalError as exc:
                raise _unavailable(exc) from exc
        return self._conn

    @contextmanager
    def read_only(self) -> Iterator[PlainConnection]:
        """A transaction that cannot write; a lost connection surfaces as StoreUnavailable."""
        with self.transaction() as plain:
            plain.execute(SET_READ_ONLY)
            yield plain

    @contextmanager
    def transaction(self) -> Iterator[PlainConnection]:
        """One transaction, committed when the block ends (rolled back if it raises); a lost
        connection surfaces as StoreUnavailable (a `store.sql.Database`)."""
        conn = self._connection()
        try:
            with conn.transaction():
                yield PlainConnection(conn)
        except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
            if conn.closed or conn.broken:
                self.close()
                raise StoreUnavailable("database connection lost") from exc
            raise StoreUnavailable(f"database unavailable: {type(exc).__name__}") from exc

    @contextmanager
    def advisory_lock(self, key: int) -> Iterator[bool]:
        """A session-level advisory lock on this connection, tried once and released on exit
        (or when the process dies and its connection closes)."""
        with self.transaction() as plain:
            got = bool(plain.execute(TRY_LOCK_SQL, {"k": key}).scalar())
        try:
            yield got
        finally:
            if got and self._conn is not None:
                with self.transaction() as plain:
                    plain.execute(UNLOCK_SQL, {"k": key})

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
