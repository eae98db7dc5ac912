"""kombu's Redis transport, minus one way to kill a worker.

kombu pops a message with BRPOP and parses its envelope before Celery sees it; an envelope
that is not JSON, or JSON without the fields kombu needs, raises out of the consumer loop and
Celery stops the worker ("Unrecoverable error"). Anything with write access to Redis could do
that to every worker in turn. Here such a message is logged and dropped (it was already popped,
so there is nothing to requeue); well-formed messages with bad arguments are the task's business.

It also reuses one synchronous Redis client per connection pool (see `Channel._create_client`).
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
    _sync_client: tuple[Any, Any] | None = None

    def _create_client(self, asynchronous: bool = False) -> Any:
        # kombu builds a new redis.Redis (and its ~200-entry response-callback table) for every
        # unacked-index write and every ack: ~5 % of a worker's CPU. A client over the channel's
        # pool is thread-safe, so one per pool is enough; the pool is replaced on reconnect.
        if asynchronous:
            return super()._create_client(asynchronous=True)
        pool = self.pool
        cached = self._sync_client
        if cached is None or cached[0] is not pool:
            cached = self._sync_client = (pool, super()._create_client())
        return cached[1]

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
