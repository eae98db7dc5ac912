"""Serving an ASGI app with uvicorn on a socket we bound ourselves: the webhook receiver, the
status page, and the tests' in-process receiver."""

from __future__ import annotations

import signal
import socket
from types import FrameType
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import uvicorn
    from starlette.applications import Starlette


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


def server_config(app: Starlette) -> uvicorn.Config:
    # Imported here: uvicorn and starlette cost ~0.1 s of a command's start (python -X importtime,
    # 2-core box), and `cardshare status` and `history` load this module without serving.
    import uvicorn

    # log_config=None: uvicorn's lines go through cardshare's handler (JSON, secrets masked).
    return uvicorn.Config(
        app,
        log_config=None,
        access_log=False,
        lifespan="off",
        server_header=False,
        timeout_graceful_shutdown=5,
    )


def serve(app: Starlette, sock: socket.socket) -> None:
    """Serve until SIGINT/SIGTERM (uvicorn finishes in-flight requests first). Main thread only."""
    # uvicorn re-raises the stop signal after draining. As SystemExit it lets the caller's
    # cleanup run (embedded servers stop); with the default handler the process would just die.
    import uvicorn

    previous = signal.signal(signal.SIGTERM, _exit_on_sigterm)
    try:
        uvicorn.Server(server_config(app)).run(sockets=[sock])
    finally:
        signal.signal(signal.SIGTERM, previous)


def _exit_on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(0)
