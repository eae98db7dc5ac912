"""A loopback Linq Partner API simulator with runtime fault injection, for tests and demos."""

from __future__ import annotations

from worker.simulator.client import SimulatorAdmin, SimulatorAdminError
from worker.simulator.server import SimulatorServer, serve_forever

__all__ = ["SimulatorAdmin", "SimulatorAdminError", "SimulatorServer", "serve_forever"]
