"""Publishing share tasks in bulk through one producer, reading the queue's depth, and the
`celery worker` command line of a cardshare worker."""

from __future__ import annotations

import datetime as dt
import sys
import uuid
from collections.abc import Sequence
from types import TracebackType
from typing import Any

from celery.utils.nodenames import anon_nodename
from kombu.utils.uuid import uuid as kombu_uuid

from worker.deps import Deps
from worker.keys import CONTROL_QUEUE, SHARE_QUEUE
from worker.queue.wire import PERSISTENT, ShareMessages, share_messages, task_parts
from worker.sharing.first_outbound import FirstOutbound
from worker.sharing.passes import QueueDepth, queue_lease_s

BATCH_SIZE = 1000


class Publisher:
    """One producer for a whole sweep; a batch of messages goes out as one LPUSH.

    The batch's messages come from a template (`queue.wire`); `one` goes through kombu's own
    producer. A failed LPUSH raises (delivery uncertain): the chat-days stay 'queued' in
    PostgreSQL and recovery re-enqueues them, so the claim remains the arbiter.
    """

    def __init__(self, app: Any) -> None:
        self.app = app
        self._ctx: Any = None
        self.producer: Any = None
        self._origin = ""
        self._messages: ShareMessages | None = None

    def __enter__(self) -> Publisher:
        # Messages are built by task name (SHARE_TASK), so the publishing process need not have
        # the task registered.
        self._ctx = self.app.producer_or_acquire()
        self.producer = self._ctx.__enter__()
        # Declare (bind) the queue once here instead of once per message: per-message
        # declaration copies Queue and Exchange objects for every task.
        self.producer.maybe_declare(self.app.amqp.queues[SHARE_QUEUE])
        self._origin = anon_nodename()
        self._messages = share_messages(self.app, self._origin)
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._ctx.__exit__(exc_type, exc, tb)

    def __call__(self, chat_ids: Sequence[uuid.UUID], day: dt.date) -> int:
        """Publish one share_chat message per chat, BATCH_SIZE to a Redis command."""
        assert self._messages is not None, "use the Publisher as a context manager"
        iso = day.isoformat()
        channel = self.producer.channel
        # The queue's key as kombu's transport names it (priority 0; a key prefix, if one is
        # configured, is the client's to add).
        key = channel._q_for_pri(SHARE_QUEUE, 0)
        with channel.conn_or_acquire() as client:
            for start in range(0, len(chat_ids), BATCH_SIZE):
                batch = [str(c) for c in chat_ids[start : start + BATCH_SIZE]]
                # LPUSH of several values pushes them in order, as one LPUSH each would:
                # workers (BRPOP) take them first in, first out.
                client.lpush(key, *self._messages.batch(batch, iso))
        return len(chat_ids)

    def one(self, chat_id: uuid.UUID, day: dt.date) -> str:
        """Publish one chat-day's message at once (`cardshare share`); its task id."""
        return self._send(str(chat_id), day.isoformat())

    def _send(self, cid: str, iso: str) -> str:
        """One message through kombu's producer (`wire.task_parts`). Routing matches what
        `send_task_message` does for a direct queue: the anonymous exchange, the queue name as
        routing key, persistent delivery."""
        task_id = kombu_uuid()
        headers, properties, body = task_parts(self.app, task_id, cid, iso, self._origin)
        # retry=False: a failed flush raises; the chat-days stay 'queued' in PostgreSQL and the
        # recovery pass re-enqueues them, so nothing waits on kombu's retries.
        self.producer.publish(
            body,
            exchange="",
            routing_key=SHARE_QUEUE,
            serializer="json",
            retry=False,
            delivery_mode=PERSISTENT,
            declare=[],
            headers=headers,
            **properties,
        )
        return str(task_id)


def event_path(app: Any, deps: Deps) -> FirstOutbound:
    """The event path (`sharing.first_outbound`) publishing through `app`'s producer pool."""
    return FirstOutbound(deps, queue_lease_s(deps.settings), lambda: Publisher(app))


def worker_args(
    *, pool: str, concurrency: int, loglevel: str = "INFO", hostname: str | None = None
) -> list[str]:
    """`celery worker` arguments for a cardshare worker: both queues, no mingle or gossip.

    Mingle and gossip exchange state between workers at startup and all the time; cardshare
    keeps its state in PostgreSQL, so they only add broker chatter and startup delay.
    """
    args = [
        "worker",
        "--pool",
        pool,
        "--concurrency",
        str(concurrency),
        "--queues",
        f"{SHARE_QUEUE},{CONTROL_QUEUE}",
        "--loglevel",
        loglevel,
        "--without-mingle",
        "--without-gossip",
    ]
    return [*args, "--hostname", hostname] if hostname else args


def worker_command(**kw: Any) -> list[str]:
    """The same as a subprocess command line."""
    return [sys.executable, "-m", "celery", "-A", "worker.celery_app", *worker_args(**kw)]


def queue_depth(app: Any) -> QueueDepth:
    """Messages waiting in the share queue, and delivered-but-unacknowledged ones."""
    with app.connection_for_write() as conn:
        channel = conn.default_channel
        client = channel.client
        return QueueDepth(ready=int(client.llen(SHARE_QUEUE)), unacked=int(client.hlen(channel.unacked_key)))
