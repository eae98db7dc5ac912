"""Where a chat-day stands and how an attempt ended, and the status sets every query shares.

The sets are defined here once; `worker.store.due` renders them into SQL, and the rules, the
checker and the status page use them as they are.
"""

from __future__ import annotations

import enum


class DayStatus(enum.StrEnum):
    """Where a chat-day stands.

    queued: a sweep enqueued it; claimed: a worker holds the lease and may be calling Linq;
    retry: waiting until lease_until after a transient failure or a long Retry-After;
    unknown: the last call's outcome is unknown (read timeout); retried inside Linq's 5-minute
    window so a 429 can confirm it; held: due, but its line is held (paused, CRITICAL or FLAGGED at
    Linq, outside its hours, or waiting for its slot at the line's pace) until lease_until or until
    the hold lifts (docs/decisions.md §10). succeeded/skipped/failed end the day.
    """

    QUEUED = "queued"
    HELD = "held"
    CLAIMED = "claimed"
    RETRY = "retry"
    UNKNOWN = "unknown"
    SUCCEEDED = "succeeded"
    SKIPPED = "skipped"
    FAILED = "failed"


class AttemptOutcome(enum.StrEnum):
    OK = "ok"
    RETRYABLE = "retryable"
    FATAL = "fatal"
    UNKNOWN = "unknown"


# Not finished: a worker may still take the chat-day (once a lease has run out).
OPEN_STATUSES = (DayStatus.QUEUED, DayStatus.CLAIMED, DayStatus.RETRY, DayStatus.UNKNOWN, DayStatus.HELD)
# Open and not held: what the sweep re-marks and recovery re-queues once their lease ends. Held
# chat-days belong to the release pass alone, so a held line's days are not re-published in a loop.
REQUEUABLE_STATUSES = (DayStatus.QUEUED, DayStatus.CLAIMED, DayStatus.RETRY, DayStatus.UNKNOWN)
# The day is over for this chat; nothing changes it any more.
FINAL_STATUSES = (DayStatus.SUCCEEDED, DayStatus.SKIPPED, DayStatus.FAILED)
# Open with a lease: nobody else may take the chat-day before its lease ends.
LEASED_STATUSES = (DayStatus.CLAIMED, DayStatus.RETRY, DayStatus.UNKNOWN, DayStatus.HELD)
# Open statuses that become a miss when the day ends; `unknown` stays unknown, counted neither as
# shared nor as missed (docs/decisions.md §4); `held` ends as skipped, naming its hold (§10).
MISSABLE_STATUSES = (DayStatus.QUEUED, DayStatus.CLAIMED, DayStatus.RETRY)
# Final, for a stated reason other than success: the chat's day is closed (NotDue.DAY_CLOSED).
CLOSED_STATUSES = (DayStatus.SKIPPED, DayStatus.FAILED)
ALL_STATUSES = tuple(DayStatus)
