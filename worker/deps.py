"""What the work needs from the outside world, in one frozen value: settings, sessions, Linq
clients, the clock, sleep and randomness, and the sandbox for suspect chat-days.

The runtime builds the process's `Deps`; tests build their own with a fake clock and sleep. The
sandbox is typed by a Protocol, so nothing here depends on how it runs its process.
"""

from __future__ import annotations

import datetime as dt
import random
import time
import uuid
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from worker.config import Settings
from worker.rules.cadence import Policy
from worker.rules.gate import PacePolicy
from worker.rules.retrying import RetryPolicy

if TYPE_CHECKING:
    from sqlalchemy.orm import Session, sessionmaker

    # Annotations only: worker.linq brings httpx (~0.1 s to import), which commands that never
    # call Linq (`status`, `history`, `check`) do not need.
    from worker.linq import LinqGateway, LinqResponse


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def policy_of(s: Settings) -> Policy:
    """The cadence policy the settings give (what is due, in which zone)."""
    return Policy(
        zone=s.zone, active_days=s.active_days, share_groups=s.share_groups, due_policy=s.due_policy
    )


def pace_of(s: Settings) -> PacePolicy:
    """The pace policy the settings give (per line, at risk, per account)."""
    return PacePolicy(
        line_per_minute=s.line_shares_per_minute,
        at_risk_per_minute=s.at_risk_shares_per_minute,
        account_per_minute=s.account_shares_per_minute,
        release_interval_s=s.release_interval_s,
    )


@dataclass(frozen=True)
class Grant:
    """A pace answer: `granted`, or the slot `wait_s` from now the refused call was given."""

    granted: bool
    wait_s: float = 0.0


class Pacer(Protocol):
    """Per-line pace shared by every worker (worker.sharing.pace.RedisPacer)."""

    def acquire(self, line: str, *, cap: int | None, account_cap: int | None, spacing_s: float) -> Grant: ...

    def reserve(self, wants: Sequence[tuple[str, int, float]]) -> Reservation: ...

    def reset(self, line: str) -> None: ...


@dataclass(frozen=True)
class Reservation:
    """Each line's first slot, as seconds from now."""

    starts_in_s: dict[str, float]


class ShareSandbox(Protocol):
    """Makes one share call at a time somewhere a crash cannot take the caller down."""

    def share(self, chat_id: uuid.UUID) -> LinqResponse: ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class Deps:
    """What a share needs from the outside world; tests pass their own clock and sleep."""

    settings: Settings
    sessions: sessionmaker[Session]
    client: Callable[[], LinqGateway]
    clock: Callable[[], dt.datetime] = utcnow
    sleep: Callable[[float], None] = time.sleep
    rng: Callable[[], float] = random.random
    # Where chat-days that already lost a worker make their call (threads/gevent pools).
    sandbox: ShareSandbox | None = None
    # Checkout/return access to clients for the share call (one per call in flight); falls
    # back to `client` when not given.
    lease: Callable[[], AbstractContextManager[LinqGateway]] | None = None
    # Per-line pace in Redis; None only where nothing is paced (CARDSHARE_LINE_SHARES_PER_MINUTE=0
    # and no account cap), never as a way around it.
    pacer: Pacer | None = None

    @property
    def policy(self) -> Policy:
        return policy_of(self.settings)

    @property
    def pace(self) -> PacePolicy:
        return pace_of(self.settings)

    @property
    def retry_policy(self) -> RetryPolicy:
        s = self.settings
        return RetryPolicy(
            attempts=s.retry_attempts, budget_s=s.retry_budget_s, base_s=s.retry_base_s, cap_s=s.retry_cap_s
        )
