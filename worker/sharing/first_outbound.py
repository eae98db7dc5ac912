"""The event path: outbound activity that makes a chat due today queues its share at once
(docs/decisions.md §17).

Whoever records activity (the webhook receiver, a sync page, an import batch) calls `mark` in
the same transaction, after `record_activity`: the chats the activity made due on their line's
day with no chat-day yet get one, planned by `sharing.plan` like the sweep's (a held line's rest
held; pace gives slots), and only the rows actually inserted come back. After COMMIT the caller
hands those to `publish`. A burst of 100 `message.sent` for one chat inserts one row and
publishes once; a publish that fails leaves the row `queued`, and recovery re-enqueues it once
the queue is drained (§9). The sweep remains the safety net for anything this path missed.
"""

from __future__ import annotations

import datetime as dt
import logging
import uuid
from collections import defaultdict
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass

from sqlalchemy.orm import Session

from worker.deps import Deps
from worker.logs import event
from worker.ops import metrics
from worker.rules.cadence import share_day
from worker.rules.facts import ChatActivity
from worker.rules.states import DayStatus
from worker.sharing.pace import PaceUnavailable
from worker.sharing.passes import Publish, publish_by_day
from worker.sharing.plan import Batch, plan
from worker.store.lines import lines
from worker.store.outbound import due_unmarked, insert_marks

log = logging.getLogger("cardshare.first_outbound")

ChatDays = list[tuple[uuid.UUID, dt.date]]


@dataclass(frozen=True)
class FirstOutbound:
    """The event path for one process: its deps, the queue lease marks get, and how to open a
    publisher (one producer per call; the receiver's is the Celery app's pool)."""

    deps: Deps
    queue_lease_s: float
    open_publisher: Callable[[], AbstractContextManager[Publish]]

    @property
    def enabled(self) -> bool:
        return self.deps.settings.share_on_outbound

    def mark(self, session: Session, activities: Sequence[ChatActivity]) -> ChatDays:
        """In the caller's transaction: mark the chat-days `activities` just made due; the
        queued ones, to publish after COMMIT."""
        outbound = [a for a in activities if a.outbound_at is not None]
        if not self.enabled or not outbound:
            return []
        deps = self.deps
        now = deps.clock()
        states = {
            r.state.phone: r.state
            for r in lines(session, deps.settings.zone, sorted({a.line_phone for a in outbound}))
            if r.card_active
        }
        days = {phone: st.today(now) for phone, st in states.items()}
        due = due_unmarked(
            session,
            chat_ids=[a.chat_id for a in outbound if a.line_phone in states],
            line_days=days,
            now=now,
            policy=deps.policy,
        )
        if not due:
            return []
        # The earliest outbound time of the batch on the chat's line's day: where the latency
        # starts. An older message (a late delivery) made it due under active-window, but is
        # not "the first outbound of the day": no time then.
        first: dict[uuid.UUID, dt.datetime | None] = {}
        for a in outbound:
            st = states.get(a.line_phone)
            at = a.outbound_at
            if st is None or at is None or at > now or share_day(at, st.zone) != days[a.line_phone]:
                continue
            known = first.get(a.chat_id)
            first[a.chat_id] = at if known is None else min(known, at)
        by_line: dict[str, list[uuid.UUID]] = defaultdict(list)
        for chat in due:
            by_line[chat.line_phone].append(chat.chat_id)
        batches = [Batch(states[p], days[p], ids) for p, ids in sorted(by_line.items())]
        try:
            planned = plan(
                batches, now=now, pace=deps.pace, pacer=deps.pacer, queue_lease_s=self.queue_lease_s
            )
        except PaceUnavailable as exc:
            # No slots without Redis: leave the chats unmarked; the sweep plans them later.
            event(log, "first_outbound.unplanned", logging.WARNING, chats=len(due), error=str(exc))
            metrics.event_marked("unplanned", len(due))
            return []
        queued: ChatDays = []
        for batch, marks in zip(batches, planned, strict=True):
            done = insert_marks(session, day=batch.day, marks=marks, outbound=first)
            q = [c for c, status in done if status == DayStatus.QUEUED]
            metrics.event_marked("queued", len(q))
            metrics.event_marked("held", len(done) - len(q))
            queued.extend((c, batch.day) for c in q)
        return queued

    def publish(self, chat_days: ChatDays) -> int:
        """After COMMIT: publish the queued chat-days `mark` returned. A failure (the broker is
        down) is logged and counted; the rows stay `queued` for recovery (docs/decisions.md §9)."""
        if not chat_days:
            return 0
        try:
            with self.open_publisher() as publish:
                sent = publish_by_day(publish, chat_days)
        except Exception as exc:  # kombu/redis raise their own types
            event(
                log,
                "first_outbound.publish_failed",
                logging.WARNING,
                chat_days=len(chat_days),
                error=f"{type(exc).__name__}: {exc}"[:300],
            )
            metrics.event_marked("publish_failed", len(chat_days))
            return 0
        metrics.event_marked("published", sent)
        return sent
