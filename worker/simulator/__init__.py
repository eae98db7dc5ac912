"""A loopback Linq Partner API simulator with runtime fault injection, for tests and demos."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from worker.simulator.client import SimulatorAdmin, SimulatorAdminError

if TYPE_CHECKING:
    from worker.simulator.server import SimulatorServer, serve_forever


def __getattr__(name: str) -> Any:
    # The server (uvicorn, Starlette) is loaded on first use: `cardshare check` imports the admin
    # client only, and the server would cost its start-up (tests/acceptance/test_startup.py).
    if name in ("SimulatorServer", "serve_forever"):
        from worker.simulator import server

        return getattr(server, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["SimulatorAdmin", "SimulatorAdminError", "SimulatorServer", "serve_forever"]
