"""Celery's signal handlers: settings checked at worker start, our logging, a fresh runtime after
a fork, log context per task, and the operations side of a worker and of beat.

The worker's main process serves /metrics and writes the progress heartbeat; beat writes its
own. Pool children (prefork) only record metrics, into PROMETHEUS_MULTIPROC_DIR when set.
Every handler reads the settings this process was given (`runtime.settings()`), never the
environment: they were built once at the process's entry point.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any

from celery import signals
from celery.worker import state as worker_state

from worker import runtime
from worker.config import Settings
from worker.errors import ConfigError
from worker.logs import bind, unbind
from worker.logs import configure as configure_logging
from worker.ops import health, liveness, metrics, observability

_refused: ConfigError | None = None


def refuse_workers(error: ConfigError) -> None:
    """The environment could not be read: importing must still work (`celery inspect`), but a
    worker started on it stops at `worker_init` with this error."""
    global _refused
    _refused = error


@signals.worker_init.connect
def _check_settings(**_: Any) -> None:
    if _refused is not None:
        raise _refused
    settings = runtime.settings()
    if settings.database_url is None or settings.redis_url is None:
        raise ConfigError(
            "DATABASE_URL",
            "and REDIS_URL must be set for a worker started by celery directly; "
            "`cardshare worker` starts embedded services when they are not",
        )


@signals.setup_logging.connect
def _setup_logging(**_: Any) -> None:
    settings = runtime.installed_settings() or Settings()
    configure_logging(settings.log_level, settings.log_format)


@signals.worker_process_init.connect
def _fresh_runtime_after_fork(**_: Any) -> None:
    runtime.install(None)


@signals.worker_shutdown.connect
def _close_runtime(**_: Any) -> None:
    runtime.reset()


_tokens: dict[str, Any] = {}


@signals.task_prerun.connect
def _bind_task(task_id: str | None = None, task: Any = None, **_: Any) -> None:
    if task_id:
        _tokens[task_id] = bind(task_id=task_id, task=getattr(task, "name", None))


@signals.task_postrun.connect
def _unbind_task(task_id: str | None = None, **_: Any) -> None:
    token = _tokens.pop(task_id or "", None)
    if token is not None:
        try:
            unbind(token)
        except ValueError:
            logging.getLogger("cardshare").debug("log context reset from another context")


# --------------------------------------------------------------------------- operations

_ops: dict[str, Any] = {}


@signals.worker_init.connect
def _fresh_metrics(**_: Any) -> None:
    # Before the pool forks: children of the previous run left counts that died with them.
    metrics.reset_multiprocess_dir()


def _worker_counters() -> tuple[int, int]:
    """(tasks finished, messages held) as this main process sees them, whatever the pool."""
    return (
        worker_state.all_total_count[0] - len(worker_state.active_requests),
        len(worker_state.reserved_requests),
    )


def _worker_overrun() -> liveness.Overrun | None:
    """The running task furthest into its hard time limit (its own, or the app's default)."""
    now = time.monotonic()
    worst: liveness.Overrun | None = None
    for request in tuple(worker_state.active_requests):
        started = getattr(request, "time_start", None)
        if not started:
            continue
        limits = getattr(request, "time_limits", None) or (None, None)
        task = getattr(request, "task", None)
        hard = limits[1] or getattr(task, "time_limit", None) or runtime.settings().task_time_limit_s
        candidate = liveness.Overrun(running_s=now - float(started), limit_s=float(hard))
        if worst is None or candidate.running_s - candidate.limit_s > worst.running_s - worst.limit_s:
            worst = candidate
    return worst


@signals.worker_init.connect
def _observability(**_: Any) -> None:
    # Sentry's and OpenTelemetry's Celery integrations want this signal (before the pool starts).
    observability.setup(runtime.settings(), "worker")


@signals.worker_init.connect
def _start_heartbeat_file(sender: Any = None, **_: Any) -> None:
    # From the start, before the broker answers: liveness must not depend on it (liveness.py).
    settings = runtime.settings()
    node = str(getattr(sender, "hostname", None) or f"celery@{health.this_host()}")
    livefile = liveness.LocalHeartbeat(
        settings.data_dir,
        kind="worker",
        node=node,
        interval_s=health.heartbeat_interval(settings.health_stall_minutes * 60),
        counters=_worker_counters,
        overrun=_worker_overrun,
    )
    livefile.start()
    _ops["livefile"] = livefile


@signals.worker_ready.connect
def _start_operations(sender: Any = None, **_: Any) -> None:
    settings = runtime.settings()
    controller = getattr(sender, "controller", None)
    pool = getattr(controller, "pool", None)
    pool_name = type(pool).__module__.rsplit(".", 1)[-1] if pool is not None else settings.worker_pool
    if pool_name == "prefork" and metrics.multiprocess_dir() is None:
        logging.getLogger("cardshare.metrics").warning(
            "metrics of prefork children are not exported: set PROMETHEUS_MULTIPROC_DIR"
        )
    _ops["metrics"] = metrics.serve(settings.metrics_host, settings.metrics_port)
    assert settings.redis_url
    beat = health.WorkerHeartbeat(
        health.redis_client(settings.redis_url),
        node=str(getattr(sender, "hostname", None) or f"celery@{health.this_host()}"),
        pool=pool_name,
        concurrency=int(getattr(controller, "concurrency", 0) or settings.worker_concurrency),
        stall_s=settings.health_stall_minutes * 60,
        counters=_worker_counters,
    )
    beat.start()
    _ops["heartbeat"] = beat
    observability.announce(settings, "worker")
    livefile = _ops.get("livefile")
    if livefile is not None:
        livefile.connected = True


@signals.worker_shutdown.connect
def _stop_operations(**_: Any) -> None:
    for name in ("heartbeat", "livefile"):
        beat = _ops.pop(name, None)
        if beat is not None:
            beat.stop()
    server = _ops.pop("metrics", None)
    if server is not None:
        server.shutdown()


@signals.worker_process_shutdown.connect
def _child_exited(pid: int | None = None, **_: Any) -> None:
    metrics.process_exited(pid or os.getpid())


@signals.beat_init.connect
def _start_beat_heartbeat(sender: Any = None, **_: Any) -> None:
    # The sender is beat's Service; its app knows the broker even when REDIS_URL was not given.
    settings = runtime.settings()
    observability.setup(settings, "beat")
    observability.announce(settings, "beat")
    url = settings.redis_url or sender.app.conf.broker_url
    beat = health.BeatHeartbeat(health.redis_client(url))
    beat.start()
    _ops["beat"] = beat
    livefile = liveness.LocalHeartbeat(
        settings.data_dir, kind="beat", node=health.this_host(), interval_s=beat.interval_s
    )
    livefile.start()
    _ops["beat_livefile"] = livefile


@signals.before_task_publish.connect
def _note_beat_send(sender: str | None = None, **_: Any) -> None:
    beat = _ops.get("beat")
    if beat is not None and sender:
        beat.note_sent(sender)
