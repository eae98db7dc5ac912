"""The sweep's templated messages (`queue.wire`) against kombu's own: what the Publisher writes
for a batch must decode to what kombu's producer writes for the same chat-day, apart from the
ids each message gets fresh, and keep the batch's order for workers."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import inspect
import json
import uuid
from importlib import metadata
from typing import Any

import pytest
import redis
from kombu.transport import redis as kombu_redis
from kombu.transport import virtual

from worker.config import Settings
from worker.keys import SHARE_QUEUE, SHARE_TASK
from worker.queue.app import app, configure
from worker.queue.publish import Publisher
from worker.queue.wire import ShareMessages, _format_string, fresh_ids

# kombu code whose output the template reproduces: the envelope (`prepare_message`), what the
# anonymous exchange adds (`_inplace_augment_message`), the key and the LPUSH (`_put`,
# `_q_for_pri`). If one changes, re-read worker/queue/wire.py against it; the decode test below
# says whether the messages still agree.
FINGERPRINTS: dict[str, tuple[Any, str]] = {
    "prepare_message": (virtual.Channel.prepare_message, "40e1ae6d7753b659"),
    "_inplace_augment_message": (virtual.Channel._inplace_augment_message, "3a07d99062fc5824"),
    "_put": (kombu_redis.Channel._put, "1c0cf9749576614c"),
    "_q_for_pri": (kombu_redis.Channel._q_for_pri, "f3997660680dd00f"),
}


@pytest.mark.parametrize("name", sorted(FINGERPRINTS))
def test_the_kombu_code_the_template_copies_has_not_changed(name: str) -> None:
    func, expected = FINGERPRINTS[name]
    got = hashlib.sha256(inspect.getsource(func).encode()).hexdigest()[:16]
    assert got == expected, (
        f"kombu {metadata.version('kombu')} changed {name}: compare it with worker/queue/wire.py, "
        "then update the fingerprint"
    )


def _normalized(raw: bytes) -> dict[str, Any]:
    """A wire message with its fresh ids replaced, and its body decoded."""
    message = json.loads(raw)
    task_id = message["headers"]["id"]
    assert message["headers"]["root_id"] == task_id
    assert message["properties"]["correlation_id"] == task_id
    uuid.UUID(task_id)
    uuid.UUID(message["properties"]["delivery_tag"])
    message["headers"]["id"] = message["headers"]["root_id"] = "ID"
    message["properties"]["correlation_id"] = "ID"
    message["properties"]["delivery_tag"] = "TAG"
    assert message["properties"]["body_encoding"] == "base64"
    message["body"] = json.loads(base64.b64decode(message["body"]))
    return message


def _drain(client: redis.Redis) -> list[bytes]:
    out: list[bytes] = []
    while (item := client.rpop(SHARE_QUEUE)) is not None:
        out.append(item)  # type: ignore[arg-type]
    return out


def test_a_templated_message_is_the_one_kombu_writes_for_the_same_chat(
    settings: Settings, redis_url: str
) -> None:
    configure(settings)
    chat, day = uuid.uuid4(), dt.date(2026, 12, 3)
    client = redis.Redis.from_url(redis_url)
    try:
        with Publisher(app) as publish:
            publish.one(chat, day)
            (by_kombu,) = _drain(client)
            assert publish([chat], day) == 1
            (by_template,) = _drain(client)
    finally:
        client.close()
    kombu_message, ours = _normalized(by_kombu), _normalized(by_template)
    assert ours == kombu_message
    assert ours["headers"]["task"] == SHARE_TASK
    assert ours["body"][0] == [str(chat), day.isoformat()]
    assert ours["headers"]["argsrepr"] == f"('{chat}', '{day.isoformat()}')"


def test_a_batch_reaches_workers_in_its_order_with_ids_of_its_own(settings: Settings, redis_url: str) -> None:
    configure(settings)
    chats = [uuid.uuid4() for _ in range(2500)]  # more than one LPUSH
    client = redis.Redis.from_url(redis_url)
    try:
        with Publisher(app) as publish:
            assert publish(chats, dt.date(2026, 12, 3)) == 2500
        messages = [json.loads(m) for m in _drain(client)]  # RPOP: the order workers take
    finally:
        client.close()
    assert [json.loads(base64.b64decode(m["body"]))[0][0] for m in messages] == [str(c) for c in chats]
    assert len({m["headers"]["id"] for m in messages}) == 2500
    assert len({m["properties"]["delivery_tag"] for m in messages}) == 2500


def test_a_template_without_a_placeholder_is_refused() -> None:
    with pytest.raises(ValueError, match="lost its chat placeholder"):
        _format_string('{"args": []}', {"cardshare-wire-chat-id": "chat"})


def test_a_message_carries_the_ids_it_is_given(settings: Settings) -> None:
    configure(settings)
    raw = ShareMessages(app, "origin@host").build(str(uuid.UUID(int=1)), "2026-12-03", "t-1", "tag-1")
    message = json.loads(raw)
    assert message["headers"]["id"] == message["properties"]["correlation_id"] == "t-1"
    assert message["properties"]["delivery_tag"] == "tag-1"
    assert message["headers"]["origin"] == "origin@host"


def test_fresh_ids_are_version_4_uuids_and_distinct() -> None:
    ids = fresh_ids(5000)
    parsed = [uuid.UUID(i) for i in ids]
    assert [str(p) for p in parsed] == ids  # canonical text, as str(uuid4()) writes it
    assert {p.version for p in parsed} == {4}
    assert {p.variant for p in parsed} == {uuid.RFC_4122}
    assert len(set(ids)) == 5000
    # Every variant digit occurs: the bits are random, not fixed.
    assert {i[19] for i in ids} == set("89ab")
