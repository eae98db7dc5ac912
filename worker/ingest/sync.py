"""Chat sync: every line's chats from Linq, then outbound messages where none is known yet.

For each line, `GET /v3/chats?from=LINE&limit=100` is followed through `next_cursor` to the end.
Each page commits together with the cursor of the next one, so a run that stops (Linq down, a
crash, a time limit) resumes there; a finished pass starts from the top next time. Chats with
no known outbound message then get their messages read (`GET /v3/chats/{id}/messages`), at most
`CARDSHARE_SYNC_MESSAGE_LOOKUPS` pages per run, resuming where the last run's budget ran out.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from sqlalchemy import Engine

from worker.deps import Deps
from worker.ingest import payloads
from worker.keys import SYNC_LOCK
from worker.linq import LinqCallError, LinqGateway
from worker.logs import event
from worker.rules.classify import classify
from worker.rules.facts import ChatActivity
from worker.rules.retrying import Exhausted, Retryable, build
from worker.sharing.first_outbound import ChatDays, FirstOutbound
from worker.store.chats import known_lines, mark_not_found, record_activity
from worker.store.ingest import (
    LookupCandidate,
    lookup_candidates,
    prune_webhook_events,
    save_lookup,
    save_sync_page,
    sync_cursor,
)
from worker.store.lines import record_reputation
from worker.store.locks import advisory_lock
from worker.store.session import transaction

log = logging.getLogger("cardshare.sync")

PAGE_SIZE = 100  # Linq's largest page

T = TypeVar("T")


class SyncProgress:
    """What the sync reports as it goes; the CLI draws a progress bar from it. No-ops here."""

    def line(self, phone: str) -> None:
        """A line's chat listing starts."""

    def chats(self, count: int) -> None:
        """A page of `count` chats was recorded."""

    def lookups(self, total: int) -> None:
        """Message lookups start for up to `total` chats."""

    def lookup(self) -> None:
        """One chat's lookup ended."""


@dataclass
class SyncReport:
    ran: bool = True
    lines: int = 0
    resumed: int = 0  # lines whose listing continued from a saved cursor
    pages: int = 0
    chats: int = 0  # listed by Linq
    recorded: int = 0  # iMessage chats written
    skipped: int = 0  # SMS/RCS chats (never due) and chats naming no line
    chats_looked_up: int = 0
    message_pages: int = 0
    outbound_found: int = 0
    not_found: int = 0
    pruned_events: int = 0
    errors: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def one_line(self) -> str:
        if not self.ran:
            return "sync: another sync is running; nothing done"
        text = (
            f"sync: {self.lines} lines ({self.resumed} resumed), {self.pages} pages, "
            f"{self.chats} chats listed, {self.recorded} iMessage chats recorded, {self.skipped} skipped; "
            f"{self.chats_looked_up} chats looked up ({self.message_pages} message pages), "
            f"{self.outbound_found} with outbound found, {self.not_found} gone"
        )
        if self.errors:
            text += f"; {len(self.errors)} errors (first: {self.errors[0]})"
        return text + f" in {self.seconds:.1f}s"


def run_sync(
    deps: Deps,
    engine: Engine,
    *,
    lines: Sequence[str] | None = None,
    lookups: int | None = None,
    progress: SyncProgress | None = None,
    first_outbound: FirstOutbound | None = None,
) -> SyncReport:
    """One sync run over `lines` (default: every iMessage line of the account). With
    `first_outbound`, each page's chats that became due are queued as the page is recorded."""
    started = time.monotonic()
    progress = progress or SyncProgress()
    budget = deps.settings.sync_message_lookups if lookups is None else lookups
    report = SyncReport()
    with advisory_lock(engine, SYNC_LOCK) as got:
        if not got:
            report.ran = False
            return report
        gateway = deps.client()
        targets = list(lines) if lines is not None else _account_lines(deps, gateway, report)
        for line in targets:
            progress.line(line)
            _sync_line(deps, gateway, line, report, progress, first_outbound)
        _look_up_messages(deps, gateway, lines, budget, report, progress, first_outbound)
        with transaction(deps.sessions) as session:
            report.pruned_events = prune_webhook_events(session)
    report.seconds = time.monotonic() - started
    event(
        log,
        "sync.finished",
        logging.WARNING if report.errors else logging.INFO,
        lines=report.lines,
        pages=report.pages,
        chats=report.chats,
        recorded=report.recorded,
        message_pages=report.message_pages,
        outbound_found=report.outbound_found,
        errors=len(report.errors),
        seconds=round(report.seconds, 3),
    )
    return report


def _call(deps: Deps, fn: Callable[[], T]) -> T:
    """One Linq read with the share path's retry policy (5xx, 429, connection failures)."""
    failures: list[LinqCallError] = []

    def attempt() -> T:
        try:
            return fn()
        except LinqCallError as err:
            verdict = classify(err.result)
            if not verdict.retryable:
                raise
            failures.append(err)
            raise Retryable(verdict, err.retry_after_s) from err

    result: Any = build(deps.retry_policy, sleep=deps.sleep, rng=deps.rng)(attempt)
    if isinstance(result, Exhausted):
        raise failures[-1]
    return result  # type: ignore[no-any-return]


def _account_lines(deps: Deps, gateway: LinqGateway, report: SyncReport) -> list[str]:
    """GET /v3/phone_numbers, minus RCS-only lines (they never carry iMessage)."""
    try:
        numbers = _call(deps, gateway.list_lines)
    except LinqCallError as exc:
        if exc.status == 401:
            raise
        # Lines cardshare already knows still get synced.
        report.errors.append(f"listing lines: {exc.one_line()}")
        with transaction(deps.sessions) as session:
            return known_lines(session)
    # Each line's reputation as Linq rates it now: the gate holds a CRITICAL line (docs/decisions.md §10).
    now = deps.clock()
    with transaction(deps.sessions) as session:
        for n in numbers:
            if n.reputation is not None:
                record_reputation(session, n.phone_number, n.reputation, at=now, line_type=n.line_type)
    return [n.phone_number for n in numbers if n.line_type != "RCS"]


def _sync_line(
    deps: Deps,
    gateway: LinqGateway,
    line: str,
    report: SyncReport,
    progress: SyncProgress,
    first_outbound: FirstOutbound | None = None,
) -> None:
    with transaction(deps.sessions) as session:
        cursor = sync_cursor(session, line)
    fresh = cursor is None
    report.lines += 1
    report.resumed += not fresh
    while True:
        try:
            page = _call(deps, functools.partial(gateway.list_chats, line, limit=PAGE_SIZE, cursor=cursor))
        except LinqCallError as exc:
            if exc.status == 401:
                raise
            if exc.status == 400 and not fresh and report.pages == 0:
                # A cursor saved long ago may no longer be accepted: start the line over.
                cursor, fresh = None, True
                continue
            report.errors.append(f"line {line}: {exc.one_line()}")
            event(log, "sync.line_failed", logging.WARNING, line=line, error=exc.one_line())
            return
        activities: list[ChatActivity] = []
        for chat in page.items:
            try:
                activity = payloads.activity_from_chat(chat, line=line)
            except payloads.MalformedPayload as exc:
                event(log, "sync.chat_unusable", logging.WARNING, line=line, reason=str(exc))
                report.skipped += 1
                continue
            if activity.service != "iMessage":
                report.skipped += 1
                continue
            activities.append(activity)
        cursor = page.next_cursor
        queued: ChatDays = []
        with transaction(deps.sessions) as session:
            record_activity(session, activities)
            if first_outbound is not None:
                queued = first_outbound.mark(session, activities)
            save_sync_page(session, line, next_cursor=cursor, chats=len(page.items), fresh=fresh)
        if first_outbound is not None:
            first_outbound.publish(queued)
        fresh = False
        report.pages += 1
        report.chats += len(page.items)
        report.recorded += len(activities)
        progress.chats(len(page.items))
        if cursor is None:
            return


def _look_up_messages(
    deps: Deps,
    gateway: LinqGateway,
    lines: Sequence[str] | None,
    budget: int,
    report: SyncReport,
    progress: SyncProgress,
    first_outbound: FirstOutbound | None = None,
) -> None:
    """Read messages of chats without a known outbound one, `budget` pages at most."""
    if budget <= 0:
        return
    with transaction(deps.sessions) as session:
        candidates = lookup_candidates(
            session, lines=lines, include_groups=deps.settings.share_groups, limit=budget
        )
    progress.lookups(len(candidates))
    for candidate in candidates:
        if report.message_pages >= budget:
            return
        if not _look_up_chat(deps, gateway, candidate, budget, report, first_outbound):
            return
        progress.lookup()


def _look_up_chat(
    deps: Deps,
    gateway: LinqGateway,
    candidate: LookupCandidate,
    budget: int,
    report: SyncReport,
    first_outbound: FirstOutbound | None = None,
) -> bool:
    """Page one chat's messages until an outbound one, the end, or the budget. False: stop all
    lookups (Linq is failing; the next run carries on)."""
    chat_id = str(candidate.chat_id)
    cursor = candidate.cursor
    pages = 0
    found = None
    report.chats_looked_up += 1
    while report.message_pages < budget:
        try:
            page = _call(
                deps, functools.partial(gateway.list_messages, chat_id, limit=PAGE_SIZE, cursor=cursor)
            )
        except LinqCallError as exc:
            if exc.status == 401:
                raise
            if exc.status == 404:  # 404/2001: Linq no longer knows the chat; stop sharing into it
                with transaction(deps.sessions) as session:
                    mark_not_found(session, candidate.chat_id)
                    save_lookup(session, candidate.chat_id, cursor=None, pages=pages, found=False)
                report.not_found += 1
                return True
            report.errors.append(f"messages of chat {chat_id}: {exc.one_line()}")
            event(log, "sync.lookup_failed", logging.WARNING, chat_id=chat_id, error=exc.one_line())
            return False
        pages += 1
        report.message_pages += 1
        found = payloads.newest_outbound(page.items)
        cursor = page.next_cursor
        if found is not None or cursor is None:
            cursor = None
            break
    queued: ChatDays = []
    with transaction(deps.sessions) as session:
        if found is not None:
            activity = ChatActivity(candidate.chat_id, candidate.line_phone, outbound_at=found)
            record_activity(session, [activity])
            if first_outbound is not None:
                queued = first_outbound.mark(session, [activity])
            report.outbound_found += 1
        # A cursor left here means the budget ran out inside this chat: the next run resumes it.
        save_lookup(session, candidate.chat_id, cursor=cursor, pages=pages, found=found is not None)
    if first_outbound is not None:
        first_outbound.publish(queued)
    return True
