"""Operations against real PostgreSQL, Redis and the simulator: the status numbers, a chat's
history, the metrics each outcome moves, the webhook receiver's /metrics, and the heartbeats
and probes in Redis (a stuck worker simulated by a record whose progress stopped)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import cast

import httpx
import psycopg
import pytest
import redis
from prometheus_client import REGISTRY
from sqlalchemy import text

from tests.support.receiver import SECRET, ReceiverServer
from tests.support.sweeps import Collector, sweep
from tests.support.world import World
from worker import keys
from worker.config import Secret, Settings
from worker.deps import Deps
from worker.errors import StoreUnavailable
from worker.ingest.webhooks import create_app
from worker.keys import SHARE_QUEUE
from worker.ops import health, status
from worker.sharing.share import Outcome, share_chat
from worker.simulator.client import FaultSpec
from worker.store.plain import PlainDatabase
from worker.store.session import read_only, transaction
from worker.store.shares import claim
from worker.store.sql import Sql

SHARE_PATH = "/share_contact_card$"
LINE = "+12223334444"


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def fault(world: World, chat: uuid.UUID, **rule: object) -> None:
    world.sim.add_faults([cast("FaultSpec", {"path": SHARE_PATH, "chat_id": str(chat), **rule})])


@dataclasses.dataclass
class Day:
    """One of each fate, reached through the real service, sweep and simulator."""

    shared: list[uuid.UUID]
    failed: uuid.UUID
    deferred: uuid.UUID
    unknown: uuid.UUID
    retry: uuid.UUID
    queued: uuid.UUID
    pending: uuid.UUID
    sms: uuid.UUID
    other_line: uuid.UUID


@pytest.fixture
def day_of_fates(world: World, deps: Deps, today: dt.date) -> Day:
    line = world.line(LINE)
    other = world.line("+13334445555")
    shared = [world.chat(line), world.chat(line), world.chat(other)]
    failed, deferred, unknown, retry = (world.chat(line) for _ in range(4))
    sms = world.chat(line, service="SMS")
    fault(world, failed, status=400, code=1002, message="bad request")
    fault(world, deferred, status=503, code=4004)
    fault(world, unknown, mode="accept_then_hang", hang_s=3)
    fault(world, retry, status=500, code=3006)
    one_try = dataclasses.replace(deps, settings=deps.settings.replace(retry_attempts=1))
    for chat in shared:
        assert share_chat(chat, today, deps).outcome is Outcome.SHARED
    assert share_chat(failed, today, deps).outcome is Outcome.FAILED
    assert share_chat(deferred, today, deps).outcome is Outcome.SKIPPED
    assert share_chat(unknown, today, one_try).outcome is Outcome.UNKNOWN
    assert share_chat(retry, today, one_try).outcome is Outcome.RESCHEDULED
    queued = world.chat(line)
    publish = Collector()
    sweep(deps, publish)
    assert publish.ids == [queued]
    pending = world.chat(line)  # due, but no sweep has reached it yet
    return Day(shared, failed, deferred, unknown, retry, queued, pending, sms, shared[2])


def collect(deps: Deps, settings: Settings, day: dt.date | None = None) -> status.Status:
    return status.collect(
        deps.sessions,
        day=day,
        now=dt.datetime.now(dt.UTC),
        policy=deps.policy,
        redis_url=settings.redis_url,
        stall_s=300,
    )


def test_status_counts_every_fate_per_line_and_in_total(
    day_of_fates: Day, deps: Deps, settings: Settings, today: dt.date
) -> None:
    st = collect(deps, settings)
    assert st.day == today
    t = st.total
    assert (t.due, t.shared, t.unknown, t.in_flight, t.not_enqueued) == (9, 3, 1, 2, 1)
    assert dict(t.skipped) == {"deferred": 1}
    assert dict(t.failed) == {"permanent": 1}
    assert (t.queued, t.claimed, t.retry) == (1, 0, 1)
    by_line = {ln.line: ln.counts for ln in st.lines}
    assert set(by_line) == {LINE, "+13334445555"}
    assert by_line["+13334445555"].shared == 1
    assert by_line["+13334445555"].due == 1
    assert by_line[LINE].due == 8
    # The JSON is the same numbers; the last sweep is the one the fixture ran.
    doc = st.as_dict()
    assert doc["total"]["due"] == 9
    assert doc["total"]["failed_by_reason"] == {"permanent": 1}
    assert doc["last_sweep"]["enqueued"] == 1
    assert st.last_sweep is not None
    assert st.last_sweep.seconds is not None
    assert doc["queue"] == {"ready": 0, "unacked": 0}
    # The last failures: the failed and the unknown chat-day, each with its last attempt.
    failures = {f.chat_id: f for f in st.failures}
    assert set(failures) == {day_of_fates.failed, day_of_fates.unknown}
    assert failures[day_of_fates.failed].http_status == 400
    assert failures[day_of_fates.failed].linq_code == 1002
    assert failures[day_of_fates.failed].trace_id
    # Another day has nothing, and no "not enqueued" guesses about it.
    assert collect(deps, settings, today - dt.timedelta(days=1)).total.due == 0


def test_status_survives_a_redis_it_cannot_reach(day_of_fates: Day, deps: Deps, settings: Settings) -> None:
    st = collect(deps, settings.replace(redis_url="redis://127.0.0.1:9/0"))
    assert st.total.shared == 3
    assert st.queue_ready is None
    assert st.broker_error
    assert st.broker_error.startswith("Redis unavailable")


def test_status_reads_in_a_read_only_transaction(deps: Deps) -> None:
    from sqlalchemy.exc import InternalError

    with pytest.raises(InternalError, match="read-only transaction"), read_only(deps.sessions) as s:
        s.execute(text("INSERT INTO lines (phone_number) VALUES ('+15556667777')"))


def test_history_tells_every_day_and_attempt_and_why_not_today(
    day_of_fates: Day, deps: Deps, today: dt.date
) -> None:
    now = dt.datetime.now(dt.UTC)
    retry = status.history(deps.sessions, day_of_fates.retry, now=now, policy=deps.policy, days=None)
    assert retry is not None
    assert retry.today_status == "retry"
    assert retry.due_today
    assert retry.why_not_today is None
    [day] = retry.days
    assert (day.day, day.status, day.attempts) == (today, "retry", 1)
    [attempt] = retry.attempts_of(today)
    assert (attempt.outcome, attempt.http_status, attempt.linq_code) == ("retryable", 500, 3006)
    assert attempt.trace_id

    sms = status.history(deps.sessions, day_of_fates.sms, now=now, policy=deps.policy, days=None)
    assert sms is not None
    assert not sms.due_today
    assert sms.why_not_today == "not_imessage: the chat is not an iMessage chat"
    assert sms.days == []

    shared = status.history(deps.sessions, day_of_fates.shared[0], now=now, policy=deps.policy, days=1)
    assert shared is not None
    assert shared.today_status == "succeeded"
    assert shared.why_not_today is not None
    assert shared.why_not_today.startswith("already_shared")
    assert [a.http_status for a in shared.attempts] == [204]

    failed = status.history(deps.sessions, day_of_fates.failed, now=now, policy=deps.policy, days=None)
    assert failed is not None
    assert failed.why_not_today is not None
    assert failed.why_not_today.startswith("day_closed")
    assert "permanent (HTTP 400/1002)" in failed.why_not_today
    assert status.history(deps.sessions, uuid.uuid4(), now=now, policy=deps.policy, days=None) is None


def test_the_plain_connection_reads_what_the_sessions_read(
    day_of_fates: Day, deps: Deps, settings: Settings, today: dt.date
) -> None:
    """`status` and `history` read through store.plain (no SQLAlchemy): the same status and the
    same stories, field for field, as through the process's sessions."""
    now = dt.datetime.now(dt.UTC)
    db = PlainDatabase(settings.database_url or "")
    try:
        for day, due in ((None, 9), (today, 9), (today - dt.timedelta(days=1), 0)):
            via_sessions, via_plain = (
                status.collect(
                    source, day=day, now=now, policy=deps.policy, redis_url=settings.redis_url, stall_s=300
                )
                for source in (deps.sessions, db)
            )
            assert via_plain.as_dict() == via_sessions.as_dict()
            assert via_plain.total.due == due
        for chat in (day_of_fates.retry, day_of_fates.failed, day_of_fates.unknown, day_of_fates.sms):
            a = status.history(deps.sessions, chat, now=now, policy=deps.policy, days=None)
            b = status.history(db, chat, now=now, policy=deps.policy, days=None)
            assert a is not None
            assert b is not None
            assert b.as_dict() == a.as_dict()
            assert (b.days, b.attempts, b.chat) == (a.days, a.attempts, a.chat)
        assert status.history(db, uuid.uuid4(), now=now, policy=deps.policy, days=None) is None
        with pytest.raises(psycopg.errors.ReadOnlySqlTransaction), db.read_only() as conn:
            conn.execute(Sql("INSERT INTO lines (phone_number) VALUES ('+15556667777')"))
    finally:
        db.close()


def test_the_plain_connection_says_when_postgresql_is_down() -> None:
    db = PlainDatabase("postgresql+psycopg://nobody@127.0.0.1:9/none?connect_timeout=2")
    with pytest.raises(StoreUnavailable, match="cannot reach PostgreSQL"), db.read_only():
        pass


# --------------------------------------------------------------------------- metrics


def test_each_outcome_moves_its_metric(world: World, deps: Deps, today: dt.date) -> None:
    world.line()
    flaky, ok, held = world.chat(), world.chat(), world.chat()
    fault(world, flaky, status=503, code=3006, times=2)
    before = {
        "shared": sample("cardshare_shares_total", outcome="shared"),
        "busy": sample("cardshare_shares_total", outcome="busy"),
        "s503": sample("cardshare_http_attempts_total", status="503"),
        "s204": sample("cardshare_http_attempts_total", status="204"),
        "sleeps": sample("cardshare_retry_sleep_seconds_count"),
        "conflicts": sample("cardshare_claim_conflicts_total", kind="busy"),
        "durations": sample("cardshare_share_duration_seconds_count"),
        "sweeps": sample("cardshare_sweeps_total", kind="sweep", result="ok"),
        "enqueued": sample("cardshare_sweep_enqueued_chats_sum", kind="sweep"),
    }
    assert share_chat(flaky, today, deps).outcome is Outcome.SHARED
    assert share_chat(ok, today, deps).outcome is Outcome.SHARED
    with transaction(deps.sessions) as s:
        assert claim(s, held, today, lease_s=60, max_lost_claims=3, task_id="other") is not None
    assert share_chat(held, today, deps).outcome is Outcome.BUSY
    world.chat()
    sweep(deps, Collector())

    assert sample("cardshare_shares_total", outcome="shared") - before["shared"] == 2
    assert sample("cardshare_shares_total", outcome="busy") - before["busy"] == 1
    assert sample("cardshare_http_attempts_total", status="503") - before["s503"] == 2
    assert sample("cardshare_http_attempts_total", status="204") - before["s204"] == 2
    assert sample("cardshare_retry_sleep_seconds_count") - before["sleeps"] == 2
    assert sample("cardshare_claim_conflicts_total", kind="busy") - before["conflicts"] == 1
    assert sample("cardshare_share_duration_seconds_count") - before["durations"] == 3
    assert sample("cardshare_sweeps_total", kind="sweep", result="ok") - before["sweeps"] == 1
    assert sample("cardshare_sweep_enqueued_chats_sum", kind="sweep") - before["enqueued"] == 1


@pytest.fixture
def receiver(settings: Settings, deps: Deps) -> Iterator[ReceiverServer]:
    app = create_app(settings.replace(webhook_secrets=(Secret(SECRET),)), deps.sessions)
    with ReceiverServer(app) as server:
        yield server


def test_webhook_receiver_counts_deliveries_and_serves_metrics(
    receiver: ReceiverServer, world: World
) -> None:
    before = (
        sample("cardshare_webhook_deliveries_total", result="recorded"),
        sample("cardshare_webhook_deliveries_total", result="rejected"),
    )
    chat = str(uuid.uuid4())
    assert world.sim.deliver_webhook(receiver.url, SECRET, chat_id=chat, line=LINE)["status"] == 200
    assert (
        world.sim.deliver_webhook(receiver.url, SECRET, chat_id=chat, line=LINE, tamper=True)["status"] == 401
    )
    assert sample("cardshare_webhook_deliveries_total", result="recorded") - before[0] == 1
    assert sample("cardshare_webhook_deliveries_total", result="rejected") - before[1] == 1
    page = httpx.get(receiver.url.replace("/webhooks/linq", "/metrics"), timeout=5)
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/plain")
    assert 'cardshare_webhook_deliveries_total{result="recorded"}' in page.text
    assert SECRET not in page.text


def test_multiprocess_mode_merges_every_process(tmp_path: object) -> None:
    """With PROMETHEUS_MULTIPROC_DIR, counts from separate processes add up in one scrape."""
    from pathlib import Path

    directory = Path(str(tmp_path)) / "prom"
    directory.mkdir()
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(directory)}
    record = "from worker.ops import metrics; metrics.share_finished('shared', 0.1)"
    for _ in range(3):
        subprocess.run([sys.executable, "-c", record], env=env, check=True, timeout=60)
    scrape = "from worker.ops import metrics; print(metrics.exposition()[0].decode())"
    out = subprocess.run(
        [sys.executable, "-c", scrape], env=env, check=True, timeout=60, capture_output=True, text=True
    ).stdout
    assert 'cardshare_shares_total{outcome="shared"} 3.0' in out
    # A process that records nothing leaves no files behind (the health probe runs every 30 s).
    files = sorted(p.name for p in directory.iterdir())
    subprocess.run(
        [sys.executable, "-c", "import worker.ops.metrics, worker.sharing.share"], env=env, check=True
    )
    assert sorted(p.name for p in directory.iterdir()) == files


# --------------------------------------------------------------------------- heartbeats and probes


@pytest.fixture
def rclient(redis_url: str) -> Iterator[redis.Redis]:
    client = health.redis_client(redis_url)
    yield client
    client.close()


class Counters:
    def __init__(self) -> None:
        self.completed = 0
        self.held = 0

    def __call__(self) -> tuple[int, int]:
        return self.completed, self.held


def test_worker_heartbeat_tracks_progress_and_idleness(rclient: redis.Redis) -> None:
    counters = Counters()
    beat = health.WorkerHeartbeat(
        rclient, node="hb@test", pool="threads", concurrency=4, stall_s=60, counters=counters
    )
    first = beat.beat()
    assert first.progress_at == first.started_at
    assert first.last_task_at is None
    # Busy with no task finished: no progress.
    counters.held = 3
    busy = beat.beat()
    assert busy.progress_at == first.progress_at
    assert busy.reserved == 3
    # A task finished: progress.
    counters.completed = 1
    done = beat.beat()
    assert done.progress_at == done.heartbeat_at == done.last_task_at
    # Nothing held but messages wait in the queue: not idle, so no progress.
    counters.held = 0
    rclient.lpush(SHARE_QUEUE, "{}")
    waiting = beat.beat()
    assert waiting.progress_at == done.progress_at
    # Nothing held and nothing waiting: idle is progress.
    rclient.delete(SHARE_QUEUE)
    idle = beat.beat()
    assert idle.progress_at == idle.heartbeat_at
    assert [r.node for r in health.read_workers(rclient)] == ["hb@test"]
    beat.stop()
    assert health.read_workers(rclient) == []


def _stuck_record(rclient: redis.Redis, *, node: str, pid: int, held: int = 0, idle_s: float = 600) -> None:
    now = health.redis_now(rclient)
    record = health.WorkerRecord(
        node=node,
        host=health.this_host(),
        pid=pid,
        pool="threads",
        concurrency=8,
        started_at=now - 3600,
        heartbeat_at=now - 1,
        progress_at=now - idle_s,
        last_task_at=now - idle_s,
        completed=42,
        reserved=held,
        interval_s=5.0,
    )
    rclient.set(keys.WORKER_PREFIX + node, record.dumps())


def test_probe_fails_a_live_worker_that_stopped_progressing_while_messages_wait(
    rclient: redis.Redis, deps: Deps, redis_url: str
) -> None:
    # Our own pid stands for a live worker process whose record says it finished nothing for 10 minutes.
    _stuck_record(rclient, node="stuck@test", pid=os.getpid())
    idle = health.probe_workers(rclient, stall_s=300, node="stuck@test")
    assert idle.ok, idle.line  # nothing waits: an idle worker is healthy
    rclient.lpush(SHARE_QUEUE, "{}", "{}")
    stuck = health.probe_workers(rclient, stall_s=300, node="stuck@test")
    assert not stuck.ok
    assert "stalled: no task finished for 10m" in stuck.line
    assert "2 messages wait" in stuck.line
    # The same worker judged as "every live worker of this host", and as status shows it.
    assert not health.probe_workers(rclient, stall_s=300).ok
    [seen] = status.collect(
        deps.sessions,
        day=None,
        now=dt.datetime.now(dt.UTC),
        policy=deps.policy,
        redis_url=redis_url,
        stall_s=300,
    ).workers
    assert (seen.node, seen.live, seen.stalled, seen.held) == ("stuck@test", True, True, 0)
    # Within the limit it is still healthy.
    assert health.probe_workers(rclient, stall_s=900, node="stuck@test").ok


def test_probe_fails_a_worker_stuck_holding_messages_when_the_queue_is_empty(rclient: redis.Redis) -> None:
    _stuck_record(rclient, node="holding@test", pid=os.getpid(), held=5)
    verdict = health.probe_workers(rclient, stall_s=300, node="holding@test")
    assert not verdict.ok
    assert "it holds 5" in verdict.line


def test_probe_without_a_live_worker_on_this_host_fails(rclient: redis.Redis) -> None:
    assert not health.probe_workers(rclient, stall_s=300).ok
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    _stuck_record(rclient, node="gone@test", pid=gone.pid, idle_s=0)
    verdict = health.probe_workers(rclient, stall_s=300)
    assert not verdict.ok
    assert "no live cardshare worker" in verdict.line
    assert "1 record(s) of exited workers" in verdict.line
    assert not health.probe_workers(rclient, stall_s=300, node="nobody@test").ok


def test_beat_heartbeat_records_sends_and_goes_stale(rclient: redis.Redis) -> None:
    assert not health.probe_beat(rclient).ok
    beat = health.BeatHeartbeat(rclient, interval_s=1.0)
    beat.note_sent("cardshare.sweep")
    record = beat.beat()
    assert set(record.sent) == {"cardshare.sweep"}
    verdict = health.probe_beat(rclient)
    assert verdict.ok
    assert "sweep sent 0s ago" in verdict.line
    stale = dataclasses.replace(record, heartbeat_at=record.heartbeat_at - 10)
    rclient.set(keys.BEAT_KEY, stale.dumps())
    verdict = health.probe_beat(rclient)
    assert not verdict.ok
    assert "limit 4s" in verdict.line


def test_the_cardshare_executable_runs_health_without_loading_the_cli(redis_url: str) -> None:
    """Healthchecks run every 30 s per container: `cardshare health` must stay a light process."""
    code = (
        "import atexit, sys\n"
        "heavy = ('sqlalchemy', 'celery', 'linq', 'worker.cli')\n"
        "atexit.register(lambda: print('loaded:', [m for m in heavy if m in sys.modules], file=sys.stderr))\n"
        "sys.argv = ['cardshare', 'health', '--beat']\n"
        "from worker.entry import main\n"
        "main()\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CARDSHARE_", "LINQ_"))}
    done = subprocess.run(
        [sys.executable, "-c", code],
        env={**env, "REDIS_URL": redis_url},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1
    assert done.stdout.startswith("unhealthy: beat: no heartbeat")
    assert "loaded: []" in done.stderr


@pytest.mark.parametrize(
    ("flags", "allowed"),
    [(["--live"], ()), (["--beat", "--live"], ()), (["--ready"], ("psycopg",))],
)
def test_the_kubernetes_probes_stay_light_too(
    redis_url: str, tmp_path: Path, flags: list[str], allowed: tuple[str, ...]
) -> None:
    """`--live` reads a file and nothing else; `--ready` adds the PostgreSQL driver, no more."""
    code = (
        "import atexit, sys\n"
        "heavy = ('sqlalchemy', 'celery', 'linq', 'worker.cli', 'httpx', 'psycopg')\n"
        "atexit.register(lambda: print('loaded:', [m for m in heavy if m in sys.modules], file=sys.stderr))\n"
        f"sys.argv = ['cardshare', 'health', *{flags!r}]\n"
        "from worker.entry import main\n"
        "main()\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CARDSHARE_", "LINQ_"))}
    done = subprocess.run(
        [sys.executable, "-c", code],
        env={**env, "REDIS_URL": redis_url, "CARDSHARE_DATA_DIR": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1, done.stdout + done.stderr  # nothing runs here
    assert done.stdout.startswith("unhealthy: ")
    assert f"loaded: {list(allowed)}" in done.stderr
