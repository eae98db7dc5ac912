"""cardshare's Redis transport: kept for rediss:// (TLS) as for redis://, and pinned to the kombu
whose private hooks it overrides. If kombu changes one of them, these tests fail and say which:
re-read worker/queue/redis_transport.py against the new kombu before moving the pin.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import ssl
import tomllib
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest
from kombu.connection import Connection
from kombu.transport import redis as kombu_redis
from kombu.transport import virtual
from packaging.requirements import Requirement

from worker.config import Settings
from worker.queue import redis_transport
from worker.queue.app import TRANSPORT, app, celery_config, configure

ROOT = Path(__file__).resolve().parents[3]

# kombu code our transport copies or relies on, as it reads in the kombu the pin allows. A change
# is not necessarily a break, but it must be looked at: the fingerprint says it happened.
FINGERPRINTS: dict[str, tuple[Any, str]] = {
    # `Channel._brpop_read` is replaced by ours (it adds `_take_more` and the malformed-message drop).
    "Channel._brpop_read": (kombu_redis.Channel._brpop_read, "c42518699709f2df"),
    # take_more.lua writes the unacked hash and index exactly as this does.
    "QoS.append": (kombu_redis.QoS.append, "35c655f6ecc62fe6"),
    # Cached per pool by ours.
    "Channel._create_client": (kombu_redis.Channel._create_client, "dae92bc4075dafb9"),
    "QoS._remove_from_indices": (kombu_redis.QoS._remove_from_indices, "980a109d54ad9136"),
}
# Signatures of everything our transport calls or overrides.
SIGNATURES: dict[str, tuple[Any, str]] = {
    "kombu Channel._brpop_read": (kombu_redis.Channel._brpop_read, "(self, **options)"),
    "kombu Channel._create_client": (kombu_redis.Channel._create_client, "(self, asynchronous=False)"),
    "kombu QoS.append": (kombu_redis.QoS.append, "(self, message, delivery_tag)"),
    "virtual QoS.append": (virtual.QoS.append, "(self, message, delivery_tag)"),
    "kombu QoS._remove_from_indices": (
        kombu_redis.QoS._remove_from_indices, "(self, delivery_tag, pipe=None)"
    ),
    "kombu QoS.can_consume_max_estimate": (kombu_redis.QoS.can_consume_max_estimate, "(self)"),
    "kombu Channel.conn_or_acquire": (kombu_redis.Channel.conn_or_acquire, "(self, client=None)"),
    "kombu Channel._flush_brpop_reauth": (kombu_redis.Channel._flush_brpop_reauth, "(self)"),
    "virtual Transport._deliver": (virtual.Transport._deliver, "(self, message, queue)"),
}  # fmt: skip
# Attributes of a live channel our transport reads.
CHANNEL_ATTRIBUTES = [
    "client",
    "connection_errors",
    "sep",
    "_queue_cycle",
    "_in_poll",
    "qos",
    "global_keyprefix",
    "unacked_key",
    "unacked_index_key",
    "pool",
]


def test_kombu_is_pinned_to_the_range_the_transport_was_written_for() -> None:
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    (kombu,) = [Requirement(d) for d in deps if Requirement(d).name == "kombu"]
    installed = metadata.version("kombu")
    assert installed in kombu.specifier, f"kombu {installed} is outside the pin {kombu.specifier}"
    # A minor release may reshape private hooks: the pin stops at the next one.
    assert any(spec.operator == "<" for spec in kombu.specifier), kombu


@pytest.mark.parametrize("name", sorted(FINGERPRINTS))
def test_the_kombu_code_the_transport_overrides_has_not_changed(name: str) -> None:
    func, expected = FINGERPRINTS[name]
    got = hashlib.sha256(inspect.getsource(func).encode()).hexdigest()[:16]
    assert got == expected, (
        f"kombu {metadata.version('kombu')} changed {name}: compare it with "
        "worker/queue/redis_transport.py (and take_more.lua), then update the fingerprint"
    )


@pytest.mark.parametrize("name", sorted(SIGNATURES))
def test_the_hooks_the_transport_calls_keep_their_signatures(name: str) -> None:
    func, expected = SIGNATURES[name]
    assert str(inspect.signature(func)) == expected, (
        f"{name} changed shape in kombu {metadata.version('kombu')}"
    )


def test_a_live_channel_has_every_attribute_the_transport_reads(redis_url: str) -> None:
    with Connection(redis_url, transport=TRANSPORT) as conn:
        channel = conn.channel()
        try:
            assert isinstance(channel, redis_transport.Channel)
            missing = [a for a in CHANNEL_ATTRIBUTES if not hasattr(channel, a)]
            assert missing == [], f"kombu {metadata.version('kombu')} channels lack {missing}"
            assert isinstance(channel.qos, redis_transport.QoS)
        finally:
            channel.close()


def test_the_unacked_entry_take_more_writes_is_kombus(redis_url: str) -> None:
    """take_more.lua records a message in the unacked hash as kombu's QoS.append does:
    [payload, exchange, routing_key], indexed by time. kombu restores what it finds there."""
    queue = "cardshare.transport-test"
    with Connection(redis_url, transport=TRANSPORT) as conn:
        channel = conn.channel()
        try:
            client = channel.client
            info = {"exchange": "", "routing_key": queue}
            body = {
                "body": "e30=",
                "headers": {},
                "properties": {"delivery_tag": "t-1", "delivery_info": info},
            }
            client.lpush(queue, json.dumps(body))
            script = client.register_script(redis_transport.TAKE_MORE)
            items = script(keys=[queue, channel.unacked_key, channel.unacked_index_key], args=[5])
            assert [i.decode() if isinstance(i, bytes) else i for i in items[1::2]] == ["t-1"]
            payload, exchange, routing_key = json.loads(client.hget(channel.unacked_key, "t-1"))
            assert payload == body
            assert (exchange, routing_key) == ("", queue)
            assert client.zscore(channel.unacked_index_key, "t-1") is not None
            # kombu's own restore reads it back into the queue.
            channel.qos.restore_by_tag("t-1")
            restored = json.loads(client.rpop(queue))
            assert restored["body"] == body["body"]
            assert restored["properties"]["delivery_tag"] == "t-1"
            assert restored["headers"]["redelivered"] is True
        finally:
            client.delete(queue, channel.unacked_key, channel.unacked_index_key)
            channel.close()


@pytest.mark.parametrize(
    ("url", "reqs"),
    [
        ("rediss://:pw@redis.example:6380/0", ssl.CERT_REQUIRED),
        ("rediss://:pw@redis.example:6380/0?ssl_cert_reqs=required&ssl_ca_certs=/ca.pem", ssl.CERT_REQUIRED),
        ("rediss://:pw@redis.example:6380/0?ssl_cert_reqs=none", ssl.CERT_NONE),
    ],
)
def test_rediss_keeps_our_transport_and_verifies_the_certificate(url: str, reqs: ssl.VerifyMode) -> None:
    conf = celery_config(Settings(redis_url=url))
    assert conf["broker_transport"] == TRANSPORT
    assert conf["broker_use_ssl"]["ssl_cert_reqs"] == reqs
    try:
        configure(Settings(redis_url=url))
        conn = app.connection_for_write()
        assert isinstance(conn.transport, redis_transport.Transport)  # not kombu's stock one
        assert conn.ssl["ssl_cert_reqs"] == reqs  # TLS stays on
        if "ssl_ca_certs" in url:
            assert conn.ssl["ssl_ca_certs"] == "/ca.pem"
        assert (conn.hostname, conn.port) == ("redis.example", 6380)
    finally:
        configure(Settings())


def test_plain_redis_has_no_tls() -> None:
    conf = celery_config(Settings(redis_url="redis://127.0.0.1:6379/0"))
    assert conf["broker_transport"] == TRANSPORT
    assert conf["broker_use_ssl"] is None
