"""What every pass (sweep, recovery, release, the event path) shares: how it publishes, how deep
the share queue is, and the report it prints and logs.

Apart from `sweep` so that `cardshare recover` can run its pass without importing SQLAlchemy
(`sharing.recover`).
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from worker.config import Settings

Publish = Callable[[Sequence[uuid.UUID], dt.date], int]


@dataclass(frozen=True)
class QueueDepth:
    ready: int
    unacked: int

    @property
    def drained(self) -> bool:
        """Nothing waits in the queue. Unacked messages are ignored on purpose: a killed worker
        leaves its prefetched messages there for the whole visibility timeout (an hour), so
        waiting for them would strand their chat-days. A live worker's reserved message that
        gets re-queued as well is harmless: the second copy finds the chat-day claimed."""
        return self.ready == 0


@dataclass
class SweepReport:
    kind: str
    day: dt.date
    ran: bool = True
    scanned: int = 0
    enqueued: int = 0
    requeued: int = 0
    poisoned: int = 0
    closed_past: int = 0
    analyzed: str | None = None
    held: int = 0  # chat-days marked held (the line is held, or their slot is later)
    rearmed: int = 0
    active_cards: int | None = None
    card_error: str | None = None
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)

    def one_line(self) -> str:
        if not self.ran:
            return f"{self.kind}: another {self.kind} is running; nothing done"
        parts = [
            f"{self.kind} {self.day}: scanned {self.scanned}",
            f"enqueued {self.enqueued}",
            f"re-enqueued {self.requeued}",
        ]
        if self.held:
            parts.append(f"held {self.held}")
        if self.poisoned:
            parts.append(f"failed as poison {self.poisoned}")
        if self.card_error:
            parts.append(f"card refresh failed ({self.card_error})")
        return ", ".join(parts) + f" in {self.seconds:.1f}s"


def publish_by_day(publish: Publish, rows: Iterable[tuple[uuid.UUID, dt.date]]) -> int:
    """Chat-days of several days (lines in different zones), one publish per day."""
    by_day: dict[dt.date, list[uuid.UUID]] = {}
    for chat_id, day in rows:
        by_day.setdefault(day, []).append(chat_id)
    return sum(publish(ids, day) for day, ids in sorted(by_day.items()))


def queue_lease_s(settings: Settings) -> float:
    """How long a queued message may wait before a sweep assumes it lost (never below 2 sweeps)."""
    return max(2 * settings.sweep_interval_s, 1800.0)
