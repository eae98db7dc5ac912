"""The share path's shortcuts, against real servers: raw psycopg on the pool, one Redis client
per kombu pool, no cookie jar in the Linq client."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import httpx
import psycopg
import pytest
import respx
from kombu import Connection
from sqlalchemy import Engine, text

from worker import hotdb, store
from worker.config import Settings
from worker.db import make_engine, session_factory
from worker.errors import StoreUnavailable
from worker.linq import http_client
from worker.redis_transport import Channel

from ..conftest import Servers


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    # One connection: every checkout below gets the same one back, so leaks show.
    eng = make_engine(database_url, pool_size=1, max_overflow=0)
    yield eng
    eng.dispose()


def _backend_pid(engine: Engine) -> int:
    with hotdb.connect(engine) as conn:
        pid = conn.execute(text("SELECT pg_backend_pid()")).scalar_one_or_none()
    assert isinstance(pid, int)
    return pid


def test_binds_compile_to_psycopg_format_once() -> None:
    stmt = text("SELECT CAST(:a AS int) + 1 AS x, '100%' AS pct, 1::int AS y WHERE :b IS NULL")
    sql = hotdb.to_driver_sql(stmt)
    assert sql == "SELECT CAST(%(a)s AS int) + 1 AS x, '100%%' AS pct, 1::int AS y WHERE %(b)s IS NULL"
    assert hotdb.to_driver_sql(text(stmt.text)) is sql


def test_rows_read_by_name_like_sqlalchemy_rows(engine: Engine) -> None:
    with hotdb.connect(engine) as conn:
        stmt = text("SELECT CAST(:a AS int) AS a, CAST(:b AS text) AS b")
        row = conn.execute(stmt, {"a": 7, "b": "x"}).one_or_none()
        assert (row.a, row.b) == (7, "x")
        assert conn.execute(text("SELECT 1 WHERE false")).first() is None
        assert conn.execute(text("CREATE TEMP TABLE t (x int)")).first() is None
        assert conn.execute(text("INSERT INTO t VALUES (1), (2)")).rowcount == 2
        with pytest.raises(Exception, match="at most one row"):
            conn.execute(text("SELECT x FROM t")).one_or_none()


def test_statements_commit_alone_and_the_connection_returns_transactional(engine: Engine) -> None:
    chat = uuid.uuid4()
    with hotdb.connect(engine) as conn:
        conn.execute(text("INSERT INTO lines (phone_number) VALUES ('+12025550100') ON CONFLICT DO NOTHING"))
    sessions = session_factory(engine)
    # The same pooled connection now runs a Session transaction: a rollback must undo it.
    session = sessions()
    session.execute(
        text("INSERT INTO chats (id, line_phone) VALUES (:id, '+12025550100')"),
        {"id": chat},
    )
    session.rollback()
    session.close()
    with hotdb.connect(engine) as conn:
        assert conn.execute(text("SELECT count(*) FROM lines")).scalar_one_or_none() == 1
        gone = conn.execute(text("SELECT 1 FROM chats WHERE id = :id"), {"id": chat}).first()
    assert gone is None


def test_a_killed_connection_is_store_unavailable_and_the_next_call_reconnects(
    engine: Engine, servers: Servers
) -> None:
    pid = _backend_pid(engine)
    with psycopg.connect(servers.admin_dsn, autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
    with pytest.raises(StoreUnavailable, match="connection lost"), hotdb.connect(engine) as conn:
        conn.execute(text("SELECT 1"))
    assert _backend_pid(engine) != pid


def test_a_statement_timeout_keeps_the_healthy_connection(engine: Engine) -> None:
    pid = _backend_pid(engine)
    with hotdb.connect(engine) as conn:
        conn.execute(text("SET statement_timeout = 50"))
    with pytest.raises(StoreUnavailable, match="QueryCanceled"), hotdb.connect(engine) as conn:
        conn.execute(text("SELECT pg_sleep(2)"))
    with hotdb.connect(engine) as conn:
        conn.execute(text("SET statement_timeout = 15000"))
    assert _backend_pid(engine) == pid


def test_an_unreachable_database_is_store_unavailable() -> None:
    eng = make_engine("postgresql+psycopg://nobody@127.0.0.1:1/none", pool_size=1)
    try:
        sessions = session_factory(eng)
        with pytest.raises(StoreUnavailable, match="database unavailable"), store.autocommit(sessions):
            pass
    finally:
        eng.dispose()


def test_the_transport_reuses_one_sync_client_per_pool(redis_url: str) -> None:
    with Connection(redis_url, transport="worker.redis_transport:Transport") as conn:
        channel = conn.default_channel
        assert isinstance(channel, Channel)
        first = channel._create_client()
        assert channel._create_client() is first
        assert first.ping()
        # A reconnect replaces the pool: the cached client must not outlive it.
        channel._pool = None
        second = channel._create_client()
        assert second is not first
        assert second.connection_pool is channel.pool
        assert channel._create_client(asynchronous=True) is not second


@respx.mock
def test_the_linq_client_neither_keeps_nor_replays_cookies(settings: Settings) -> None:
    route = respx.get("https://linq.test/x").mock(
        return_value=httpx.Response(200, headers={"set-cookie": "session=abc; Path=/"})
    )
    with http_client(settings) as client:
        client.get("https://linq.test/x")
        client.get("https://linq.test/x")
        client.cookies = {"forced": "1"}
        client.get("https://linq.test/x")
        assert len(client.cookies) == 0
    assert [call.request.headers.get("cookie") for call in route.calls] == [None, None, None]
