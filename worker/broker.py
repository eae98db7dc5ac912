"""Publishing share tasks in bulk through one producer, and reading the queue's depth."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from worker.sweep import QueueDepth

SHARE_QUEUE = "cardshare"
CONTROL_QUEUE = "cardshare.control"
SHARE_TASK = "cardshare.share_chat"
BATCH_SIZE = 1000
# kombu's Redis transport keeps delivered-but-unacknowledged messages in this hash (its default).
UNACKED_KEY = "unacked"


class Publisher:
    """One producer for a whole sweep; messages go out in pipelined batches.

    kombu's Producer.batch raises BatchPublishError when a flush fails ("delivery uncertain");
    the chat-days stay 'queued' in PostgreSQL and recovery re-enqueues them, so the claim
    remains the arbiter.
    """

    def __init__(self, app: Any) -> None:
        self.app = app
        self._ctx: Any = None
        self.producer: Any = None

    def __enter__(self) -> Publisher:
        # `include` modules are imported by workers, not by a publishing process: register here.
        import worker.tasks  # noqa: F401

        self._ctx = self.app.producer_or_acquire()
        self.producer = self._ctx.__enter__()
        # Declare (bind) the queue once here instead of once per message: per-message
        # declaration was half of the sweep's CPU (it copies Queue and Exchange objects).
        self.producer.maybe_declare(self.app.amqp.queues[SHARE_QUEUE])
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._ctx.__exit__(exc_type, exc, tb)

    def __call__(self, chat_ids: Sequence[uuid.UUID], day: dt.date) -> int:
        task = self.app.tasks[SHARE_TASK]
        iso = day.isoformat()
        with self.producer.batch(max_size=BATCH_SIZE):
            for chat_id in chat_ids:
                # retry=False: a failed flush raises; the chat-days stay 'queued' in PostgreSQL
                # and the recovery pass re-enqueues them, so nothing waits on kombu's retries.
                task.apply_async(
                    args=(str(chat_id), iso),
                    producer=self.producer,
                    queue=SHARE_QUEUE,
                    declare=[],
                    retry=False,
                )
        return len(chat_ids)


def queue_depth(app: Any) -> QueueDepth:
    """Messages waiting in the share queue, and delivered-but-unacknowledged ones."""
    # Imported here: the healthcheck reads the queue names without loading the sweep (and SQL).
    from worker.sweep import QueueDepth

    with app.connection_for_write() as conn:
        channel = conn.default_channel
        client = channel.client
        return QueueDepth(ready=int(client.llen(SHARE_QUEUE)), unacked=int(client.hlen(channel.unacked_key)))
