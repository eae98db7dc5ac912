"""This process's settings and the singletons built from them (engine, sessions, Linq clients, deps).

Settings are built once, at the process's entry point (`cli.common.load_settings` for the CLI,
`worker.celery_app` for `celery -A`), and installed here; nothing below reads the environment.
The engine and clients are built on first use, once per process: a forked child (prefork pool)
builds its own instead of sharing its parent's sockets.
"""

from __future__ import annotations

import os
import threading
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import TYPE_CHECKING

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from worker.config import Settings
from worker.deps import Deps
from worker.logs import register_secret
from worker.sharing.pace import RedisPacer
from worker.store.engine import dispose_after_fork, engine_for, session_factory

if TYPE_CHECKING:
    from worker.linq import ClientPool, LinqGateway


class LazyClients:
    """The Linq clients, made on first use: worker.linq brings httpx (~0.1 s to import on the
    2-core box), which a command that never calls Linq (`status`, `check`) skips."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._pool: ClientPool | None = None
        self._lock = threading.Lock()

    @property
    def pool(self) -> ClientPool:
        pool = self._pool
        if pool is None:
            with self._lock:
                if self._pool is None:
                    from worker.linq import ClientPool

                    self._pool = ClientPool(self._settings)
                pool = self._pool
        return pool

    def get(self) -> LinqGateway:
        return self.pool.get()

    def lease(self) -> AbstractContextManager[LinqGateway]:
        return self.pool.lease()

    def close(self) -> None:
        if self._pool is not None:
            self._pool.close()


@dataclass
class Runtime:
    settings: Settings
    engine: Engine
    sessions: sessionmaker[Session]
    lazy_clients: LazyClients
    deps: Deps
    pid: int

    @property
    def clients(self) -> ClientPool:
        return self.lazy_clients.pool

    @classmethod
    def build(cls, settings: Settings) -> Runtime:
        register_secret(settings.linq_api_key.get())
        engine = engine_for(settings)
        dispose_after_fork(engine)
        sessions = session_factory(engine)
        # Threads and greenlets share one process: isolate chat-days that already lost a worker.
        # The sandbox is a child process: it gets these settings through its environment.
        sandbox = None
        if settings.worker_pool in ("threads", "gevent"):
            from worker.sharing.sandbox import Sandbox

            sandbox = Sandbox({**os.environ, **settings.to_env()})
        # One pace state for every worker and host: Redis (docs/decisions.md §11).
        pacer = (
            RedisPacer.from_url(settings.redis_url, max_connections=settings.worker_concurrency + 10)
            if settings.redis_url
            else None
        )
        clients = LazyClients(settings)
        deps = Deps(
            settings=settings,
            sessions=sessions,
            client=clients.get,
            sandbox=sandbox,
            lease=clients.lease,
            pacer=pacer,
        )
        return cls(settings, engine, sessions, clients, deps, os.getpid())

    def close(self) -> None:
        if self.deps.sandbox is not None:
            self.deps.sandbox.close()
        if isinstance(self.deps.pacer, RedisPacer):
            self.deps.pacer.close()
        self.lazy_clients.close()
        self.engine.dispose()


_lock = threading.Lock()
_settings: Settings | None = None
_current: Runtime | None = None


def install_settings(settings: Settings) -> None:
    """The settings this process was started with; the runtime is built from them on first use."""
    global _settings
    with _lock:
        _settings = settings


def installed_settings() -> Settings | None:
    return _settings


def settings() -> Settings:
    """This process's settings; a RuntimeError if its entry point installed none."""
    if _settings is None:
        raise RuntimeError(
            "no settings installed in this process: start it through `cardshare` or "
            "`celery -A worker.celery_app`, or call runtime.install_settings()"
        )
    return _settings


def get() -> Runtime:
    global _current
    rt = _current
    if rt is not None and rt.pid == os.getpid():
        return rt
    with _lock:
        if _current is None or _current.pid != os.getpid():
            _current = Runtime.build(settings())
        return _current


def install(rt: Runtime | None) -> None:
    """Use `rt` (and its settings) for this process (tests, the CLI after starting embedded
    services). None drops the runtime but keeps the settings: the next `get()` builds a new one
    (after a fork, in the child)."""
    global _current, _settings
    with _lock:
        _current = rt
        if rt is not None:
            _settings = rt.settings


def reset() -> None:
    global _current
    with _lock:
        if _current is not None and _current.pid == os.getpid():
            _current.close()
        _current = None
