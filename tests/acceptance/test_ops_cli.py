"""Operations end to end: real celery worker and beat processes, the real CLI, real servers.

A worker's /metrics (threads, and prefork merging its children), `cardshare status`,
`cardshare history`, the health probe against a live worker and the same worker SIGSTOPped
while messages wait, beat's heartbeat, the fields of the log lines, and no secret in any output.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from tests.support.procs import Proc, Procs, timeout_for, wait_until, worker_consuming
from tests.support.receiver import SECRET
from tests.support.world import World
from worker.config import Settings
from worker.deps import Deps
from worker.embedded import free_port
from worker.queue.app import app as celery_app

pytestmark = pytest.mark.acceptance

SHARE_PATH = "/share_contact_card$"
CARDSHARE = [sys.executable, "-c", "from worker.cli.main import main; main()"]


@pytest.fixture
def procs(settings: Settings, tmp_path: Path) -> Iterator[Procs]:
    from worker.queue.app import configure

    configure(settings)
    p = Procs(settings, tmp_path)
    yield p
    p.stop_all()


def run_cli(procs: Procs, *args: str, **extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CARDSHARE, *args],
        env=procs.env(**extra),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def node_of(proc: Proc) -> str:
    return proc.argv[proc.argv.index("--hostname") + 1].replace("%h", socket.gethostname())


def statuses(deps: Deps, chats: list[uuid.UUID]) -> list[str | None]:
    with deps.sessions() as s:
        rows: dict[Any, Any] = dict(
            s.execute(
                text("SELECT chat_id, status FROM share_days WHERE chat_id = ANY(:c)"), {"c": chats}
            ).all()
        )
    return [rows.get(c) for c in chats]


def all_shared(deps: Deps, chats: list[uuid.UUID]) -> bool:
    return all(s == "succeeded" for s in statuses(deps, chats))


def metric(body: str, name: str, **labels: str) -> float:
    want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in body.splitlines():
        if line.startswith("#"):
            continue
        series, _, value = line.rpartition(" ")
        got_name, _, rest = series.partition("{")
        got_labels = ",".join(sorted(rest.rstrip("}").split(","))) if rest else ""
        if got_name == name and got_labels == want:
            return float(value)
    return 0.0


def scrape(port: int) -> str:
    response = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5)
    assert response.status_code == 200
    return response.text


def json_lines(path: Path) -> list[dict[str, Any]]:
    out = []
    for raw in path.read_text(errors="replace").splitlines():
        if raw.startswith("{"):
            try:
                out.append(json.loads(raw))
            except ValueError:
                continue
    return out


@pytest.mark.timeout(timeout_for(60, 120, 20, 7, 120, 30))  # the waits below
def test_a_worker_reports_metrics_status_and_health_and_fails_the_probe_when_stuck(
    procs: Procs, world: World, deps: Deps, settings: Settings, today: dt.date
) -> None:
    world.line()
    chats = [world.chat() for _ in range(12)]
    world.sim.add_faults(
        [{"path": SHARE_PATH, "chat_id": str(chats[0]), "status": 503, "code": 3006, "times": 2}]
    )
    port = free_port()
    # A 6-second stall limit (heartbeat every 1.5 s) keeps the stuck-worker part short; the
    # probe reads the same setting, as it would in the worker's container.
    fast: dict[str, Any] = {"CARDSHARE_HEALTH_STALL_MINUTES": "0.1"}
    worker = procs.worker(concurrency=8, CARDSHARE_METRICS_PORT=str(port), **fast)
    node = node_of(worker)
    worker_consuming(celery_app, timeout=60)
    swept = run_cli(procs, "sweep")
    assert swept.returncode == 0, swept.stderr
    wait_until(lambda: all_shared(deps, chats), 120, what="12 shares")

    body = scrape(port)
    assert metric(body, "cardshare_shares_total", outcome="shared") == 12
    assert metric(body, "cardshare_http_attempts_total", status="503") == 2
    assert metric(body, "cardshare_http_attempts_total", status="204") == 12
    assert metric(body, "cardshare_retry_sleep_seconds_count") == 2
    assert metric(body, "cardshare_share_duration_seconds_count") == 12

    wait_until(lambda: run_cli(procs, "health", "--node", node, **fast).returncode == 0, 20, interval=0.5)
    st = run_cli(procs, "status", "--json")
    assert st.returncode == 0, st.stderr
    doc = json.loads(st.stdout)
    assert doc["day"] == today.isoformat()
    assert doc["total"]["shared"] == 12
    assert doc["total"]["due"] == 12
    assert doc["total"]["in_flight"] == 0
    assert doc["last_sweep"]["enqueued"] == 12
    assert doc["queue"]["ready"] == 0
    seen = {w["node"]: w for w in doc["workers"]}
    assert seen[node]["live"] is True
    assert seen[node]["stalled"] is False
    assert seen[node]["completed"] >= 12
    table = run_cli(procs, "status")
    assert table.returncode == 0, table.stderr
    total_row = next(line for line in table.stdout.splitlines() if "total" in line)
    assert re.findall(r"\d+", total_row)[:2] == ["12", "12"]
    assert f"{node} (thread x8" in table.stdout

    # Every share log line carries the ids an operator searches by.
    lines = json_lines(worker.log_path)
    attempts = [ln for ln in lines if ln.get("event") == "share.attempt"]
    finished = [ln for ln in lines if ln.get("event") == "share.finished"]
    assert len(attempts) == 14
    assert len(finished) == 12
    for ln in attempts + finished:
        for key in ("chat_id", "day", "attempt", "outcome", "trace_id", "task_id"):
            assert ln.get(key) not in (None, ""), (key, ln)
        assert ln["day"] == today.isoformat()
    assert {ln["chat_id"] for ln in finished} == {str(c) for c in chats}

    # Alive but stuck: SIGSTOP the worker, then give it work.
    os.kill(worker.pid, signal.SIGSTOP)
    try:
        more = [world.chat() for _ in range(6)]
        assert run_cli(procs, "sweep").returncode == 0
        time.sleep(7)
        stuck = run_cli(procs, "health", "--node", node, **fast)
        assert stuck.returncode == 1, stuck.stdout + stuck.stderr
        assert stuck.stdout.startswith(f"unhealthy: {node}: stalled: no task finished for")
        assert len(stuck.stdout.strip().splitlines()) == 1
        host_wide = run_cli(procs, "health", **fast)
        assert host_wide.returncode == 1
        assert "stalled" in host_wide.stdout
        frozen = {
            w["node"]: w for w in json.loads(run_cli(procs, "status", "--json", **fast).stdout)["workers"]
        }
        assert frozen[node]["stalled"] is True
        assert frozen[node]["live"] is False  # its heartbeat stopped too
        # The process is alive the whole time: a liveness check would not have noticed.
        assert worker.alive
    finally:
        os.kill(worker.pid, signal.SIGCONT)
    wait_until(lambda: all_shared(deps, more), 120, what="shares after SIGCONT")
    wait_until(lambda: run_cli(procs, "health", "--node", node, **fast).returncode == 0, 30, interval=0.5)


def test_prefork_children_are_counted_in_one_scrape(
    procs: Procs, world: World, deps: Deps, tmp_path: Path
) -> None:
    world.line()
    chats = [world.chat() for _ in range(6)]
    prom = tmp_path / "prom"
    prom.mkdir()
    (prom / "counter_1.db").write_bytes(b"left over from a previous run")
    port = free_port()
    worker = procs.worker(
        pool="prefork", concurrency=2, CARDSHARE_METRICS_PORT=str(port), PROMETHEUS_MULTIPROC_DIR=str(prom)
    )
    worker_consuming(celery_app, timeout=60)
    assert not (prom / "counter_1.db").exists()
    assert run_cli(procs, "sweep").returncode == 0
    wait_until(lambda: all_shared(deps, chats), 120, what="6 shares")
    body = scrape(port)
    assert metric(body, "cardshare_shares_total", outcome="shared") == 6
    assert metric(body, "cardshare_http_attempts_total", status="204") == 6
    # The shares ran in pool children, whose files the main process merged.
    pids = {int(p.stem.rsplit("_", 1)[1]) for p in prom.glob("counter_*.db")}
    assert pids - {worker.pid}


def test_beat_heartbeat_shows_in_health_and_status(procs: Procs, settings: Settings) -> None:
    from worker.ops import health

    # Recovery every 2 s, so beat sends something within the test (releases at most as often).
    beat = procs.beat(CARDSHARE_RECOVER_INTERVAL="2", CARDSHARE_RELEASE_INTERVAL="1")
    assert settings.redis_url
    with health.connected(settings.redis_url) as client:

        def recover_sent() -> bool:
            record = health.read_beat(client)
            return record is not None and "cardshare.recover" in record.sent

        wait_until(recover_sent, 60, interval=0.5, what="beat to report a send")
    doc = json.loads(run_cli(procs, "status", "--json").stdout)
    assert doc["beat"]["live"] is True
    assert doc["beat"]["pid"] == beat.pid
    assert doc["beat"]["sent_age_s"]["cardshare.recover"] < 30
    ok = run_cli(procs, "health", "--beat")
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert ok.stdout.startswith("healthy: beat: ok: heartbeat")
    assert "recover sent" in ok.stdout


def test_history_cli(procs: Procs, world: World) -> None:
    world.line()
    chat = world.chat()
    sms = world.chat(service="SMS")
    world.sim.add_faults(
        [{"path": SHARE_PATH, "chat_id": str(chat), "status": 500, "code": 3006, "times": 1}]
    )
    assert run_cli(procs, "share", str(chat), "--wait").returncode == 0
    done = run_cli(procs, "history", str(chat))
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert f"chat {chat}: line +12223334444, iMessage" in out
    assert re.search(r"today \(\d{4}-\d\d-\d\d\): shared", out)
    assert re.search(r"#1 .* retryable .* 500 .* 3006 ", out)
    assert re.search(r"#2 .* ok .* 204 ", out)
    as_json = json.loads(run_cli(procs, "history", str(chat), "--json").stdout)
    [day] = as_json["days"]
    assert [a["http_status"] for a in day["attempts"]] == [500, 204]
    assert all(a["trace_id"] for a in day["attempts"])
    assert as_json["audit"][0]["action"] == "share"

    not_due = run_cli(procs, "history", str(sms))
    assert not_due.returncode == 0
    assert "not due: not_imessage: the chat is not an iMessage chat" in not_due.stdout

    for ref, needle in (("not-a-uuid", "is malformed"), (str(uuid.uuid4()), "is unknown to cardshare")):
        bad = run_cli(procs, "history", ref)
        assert bad.returncode == 2
        lines = bad.stderr.strip().splitlines()
        assert len(lines) == 1, bad.stderr
        assert lines[0].startswith("cardshare: ")
        assert needle in lines[0]
    bad_day = run_cli(procs, "status", "--day", "yesterday")
    assert bad_day.returncode == 2
    assert bad_day.stderr.strip() == "cardshare: --day 'yesterday' is not a date (YYYY-MM-DD)"


@pytest.mark.timeout(timeout_for(60, 30, 120))  # the waits below
def test_no_secret_reaches_any_output(
    procs: Procs, world: World, deps: Deps, settings: Settings, tmp_path: Path
) -> None:
    """The API key and the webhook secret, set on a worker and a receiver logging at DEBUG."""
    world.line()
    chats = [world.chat() for _ in range(4)]
    # An error answer and a refused key put the failure paths in the logs too.
    world.sim.add_faults(
        [
            {"path": SHARE_PATH, "chat_id": str(chats[0]), "status": 500, "code": 3006, "times": 1},
            {"path": SHARE_PATH, "chat_id": str(chats[1]), "status": 401, "code": 2004, "times": 1},
        ]
    )
    debug: dict[str, Any] = {"CARDSHARE_LOG_LEVEL": "DEBUG", "CARDSHARE_WEBHOOK_SECRETS": SECRET}
    metrics_port, hook_port = free_port(), free_port()
    worker = procs.worker(concurrency=4, CARDSHARE_METRICS_PORT=str(metrics_port), **debug)
    receiver = Proc(
        [
            sys.executable,
            "-c",
            "from worker.cli.main import main; main()",
            "webhooks",
            "--port",
            str(hook_port),
        ],
        procs.env(**debug),
        tmp_path / "webhooks.log",
    ).start()
    procs.started.append(receiver)
    worker_consuming(celery_app, timeout=60)
    url = f"http://127.0.0.1:{hook_port}/webhooks/linq"
    wait_until(lambda: "receiving" in receiver.log_path.read_text(), 30, what="receiver")
    new_chat = str(uuid.uuid4())
    assert world.sim.deliver_webhook(url, SECRET, chat_id=new_chat, line="+12223334444")["status"] == 200
    assert (
        world.sim.deliver_webhook(url, SECRET, chat_id=new_chat, line="+12223334444", tamper=True)["status"]
        == 401
    )
    assert httpx.post(url, content=b"{}", timeout=5).status_code == 401
    outputs = [run_cli(procs, "sweep", **debug), run_cli(procs, "status", **debug)]
    wait_until(lambda: statuses(deps, chats)[2:] == ["succeeded", "succeeded"], 120, what="shares")
    outputs.append(run_cli(procs, "status", "--json", **debug))
    outputs.append(run_cli(procs, "history", str(chats[1]), **debug))
    pages = [scrape(metrics_port), httpx.get(url.replace("/webhooks/linq", "/metrics"), timeout=5).text]
    receiver.stop()
    worker.stop()

    texts = {
        "worker log": worker.log_path.read_text(errors="replace"),
        "webhooks log": receiver.log_path.read_text(errors="replace"),
        **{f"cli {i}": o.stdout + o.stderr for i, o in enumerate(outputs)},
        **{f"metrics {i}": p for i, p in enumerate(pages)},
    }
    assert "share.attempt" in texts["worker log"]
    assert '"level":"debug"' in texts["worker log"]
    assert "webhook.recorded" in texts["webhooks log"]
    assert "webhook.rejected" in texts["webhooks log"]
    secrets = {
        "API key": settings.linq_api_key.get(),
        "webhook secret": SECRET,
        "webhook key": SECRET.removeprefix("whsec_"),
    }
    for where, body in texts.items():
        for what, value in secrets.items():
            assert value not in body, f"{what} found in {where}"
