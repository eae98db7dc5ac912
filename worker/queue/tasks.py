"""Thin tasks: unpack arguments, call `worker.sharing` or `worker.ingest`, map the outcome to
ack or retry. Their names are in `worker.keys` and never change (queued messages name them)."""

from __future__ import annotations

import datetime as dt
import logging
import time
import uuid
from typing import Any

from worker import runtime
from worker.cards import refresh as cards_refresh
from worker.errors import StoreUnavailable
from worker.ingest import pending, sync
from worker.keys import (
    COUNT_TASK,
    MAINTAIN_TASK,
    RECOVER_TASK,
    REFRESH_CARD_TASK,
    RELEASE_TASK,
    SHARE_TASK,
    SWEEP_TASK,
    SYNC_TASK,
)
from worker.logs import bound, event
from worker.ops import count_pass, metrics, retention
from worker.queue.app import app
from worker.queue.publish import Publisher, event_path, queue_depth
from worker.sharing import passes, recover, release, share, sweep
from worker.sharing.passes import queue_lease_s
from worker.store.session import Sessions

log = logging.getLogger("cardshare.tasks")


def _db_backoff(retries: int) -> float:
    return float(min(60, 2 ** (retries + 1)))


@app.task(name=SHARE_TASK, bind=True, acks_late=True, ignore_result=True, max_retries=10)
def share_chat(self: Any, chat_id: str, day: str) -> str:
    """Share one chat's card for one day. A malformed message is logged and dropped."""
    try:
        cid = uuid.UUID(chat_id)
        the_day = dt.date.fromisoformat(day)
    except (ValueError, TypeError):
        event(log, "task.bad_arguments", logging.ERROR, chat_id=repr(chat_id)[:80], day=repr(day)[:40])
        return "rejected"
    try:
        # Every line this task writes (retries, outages) names its chat-day.
        with bound(chat_id=str(cid), day=day):
            result = share.share_chat(cid, the_day, runtime.get().deps, task_id=self.request.id)
    except StoreUnavailable as exc:
        # No claim, no call: back off and try again; the lease or the next sweep covers the rest.
        if self.request.retries >= self.max_retries:
            event(log, "task.gave_up_db", logging.ERROR, chat_id=chat_id, day=day)
            return "gave_up"
        event(log, "task.db_unavailable", logging.WARNING, chat_id=chat_id, retries=self.request.retries)
        raise self.retry(exc=exc, countdown=_db_backoff(self.request.retries)) from exc
    return result.outcome.value


def run_pass(kind: str) -> passes.SweepReport:
    """One sweep, recovery or release pass from this process, publishing through one producer."""
    rt = runtime.get()
    with Publisher(app) as publish:
        if kind == "release":
            return release.run_release(rt.deps, rt.engine, publish, queue_lease_s=queue_lease_s(rt.settings))
        if kind == "recover":
            return _recover(rt, publish)
        return sweep.run_sweep(
            rt.deps,
            rt.engine,
            publish,
            lambda: queue_depth(app),
            queue_lease_s=queue_lease_s(rt.settings),
        )


def _recover(rt: runtime.Runtime, publish: Publisher) -> passes.SweepReport:
    started = time.monotonic()
    try:
        report = recover.run_recover(
            Sessions(rt.sessions),
            rt.settings,
            rt.deps.clock(),
            publish,
            lambda: queue_depth(app),
            queue_lease_s=queue_lease_s(rt.settings),
        )
    except Exception:
        metrics.sweep_finished("recover", result="error", seconds=time.monotonic() - started)
        raise
    if not report.ran:
        metrics.sweep_finished("recover", result="locked", seconds=0.0)
    else:
        metrics.sweep_finished("recover", result="ok", seconds=report.seconds, enqueued=report.requeued)
    return report


@app.task(name=SWEEP_TASK, ignore_result=True, acks_late=False)
def sweep_task() -> str:
    return run_pass("sweep").one_line()


@app.task(name=RECOVER_TASK, ignore_result=True, acks_late=False)
def recover_task() -> str:
    line = run_pass("recover").one_line()
    return f"{line}; {resolve_pending_events()}"


def resolve_pending_events() -> str:
    """Webhook events kept for a chat cardshare did not know (ingest.pending), applied now that
    it may; with every recovery pass."""
    return pending.resolve_pending(Sessions(runtime.get().sessions)).one_line()


@app.task(name=RELEASE_TASK, ignore_result=True, acks_late=False)
def release_task() -> str:
    return run_pass("release").one_line()


@app.task(name=REFRESH_CARD_TASK, ignore_result=True, acks_late=False)
def refresh_card_task(line: str) -> str:
    """A contact_card.* webhook named this line: read its card from Linq (the payload carries no
    is_active). The sweep refreshes every card anyway, so a lost one costs one sweep interval."""
    rt = runtime.get()
    return cards_refresh.refresh_card(rt.deps, line).one_line()


@app.task(name=COUNT_TASK, ignore_result=True, acks_late=False)
def count_task() -> str:
    """Today's chat-day counts saved for `status` and the page (beat; docs/retention.md §7)."""
    return count_pass.count_today(runtime.get().deps).one_line()


@app.task(name=SYNC_TASK, ignore_result=True, acks_late=False)
def sync_task() -> str:
    """Chat sync (beat, default daily): list every line's chats, look up outbound messages."""
    rt = runtime.get()
    return sync.run_sync(rt.deps, rt.engine, first_outbound=event_path(app, rt.deps)).one_line()


@app.task(name=MAINTAIN_TASK, ignore_result=True, acks_late=False)
def maintain_task() -> str:
    """Day partitions ahead, retention behind (beat, hourly; docs/retention.md)."""
    rt = runtime.get()
    return retention.run_maintenance(rt.deps, rt.engine).one_line()
