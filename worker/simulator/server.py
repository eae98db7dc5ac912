"""Run the simulator on a real loopback socket: in a background thread (tests) or blocking (CLI)."""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import logging
import socket
import threading
import time
from collections.abc import Callable
from types import TracebackType

import uvicorn
from starlette.applications import Starlette

from worker.simulator.app import API_PREFIX, create_app
from worker.simulator.client import SimulatorAdmin
from worker.simulator.state import SimState

logger = logging.getLogger(__name__)

START_TIMEOUT_S = 10.0
STOP_TIMEOUT_S = 10.0


def _bind(host: str, port: int) -> socket.socket:
    # Binding here, not in uvicorn, is what makes port 0 usable: we learn the port before serving.
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # proto must be IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY on accepted sockets only then, and
    # without it every response waits ~40 ms for a delayed ACK (uvicorn writes head and body apart).
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
        sock.listen(2048)  # bursts of a few hundred concurrent clients must not be refused
    except OSError:
        sock.close()
        raise
    return sock


def _config(app: Starlette) -> uvicorn.Config:
    return uvicorn.Config(
        app,
        log_level="warning",
        access_log=False,
        lifespan="off",
        # Longer than httpx's 5 s idle expiry, so the client always closes first and never
        # sends on a connection the server is closing.
        timeout_keep_alive=75,
        timeout_graceful_shutdown=3,
    )


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop when installed: the simulator shares the box with what it is measuring."""
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


def _base_url(host: str, port: int) -> str:
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}{API_PREFIX}"


class SimulatorServer:
    """A Linq Partner API simulator on a real socket, served from a daemon thread."""

    def __init__(
        self,
        api_key: str,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        clock: Callable[[], float] = time.time,
        seed: int = 0,
    ) -> None:
        self.api_key = api_key
        self.host = host
        self.port = port
        self.state = SimState(clock=clock, seed=seed)  # owned by the server's loop: change it via .admin
        self._shutdown = asyncio.Event()
        self._app = create_app(self.state, api_key, shutdown=self._shutdown)
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._admin: SimulatorAdmin | None = None
        self._base_url: str | None = None
        self._stopped = False

    @property
    def base_url(self) -> str:
        """`http://127.0.0.1:PORT/api/partner`; only known once started."""
        if self._base_url is None:
            raise RuntimeError("simulator not started")
        return self._base_url

    @property
    def admin(self) -> SimulatorAdmin:
        if self._admin is None:
            raise RuntimeError("simulator not started")
        return self._admin

    def start(self) -> str:
        """Serve in a background thread; returns the base URL once the server answers."""
        if self._thread is not None:
            return self.base_url
        if self._stopped:
            # The shutdown event is bound to the old loop; a fresh SimulatorServer is cheap.
            raise RuntimeError("a stopped SimulatorServer cannot be restarted")
        sock = _bind(self.host, self.port)
        self.port = sock.getsockname()[1]
        self._server = uvicorn.Server(_config(self._app))
        self._thread = threading.Thread(target=self._run, args=(sock,), name="linq-simulator", daemon=True)
        self._thread.start()
        self._wait_until_answering()
        self._base_url = _base_url(self.host, self.port)
        self._admin = SimulatorAdmin(self._base_url)
        return self._base_url

    def _run(self, sock: socket.socket) -> None:
        with asyncio.Runner(loop_factory=_loop_factory()) as runner:
            runner.run(self._serve(sock))

    async def _serve(self, sock: socket.socket) -> None:
        assert self._server is not None
        self._loop = asyncio.get_running_loop()
        await self._server.serve(sockets=[sock])

    def _wait_until_answering(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self._thread is None or not self._thread.is_alive():
                raise RuntimeError("simulator thread died while starting")
            if self._health_ok():
                return
            time.sleep(0.02)
        raise RuntimeError(f"simulator did not answer within {START_TIMEOUT_S} s")

    def _health_ok(self) -> bool:
        conn = http.client.HTTPConnection(self.host, self.port, timeout=1.0)
        try:
            conn.request("GET", "/_sim/health")
            return conn.getresponse().status == 200
        except OSError:
            return False
        finally:
            conn.close()

    def stop(self) -> None:
        """Stop serving (ending any hanging requests) and wait for the thread to finish."""
        if self._server is None or self._thread is None:
            return
        if self._loop is not None and not self._loop.is_closed():
            # The loop may close between the check and the call: then nothing is left to wake.
            with contextlib.suppress(RuntimeError):
                self._loop.call_soon_threadsafe(self._shutdown.set)
        self._server.should_exit = True
        self._thread.join(STOP_TIMEOUT_S)
        if self._admin is not None:
            self._admin.close()
        self._server = self._thread = self._loop = self._admin = None
        self._stopped = True

    def __enter__(self) -> SimulatorServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def serve_forever(api_key: str, host: str = "127.0.0.1", port: int = 8765) -> None:
    """Serve the simulator in the foreground until interrupted (for the CLI and demos)."""
    state = SimState()
    sock = _bind(host, port)
    bound_port = sock.getsockname()[1]
    server = uvicorn.Server(_config(create_app(state, api_key)))
    logger.info("Linq simulator serving at %s (admin at /_sim)", _base_url(host, bound_port))
    server.run(sockets=[sock])
