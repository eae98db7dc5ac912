"""The share path's shortcuts, against real servers: raw psycopg on the pool, one Redis client
per kombu pool, no cookie jar in the Linq client."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any, cast

import httpx
import psycopg
import pytest
import redis
import respx
from kombu.connection import Connection
from kombu.entity import Queue
from kombu.messaging import Consumer, Producer
from sqlalchemy import Engine

from tests.support.servers import Servers
from worker.config import Settings
from worker.errors import StoreUnavailable
from worker.linq import http_client
from worker.queue.redis_transport import Channel
from worker.store import hot
from worker.store.engine import make_engine, session_factory
from worker.store.session import autocommit
from worker.store.sql import Sql


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    # One connection: every checkout below gets the same one back, so leaks show.
    eng = make_engine(database_url, pool_size=1, max_overflow=0)
    yield eng
    eng.dispose()


def _backend_pid(engine: Engine) -> int:
    with hot.connect(engine) as conn:
        pid = conn.execute(Sql("SELECT pg_backend_pid()")).scalar_one_or_none()
    assert isinstance(pid, int)
    return pid


def test_rows_read_by_name_like_sqlalchemy_rows(engine: Engine) -> None:
    with hot.connect(engine) as conn:
        stmt = Sql("SELECT CAST(:a AS int) AS a, CAST(:b AS text) AS b")
        row = conn.execute(stmt, {"a": 7, "b": "x"}).one_or_none()
        assert (row.a, row.b) == (7, "x")
        assert conn.execute(Sql("SELECT 1 WHERE false")).first() is None
        assert conn.execute(Sql("CREATE TEMP TABLE t (x int)")).first() is None
        assert conn.execute(Sql("INSERT INTO t VALUES (1), (2)")).rowcount == 2
        with pytest.raises(Exception, match="at most one row"):
            conn.execute(Sql("SELECT x FROM t")).one_or_none()


def test_statements_commit_alone_and_the_connection_returns_transactional(engine: Engine) -> None:
    chat = uuid.uuid4()
    with hot.connect(engine) as conn:
        conn.execute(Sql("INSERT INTO lines (phone_number) VALUES ('+12025550100') ON CONFLICT DO NOTHING"))
    sessions = session_factory(engine)
    # The same pooled connection now runs a Session transaction: a rollback must undo it.
    session = sessions()
    session.execute(
        Sql("INSERT INTO chats (id, line_phone) VALUES (:id, '+12025550100')"),
        {"id": chat},
    )
    session.rollback()
    session.close()
    with hot.connect(engine) as conn:
        assert conn.execute(Sql("SELECT count(*) FROM lines")).scalar_one_or_none() == 1
        gone = conn.execute(Sql("SELECT 1 FROM chats WHERE id = :id"), {"id": chat}).first()
    assert gone is None


def test_a_killed_connection_is_store_unavailable_and_the_next_call_reconnects(
    engine: Engine, servers: Servers
) -> None:
    pid = _backend_pid(engine)
    with psycopg.connect(servers.admin_dsn, autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
    with pytest.raises(StoreUnavailable, match="connection lost"), hot.connect(engine) as conn:
        conn.execute(Sql("SELECT 1"))
    assert _backend_pid(engine) != pid


def test_a_statement_timeout_keeps_the_healthy_connection(engine: Engine) -> None:
    pid = _backend_pid(engine)
    with hot.connect(engine) as conn:
        conn.execute(Sql("SET statement_timeout = 50"))
    with pytest.raises(StoreUnavailable, match="QueryCanceled"), hot.connect(engine) as conn:
        conn.execute(Sql("SELECT pg_sleep(2)"))
    with hot.connect(engine) as conn:
        conn.execute(Sql("SET statement_timeout = 15000"))
    assert _backend_pid(engine) == pid


def test_an_unreachable_database_is_store_unavailable() -> None:
    eng = make_engine("postgresql+psycopg://nobody@127.0.0.1:1/none", pool_size=1)
    try:
        sessions = session_factory(eng)
        with pytest.raises(StoreUnavailable, match="database unavailable"), autocommit(sessions):
            pass
    finally:
        eng.dispose()


def test_the_transport_reuses_one_sync_client_per_pool(redis_url: str) -> None:
    with Connection(redis_url, transport="worker.queue.redis_transport:Transport") as conn:
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


def _consume_once(redis_url: str, queue: Queue, prefetch: int) -> tuple[list[Any], Connection]:
    conn = Connection(redis_url, transport="worker.queue.redis_transport:Transport")
    got: list[Any] = []
    consumer = Consumer(conn.default_channel, [queue], callbacks=[lambda body, msg: got.append(msg)])
    consumer.qos(prefetch_count=prefetch)
    consumer.consume()
    conn.drain_events(timeout=5)
    return got, conn


def _unacked(raw: redis.Redis, channel: Any, queue: Queue) -> dict[str, list[Any]]:
    """This queue's entries in the unacked hash (other tests share the server)."""
    entries = {cast(bytes, k).decode(): json.loads(v) for k, v in raw.hgetall(channel.unacked_key).items()}
    return {tag: e for tag, e in entries.items() if e[2] == queue.name}


def _indexed(raw: redis.Redis, channel: Any, tags: list[str]) -> list[str]:
    return [t for t in tags if raw.zscore(channel.unacked_index_key, t) is not None]


def _publish(redis_url: str, queue: Queue, *payloads: dict[str, int]) -> None:
    with Connection(redis_url, transport="worker.queue.redis_transport:Transport") as pub:
        producer = Producer(pub.default_channel)
        for payload in payloads:
            producer.publish(payload, routing_key=queue.name, declare=[queue])


def test_one_wake_up_takes_the_waiting_messages_within_the_prefetch_window(redis_url: str) -> None:
    queue = Queue(f"take-more-{uuid.uuid4().hex[:8]}")
    _publish(redis_url, queue, *({"i": i} for i in range(12)))
    raw = redis.Redis.from_url(redis_url)
    got, conn = _consume_once(redis_url, queue, prefetch=5)
    try:
        channel = conn.default_channel
        # One BRPOP and one script call: the prefetch window, in publish order.
        assert [m.payload["i"] for m in got] == [0, 1, 2, 3, 4]
        assert raw.llen(queue.name) == 7
        tags = sorted(m.delivery_tag for m in got)
        unacked = _unacked(raw, channel, queue)
        assert sorted(unacked) == tags
        assert _indexed(raw, channel, tags) == tags
        # Each entry is what kombu's own QoS.append writes: [message, exchange, routing key].
        for m in got:
            entry = unacked[m.delivery_tag]
            assert entry[0]["properties"]["delivery_tag"] == m.delivery_tag
            assert entry[1:] == [m.delivery_info["exchange"], m.delivery_info["routing_key"]]
        got[0].ack()
        got[1].ack()
        assert len(_unacked(raw, channel, queue)) == 3
        assert _indexed(raw, channel, tags[:]) == sorted(m.delivery_tag for m in got[2:])
        # A worker that stops without acking puts the rest back, intact.
        channel.qos.restore_unacked()
        assert _unacked(raw, channel, queue) == {}
        assert _indexed(raw, channel, tags) == []
        assert raw.llen(queue.name) == 10
    finally:
        conn.release()
    again, conn = _consume_once(redis_url, queue, prefetch=20)
    try:
        assert sorted(m.payload["i"] for m in again) == list(range(2, 12))
        assert sum(bool(m.delivery_info.get("redelivered")) for m in again) == 3
        for m in again:
            m.ack()
        assert _unacked(raw, conn.default_channel, queue) == {}
    finally:
        conn.release()
        raw.close()


def test_an_unreadable_message_in_a_batch_is_dropped_and_forgotten(
    redis_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    queue = Queue(f"take-more-{uuid.uuid4().hex[:8]}")
    _publish(redis_url, queue, {"i": 0})
    raw = redis.Redis.from_url(redis_url)
    # Queued behind the good one (LPUSH, consumed from the right): garbage, then a JSON
    # envelope kombu cannot turn into a message (the script records it), then a good one.
    raw.lpush(queue.name, b"\xff not json")
    tag = f"bad-{uuid.uuid4()}"
    info = {"exchange": "", "routing_key": queue.name}
    envelope = {
        "body": "%%% not base64",
        "properties": {"delivery_tag": tag, "delivery_info": info, "body_encoding": "base64"},
    }
    raw.lpush(queue.name, json.dumps(envelope))
    _publish(redis_url, queue, {"i": 1})
    with caplog.at_level("ERROR", logger="cardshare.broker"):
        got, conn = _consume_once(redis_url, queue, prefetch=10)
    try:
        channel = conn.default_channel
        assert [m.payload["i"] for m in got] == [0, 1]
        assert caplog.text.count("broker.malformed_message_dropped") == 2
        assert raw.llen(queue.name) == 0
        # The unreadable envelope was recorded by the script, then forgotten: nothing to restore.
        assert sorted(_unacked(raw, channel, queue)) == sorted(m.delivery_tag for m in got)
        assert _indexed(raw, channel, [tag]) == []
        for m in got:
            m.ack()
        assert _unacked(raw, channel, queue) == {}
    finally:
        conn.release()
        raw.close()


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
