"""The Celery app: Redis broker, no result backend, late acks, beat schedule, signal hooks.

Settings come from the environment when this module is imported; the CLI calls
`configure(settings)` again after starting embedded services.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
from typing import Any

from celery import Celery, signals
from kombu.entity import Queue

from worker import health, metrics, runtime
from worker.broker import CONTROL_QUEUE, SHARE_QUEUE
from worker.config import Settings
from worker.errors import ConfigError
from worker.logs import bind, unbind
from worker.logs import configure as configure_logging

app = Celery("cardshare", include=["worker.tasks"])


def celery_config(settings: Settings) -> dict[str, Any]:
    """Celery settings derived from ours; the ordering of the time limits is checked by a test."""
    broker_url = settings.redis_url or "redis://127.0.0.1:6379/0"
    return {
        "broker_url": broker_url,
        # Plain redis:// gets the transport that drops malformed envelopes instead of dying;
        # rediss:// and unix:// keep kombu's own (their URL schemes select TLS / sockets).
        "broker_transport": "worker.redis_transport:Transport" if broker_url.startswith("redis://") else None,
        "result_backend": None,
        "task_ignore_result": True,
        "task_serializer": "json",
        "accept_content": ["json"],
        "task_acks_late": True,
        # A worker that dies mid-task gives the message back instead of acking it as done.
        "task_reject_on_worker_lost": True,
        "worker_cancel_long_running_tasks_on_connection_loss": True,
        "broker_connection_retry_on_startup": True,
        "broker_connection_max_retries": None,
        # Prefetch one message per execution slot: threads stay busy (a fetch is ~1 ms against a
        # 200 ms call) while at most `concurrency` messages sit unacked in a worker that may die.
        "worker_prefetch_multiplier": settings.prefetch_multiplier,
        "worker_pool": settings.worker_pool,
        "worker_concurrency": settings.worker_concurrency,
        "task_soft_time_limit": settings.task_soft_time_limit_s,
        "task_time_limit": settings.task_time_limit_s,
        "broker_transport_options": {
            # Far above lease and time limits: a message in a prefetch buffer must never be
            # redelivered under a live worker (measured-facts.md).
            "visibility_timeout": settings.visibility_timeout_s,
            # kombu's Redis pool holds 10 connections by default; with the gevent pool every
            # greenlet acks on its own connection ("Couldn't ack ... Too many connections").
            "max_connections": settings.worker_concurrency + 20,
        },
        "task_default_queue": SHARE_QUEUE,
        "task_queues": (Queue(SHARE_QUEUE), Queue(CONTROL_QUEUE)),
        "task_routes": {
            "cardshare.sweep": {"queue": CONTROL_QUEUE},
            "cardshare.recover": {"queue": CONTROL_QUEUE},
            "cardshare.sync": {"queue": CONTROL_QUEUE},
        },
        # A sync pages through every chat of every line: the share task's limits do not fit it.
        # A run cut short resumes from its saved cursor, so the limit only has to end it before
        # the next one is due.
        "task_annotations": {
            "cardshare.sync": {
                "soft_time_limit": max(60.0, settings.sync_interval_s - 60.0),
                "time_limit": max(90.0, settings.sync_interval_s - 30.0),
            }
        },
        "worker_hijack_root_logger": False,
        "worker_send_task_events": False,
        "task_send_sent_event": False,
        "timezone": "UTC",
        "enable_utc": True,
        "beat_schedule": {
            "sweep": {
                "task": "cardshare.sweep",
                "schedule": dt.timedelta(seconds=settings.sweep_interval_s),
                # A sweep that waited a whole interval is superseded by the next one.
                "options": {"queue": CONTROL_QUEUE, "expires": settings.sweep_interval_s},
            },
            "recover": {
                "task": "cardshare.recover",
                "schedule": dt.timedelta(seconds=settings.recover_interval_s),
                "options": {"queue": CONTROL_QUEUE, "expires": settings.recover_interval_s},
            },
            "sync": {
                "task": "cardshare.sync",
                "schedule": dt.timedelta(seconds=settings.sync_interval_s),
                "options": {"queue": CONTROL_QUEUE, "expires": settings.sync_interval_s},
            },
        },
    }


def configure(settings: Settings) -> Celery:
    config = celery_config(settings)
    if app.conf.broker_url != config["broker_url"]:
        # Celery caches its connection and producer pools with the broker they were made for;
        # without this, a process that switches brokers keeps publishing (and pinging) the old one.
        # The pools are kombu's, shared per broker URL: dropped here, not closed, since switching
        # back must find them usable.
        app._pool = None
        app.amqp._producer_pool = None
    app.conf.update(config)
    return app


def _settings_or_defaults() -> Settings:
    try:
        return Settings.from_env()
    except ConfigError:
        # Import must not fail (e.g. `celery inspect`); worker_init re-validates and exits.
        return Settings()


configure(_settings_or_defaults())


@signals.worker_init.connect
def _check_settings(**_: Any) -> None:
    settings = Settings.from_env()
    if settings.database_url is None or settings.redis_url is None:
        raise ConfigError(
            "DATABASE_URL",
            "and REDIS_URL must be set for a worker started by celery directly; "
            "`cardshare worker` starts embedded services when they are not",
        )


@signals.setup_logging.connect
def _setup_logging(**_: Any) -> None:
    try:
        settings = Settings.from_env()
    except ConfigError:
        settings = Settings()
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


# --------------------------------------------------------------------------- operations (issue #8)
# The worker's main process serves /metrics and writes the progress heartbeat; beat writes its
# own. Pool children (prefork) only record metrics, into PROMETHEUS_MULTIPROC_DIR when set.

_ops: dict[str, Any] = {}


@signals.worker_init.connect
def _fresh_metrics(**_: Any) -> None:
    # Before the pool forks: children of the previous run left counts that died with them.
    metrics.reset_multiprocess_dir()


def _worker_counters() -> tuple[int, int]:
    """(tasks finished, messages held) as this main process sees them, whatever the pool."""
    from celery.worker import state

    return state.all_total_count[0] - len(state.active_requests), len(state.reserved_requests)


@signals.worker_ready.connect
def _start_operations(sender: Any = None, **_: Any) -> None:
    settings = Settings.from_env()
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


@signals.worker_shutdown.connect
def _stop_operations(**_: Any) -> None:
    beat = _ops.pop("heartbeat", None)
    if beat is not None:
        beat.stop()
    server = _ops.pop("metrics", None)
    if server is not None:
        server.shutdown()


@signals.worker_process_shutdown.connect
def _child_exited(pid: int | None = None, **_: Any) -> None:
    metrics.process_exited(pid or os.getpid())


@signals.beat_init.connect
def _start_beat_heartbeat(**_: Any) -> None:
    settings = Settings.from_env()
    url = settings.redis_url or app.conf.broker_url
    beat = health.BeatHeartbeat(health.redis_client(url))
    beat.start()
    _ops["beat"] = beat


@signals.before_task_publish.connect
def _note_beat_send(sender: str | None = None, **_: Any) -> None:
    beat = _ops.get("beat")
    if beat is not None and sender:
        beat.note_sent(sender)
