"""The Celery app and its configuration: Redis broker, no result backend, late acks, the beat
schedule. Nothing else: the signal handlers are in `signals`, the tasks in `tasks`.

Importing this module reads no environment: the app starts on the settings the process installed
in `runtime` (`bootstrap.resolve` for the CLI), else on defaults until whoever runs it configures
it (the `worker.celery_app` entry module for `celery -A worker.celery_app`).
"""

from __future__ import annotations

import datetime as dt
import ssl
import urllib.parse
from typing import Any

from celery import Celery
from kombu.entity import Queue

from worker import runtime
from worker.config import Settings
from worker.keys import (
    CONTROL_QUEUE,
    COUNT_TASK,
    MAINTAIN_TASK,
    RECOVER_TASK,
    REFRESH_CARD_TASK,
    RELEASE_TASK,
    SHARE_QUEUE,
    SWEEP_TASK,
    SYNC_TASK,
)
from worker.queue import signals  # noqa: F401 - connects the worker's and beat's signal handlers

app = Celery("cardshare", include=["worker.queue.tasks", "worker.queue.shutdown"])
# kombu's Redis transport minus one way to kill a worker (see redis_transport).
TRANSPORT = "worker.queue.redis_transport:Transport"
# Partitions are made a week ahead, so the interval only bounds how late a day past retention
# goes (not a setting: nothing depends on it being shorter).
MAINTAIN_INTERVAL_S = 3600.0


# rediss:// query parameters that configure TLS, as kombu and redis-py read them.
TLS_FILES = ("ssl_ca_certs", "ssl_certfile", "ssl_keyfile")
CERT_REQS = {"required": ssl.CERT_REQUIRED, "optional": ssl.CERT_OPTIONAL, "none": ssl.CERT_NONE}


def broker_tls(url: str) -> dict[str, Any] | None:
    """TLS options of a rediss:// broker URL (None for plain redis://): the certificate is
    verified unless `?ssl_cert_reqs=none` says otherwise (redis-py's default, not kombu's)."""
    if not url.startswith("rediss://"):
        return None
    query = {k: v[-1] for k, v in urllib.parse.parse_qs(urllib.parse.urlsplit(url).query).items()}
    reqs = query.get("ssl_cert_reqs", "required").lower().removeprefix("cert_")
    options: dict[str, Any] = {"ssl_cert_reqs": CERT_REQS.get(reqs, ssl.CERT_REQUIRED)}
    options.update({k: query[k] for k in TLS_FILES if k in query})
    return options


def celery_config(settings: Settings) -> dict[str, Any]:
    """Celery settings derived from ours; the ordering of the time limits is checked by a test."""
    broker_url = settings.redis_url or "redis://127.0.0.1:6379/0"
    return {
        "broker_url": broker_url,
        # redis:// and rediss:// (TLS) get the transport that drops malformed envelopes instead
        # of dying (redis_transport); unix:// keeps kombu's own (its scheme selects a socket).
        "broker_transport": TRANSPORT if broker_url.startswith(("redis://", "rediss://")) else None,
        # Naming our transport hides the rediss scheme from kombu, which would otherwise turn TLS
        # on itself (without verifying the certificate): say it here, verifying by default.
        "broker_use_ssl": broker_tls(broker_url),
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
            # redelivered under a live worker (docs/decisions.md §9).
            "visibility_timeout": settings.visibility_timeout_s,
            # kombu's Redis pool holds 10 connections by default; with the gevent pool every
            # greenlet acks on its own connection ("Couldn't ack ... Too many connections").
            "max_connections": settings.worker_concurrency + 20,
        },
        "task_default_queue": SHARE_QUEUE,
        "task_queues": (Queue(SHARE_QUEUE), Queue(CONTROL_QUEUE)),
        "task_routes": {
            SWEEP_TASK: {"queue": CONTROL_QUEUE},
            RECOVER_TASK: {"queue": CONTROL_QUEUE},
            SYNC_TASK: {"queue": CONTROL_QUEUE},
            MAINTAIN_TASK: {"queue": CONTROL_QUEUE},
            RELEASE_TASK: {"queue": CONTROL_QUEUE},
            REFRESH_CARD_TASK: {"queue": CONTROL_QUEUE},
            COUNT_TASK: {"queue": CONTROL_QUEUE},
        },
        # A sync pages through every chat of every line: the share task's limits do not fit it.
        # A run cut short resumes from its saved cursor, so the limit only has to end it before
        # the next one is due.
        "task_annotations": {
            SYNC_TASK: {
                "soft_time_limit": max(60.0, settings.sync_interval_s - 60.0),
                "time_limit": max(90.0, settings.sync_interval_s - 30.0),
            }
        },
        # SIGTERM lets in-flight shares run this long, then hands their chat-days back
        # (`queue.shutdown`); the same bound for Celery's own soft shutdown (SIGQUIT, or
        # REMAP_SIGTERM=SIGQUIT with the prefork pool).
        "worker_soft_shutdown_timeout": settings.shutdown_timeout_s,
        "worker_hijack_root_logger": False,
        # Task events for Flower and celery-exporter (CARDSHARE_TASK_EVENTS; bench/README.md).
        "worker_send_task_events": settings.task_events,
        "task_send_sent_event": settings.task_events,
        "timezone": "UTC",
        "enable_utc": True,
        "beat_schedule": {
            "sweep": {
                "task": SWEEP_TASK,
                "schedule": dt.timedelta(seconds=settings.sweep_interval_s),
                # A sweep that waited a whole interval is superseded by the next one.
                "options": {"queue": CONTROL_QUEUE, "expires": settings.sweep_interval_s},
            },
            "recover": {
                "task": RECOVER_TASK,
                "schedule": dt.timedelta(seconds=settings.recover_interval_s),
                "options": {"queue": CONTROL_QUEUE, "expires": settings.recover_interval_s},
            },
            # Held chat-days whose slot came or whose hold lifted (docs/decisions.md §11).
            "release": {
                "task": RELEASE_TASK,
                "schedule": dt.timedelta(seconds=settings.release_interval_s),
                "options": {"queue": CONTROL_QUEUE, "expires": settings.release_interval_s},
            },
            "sync": {
                "task": SYNC_TASK,
                "schedule": dt.timedelta(seconds=settings.sync_interval_s),
                "options": {"queue": CONTROL_QUEUE, "expires": settings.sync_interval_s},
            },
            "maintain": {
                "task": MAINTAIN_TASK,
                "schedule": dt.timedelta(seconds=MAINTAIN_INTERVAL_S),
                "options": {"queue": CONTROL_QUEUE, "expires": MAINTAIN_INTERVAL_S},
            },
            # Today's counts for `status` and the page (docs/retention.md §7); off at 0.
            **(
                {
                    "count": {
                        "task": COUNT_TASK,
                        "schedule": dt.timedelta(seconds=settings.status_counts_interval_s),
                        "options": {"queue": CONTROL_QUEUE, "expires": settings.status_counts_interval_s},
                    }
                }
                if settings.status_counts_interval_s > 0
                else {}
            ),
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


# The process's settings if its entry point installed them already (`bootstrap.resolve` leaves
# Celery unimported for commands that never queue), else the defaults until someone configures it.
configure(runtime.installed_settings() or Settings())
