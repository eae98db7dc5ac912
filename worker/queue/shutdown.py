"""Soft shutdown: a stopping worker lets its in-flight shares finish, for a while, then hands the
rest back instead of leaving them claimed until their lease ends.

SIGTERM is Celery's warm shutdown: the worker stops taking messages, prefetched ones that never
started go back to the queue, and running tasks go on. Celery's own soft shutdown
(`worker_soft_shutdown_timeout`) only follows a cold shutdown and cancels tasks by killing the
process running them, which the threads pool cannot do. So, from the SIGTERM, this module
waits CARDSHARE_SHUTDOWN_TIMEOUT (the same setting), then, from the main process and for every
task still running whatever the pool, releases its chat-day (`store.shares.hand_back`) and
publishes its share message again, due when the chat-day's lease ends: at once if no Linq call
was in flight, else once that call must have ended (`unknown`; the next run's 429 confirms it
if Linq accepted it), so two calls for one chat never overlap. The task's own thread records
its late answer if nobody claimed the chat-day since, and nothing otherwise. A deploy that
waits for the worker to exit (Kubernetes' grace period) must allow the timeout plus one Linq
connect and read timeout.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from celery import signals
from celery.worker import state as worker_state

from worker import runtime
from worker.errors import StoreUnavailable
from worker.keys import SHARE_QUEUE, SHARE_TASK
from worker.logs import event
from worker.queue.app import app
from worker.store import shares
from worker.store.session import transaction

log = logging.getLogger("cardshare.worker")

REASON = "handed back: the worker shut down before this share finished"

_timer: list[threading.Timer] = []


@signals.worker_shutting_down.connect
def _start_the_clock(how: str = "Warm", **_: Any) -> None:
    if _timer:
        return  # a second SIGTERM changes nothing
    timeout = runtime.settings().shutdown_timeout_s
    running = len(worker_state.active_requests)
    event(log, "worker.shutting_down", how=how.lower(), running=running, hand_back_after_s=timeout)
    timer = threading.Timer(timeout, hand_back_running)
    timer.daemon = True
    timer.name = "cardshare-soft-shutdown"
    _timer.append(timer)
    timer.start()


@signals.worker_shutdown.connect
def _stop_the_clock(**_: Any) -> None:
    for timer in _timer:
        timer.cancel()


def hand_back_running() -> list[shares.HandedBack]:
    """Release and re-queue the chat-days of the share tasks still running in this worker."""
    ids = [r.id for r in tuple(worker_state.active_requests) if r.name == SHARE_TASK and r.id]
    if not ids:
        return []
    deps = runtime.get().deps
    settings = deps.settings
    try:
        with transaction(deps.sessions) as s:
            released = shares.hand_back(
                s, ids, reason=REASON, call_s=settings.http_read_timeout_s + settings.http_connect_timeout_s
            )
    except StoreUnavailable as exc:
        # The lease and recovery take over, as after a crash.
        event(log, "worker.hand_back_failed", logging.WARNING, running=len(ids), error=str(exc))
        return []
    for item in released:
        try:
            # Due when its lease ends: the worker that takes it may call Linq at once.
            app.send_task(
                SHARE_TASK,
                args=(str(item.chat_id), item.day.isoformat()),
                queue=SHARE_QUEUE,
                countdown=item.wait_s or None,
            )
            requeued = True
        except Exception as exc:  # Redis away: recovery re-enqueues the chat-day after its lease
            event(log, "worker.requeue_failed", logging.WARNING, error=f"{type(exc).__name__}: {exc}"[:200])
            requeued = False
        event(
            log,
            "share.handed_back",
            logging.WARNING,
            chat_id=str(item.chat_id),
            day=str(item.day),
            status=item.status.value,
            lease_ends_in_s=round(item.wait_s, 1),
            requeued=requeued,
        )
    return released
