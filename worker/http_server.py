"""Serving an ASGI app with uvicorn on a socket we bound ourselves: the webhook receiver, the
status page, and the tests' in-process receiver."""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
from types import FrameType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import uvicorn
    from starlette.applications import Starlette
    from uvicorn.protocols.http.h11_impl import H11Protocol as _H11Base
else:
    # uvicorn and starlette cost ~0.1 s of a command's start (python -X importtime, 2-core box),
    # and `cardshare status` and `history` load this module without serving: the guard is a
    # mixin here, put on uvicorn's protocol when a server is configured (`guarded_protocol`).
    _H11Base = object

log = logging.getLogger("cardshare.http")

HEADER_TIMEOUT_S = 10.0  # a request's headers must arrive this soon after it starts
MAX_HEADER_BYTES = 16 * 1024  # h11 refuses a request line plus headers longer than this (431/400)
LIMIT_CONCURRENCY = 512  # connections at once; past it uvicorn answers 503 instead of piling up
KEEP_ALIVE_S = 5.0


class GuardedH11Protocol(_H11Base):
    """uvicorn's h11 protocol with a header read timeout, which uvicorn lacks: its keep-alive
    timer is cancelled by any byte received, so a client dribbling a header a byte at a time
    (slowloris) would hold the connection for ever. Here the clock starts when the connection
    opens (and again after each response) and stops only when a whole request head has been
    parsed; the body has its own timeout in the app (`ingest.webhooks`)."""

    header_timeout_s = HEADER_TIMEOUT_S

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._head_cycle: object | None = None
        self._head_timer: asyncio.TimerHandle | None = None
        self._arm()

    def _arm(self) -> None:
        self._disarm()
        self._head_timer = self.loop.call_later(self.header_timeout_s, self._head_too_slow)

    def _disarm(self) -> None:
        timer = getattr(self, "_head_timer", None)
        if timer is not None:
            timer.cancel()
            self._head_timer = None

    def _head_too_slow(self) -> None:
        self._head_timer = None
        if not self.transport.is_closing():
            log.warning(
                "http.header_timeout",
                extra={"event": "http.header_timeout", "fields": {"client": str(self.client)}},
            )
            self.transport.close()

    def handle_events(self) -> None:
        super().handle_events()
        if self.cycle is not None and self.cycle is not self._head_cycle:
            self._head_cycle = self.cycle  # a whole request head arrived
            self._disarm()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing():
            self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)


def guarded_protocol(header_timeout_s: float) -> type[GuardedH11Protocol]:
    from uvicorn.protocols.http.h11_impl import H11Protocol

    return type(
        "GuardedH11Protocol", (GuardedH11Protocol, H11Protocol), {"header_timeout_s": header_timeout_s}
    )


def bind(host: str, port: int) -> socket.socket:
    """Bind before serving so port 0 works and the real port can be announced."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
        sock.listen(1024)
    except OSError:
        sock.close()
        raise
    return sock


def address(sock: socket.socket) -> str:
    """`http://host:port` of a bound socket (IPv6 hosts in brackets)."""
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}"


def server_config(app: Starlette, *, header_timeout_s: float = HEADER_TIMEOUT_S) -> uvicorn.Config:
    """uvicorn with bounded reads: h11 (its incomplete-event limit bounds the request head; the
    httptools parser has none), a header read timeout, a keep-alive timeout and a cap on
    concurrent connections. Behind a TLS proxy, the proxy enforces its own (README, Webhooks)."""
    import uvicorn  # here: see the note on `_H11Base`

    # log_config=None: uvicorn's lines go through cardshare's handler (JSON, secrets masked).
    kw: dict[str, Any] = {
        "http": guarded_protocol(header_timeout_s),
        "h11_max_incomplete_event_size": MAX_HEADER_BYTES,
        "limit_concurrency": LIMIT_CONCURRENCY,
        "timeout_keep_alive": KEEP_ALIVE_S,
    }
    return uvicorn.Config(
        app,
        log_config=None,
        access_log=False,
        lifespan="off",
        server_header=False,
        timeout_graceful_shutdown=5,
        **kw,
    )


def serve(app: Starlette, sock: socket.socket, *, header_timeout_s: float = HEADER_TIMEOUT_S) -> None:
    """Serve until SIGINT/SIGTERM (uvicorn finishes in-flight requests first). Main thread only."""
    # uvicorn re-raises the stop signal after draining. As SystemExit it lets the caller's
    # cleanup run (embedded servers stop); with the default handler the process would just die.
    import uvicorn

    previous = signal.signal(signal.SIGTERM, _exit_on_sigterm)
    try:
        uvicorn.Server(server_config(app, header_timeout_s=header_timeout_s)).run(sockets=[sock])
    finally:
        signal.signal(signal.SIGTERM, previous)


def _exit_on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(0)
