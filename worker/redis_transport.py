"""kombu's Redis transport, minus one way to kill a worker.

kombu pops a message with BRPOP and parses its envelope before Celery sees it; an envelope
that is not JSON, or JSON without the fields kombu needs, raises out of the consumer loop and
Celery stops the worker ("Unrecoverable error"). Anything with write access to Redis could do
that to every worker in turn. Here such a message is logged and dropped (it was already popped,
so there is nothing to requeue); well-formed messages with bad arguments are the task's business.
"""

from __future__ import annotations

import logging
from queue import Empty
from typing import Any

from kombu.transport import redis as kombu_redis

from worker.logs import event

log = logging.getLogger("cardshare.broker")

# A JSON decode error is a ValueError; a missing envelope field is a KeyError or TypeError.
MALFORMED = (ValueError, KeyError, TypeError)


class Channel(kombu_redis.Channel):
    def _brpop_read(self, **options: Any) -> bool:
        try:
            return bool(super()._brpop_read(**options))
        except MALFORMED as exc:
            event(
                log,
                "broker.malformed_message_dropped",
                logging.ERROR,
                error=f"{type(exc).__name__}: {exc}"[:200],
            )
            raise Empty() from exc


class Transport(kombu_redis.Transport):
    Channel = Channel
