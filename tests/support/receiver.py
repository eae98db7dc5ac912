"""The webhook receiver served by uvicorn from a thread on loopback, and the secret it checks."""

from __future__ import annotations

import asyncio
import threading
import time
from types import TracebackType

import httpx
import uvicorn
from starlette.applications import Starlette

from worker.http_server import bind, server_config
from worker.ingest.webhooks import url_of

SECRET = "whsec_AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="


class ReceiverServer:
    """The real receiver app on a real socket (port 0), like `cardshare webhooks` but in-process."""

    def __init__(self, app: Starlette) -> None:
        self._sock = bind("127.0.0.1", 0)
        self.url = url_of(self._sock)
        self._server = uvicorn.Server(server_config(app))
        self._thread = threading.Thread(target=self._run, name="webhook-receiver", daemon=True)

    def _run(self) -> None:
        asyncio.run(self._server.serve(sockets=[self._sock]))

    def __enter__(self) -> ReceiverServer:
        self._thread.start()
        health = self.url.replace("/webhooks/linq", "/healthz")
        deadline = time.monotonic() + 10
        while True:
            try:
                if httpx.get(health, timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "receiver did not start"
            time.sleep(0.05)

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._server.should_exit = True
        self._thread.join(10)
        self._sock.close()
