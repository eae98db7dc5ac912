"""A real worker's life as an operator sees it: `celery inspect` answers (mingle and gossip are
off, remote control is not), SIGTERM mid-share finishes what fits in CARDSHARE_SHUTDOWN_TIMEOUT
and hands the rest back at once (never claimed until its lease), and a TLS Redis (rediss://)
keeps cardshare's own transport."""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
import uuid
from pathlib import Path
from typing import Any

import pytest
import redis
from sqlalchemy import text

from tests.support.procs import Proc, Procs, timeout_for, wait_until, worker_consuming
from tests.support.tls import TlsProxy, openssl_available, self_signed
from tests.support.world import World
from worker.config import Settings
from worker.deps import Deps
from worker.keys import SHARE_QUEUE, SHARE_TASK

pytestmark = pytest.mark.acceptance

SHARE = "/share_contact_card$"


def node_of(proc: Proc) -> str:
    return proc.argv[proc.argv.index("--hostname") + 1].replace("%h", socket.gethostname())


def day_row(deps: Deps, chat: uuid.UUID) -> Any:
    with deps.sessions() as s:
        return s.execute(
            text(
                "SELECT status, reason, extract(epoch FROM lease_until - now()) AS lease_left_s, "
                "confirmed_by_rate_limit "
                "FROM share_days WHERE chat_id = :c"
            ),
            {"c": chat},
        ).one_or_none()


def shared(deps: Deps, chat: uuid.UUID) -> bool:
    row = day_row(deps, chat)
    return row is not None and row.status == "succeeded"


def celery_inspect(procs: Procs, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "celery", "-A", "worker.celery_app", "inspect", *args],
        env=procs.env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


INSPECT_S = 60.0


@pytest.mark.timeout(timeout_for(INSPECT_S, 30, INSPECT_S, 30))
def test_celery_inspect_ping_active_and_stats_answer_and_task_events_flow(
    settings: Settings, world: World, deps: Deps, tmp_path: Path, today: dt.date
) -> None:
    """The commands the README gives operators, against a worker started as cardshare starts one
    (--without-mingle --without-gossip: remote control still answers); with
    CARDSHARE_TASK_EVENTS on, the events Flower reads arrive."""
    from worker.queue.app import app, configure

    configure(settings)
    procs = Procs(settings, tmp_path)
    events: list[dict[str, Any]] = []
    try:
        worker = procs.worker(concurrency=4, CARDSHARE_TASK_EVENTS="true")
        node = node_of(worker)
        assert "--without-mingle" in worker.argv
        assert "--without-gossip" in worker.argv
        worker_consuming(app, timeout=INSPECT_S)
        ping = celery_inspect(procs, "ping", "--json", "-d", node, "-t", "10")
        assert ping.returncode == 0, ping.stdout + ping.stderr
        assert json.loads(ping.stdout) == {node: {"ok": "pong"}}
        with app.connection_for_read() as conn:
            receiver = app.events.Receiver(conn, handlers={"*": events.append})
            listening = threading.Thread(target=lambda: receiver.capture(limit=None, timeout=60), daemon=True)
            listening.start()
            time.sleep(1)  # subscribed before the task runs (events are Redis pub/sub)
            # A share Linq holds for a few seconds shows in `active`, with its chat id.
            world.line()
            chat = world.chat()
            world.sim.add_faults([{"path": SHARE, "mode": "pass", "latency_ms": 6000}])
            task_id = app.send_task(SHARE_TASK, args=(str(chat), today.isoformat()), queue=SHARE_QUEUE).id
            wait_until(lambda: bool(world.sim.inflight()), 30, what="the share to reach Linq")
            active = celery_inspect(procs, "active", "--json", "-d", node, "-t", "10")
            assert active.returncode == 0, active.stdout + active.stderr
            (running,) = json.loads(active.stdout)[node]
            assert running["name"] == SHARE_TASK
            assert running["args"] == [str(chat), today.isoformat()]
            stats = celery_inspect(procs, "stats", "--json", "-d", node, "-t", "10")
            assert stats.returncode == 0, stats.stdout + stats.stderr
            doc = json.loads(stats.stdout)[node]
            assert doc["pool"]["max-concurrency"] == 4
            assert doc["prefetch_count"] == 4
            assert doc["broker"]["transport"] == "worker.queue.redis_transport:Transport"

            def seen() -> set[str]:
                return {e["type"] for e in list(events) if e.get("uuid") == task_id}

            wait_until(lambda: "task-succeeded" in seen(), 30, what="the task's events")
            receiver.should_stop = True
            listening.join(10)
        assert {"task-received", "task-started", "task-succeeded"} <= seen()
        # (Held past the 2 s read timeout of these settings, the share itself waits for a retry.)
        assert day_row(deps, chat) is not None
    finally:
        procs.stop_all()


SOFT_S = 3.0  # CARDSHARE_SHUTDOWN_TIMEOUT here
READ_S = 6.0  # the Linq read timeout: the slow share's call ends (unknown) this long after it left
EXIT_S = 30.0
SECOND_S = 60.0


@pytest.mark.timeout(timeout_for(30, 30, SOFT_S + 10, EXIT_S, SECOND_S))
def test_sigterm_mid_share_finishes_what_fits_and_hands_the_rest_back(
    settings: Settings, world: World, deps: Deps, tmp_path: Path, today: dt.date
) -> None:
    """A quick share finishes inside the timeout. A slow one (Linq accepted it and does not
    answer) is handed back when the timeout ends: `unknown`, its lease ending when its call must
    have ended, its message re-queued due then. The next worker's call gets 429, which confirms
    it: one share reached the customer, and the chat-day was never claimed until its lease."""
    from worker.queue.app import app, configure

    s = settings.replace(http_read_timeout_s=READ_S, task_soft_time_limit_s=20.0, task_time_limit_s=25.0)
    call_s = s.http_read_timeout_s + s.http_connect_timeout_s
    configure(s)
    procs = Procs(s, tmp_path)
    world.line()
    quick, slow = world.chat(), world.chat()
    world.sim.add_faults(
        [
            {"path": SHARE, "chat_id": str(quick), "mode": "pass", "latency_ms": 1000},
            {"path": SHARE, "chat_id": str(slow), "mode": "accept_then_hang", "hang_s": 30, "times": 1},
        ]
    )
    assert s.redis_url
    client = redis.Redis.from_url(s.redis_url)
    try:
        worker = procs.worker(concurrency=4, CARDSHARE_SHUTDOWN_TIMEOUT=str(SOFT_S))
        worker_consuming(app, timeout=30)
        for chat in (quick, slow):
            app.send_task(SHARE_TASK, args=(str(chat), today.isoformat()), queue=SHARE_QUEUE)
        wait_until(lambda: len(world.sim.inflight()) == 2, 30, what="both shares held by Linq")
        os.kill(worker.pid, signal.SIGTERM)
        stopped_at = time.monotonic()
        wait_until(lambda: day_row(deps, slow).status != "claimed", SOFT_S + 10, 0.1, what="the hand-back")
        handed_back_after = time.monotonic() - stopped_at
        row = day_row(deps, slow)
        assert row.status == "unknown", row
        assert row.reason.startswith("handed back")
        assert 0 < row.lease_left_s <= call_s
        assert day_row(deps, quick).status == "succeeded"
        assert client.llen(SHARE_QUEUE) == 1  # re-queued at once, due when the lease ends
        assert SOFT_S - 0.5 <= handed_back_after <= SOFT_S + 5
        assert worker.popen is not None
        assert worker.popen.wait(EXIT_S) == 0
        assert day_row(deps, slow).status == "unknown"  # its late read timeout changed nothing
        procs.worker(concurrency=4)
        wait_until(lambda: day_row(deps, slow).status == "succeeded", SECOND_S, what="the re-queued share")
        assert day_row(deps, slow).confirmed_by_rate_limit is True
        events = world.sim.share_events()
        accepted = [e for e in events if e["chat_id"] == str(slow) and e["outcome"] == "accepted"]
        assert len(accepted) == 1
        log = (tmp_path / "worker.log").read_text()
        assert '"event":"share.handed_back"' in log
    finally:
        client.close()
        procs.stop_all()


@pytest.mark.skipif(not openssl_available(), reason="the openssl command makes the test certificate")
@pytest.mark.timeout(timeout_for(60, 60))
def test_a_worker_on_tls_redis_keeps_cardshares_transport(
    settings: Settings, world: World, deps: Deps, tmp_path: Path, today: dt.date, redis_url: str
) -> None:
    """rediss:// through a TLS proxy with a self-signed certificate (verified): the worker shares,
    and a malformed envelope is dropped, as only cardshare's transport does (kombu's own stops
    the worker with "Unrecoverable error")."""
    from worker.queue.app import app, configure

    cert, key = self_signed(tmp_path)
    plain = urllib.parse.urlsplit(redis_url)
    assert plain.port
    with TlsProxy(plain.port, cert, key) as proxy:
        auth = f":{plain.password}@" if plain.password else ""
        tls_url = f"rediss://{auth}127.0.0.1:{proxy.port}{plain.path or '/0'}?ssl_ca_certs={cert}"
        s = settings.replace(redis_url=tls_url)
        configure(s)
        procs = Procs(s, tmp_path)
        try:
            worker = procs.worker(concurrency=4)
            worker_consuming(app, timeout=60)
            with app.connection_for_write() as conn:
                assert type(conn.transport).__module__ == "worker.queue.redis_transport"
                assert conn.ssl["ssl_ca_certs"] == str(cert)
            raw = redis.Redis.from_url(redis_url)
            raw.lpush(SHARE_QUEUE, b"this is not a celery message")
            raw.close()
            world.line()
            chat = world.chat()
            app.send_task(SHARE_TASK, args=(str(chat), today.isoformat()), queue=SHARE_QUEUE)
            wait_until(lambda: shared(deps, chat), 60, what="the share")
            assert worker.alive
            assert '"event":"broker.malformed_message_dropped"' in (tmp_path / "worker.log").read_text()
        finally:
            procs.stop_all()
            configure(settings)


@pytest.mark.timeout(timeout_for(60, 60))
def test_with_sentry_and_opentelemetry_on_and_no_backend_a_worker_shares_the_same(
    settings: Settings, world: World, deps: Deps, tmp_path: Path, today: dt.date
) -> None:
    """Both switched on, both backends unreachable (nothing listens on their ports): the worker
    starts, says so, shares every chat once, as with both off."""
    from worker.embedded import free_port
    from worker.queue.app import app, configure

    configure(settings)
    procs = Procs(settings, tmp_path)
    on: dict[str, Any] = {
        "SENTRY_DSN": f"http://public@127.0.0.1:{free_port()}/1",
        "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{free_port()}",
        "OTEL_BSP_SCHEDULE_DELAY": "200",  # export (and fail) often while the shares run
    }
    try:
        worker = procs.worker(concurrency=4, **on)
        worker_consuming(app, timeout=60)
        world.line()
        chats = [world.chat() for _ in range(5)]
        world.sim.add_faults([{"path": SHARE, "status": 503, "code": 3006, "times": 1}])
        for chat in chats:
            app.send_task(SHARE_TASK, args=(str(chat), today.isoformat()), queue=SHARE_QUEUE)
        wait_until(lambda: all(shared(deps, c) for c in chats), 60, what="5 shares")
        assert worker.alive
        assert world.sim.shares()["total_accepted"] == 5
        log = (tmp_path / "worker.log").read_text()
        (line,) = [ln for ln in log.splitlines() if '"event":"observability.on"' in ln]
        assert '"sentry":true' in line
        assert on["OTEL_EXPORTER_OTLP_ENDPOINT"] in line
        assert settings.linq_api_key.get() not in log
    finally:
        procs.stop_all()
