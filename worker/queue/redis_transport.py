"""kombu's Redis transport, minus one way to kill a worker.

kombu pops a message with BRPOP and parses its envelope before Celery sees it; an envelope
that is not JSON, or JSON without the fields kombu needs, raises out of the consumer loop and
Celery stops the worker ("Unrecoverable error"). Anything with write access to Redis could do
that to every worker in turn. Here such a message is logged and dropped (it was already popped,
so there is nothing to requeue); well-formed messages with bad arguments are the task's business.

It also reuses one synchronous Redis client per connection pool (see `Channel._create_client`),
and takes more than one message per wake-up (see `Channel._take_more`).
"""

from __future__ import annotations

import logging
from importlib import resources
from queue import Empty
from typing import Any

from kombu.transport import redis as kombu_redis
from kombu.transport import virtual
from kombu.utils.encoding import bytes_to_str
from kombu.utils.json import loads

from worker.logs import event

log = logging.getLogger("cardshare.broker")

# A JSON decode error is a ValueError; a missing envelope field is a KeyError or TypeError.
MALFORMED = (ValueError, KeyError, TypeError)


# take_more.lua pops up to ARGV[1] messages from KEYS[1] and records each in the unacked hash
# (KEYS[2]) and index (KEYS[3]) exactly as kombu's QoS.append would ([payload, exchange,
# routing_key], scored by time), in one server-side step: no window in which a popped message is
# in neither place. Returns item, tag, item, tag...; the tag is '' for a payload this could not
# read (returned unrecorded; the consumer logs and drops it).
TAKE_MORE = (resources.files("worker.queue") / "take_more.lua").read_text()

# Upper bound per wake-up; the prefetch window (QoS) is the real limit.
TAKE_MORE_MAX = 32


class QoS(kombu_redis.QoS):
    def append(self, message: Any, delivery_tag: str) -> None:
        if self.channel._recorded_tag == delivery_tag:
            # TAKE_MORE already wrote the unacked entry: only track it locally.
            virtual.QoS.append(self, message, delivery_tag)
        else:
            super().append(message, delivery_tag)


class Channel(kombu_redis.Channel):
    QoS = QoS
    _sync_client: tuple[Any, Any] | None = None
    _take_more_script: Any = None
    _recorded_tag: str | None = None

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
        # kombu's own read, with the popped key kept (it names the priority sub-queue to drain).
        try:
            try:
                dest_item = self.client.parse_response(self.client.connection, "BRPOP", **options)
            except self.connection_errors:
                # As kombu: drop the connection so the next poll reconnects.
                self.client.connection.disconnect()
                raise
            if not dest_item:
                raise Empty()
            key, item = dest_item
            dest = bytes_to_str(key).rsplit(self.sep, 1)[0]
            self._queue_cycle.rotate(dest)
            self._deliver_one(item, dest)
            self._take_more(key, dest)
            return True
        finally:
            self._in_poll = None  # type: ignore[assignment]  # kombu declares it bool, stores a connection or None
            self._flush_brpop_reauth()

    def _deliver_one(self, item: bytes, dest: str, recorded_tag: str | None = None) -> None:
        """Hand one raw message to the consumer; `recorded_tag`: TAKE_MORE wrote its unacked entry."""
        self._recorded_tag = recorded_tag
        try:
            self.connection._deliver(loads(bytes_to_str(item)), dest)
        except MALFORMED as exc:
            if recorded_tag is not None:
                # Unreadable after all: forget it, or every visibility timeout would restore it.
                self.qos._remove_from_indices(recorded_tag).execute()
            self._dropped(exc)
        finally:
            self._recorded_tag = None

    def _take_more(self, key: bytes, dest: str) -> None:
        """Messages already waiting behind the one BRPOP returned, within the prefetch window.

        kombu pops one message per BRPOP and then writes its unacked entry in a second round
        trip; at a few hundred messages a second those two round trips per message, and the
        event-loop turn between them, were ~15 % of a worker's CPU.
        """
        room = self.qos.can_consume_max_estimate()
        if room is None:
            room = TAKE_MORE_MAX
        if room <= 0 or self.global_keyprefix:
            return
        with self.conn_or_acquire() as client:
            if self._take_more_script is None or self._take_more_script.registered_client is not client:
                self._take_more_script = client.register_script(TAKE_MORE)
            items = self._take_more_script(
                keys=[key, self.unacked_key, self.unacked_index_key], args=[min(room, TAKE_MORE_MAX)]
            )
        for item, tag in zip(items[::2], items[1::2], strict=True):
            self._deliver_one(item, dest, bytes_to_str(tag) or None)

    def _dropped(self, exc: BaseException) -> None:
        event(
            log,
            "broker.malformed_message_dropped",
            logging.ERROR,
            error=f"{type(exc).__name__}: {exc}"[:200],
        )


class Transport(kombu_redis.Transport):
    Channel = Channel
