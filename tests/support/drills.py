"""What the fault drills share: their timing and scale, bulk seeding, waiting for a day to settle,
the invariant check, the figures each drill reports, and a supervisor that restarts a worker."""

from __future__ import annotations

import datetime as dt
import json
import os
import threading
import uuid
from collections.abc import Callable, Iterator
from typing import Any

from sqlalchemy import text

from tests.support.procs import Proc, wait_until
from worker.config import Settings
from worker.deps import Deps
from worker.ops.check import CheckReport, run_check
from worker.queue.app import app
from worker.queue.publish import Publisher, queue_depth
from worker.rules.facts import ChatActivity
from worker.sharing.sweep import run_sweep
from worker.simulator import SimulatorAdmin
from worker.store.chats import record_activity
from worker.store.engine import make_engine
from worker.store.session import transaction

SCALE = os.environ.get("CARDSHARE_DRILL_SCALE", "small")
SHARE = "/share_contact_card$"


def scaled(small: int, full: int) -> int:
    return full if SCALE == "full" else small


def drill_timing(settings: Settings) -> Settings:
    """Short leases and intervals so recovery happens in seconds, in the production order."""
    return settings.replace(
        lease_s=10.0,
        recover_interval_s=3.0,
        release_interval_s=1.0,  # must not exceed the recover interval
        sweep_interval_s=30.0,
        retry_budget_s=3.0,
        task_soft_time_limit_s=6.0,
        task_time_limit_s=8.0,
        http_read_timeout_s=1.5,
        http_connect_timeout_s=1.0,
        retry_base_s=0.1,
        retry_cap_s=1.0,
        db_pool_size=10,
    )


def seed_chats(deps: Deps, sim: SimulatorAdmin, line: str, n: int) -> list[uuid.UUID]:
    """n due iMessage chats on `line`, in the simulator and in PostgreSQL, in bulk."""
    when = dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)
    ids = sorted(uuid.uuid4() for _ in range(n))
    sim.add_chats(
        [
            {
                "id": str(c),
                "line": line,
                "service": "iMessage",
                "messages": [{"is_from_me": True, "sent_at": when.isoformat()}],
            }
            for c in ids
        ]
    )
    with transaction(deps.sessions) as s:
        record_activity(
            s,
            [ChatActivity(c, line, service="iMessage", is_group=False, outbound_at=when) for c in ids],
        )
    return ids


def day_counts(deps: Deps, day: dt.date, chats: list[uuid.UUID] | None = None) -> dict[str, int]:
    with deps.sessions() as s:
        if chats is None:
            rows = s.execute(
                text("SELECT status, count(*) FROM share_days WHERE day = :d GROUP BY 1"), {"d": day}
            )
        else:
            rows = s.execute(
                text(
                    "SELECT status, count(*) FROM share_days WHERE day = :d AND chat_id = ANY(:c) GROUP BY 1"
                ),
                {"d": day, "c": chats},
            )
        return {str(k): int(v) for k, v in rows}


def settled(deps: Deps, day: dt.date, chats: list[uuid.UUID]) -> bool:
    counts = day_counts(deps, day, chats)
    final = counts.get("succeeded", 0) + counts.get("skipped", 0) + counts.get("failed", 0)
    return final == len(chats)


def settle(
    deps: Deps, day: dt.date, chats: list[uuid.UUID], timeout: float, fig: Figures | None = None
) -> float:
    """Seconds until every chat-day of `chats` is final. Past `timeout`, the drill fails here with
    its own name, the wait and the day's counts, and writes its figures so far (never the pytest
    timeout: each drill's is sized from its waits, `procs.timeout_for`)."""
    try:
        return wait_until(lambda: settled(deps, day, chats), timeout, interval=0.25)
    except AssertionError:
        counts = day_counts(deps, day, chats)
        name = fig.drill if fig is not None else "drill"
        if fig is not None:
            fig.add(settled=False, settle_timeout_s=timeout, counts_at_timeout=counts)
            fig.write()
        raise AssertionError(
            f"{name}: {len(chats)} chat-days did not settle within {timeout:.0f}s; now {counts}"
        ) from None


def check(deps: Deps, sim: SimulatorAdmin, day: dt.date) -> CheckReport:
    with deps.sessions() as s:
        return run_check(s, day, deps.policy, now=dt.datetime.now(dt.UTC), share_events=sim.share_events())


def attempts_of(deps: Deps, day: dt.date) -> list[dict[str, Any]]:
    with deps.sessions() as s:
        return [
            dict(r._mapping)
            for r in s.execute(
                text(
                    "SELECT chat_id, claim_token, attempt_no, started_at, finished_at, outcome, http_status, "
                    "linq_code, retry_after_s FROM attempts WHERE day = :d ORDER BY chat_id, attempt_no"
                ),
                {"d": day},
            )
        ]


class Figures:
    """What a drill measured: printed, and appended to CARDSHARE_DRILL_REPORT when set."""

    def __init__(self, drill: str) -> None:
        self.drill = drill
        self.data: dict[str, Any] = {"drill": drill, "scale": SCALE}

    def add(self, **values: Any) -> None:
        self.data.update(values)

    def add_check(self, report: CheckReport) -> None:
        self.add(
            due=report.due,
            succeeded=report.succeeded,
            missed=len(report.missed),
            duplicates=len(report.duplicates),
            unknown=report.unknown,
            confirmed_by_rate_limit=report.confirmed_by_rate_limit,
            duplicate_explanations=[d.explanation for d in report.duplicates],
        )

    def write(self) -> None:
        line = json.dumps(self.data, default=str)
        print(f"\nDRILL {line}")
        target = os.environ.get("CARDSHARE_DRILL_REPORT")
        if target:
            with open(target, "a") as fh:
                fh.write(line + "\n")


class Supervisor:
    """Restarts a worker when it dies, like compose's restart policy; counts restarts."""

    def __init__(self, start: Callable[[], Proc]) -> None:
        self._start = start
        self.proc = start()
        self.restarts = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()

    def _watch(self) -> None:
        while not self._stop.wait(0.2):
            if not self.proc.alive:
                self.restarts += 1
                self.proc = self._start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)


def iter_runs(attempts: list[dict[str, Any]]) -> Iterator[list[dict[str, Any]]]:
    """Attempts grouped by claim token: one group is one run of the task."""
    runs: dict[Any, list[dict[str, Any]]] = {}
    for a in attempts:
        runs.setdefault(a["claim_token"], []).append(a)
    yield from runs.values()


def sweep_now(deps: Deps) -> Any:
    """One real sweep from this process: card refresh, marking, publishing to Redis."""
    assert deps.settings.database_url
    engine = make_engine(deps.settings.database_url, pool_size=2)
    try:
        with Publisher(app) as publish:
            return run_sweep(deps, engine, publish, lambda: queue_depth(app), queue_lease_s=1800)
    finally:
        engine.dispose()
