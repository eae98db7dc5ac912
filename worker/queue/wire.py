"""share_chat messages written the way kombu's Redis transport writes them, from a template.

A sweep publishes up to a million messages that differ only in their chat id, task id and
delivery tag. Through kombu each one is built again: Celery's headers, the body serialized,
base64, the envelope serialized, a delivery tag, one pipelined LPUSH (~80 µs of the sweep's
~140 µs per chat at 1M due chats, bench/README.md §1). Here the envelope is laid out once per
publisher by Celery's own builder (`amqp.as_task_v2`) with placeholders, and each message fills
the placeholders in; a page goes out as one multi-value LPUSH. tests/integration/queue checks
that a message from here decodes to what kombu writes for the same chat, and real workers
consume them in every end-to-end test.
"""

from __future__ import annotations

import base64
import functools
import json
import os
from collections.abc import Mapping, Sequence
from typing import Any

from worker.keys import SHARE_QUEUE, SHARE_TASK

PERSISTENT = 2  # AMQP delivery mode; Celery's default for task messages

# Placeholders: plain text that no JSON escaping changes, and that no real value contains.
_TASK = "cardshare-wire-task-id"
_CHAT = "cardshare-wire-chat-id"
_DAY = "cardshare-wire-day"
_TAG = "cardshare-wire-delivery-tag"
_BODY = "cardshare-wire-body"


def task_parts(app: Any, task_id: str, chat_id: str, day: str, origin: str) -> tuple[Any, Any, Any]:
    """Headers, properties and body of one share_chat(chat_id, day) message, from Celery's own
    protocol-2 builder (`amqp.as_task_v2`): `apply_async` spends most of a message's CPU on
    per-call config lookups, argument reprs, routing and signals that are the same for every
    chat of a sweep."""
    headers, properties, body, _ = app.amqp.as_task_v2(
        task_id,
        SHARE_TASK,
        args=(chat_id, day),
        argsrepr=f"('{chat_id}', '{day}')",
        kwargsrepr="{}",
        ignore_result=True,
        origin=origin,
    )
    return headers, properties, body


# The variant digit of an RFC 4122 id ('8'-'b') from any hex digit.
_VARIANT = {d: "89ab"[int(d, 16) & 3] for d in "0123456789abcdef"}


def fresh_ids(n: int) -> list[str]:
    """n random (version 4) UUIDs as text, from one read of the system's randomness: what
    `str(uuid.uuid4())` gives, at a third of its cost (two per message: task id and delivery tag)."""
    raw = os.urandom(16 * n).hex()
    variant = _VARIANT
    return [
        f"{raw[i : i + 8]}-{raw[i + 8 : i + 12]}-4{raw[i + 13 : i + 16]}-"
        f"{variant[raw[i + 16]]}{raw[i + 17 : i + 20]}-{raw[i + 20 : i + 32]}"
        for i in range(0, 32 * n, 32)
    ]


def _format_string(text: str, holes: Mapping[str, str]) -> str:
    """`text` as a str.format template: its braces doubled, each placeholder a named field."""
    out = text.replace("{", "{{").replace("}", "}}")
    for placeholder, name in holes.items():
        if placeholder not in out:
            raise ValueError(f"the message template lost its {name} placeholder")
        out = out.replace(placeholder, "{" + name + "}")
    return out


class ShareMessages:
    """Wire messages for share_chat(chat_id, day) tasks, as kombu's Redis transport would write
    them for the anonymous exchange and the share queue (protocol 2, JSON, base64 body)."""

    def __init__(self, app: Any, origin: str) -> None:
        headers, properties, body = task_parts(app, _TASK, _CHAT, _DAY, origin)
        envelope = {
            "body": _BODY,
            "content-encoding": "utf-8",
            "content-type": "application/json",
            "headers": headers,
            "properties": {
                **properties,
                "delivery_mode": PERSISTENT,
                "delivery_info": {"exchange": "", "routing_key": SHARE_QUEUE},
                "priority": 0,
                "body_encoding": "base64",
                "delivery_tag": _TAG,
            },
        }
        self._body = _format_string(json.dumps(body), {_CHAT: "chat", _DAY: "day"})
        self._envelope = _format_string(
            json.dumps(envelope),
            {_TASK: "task", _CHAT: "chat", _DAY: "day", _TAG: "tag", _BODY: "body"},
        )

    def build(self, chat_id: str, day: str, task_id: str, tag: str) -> str:
        """One message; `chat_id` and `day` are a UUID's and an ISO date's text (nothing in
        them needs JSON escaping), `task_id` and `tag` fresh ids."""
        body = base64.b64encode(self._body.format(chat=chat_id, day=day).encode()).decode()
        return self._envelope.format(task=task_id, chat=chat_id, day=day, tag=tag, body=body)

    def batch(self, chat_ids: Sequence[str], day: str) -> list[str]:
        """One message per chat, each with ids of its own."""
        ids = fresh_ids(2 * len(chat_ids))
        build = self.build
        return [build(chat, day, ids[2 * k], ids[2 * k + 1]) for k, chat in enumerate(chat_ids)]


@functools.lru_cache(maxsize=8)
def share_messages(app: Any, origin: str) -> ShareMessages:
    """The template for `app` and `origin`, made once: a publisher per event-path publish (a
    chat's first outbound of the day) would otherwise lay it out again each time (~60-120 µs).
    What it holds depends on Celery's builder and the origin only, not on the app's settings."""
    return ShareMessages(app, origin)
