"""Every statement of the store, as store.plain and store.hot send it, is what SQLAlchemy's
psycopg dialect would send for the same `text()` (worker/store/sql.py)."""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Iterator

import pytest
from sqlalchemy import text
from sqlalchemy.dialects.postgresql import psycopg as pg_psycopg
from sqlalchemy.sql.elements import TextClause

import worker.store
from worker.store.sql import Sql, to_driver

DIALECT = pg_psycopg.dialect()


def sqlalchemy_sends(statement: str) -> str:
    return str(text(statement).compile(dialect=DIALECT))


def statements() -> Iterator[tuple[str, object]]:
    """Every module-level statement of the store (all SQL lives there: test_layout), once."""
    seen: set[int] = set()
    for info in sorted(pkgutil.iter_modules(worker.store.__path__, "worker.store."), key=lambda i: i.name):
        module = importlib.import_module(info.name)
        for name, value in vars(module).items():
            if isinstance(value, Sql | TextClause) and id(value) not in seen:
                seen.add(id(value))
                yield f"{info.name}.{name}", value


ALL = list(statements())


def test_the_store_has_statements_to_check() -> None:
    assert len(ALL) > 80


@pytest.mark.parametrize(("name", "statement"), ALL, ids=[n for n, _ in ALL])
def test_each_statement_is_sent_as_sqlalchemy_would(name: str, statement: object) -> None:
    # Module-level statements are Sql values, so the read-only commands need no SQLAlchemy.
    assert isinstance(statement, Sql), f"{name} is a {type(statement).__name__}: make it an Sql"
    assert statement.driver == sqlalchemy_sends(statement.text)


@pytest.mark.parametrize(
    "statement",
    [
        "SELECT :a",
        "SELECT CAST(:a AS int) + 1, '100%' AS pct, 1::int WHERE :b IS NULL",
        "SELECT :a::text, x FROM t WHERE y = ANY(:ys) AND z LIKE '%:%'",
        r"SELECT '\:literal', :x_1, :_y, (:z)",
        "SELECT ':not a bind', 'a:b', :a, :a",
        "UPDATE t SET j = j || :patch WHERE k = :k RETURNING j->>'v' AS v",
    ],
)
def test_binds_casts_escapes_and_percents(statement: str) -> None:
    assert to_driver(statement) == sqlalchemy_sends(statement)


def test_a_session_and_a_connection_run_it_as_the_text_it_stands_for() -> None:
    stmt = Sql("SELECT CAST(:a AS int) AS a")
    clause = stmt.__clause_element__()
    assert isinstance(clause, TextClause)
    assert clause.text == stmt.text
    assert stmt.__clause_element__() is clause  # made once
