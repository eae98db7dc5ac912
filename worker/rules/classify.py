"""One pure function decides what a Linq answer to a share means. Tested as a table.

Linq's rule of thumb (1xxx/2xxx don't retry, 3xxx retry) has exceptions, so this classifies
by (HTTP status, Linq code) and never by message: docs/linq-contract.md §3 is the table, and
docs/decisions.md §3-§6 say what cardshare does with each answer.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from worker.rules.states import AttemptOutcome


class Transport(enum.StrEnum):
    """How a call failed below HTTP."""

    NOT_SENT = "not_sent"  # connect error/timeout, pool timeout: Linq never saw it
    MAYBE_SENT = "maybe_sent"  # read timeout, reset after sending: Linq may have acted


class Action(enum.StrEnum):
    SUCCESS = "success"  # any 2xx: the share was accepted
    RETRY = "retry"  # transient: back off and try again in this run
    RATE_LIMITED = "rate_limited"  # 429: wait Retry-After (or confirms an unknown earlier share)
    CARD_INACTIVE = "card_inactive"  # 404/2012: mark the line's card inactive, skip the day
    DEFER = "defer"  # 403/2027, 503/4004: nothing to do today, try on a later day
    CHAT_NOT_FOUND = "chat_not_found"  # 404/2001 (or a bare 404): flag the chat
    OPTED_OUT = "opted_out"  # 403/2024: mark the chat opted out
    AUTH = "auth"  # 401/2004, 403/2005: our credentials; page a human, keep the day open
    PERMANENT = "permanent"  # other 4xx: a bug or bad data; fail the day


@dataclass(frozen=True)
class CallResult:
    """A normalized answer: an HTTP status and Linq code, or a transport failure."""

    status: int | None = None
    code: int | None = None
    transport: Transport | None = None


@dataclass(frozen=True)
class Verdict:
    action: Action
    outcome: AttemptOutcome

    @property
    def retryable(self) -> bool:
        return self.action in (Action.RETRY, Action.RATE_LIMITED)


def classify(result: CallResult) -> Verdict:
    """Map one call's result to what to do next and how to record the attempt."""
    if result.transport is Transport.NOT_SENT:
        return Verdict(Action.RETRY, AttemptOutcome.RETRYABLE)
    if result.transport is Transport.MAYBE_SENT:
        # The share may have happened; a retry inside 5 minutes is answered 429 if it did.
        return Verdict(Action.RETRY, AttemptOutcome.UNKNOWN)
    status, code = result.status, result.code
    if status is None:
        raise ValueError("a CallResult needs a status or a transport failure")
    if 200 <= status < 300:
        return Verdict(Action.SUCCESS, AttemptOutcome.OK)
    if status == 429:
        return Verdict(Action.RATE_LIMITED, AttemptOutcome.RETRYABLE)
    if (status, code) == (503, 4004) or (status, code) == (403, 2027):
        return Verdict(Action.DEFER, AttemptOutcome.FATAL)
    if status >= 500 or status == 408:
        return Verdict(Action.RETRY, AttemptOutcome.RETRYABLE)
    if code == 2012:
        return Verdict(Action.CARD_INACTIVE, AttemptOutcome.FATAL)
    if status == 404:
        return Verdict(Action.CHAT_NOT_FOUND, AttemptOutcome.FATAL)
    if (status, code) == (403, 2024):
        return Verdict(Action.OPTED_OUT, AttemptOutcome.FATAL)
    if status == 401 or (status, code) == (403, 2005):
        return Verdict(Action.AUTH, AttemptOutcome.FATAL)
    return Verdict(Action.PERMANENT, AttemptOutcome.FATAL)
