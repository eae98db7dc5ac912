"""Celery settings: the timing order that keeps a live task from being taken over or redelivered."""

from __future__ import annotations

import pytest

from worker.config import Settings
from worker.queue.app import app, celery_config, configure


@pytest.mark.parametrize(
    "settings",
    [Settings(), Settings(retry_budget_s=10, task_soft_time_limit_s=40, task_time_limit_s=50, lease_s=100)],
)
def test_budget_soft_hard_lease_visibility_are_ordered(settings: Settings) -> None:
    conf = celery_config(settings)
    budget = settings.retry_budget_s
    soft = conf["task_soft_time_limit"]
    hard = conf["task_time_limit"]
    lease = settings.lease_s
    visibility = conf["broker_transport_options"]["visibility_timeout"]
    assert budget < soft < hard < lease < visibility
    # A whole run (budget + one last read) fits under the soft limit.
    assert budget + settings.http_read_timeout_s + settings.http_connect_timeout_s < soft
    # Crash recovery lands inside Linq's 5-minute share window.
    assert lease + settings.recover_interval_s < 300


def test_reliability_settings() -> None:
    configure(Settings())
    conf = app.conf
    assert conf.task_acks_late is True
    assert conf.task_reject_on_worker_lost is True
    assert conf.worker_cancel_long_running_tasks_on_connection_loss is True
    assert conf.broker_connection_retry_on_startup is True
    assert conf.result_backend is None
    assert conf.task_ignore_result is True
    assert conf.worker_prefetch_multiplier == 1
    assert conf.worker_pool == "threads"


def test_stable_task_names_are_registered() -> None:
    import worker.queue.tasks  # noqa: F401 - registers the tasks

    assert {"cardshare.share_chat", "cardshare.sweep", "cardshare.recover"} <= set(app.tasks)
    schedule = app.conf.beat_schedule
    assert schedule["sweep"]["task"] == "cardshare.sweep"
    assert schedule["sweep"]["schedule"].total_seconds() == 900
    assert schedule["recover"]["schedule"].total_seconds() == 60


def test_configure_with_another_broker_drops_the_cached_pool() -> None:
    """Publishing (and pinging) must follow the broker the process was configured with last."""
    from worker.config import Settings
    from worker.queue.app import app, configure

    try:
        configure(Settings(redis_url="redis://127.0.0.1:1111/0"))
        assert app.pool.connection.as_uri().endswith("127.0.0.1:1111/0")
        configure(Settings(redis_url="redis://127.0.0.1:2222/0"))
        with app.connection_or_acquire() as conn:
            assert conn.as_uri().endswith("127.0.0.1:2222/0")
        with app.producer_or_acquire() as producer:
            assert producer.connection.as_uri().endswith("127.0.0.1:2222/0")
        # Back to the first broker: its pool is still usable.
        configure(Settings(redis_url="redis://127.0.0.1:1111/0"))
        with app.connection_or_acquire() as conn:
            assert conn.as_uri().endswith("127.0.0.1:1111/0")
    finally:
        configure(Settings())


def test_celery_a_worker_celery_app_finds_the_app_configured_from_the_environment() -> None:
    """`celery -A worker.celery_app` reads the environment once; a bad value must not break import."""
    import os
    import subprocess
    import sys

    code = (
        "import worker.celery_app as entry, worker.queue.app as queue_app\n"
        "from worker import runtime\n"
        "assert entry.app is queue_app.app\n"
        "print(queue_app.app.conf.broker_url, runtime.settings().redis_url)\n"
    )
    base = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("CARDSHARE_", "LINQ_", "REDIS_", "DATABASE_"))
    }
    done = subprocess.run(
        [sys.executable, "-c", code],
        env={**base, "REDIS_URL": "redis://127.0.0.1:4321/0"},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert done.stdout.split() == ["redis://127.0.0.1:4321/0", "redis://127.0.0.1:4321/0"]
    refused = subprocess.run(
        [sys.executable, "-c", code],
        env={**base, "CARDSHARE_SWEEP_INTERVAL": "soon"},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert refused.stdout.split() == ["redis://127.0.0.1:6379/0", "None"]
