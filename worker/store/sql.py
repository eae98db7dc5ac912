"""A statement's text, usable with or without SQLAlchemy.

`cardshare status` and `history` read through psycopg alone (`store.plain`): importing
SQLAlchemy and its ORM costs ~0.45 s of a command's start on the 2-core box (`python -X
importtime`; bench/README.md §6), more than everything else before their first query. So the
statements they run are `Sql` values, not `sqlalchemy.text()`: a `Session` or `Connection`
executes one as the `text()` it stands for (made on first use), `store.plain` and `store.hot`
send `driver`, the text SQLAlchemy's psycopg dialect would send (a test compares the two for
every statement in the store).
"""

from __future__ import annotations

import re
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from sqlalchemy import Connection, Result
    from sqlalchemy.sql.elements import TextClause

    # To the type checker an Sql is the `text()` SQLAlchemy executes it as (`__clause_element__`
    # below), so Session.execute and Connection.execute take it; at run time it is a plain object.
    _Statement = TextClause
else:
    _Statement = object

# SQLAlchemy's own patterns (sqlalchemy.sql.compiler BIND_PARAMS, BIND_PARAMS_ESC): a `:name`
# not preceded by `:`, a word character or a backslash, nor followed by `:` or a word character
# (so `::int` casts stay), and `\:name` for a literal colon.
_BIND = re.compile(r"(?<![:\w\x5c]):(\w+)(?![:\w])")
_BIND_ESCAPED = re.compile(r"\x5c(:\w*)(?![:\w])")


def to_driver(text: str) -> str:
    """`:name` binds as psycopg's `%(name)s`, literal `%` doubled, `\\:` unescaped: what
    SQLAlchemy's psycopg dialect sends for `text(text)`."""
    doubled = text.replace("%", "%%")
    return _BIND_ESCAPED.sub(lambda m: m.group(1), _BIND.sub(r"%(\1)s", doubled))


class Sql(_Statement):
    """One statement of the store: `:name` binds, as in `sqlalchemy.text()`."""

    __slots__ = ("_clause", "driver", "text")

    def __init__(self, text: str) -> None:
        self.text = text
        self.driver = to_driver(text)
        self._clause: TextClause | None = None

    def __repr__(self) -> str:
        return f"Sql({' '.join(self.text.split())[:60]!r})"

    # What SQLAlchemy asks of an object it is given to execute: a Session coerces it through
    # __clause_element__, a Connection calls _execute_on_connection.
    def __clause_element__(self) -> TextClause:
        clause = self._clause
        if clause is None:
            from sqlalchemy import text

            clause = self._clause = text(self.text)
        return clause

    def _execute_on_connection(  # type: ignore[override]
        self, connection: Connection, distilled_params: Any, execution_options: Any
    ) -> Result[Any]:
        return self.__clause_element__()._execute_on_connection(
            connection, distilled_params, execution_options
        )


class Reader(Protocol):
    """What a read-only store function needs: a SQLAlchemy `Session` or a `store.plain`
    connection. The result offers `all`, `first`, `one`, `one_or_none`, `scalar`, `scalars` and
    iteration, rows by attribute and by position."""

    def execute(self, statement: Any, params: Any = ..., /) -> Any: ...


class Database(Protocol):
    """Where a pass that needs no SQLAlchemy of its own runs (`sharing.recover`,
    `ingest.pending`): `store.session.Sessions` in the worker and beat (SQLAlchemy's pool),
    `store.plain.PlainDatabase` in a `cardshare` command (one psycopg connection)."""

    def transaction(self) -> AbstractContextManager[Reader]:
        """One short read-write transaction; connection failures surface as StoreUnavailable."""
        ...

    def advisory_lock(self, key: int) -> AbstractContextManager[bool]:
        """A session-level advisory lock, tried once: True when this process holds it."""
        ...
