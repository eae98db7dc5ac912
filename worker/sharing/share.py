"""Share one chat's card for one day: check, claim, call with retries, record.

`share_chat` is the whole unit of work behind the Celery task and `cardshare share --wait`.
No transaction is open while Linq is being called: the claim and the first attempt row commit
before the call, the outcome commits right after it.
"""

from __future__ import annotations

import datetime as dt
import enum
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

from sqlalchemy.orm import Session

from worker.config import LINQ_SHARE_WINDOW_S
from worker.deps import Deps
from worker.errors import StoreUnavailable
from worker.linq import LinqCallError
from worker.logs import event
from worker.ops import metrics, tracing
from worker.rules import bounds
from worker.rules.cadence import NotDue, explain
from worker.rules.classify import Action, CallResult, Transport, Verdict, classify
from worker.rules.gate import HoldReason, LineState, decide, hold_lease, line_cap, spacing_s
from worker.rules.gate import Verdict as Gate
from worker.rules.retrying import Exhausted, Retryable, build
from worker.rules.states import AttemptOutcome, DayStatus
from worker.sharing import drill_hooks
from worker.sharing.pace import PaceUnavailable
from worker.sharing.plan import pace_reason
from worker.sharing.sandbox import SandboxCrashed
from worker.store import shares
from worker.store.cards import mark_card_inactive
from worker.store.chats import mark_not_found, mark_opted_out
from worker.store.hot import HotConnection
from worker.store.session import autocommit, transaction

log = logging.getLogger("cardshare.share")

# How long a chat-day waits when Redis cannot be asked for a slot: the release pass tries again.
UNPACED_WAIT_S = 30.0


class Outcome(enum.StrEnum):
    SHARED = "shared"
    CONFIRMED = "confirmed"  # a 429 proved an earlier, unknown share was accepted
    SKIPPED = "skipped"
    FAILED = "failed"
    RESCHEDULED = "rescheduled"
    UNKNOWN = "unknown"
    NOT_DUE = "not_due"
    BUSY = "busy"  # someone else holds or finished the chat-day
    LOST = "lost"  # our claim was taken over while we ran; nothing recorded by us
    DAY_OVER = "day_over"
    HELD = "held"  # the line is held (paused, CRITICAL/FLAGGED, outside hours): the chat-day waits
    PACED = "paced"  # the line's pace has no room now: the chat-day waits for its slot


@dataclass(frozen=True)
class ShareResult:
    outcome: Outcome
    chat_id: uuid.UUID
    day: dt.date
    reason: str | None = None
    attempts: int = 0
    retry_in_s: float | None = None
    trace_id: str | None = None

    def one_line(self) -> str:
        text = f"{self.outcome.value}: chat {self.chat_id} day {self.day}"
        if self.reason:
            text += f": {self.reason}"
        if self.attempts:
            text += f" ({self.attempts} HTTP attempt{'s' if self.attempts != 1 else ''})"
        if self.retry_in_s is not None:
            text += f"; retry in {self.retry_in_s:.0f}s"
        if self.trace_id:
            text += f"; trace {self.trace_id}"
        return text


@dataclass
class _Run:
    """State of one claimed run across its HTTP attempts."""

    claim: shares.Claim
    attempt: tuple[int, int] | None
    # Monotonic time at which the newest share of ours whose outcome is unknown was sent
    # (this run's, or an earlier run's within Linq's window): a 429 confirms it only if it
    # comes less than LINQ_SHARE_WINDOW_S after (docs/decisions.md §3).
    unknown_since: float | None
    unknown_in_run: bool = False
    open_attempt: int | None = None  # attempt id whose call went out and is not recorded yet
    accepted: shares.AttemptResult | None = None  # a 2xx (or confirming 429) not yet recorded
    http_attempts: int = 0
    last_attempt_no: int | None = None  # attempt_no of the newest attempts row, for the log
    trace_ids: list[str] = field(default_factory=list)
    line: LineState | None = None


def _pace(deps: Deps, line: LineState) -> tuple[str, float] | None:
    """Ask the line's pace for this call (one Lua call to Redis): None when granted, else the
    reason to hold with and the wait until the slot it was given (docs/decisions.md §11)."""
    pace = deps.pace
    cap = line_cap(line, pace)
    account = pace.account_per_minute or None
    if cap is None and account is None:
        return None
    if deps.pacer is None:
        return f"{HoldReason.PACE.value}: no pacer configured; never shared unpaced", UNPACED_WAIT_S
    try:
        grant = deps.pacer.acquire(line.phone, cap=cap, account_cap=account, spacing_s=spacing_s(cap, pace))
    except PaceUnavailable as exc:
        event(log, "share.pace_unavailable", logging.WARNING, line=line.phone, error=str(exc))
        metrics.pace_refused("unavailable")
        return f"{HoldReason.PACE.value}: {exc}; the share waits", UNPACED_WAIT_S
    if grant.granted:
        return None
    metrics.pace_refused("line")
    return pace_reason(cap or account or 0), grant.wait_s


def share_chat(chat_id: uuid.UUID, day: dt.date, deps: Deps, *, task_id: str | None = None) -> ShareResult:
    """Share `chat_id`'s card for `day`, at most once. Raises StoreUnavailable if the DB is down."""
    started = time.monotonic()
    with tracing.span("cardshare.share", carry=True, chat_id=str(chat_id), day=str(day)) as span:
        result = _share_chat(chat_id, day, deps, task_id)
        span.set(outcome=result.outcome.value, attempts=result.attempts, linq_trace_id=result.trace_id)
    metrics.share_finished(result.outcome.value, time.monotonic() - started)
    if result.outcome in (Outcome.BUSY, Outcome.LOST):
        metrics.claim_conflict(result.outcome.value)
    return result


def _share_chat(chat_id: uuid.UUID, day: dt.date, deps: Deps, task_id: str | None) -> ShareResult:
    now = deps.clock()
    # Autocommit: each statement here is atomic by itself (the claim is one upsert), so the
    # BEGIN/COMMIT round trips of a transaction would buy nothing.
    with autocommit(deps.sessions) as s:
        chat = shares.load_chat(
            s, chat_id, day, unconfirmed_window_s=LINQ_SHARE_WINDOW_S, default_zone=deps.settings.zone
        )
        if chat is None:
            return ShareResult(Outcome.NOT_DUE, chat_id, day, reason="unknown chat")
        line = chat.line
        assert line is not None
        # The line's own day (docs/decisions.md §12): the claim key is (chat, the line's local date).
        today = line.today(now)
        if day == today:
            stop = _gate(s, chat, line, day, now, deps)
            if stop is not None:
                return stop
            claim = shares.claim(
                s,
                chat_id,
                day,
                lease_s=deps.settings.lease_s,
                max_lost_claims=deps.settings.max_lost_claims,
                task_id=task_id,
                begin=True,
            )
            if claim is None:
                return ShareResult(
                    Outcome.BUSY, chat_id, day, reason="another worker holds or finished this chat-day"
                )
    if day != today:
        return _wrong_day(chat_id, day, today, deps)
    assert claim is not None
    prior_unknown = chat.unconfirmed_recent
    unknown_since = time.monotonic() - chat.unconfirmed_age_s if chat.unconfirmed_age_s is not None else None
    first = claim.first_attempt
    event(
        log,
        "share.claimed",
        chat_id=str(chat_id),
        day=str(day),
        claims=claim.claims,
        prior_unknown=prior_unknown,
    )

    run = _Run(claim=claim, attempt=first, unknown_since=unknown_since, line=line)
    retrying = build(deps.retry_policy, sleep=deps.sleep, rng=deps.rng, before_sleep=_log_sleep(chat_id, day))
    try:
        result = retrying(lambda: _attempt(run, chat.line_phone, deps, task_id))
        if isinstance(result, Exhausted):
            return _reschedule(run, result, deps)
    except StoreUnavailable:
        raise
    except Exception as exc:
        return _after_error(run, exc, deps)
    assert isinstance(result, ShareResult)
    return result


def _gate(
    s: HotConnection, chat: shares.ChatRow, line: LineState, day: dt.date, now: dt.datetime, deps: Deps
) -> ShareResult | None:
    """The gate, re-checked right before the claim (the line may have been paused, or the chat
    gone CRITICAL, since the chat-day was queued), then the line's pace (docs/decisions.md §10).
    None: claim and call; otherwise the chat-day was left as the result says."""
    chat_id = chat.chat_id
    decision = decide(
        chat.facts,
        line,
        now=now,
        policy=deps.policy,
        shared_today=chat.shared_today,
        day_closed=chat.day_closed,
    )
    if decision.verdict is Gate.NOT_DUE:
        why = decision.not_due
        assert why is not None
        if why not in (NotDue.ALREADY_SHARED, NotDue.DAY_CLOSED):
            shares.close_unclaimed(s, chat_id, day, DayStatus.SKIPPED, why.value)
        return ShareResult(Outcome.NOT_DUE, chat_id, day, reason=explain(why))
    if chat.held_waiting:
        # A copy of a message for a chat-day resting until its slot or its hold's end.
        return ShareResult(Outcome.HELD, chat_id, day, reason=chat.reason_today)
    if decision.held is not None:
        held = decision.held
        rest = (hold_lease(held, line, day, now) - now).total_seconds()
        shares.hold_unclaimed(s, chat_id, day, held.text(), delay_s=rest)
        event(log, "share.held", chat_id=str(chat_id), day=str(day), reason=held.text())
        return ShareResult(Outcome.HELD, chat_id, day, reason=held.text())
    paced = _pace(deps, line)
    if paced is not None:
        reason, wait = paced
        shares.hold_unclaimed(s, chat_id, day, reason, delay_s=wait)
        event(log, "share.paced", chat_id=str(chat_id), day=str(day), retry_in_s=round(wait, 1))
        return ShareResult(Outcome.PACED, chat_id, day, reason=reason, retry_in_s=wait)
    return None


def _attempt(run: _Run, line_phone: str, deps: Deps, task_id: str | None) -> ShareResult:
    """One HTTP try. Returns a final result, or raises Retryable for tenacity."""
    claim = run.claim
    if run.attempt is None:
        # A retry inside the run is another call at the line's pace: it needs its own slot.
        paced = _pace(deps, run.line) if run.line is not None else None
        if paced is not None:
            return _hold_claimed(run, paced, deps)
        with autocommit(deps.sessions) as s:
            run.attempt = shares.begin_attempt(s, claim, task_id=task_id)
    if run.attempt is None:
        # The lease ran out and another worker took over: calling now could double-share.
        return ShareResult(Outcome.LOST, claim.chat_id, claim.day, reason="claim taken over; not calling")
    attempt_id, attempt_no = run.attempt
    run.last_attempt_no = attempt_no
    run.http_attempts += 1
    called = time.monotonic()
    run.open_attempt = attempt_id
    with tracing.span("linq.share_contact_card", chat_id=str(claim.chat_id), attempt=attempt_no) as span:
        try:
            if claim.lost_claims >= 1 and deps.sandbox is not None:
                response = deps.sandbox.share(claim.chat_id)
            else:
                drill_hooks.before_share_call(claim.chat_id)
                if deps.lease is not None:
                    with deps.lease() as gateway:
                        response = gateway.share_contact_card(str(claim.chat_id))
                else:
                    response = deps.client().share_contact_card(str(claim.chat_id))
            err: LinqCallError | None = None
        except LinqCallError as exc:
            err = exc
        except SandboxCrashed as crash:
            metrics.http_attempt(None, "crash", time.monotonic() - called)
            run.open_attempt = None
            return _crashed(run, attempt_id, crash, deps)
        answered = time.monotonic()
        # Every field of Linq's answer bounded and typed before it goes anywhere near SQL.
        if err is None:
            b = bounds.bound_answer(status=response.status, trace_id=response.trace_id)
            transport = None if b.http_status is not None else Transport.MAYBE_SENT
        else:
            b = bounds.bound_answer(
                status=err.status,
                code=err.code,
                message=err.message,
                retry_after_s=err.retry_after_s,
                trace_id=err.trace_id,
            )
            transport = err.transport
            if transport is None and b.http_status is None:
                transport = Transport.MAYBE_SENT  # an answer we could not read: Linq may have acted
        if b.notes:
            event(
                log, "share.answer_bounded", logging.WARNING, chat_id=str(claim.chat_id), notes=list(b.notes)
            )
        verdict = classify(CallResult(status=b.http_status, code=b.linq_code, transport=transport))
        span.set(
            http_status=b.http_status,
            outcome=verdict.outcome.value,
            linq_code=b.linq_code,
            linq_trace_id=b.trace_id,
        )
    metrics.http_attempt(
        b.http_status,
        "timeout" if transport is Transport.MAYBE_SENT else "connection",
        answered - called,
    )
    trace = b.trace_id
    if trace:
        run.trace_ids.append(trace)
    record = shares.AttemptResult(
        outcome=verdict.outcome,
        http_status=b.http_status,
        linq_code=b.linq_code,
        error=b.error,
        retry_after_s=b.retry_after_s,
        trace_id=trace,
    )
    event(
        log,
        "share.attempt",
        chat_id=str(claim.chat_id),
        day=str(claim.day),
        attempt=attempt_no,
        outcome=verdict.outcome.value,
        action=verdict.action.value,
        http_status=record.http_status,
        linq_code=record.linq_code,
        trace_id=trace,
    )
    run.attempt = None

    if verdict.action is Action.RATE_LIMITED and run.unknown_since is not None:
        age = answered - run.unknown_since
        if rate_limit_confirms(age):
            # docs/decisions.md §3: our earlier share's outcome was unknown and this 429 came
            # inside Linq's 5-minute window after it: it was accepted. Record success, do not
            # share again.
            confirmed = shares.AttemptResult(
                outcome=AttemptOutcome.OK,
                http_status=record.http_status,
                linq_code=record.linq_code,
                error=f"429 confirms the earlier share whose outcome was unknown ({age:.0f}s before)",
                retry_after_s=record.retry_after_s,
                trace_id=trace,
            )
            run.accepted = confirmed
            return _finish(
                run, attempt_id, confirmed, deps, DayStatus.SUCCEEDED, None, Outcome.CONFIRMED, confirmed=True
            )
        event(
            log,
            "share.rate_limit_not_confirming",
            logging.WARNING,
            chat_id=str(claim.chat_id),
            unknown_age_s=round(age, 1),
        )
    if verdict.action is Action.SUCCESS:
        run.accepted = record
    if verdict.retryable:
        with autocommit(deps.sessions) as s:
            shares.finish_attempt(s, attempt_id, record, day=claim.day)
        run.open_attempt = None
        if verdict.outcome is AttemptOutcome.UNKNOWN:
            run.unknown_in_run = True
            run.unknown_since = called
        raise Retryable(verdict, record.retry_after_s)
    return _final(run, attempt_id, record, verdict, line_phone, err, deps)


# The share path confirms only this far inside the window, so that the 429's recorded time
# (a few milliseconds later) is inside it too when `cardshare check` judges it.
CONFIRM_MARGIN_S = 5.0


def rate_limit_confirms(unknown_age_s: float) -> bool:
    """A 429 proves an earlier share of unknown outcome was accepted only when it came less than
    Linq's share window after that share was sent (docs/decisions.md §3)."""
    return 0.0 <= unknown_age_s < LINQ_SHARE_WINDOW_S - CONFIRM_MARGIN_S


def _final(
    run: _Run,
    attempt_id: int,
    record: shares.AttemptResult,
    verdict: Verdict,
    line_phone: str,
    err: LinqCallError | None,
    deps: Deps,
) -> ShareResult:
    code = f"HTTP {record.http_status}/{record.linq_code if record.linq_code is not None else '-'}"
    match verdict.action:
        case Action.SUCCESS:
            return _finish(run, attempt_id, record, deps, DayStatus.SUCCEEDED, None, Outcome.SHARED)
        case Action.CARD_INACTIVE:
            return _finish(
                run,
                attempt_id,
                record,
                deps,
                DayStatus.SKIPPED,
                f"card_inactive ({code})",
                Outcome.SKIPPED,
                side=lambda s: mark_card_inactive(s, line_phone),
            )
        case Action.DEFER:
            return _finish(
                run, attempt_id, record, deps, DayStatus.SKIPPED, f"deferred ({code})", Outcome.SKIPPED
            )
        case Action.OPTED_OUT:
            return _finish(
                run,
                attempt_id,
                record,
                deps,
                DayStatus.SKIPPED,
                f"opted_out ({code})",
                Outcome.SKIPPED,
                side=lambda s: mark_opted_out(s, run.claim.chat_id),
            )
        case Action.CHAT_NOT_FOUND:
            return _finish(
                run,
                attempt_id,
                record,
                deps,
                DayStatus.FAILED,
                f"chat_not_found ({code})",
                Outcome.FAILED,
                side=lambda s: mark_not_found(s, run.claim.chat_id),
            )
        case Action.AUTH:
            # Our credentials, not the chat: keep the day open and try again after a sweep interval.
            event(
                log,
                "share.auth_failed",
                logging.ERROR,
                http_status=record.http_status,
                linq_code=record.linq_code,
            )
            return _finish(
                run,
                attempt_id,
                record,
                deps,
                DayStatus.RETRY,
                f"auth ({code}): check LINQ_API_V3_API_KEY",
                Outcome.RESCHEDULED,
                retry_in_s=deps.settings.sweep_interval_s,
            )
        case _:
            detail = record.error or ""
            return _finish(
                run,
                attempt_id,
                record,
                deps,
                DayStatus.FAILED,
                f"permanent ({code}): {detail}"[:300],
                Outcome.FAILED,
            )


def _finish(
    run: _Run,
    attempt_id: int,
    record: shares.AttemptResult,
    deps: Deps,
    status: DayStatus,
    reason: str | None,
    outcome: Outcome,
    *,
    confirmed: bool = False,
    retry_in_s: float | None = None,
    side: Callable[[Session], None] | None = None,
) -> ShareResult:
    """Commit the attempt's outcome and the day's status together, fenced by the claim token.

    After a 2xx this write must land: a lost write turns into a second share later. So it is
    retried for as long as the lease leaves room, and only then given up to crash recovery.
    """
    deadline = time.monotonic() + max(1.0, deps.settings.lease_s - deps.settings.task_soft_time_limit_s)
    delay = 0.5
    fallback = False
    while True:
        try:
            # One statement, unless a side effect (card, opt-out, gone) must commit with it.
            scope = transaction if side is not None else autocommit
            with scope(deps.sessions) as s:
                held = shares.finish(
                    s,
                    run.claim,
                    attempt_id,
                    record,
                    status,
                    reason=reason,
                    retry_in_s=retry_in_s,
                    confirmed_by_rate_limit=confirmed,
                )
                if held and side is not None:
                    assert isinstance(s, Session)
                    side(s)
            break
        except StoreUnavailable:
            if time.monotonic() + delay > deadline:
                raise
            event(log, "share.record_retry", logging.WARNING, chat_id=str(run.claim.chat_id), delay_s=delay)
            deps.sleep(delay)
            delay = min(delay * 2, 5.0)
        except Exception as exc:
            # Not the connection: something in what we tried to store. The outcome must still
            # land (after a 2xx, a lost write means a second share), so store it once more
            # with none of Linq's metadata and no side effect, and say so.
            if fallback:
                raise
            fallback = True
            event(
                log,
                "share.record_fallback",
                logging.ERROR,
                chat_id=str(run.claim.chat_id),
                day=str(run.claim.day),
                status=status.value,
                error=bounds.clean_text(f"{type(exc).__name__}: {exc}", 200),
            )
            record = shares.AttemptResult(
                outcome=record.outcome,
                http_status=bounds.http_status(record.http_status),
                error=f"metadata not stored ({type(exc).__name__})",
            )
            reason = None if reason is None else f"{status.value} (reason not stored: {type(exc).__name__})"
            side = None
    run.open_attempt = None
    run.accepted = None
    trace = run.trace_ids[-1] if run.trace_ids else None
    if held is not None and held.first_outbound_s is not None:
        metrics.first_outbound_to_share(held.first_outbound_s)
    if not held:
        return ShareResult(
            Outcome.LOST,
            run.claim.chat_id,
            run.claim.day,
            reason="claim taken over before recording",
            attempts=run.http_attempts,
            trace_id=trace,
        )
    event(
        log,
        "share.finished",
        chat_id=str(run.claim.chat_id),
        day=str(run.claim.day),
        attempt=run.last_attempt_no,
        http_attempts=run.http_attempts,
        outcome=outcome.value,
        status=status.value,
        reason=reason,
        trace_id=trace,
    )
    return ShareResult(
        outcome,
        run.claim.chat_id,
        run.claim.day,
        reason=reason,
        attempts=run.http_attempts,
        retry_in_s=retry_in_s,
        trace_id=trace,
    )


def _after_error(run: _Run, exc: Exception, deps: Deps) -> ShareResult:
    """An exception in our own code after the claim. The day must not stay 'claimed' (recovery
    would take it for a crash and, three times over, fail it as poison): record what is known.

    A 2xx not yet recorded is recorded as succeeded; a call that went out without an answer on
    record leaves the day unknown (retried inside Linq's window, so a 429 can confirm it);
    otherwise the day is handed back for a retry.
    """
    chat_id, day = run.claim.chat_id, run.claim.day
    what = bounds.clean_text(f"{type(exc).__name__}: {exc}", 200) or type(exc).__name__
    log.error(
        "share.error",
        exc_info=exc,
        extra={"event": "share.error", "fields": {"chat_id": str(chat_id), "day": str(day), "error": what}},
    )
    status, outcome, retry_in_s = DayStatus.RETRY, Outcome.RESCHEDULED, deps.settings.lease_s
    confirmed = False
    if run.accepted is not None:
        status, outcome, retry_in_s = DayStatus.SUCCEEDED, Outcome.SHARED, 0.0
        confirmed = run.accepted.http_status == 429
    elif run.open_attempt is not None or run.unknown_in_run:
        status, outcome, retry_in_s = DayStatus.UNKNOWN, Outcome.UNKNOWN, 30.0
    reason = None if status is DayStatus.SUCCEEDED else f"error: {what}"
    # The day first, on its own: it is what keeps the chat from being shared twice or left
    # claimed. The attempt row is best effort (it may be what failed).
    with transaction(deps.sessions) as s:
        held = shares.finish_day(
            s, run.claim, status, reason=reason, retry_in_s=retry_in_s, confirmed_by_rate_limit=confirmed
        )
    if run.open_attempt is not None:
        accepted = run.accepted
        try:
            with transaction(deps.sessions) as s:
                shares.finish_attempt(
                    s,
                    run.open_attempt,
                    shares.AttemptResult(
                        outcome=accepted.outcome if accepted else AttemptOutcome.UNKNOWN,
                        http_status=accepted.http_status if accepted else None,
                        error=f"not fully recorded: {what}",
                    ),
                    day=day,
                )
        except StoreUnavailable:
            raise
        except Exception as again:
            event(
                log,
                "share.attempt_unrecorded",
                logging.ERROR,
                chat_id=str(chat_id),
                error=type(again).__name__,
            )
    return ShareResult(
        outcome if held else Outcome.LOST,
        chat_id,
        day,
        reason=reason if held else "claim taken over",
        attempts=run.http_attempts,
        retry_in_s=retry_in_s if held and status is not DayStatus.SUCCEEDED else None,
    )


def _crashed(run: _Run, attempt_id: int, crash: SandboxCrashed, deps: Deps) -> ShareResult:
    """The sandbox died during this chat's call: charge the crash to this chat-day alone."""
    record = shares.AttemptResult(outcome=AttemptOutcome.UNKNOWN, error=str(crash))
    with transaction(deps.sessions) as s:
        shares.finish_attempt(s, attempt_id, record, day=run.claim.day)
        lost = shares.add_lost_claim(s, run.claim)
    limit = deps.settings.max_lost_claims
    if lost is not None and lost >= limit:
        reason = f"poison: {lost} crashes while sharing this chat (last: {crash}); not retried today"
        with transaction(deps.sessions) as s:
            shares.finish_day(s, run.claim, DayStatus.FAILED, reason=reason)
        event(
            log,
            "share.poison",
            logging.ERROR,
            chat_id=str(run.claim.chat_id),
            day=str(run.claim.day),
            lost_claims=lost,
        )
        return ShareResult(
            Outcome.FAILED, run.claim.chat_id, run.claim.day, reason=reason, attempts=run.http_attempts
        )
    with transaction(deps.sessions) as s:
        shares.finish_day(s, run.claim, DayStatus.UNKNOWN, reason=f"crash: {crash}", retry_in_s=1.0)
    return ShareResult(
        Outcome.UNKNOWN,
        run.claim.chat_id,
        run.claim.day,
        reason=str(crash),
        attempts=run.http_attempts,
        retry_in_s=1.0,
    )


def _reschedule(run: _Run, exhausted: Exhausted, deps: Deps) -> ShareResult:
    """Out of attempts or budget: hand the chat-day back with a lease that ends when to retry.

    The wait is never shorter than Linq's Retry-After. After an unknown outcome the retry comes
    well inside Linq's 5-minute window so its 429 can confirm the earlier share.
    """
    s = deps.settings
    backoff = min(s.sweep_interval_s, 30.0 * 2 ** max(0, run.claim.claims - 1))
    wait = max(exhausted.next_wait_s, backoff)
    last = exhausted.last
    if run.unknown_in_run:
        status = DayStatus.UNKNOWN
        wait = max(exhausted.next_wait_s, min(wait, 30.0))
        outcome = Outcome.UNKNOWN
    else:
        status = DayStatus.RETRY
        outcome = Outcome.RESCHEDULED
    reason = f"{last.verdict.action.value} after {exhausted.attempts} attempt(s)"
    with transaction(deps.sessions) as sess:
        held = shares.finish_day(sess, run.claim, status, reason=reason, retry_in_s=wait)
    if not held:
        return ShareResult(
            Outcome.LOST,
            run.claim.chat_id,
            run.claim.day,
            reason="claim taken over",
            attempts=run.http_attempts,
        )
    event(
        log,
        "share.rescheduled",
        chat_id=str(run.claim.chat_id),
        day=str(run.claim.day),
        attempt=run.last_attempt_no,
        http_attempts=run.http_attempts,
        outcome=outcome.value,
        status=status.value,
        retry_in_s=round(wait, 1),
        reason=reason,
        trace_id=run.trace_ids[-1] if run.trace_ids else None,
    )
    return ShareResult(
        outcome,
        run.claim.chat_id,
        run.claim.day,
        reason=reason,
        attempts=run.http_attempts,
        retry_in_s=wait,
        trace_id=run.trace_ids[-1] if run.trace_ids else None,
    )


def _hold_claimed(run: _Run, paced: tuple[str, float], deps: Deps) -> ShareResult:
    """No slot for this run's next attempt: the claimed chat-day rests until its slot."""
    reason, wait = paced
    with autocommit(deps.sessions) as s:
        held = shares.finish_day(s, run.claim, DayStatus.HELD, reason=reason, retry_in_s=wait)
    outcome = Outcome.PACED if held else Outcome.LOST
    event(
        log, "share.paced", chat_id=str(run.claim.chat_id), day=str(run.claim.day), retry_in_s=round(wait, 1)
    )
    return ShareResult(
        outcome, run.claim.chat_id, run.claim.day, reason=reason, attempts=run.http_attempts, retry_in_s=wait
    )


def _wrong_day(chat_id: uuid.UUID, day: dt.date, today: dt.date, deps: Deps) -> ShareResult:
    if day > today:
        return ShareResult(
            Outcome.NOT_DUE, chat_id, day, reason=f"day {day} has not started (today is {today})"
        )
    with transaction(deps.sessions) as s:
        shares.close_unclaimed(
            s, chat_id, day, DayStatus.FAILED, "day_over: the day ended before the share ran"
        )
    return ShareResult(
        Outcome.DAY_OVER, chat_id, day, reason="the day ended before this task ran; not made up"
    )


def _log_sleep(chat_id: uuid.UUID, day: dt.date) -> Callable[..., None]:
    def before_sleep(state: object) -> None:
        sleep_s = float(getattr(state, "upcoming_sleep", 0.0))
        metrics.retry_sleep(sleep_s)
        event(log, "share.retry_sleep", chat_id=str(chat_id), day=str(day), sleep_s=round(sleep_s, 3))

    return before_sleep
