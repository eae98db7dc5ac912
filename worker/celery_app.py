"""`celery -A worker.celery_app worker|beat|inspect`: the app, configured from this process's
environment, read once here.

The app itself lives in `worker.queue.app`. Processes started through `cardshare` configure it
in `bootstrap.resolve` instead; this module is the entry point for Celery's own command line
(compose, the demo's and the drills' workers), and keeps the path `worker.celery_app:app` stable.
"""

from __future__ import annotations

from worker import runtime
from worker.config import Settings
from worker.errors import ConfigError
from worker.queue import signals
from worker.queue.app import app, configure

__all__ = ["app"]


def _settings_from_environment() -> Settings:
    try:
        return Settings.from_env()
    except ConfigError as exc:
        # Import must not fail (e.g. `celery inspect`); a worker started on it stops at worker_init.
        signals.refuse_workers(exc)
        return Settings()


_settings = _settings_from_environment()
configure(_settings)
runtime.install_settings(_settings)
