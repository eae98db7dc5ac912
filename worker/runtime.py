"""Process-wide singletons (settings, engine, sessions, Linq clients), built on first use.

One engine per process: rebuilt after a fork (prefork pool) instead of sharing sockets.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from worker.config import Settings
from worker.linq import ClientPool
from worker.logs import register_secret
from worker.sandbox import Sandbox
from worker.service import Deps
from worker.store.engine import dispose_after_fork, engine_for, session_factory


@dataclass
class Runtime:
    settings: Settings
    engine: Engine
    sessions: sessionmaker[Session]
    clients: ClientPool
    deps: Deps
    pid: int

    @classmethod
    def build(cls, settings: Settings) -> Runtime:
        register_secret(settings.linq_api_key.get())
        engine = engine_for(settings)
        dispose_after_fork(engine)
        sessions = session_factory(engine)
        clients = ClientPool(settings)
        # Threads and greenlets share one process: isolate chat-days that already lost a worker.
        sandbox = Sandbox() if settings.worker_pool in ("threads", "gevent") else None
        deps = Deps(
            settings=settings, sessions=sessions, client=clients.get, sandbox=sandbox, lease=clients.lease
        )
        return cls(settings, engine, sessions, clients, deps, os.getpid())

    def close(self) -> None:
        if self.deps.sandbox is not None:
            self.deps.sandbox.close()
        self.clients.close()
        self.engine.dispose()


_lock = threading.Lock()
_current: Runtime | None = None


def get() -> Runtime:
    global _current
    rt = _current
    if rt is not None and rt.pid == os.getpid():
        return rt
    with _lock:
        if _current is None or _current.pid != os.getpid():
            _current = Runtime.build(Settings.from_env())
        return _current


def install(rt: Runtime | None) -> None:
    """Use `rt` for this process (tests, the CLI after starting embedded services)."""
    global _current
    with _lock:
        _current = rt


def reset() -> None:
    global _current
    with _lock:
        if _current is not None and _current.pid == os.getpid():
            _current.close()
        _current = None
