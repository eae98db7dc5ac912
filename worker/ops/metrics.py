"""Prometheus metrics: one small helper per fact, so business modules never touch prometheus.

Metrics are created on first use, not at import: in multiprocess mode every process that
creates one leaves files in PROMETHEUS_MULTIPROC_DIR, and short-lived commands that record
nothing (`cardshare health` runs every 30 s in the worker's container) must leave none there.

Two modes, chosen by prometheus_client from the environment at import:
- PROMETHEUS_MULTIPROC_DIR unset: one in-process registry (the threads pool, the webhook app);
- set: every process writes its own files there and the scrape merges them (`--pool prefork`).
  The worker empties the directory when it starts; pool children mark themselves dead on exit.
"""

from __future__ import annotations

import glob
import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    multiprocess,
    start_http_server,
)

from worker.logs import event

log = logging.getLogger("cardshare.metrics")

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

# Linq answers in tens to hundreds of milliseconds; the read timeout (15 s) bounds the top.
_HTTP_BUCKETS = (0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 15.0, 30.0)
# A share is one call plus retries within the budget (30 s) and Retry-After waits.
_SHARE_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 90.0)
_SLEEP_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 15.0, 30.0)
_SWEEP_BUCKETS = (0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0)
# First outbound of the day -> share accepted: seconds with the event path, up to a sweep
# interval (15 min) and beyond (held lines, outages) without it.
_FIRST_BUCKETS = (0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 1800.0, 3600.0, 14400.0)
_SIZE_BUCKETS = (0.0, 1.0, 10.0, 100.0, 1_000.0, 10_000.0, 100_000.0, 1_000_000.0, 10_000_000.0)


@dataclass(frozen=True)
class _Metrics:
    shares: Counter
    share_seconds: Histogram
    http_attempts: Counter
    http_seconds: Histogram
    retry_sleeps: Histogram
    claim_conflicts: Counter
    sweeps: Counter
    sweep_seconds: Histogram
    sweep_scanned: Histogram
    sweep_enqueued: Histogram
    webhooks: Counter
    account_warnings: Counter
    line_updates: Counter
    pace_refusals: Counter
    event_marks: Counter
    first_outbound: Histogram


_lock = threading.Lock()
_metrics: _Metrics | None = None


def _get() -> _Metrics:
    global _metrics
    if _metrics is None:
        with _lock:
            if _metrics is None:
                _metrics = _create()
    return _metrics


def _create() -> _Metrics:
    return _Metrics(
        shares=Counter(
            "cardshare_shares", "Share task runs by outcome (shared, confirmed, skipped, ...)", ["outcome"]
        ),
        share_seconds=Histogram(
            "cardshare_share_duration_seconds",
            "One share task from claim to recorded outcome, retries included",
            buckets=_SHARE_BUCKETS,
        ),
        http_attempts=Counter(
            "cardshare_http_attempts",
            "HTTP attempts at Linq's share endpoint by status (or timeout/connection)",
            ["status"],
        ),
        http_seconds=Histogram(
            "cardshare_http_attempt_duration_seconds",
            "One call to Linq's share endpoint",
            buckets=_HTTP_BUCKETS,
        ),
        retry_sleeps=Histogram(
            "cardshare_retry_sleep_seconds", "Backoff sleeps between HTTP attempts", buckets=_SLEEP_BUCKETS
        ),
        claim_conflicts=Counter(
            "cardshare_claim_conflicts",
            "Chat-days a task could not claim (busy) or lost while running (lost)",
            ["kind"],
        ),
        sweeps=Counter(
            "cardshare_sweeps", "Sweep and recovery passes by result (ok, error, locked)", ["kind", "result"]
        ),
        sweep_seconds=Histogram(
            "cardshare_sweep_duration_seconds",
            "Sweep and recovery pass duration",
            ["kind"],
            buckets=_SWEEP_BUCKETS,
        ),
        sweep_scanned=Histogram(
            "cardshare_sweep_scanned_chats", "Due chats a sweep found", ["kind"], buckets=_SIZE_BUCKETS
        ),
        sweep_enqueued=Histogram(
            "cardshare_sweep_enqueued_chats",
            "Chat-days a pass enqueued (new and re-enqueued)",
            ["kind"],
            buckets=_SIZE_BUCKETS,
        ),
        webhooks=Counter(
            "cardshare_webhook_deliveries",
            "Linq webhook deliveries by result (recorded, duplicate, ignored, rejected, ...)",
            ["result"],
        ),
        account_warnings=Counter(
            "cardshare_account_warnings",
            "Account warnings from Linq (api_token.expiry_scheduled, api_token.expired, "
            "webhook_subscription.disabled)",
            ["kind"],
        ),
        line_updates=Counter(
            "cardshare_line_status_updates",
            "phone_number.status_updated events by the line's new reputation and status",
            ["reputation", "status"],
        ),
        pace_refusals=Counter(
            "cardshare_pace_refusals",
            "Share calls the per-line (or account) pace refused at call time; their chat-days wait",
            ["scope"],
        ),
        event_marks=Counter(
            "cardshare_event_marks",
            "Chat-days the event path (webhook, sync, import) marked, by result (queued, held, "
            "published, publish_failed, unplanned)",
            ["result"],
        ),
        first_outbound=Histogram(
            "cardshare_first_outbound_to_share_seconds",
            "From the outbound message that made a chat-day due to Linq's 2xx for its share "
            '(README: "How fast the card follows")',
            buckets=_FIRST_BUCKETS,
        ),
    )


# --------------------------------------------------------------------------- recording


def share_finished(outcome: str, seconds: float) -> None:
    m = _get()
    m.shares.labels(outcome).inc()
    m.share_seconds.observe(seconds)


def http_attempt(status: int | None, error_kind: str | None, seconds: float) -> None:
    """`status` when Linq answered; else `error_kind` ("timeout", "connection")."""
    m = _get()
    m.http_attempts.labels(str(status) if status is not None else (error_kind or "error")).inc()
    m.http_seconds.observe(seconds)


def retry_sleep(seconds: float) -> None:
    _get().retry_sleeps.observe(seconds)


def claim_conflict(kind: str) -> None:
    _get().claim_conflicts.labels(kind).inc()


def sweep_finished(
    kind: str, *, result: str, seconds: float, scanned: int | None = None, enqueued: int = 0
) -> None:
    m = _get()
    m.sweeps.labels(kind, result).inc()
    if result == "locked":
        return  # another pass held the lock: nothing was done, nothing to time
    m.sweep_seconds.labels(kind).observe(seconds)
    if scanned is not None:
        m.sweep_scanned.labels(kind).observe(scanned)
    m.sweep_enqueued.labels(kind).observe(enqueued)


def webhook_delivery(result: str) -> None:
    _get().webhooks.labels(result).inc()


def account_warning(kind: str) -> None:
    _get().account_warnings.labels(kind).inc()


def line_status_update(reputation: str, status: str) -> None:
    _get().line_updates.labels(reputation, status).inc()


def pace_refused(scope: str) -> None:
    """`line` (the line's cap, or the account's), `unavailable` (Redis could not be asked)."""
    _get().pace_refusals.labels(scope).inc()


def event_marked(result: str, count: int = 1) -> None:
    if count:
        _get().event_marks.labels(result).inc(count)


def first_outbound_to_share(seconds: float) -> None:
    _get().first_outbound.observe(max(0.0, seconds))


# --------------------------------------------------------------------------- exposition


def multiprocess_dir() -> Path | None:
    raw = os.environ.get(MULTIPROC_ENV)
    return Path(raw) if raw else None


def registry() -> CollectorRegistry:
    """What a scrape should read: every process's files in multiprocess mode, else this process."""
    path = multiprocess_dir()
    if path is None:
        return REGISTRY
    merged = CollectorRegistry()
    multiprocess.MultiProcessCollector(merged, path=str(path))  # type: ignore[no-untyped-call]
    return merged


def exposition() -> tuple[bytes, str]:
    """The body and content type of a /metrics answer."""
    return generate_latest(registry()), CONTENT_TYPE_LATEST


def reset_multiprocess_dir() -> None:
    """At worker start: drop the files of a previous run (their counts died with it)."""
    path = multiprocess_dir()
    if path is None:
        return
    path.mkdir(parents=True, exist_ok=True)
    for name in glob.glob(str(path / "*.db")):
        os.remove(name)


def process_exited(pid: int) -> None:
    """A pool child is exiting: its counters stay (they are totals), its live gauges go."""
    path = multiprocess_dir()
    if path is not None:
        multiprocess.mark_process_dead(pid, str(path))  # type: ignore[no-untyped-call]


def serve(host: str, port: int) -> Any | None:
    """Serve /metrics from this process in a thread; None (and a warning) if the port is taken.

    A worker that cannot export metrics still shares cards: losing the scrape is no reason to stop.
    """
    if port == 0:
        return None
    try:
        server, _thread = start_http_server(port, addr=host, registry=registry())
    except OSError as exc:
        event(log, "metrics.unavailable", logging.WARNING, host=host, port=port, error=str(exc))
        return None
    event(log, "metrics.serving", host=host, port=server.server_port)
    return server
