"""Drill 8: bad input. Clear errors, no crashed worker, nothing lost."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
import uuid

import pytest
import redis

from tests.support.drills import SHARE, Figures, check, seed_chats, settle, sweep_now
from tests.support.procs import CONSUMING_S, Procs, timeout_for, worker_consuming
from tests.support.world import World
from worker.deps import Deps

pytestmark = pytest.mark.drill

SETTLE_S = 90.0
CLI_S = 60.0


@pytest.mark.timeout(timeout_for(CONSUMING_S, SETTLE_S, CLI_S))
def test_bad_messages_and_bad_answers_crash_nothing(
    world: World, deps: Deps, procs: Procs, today: dt.date
) -> None:
    from worker.keys import SHARE_QUEUE, SHARE_TASK
    from worker.queue.app import app

    fig = Figures("bad input (malformed messages, non-JSON and garbage answers)")
    line = world.line()
    chats = seed_chats(deps, world.sim, line, 40)
    # Linq misbehaves for some chats: a non-JSON 500, a 200 with garbage, a 502 HTML page.
    world.sim.add_faults(
        [
            {
                "path": SHARE,
                "chat_id": str(chats[0]),
                "mode": "respond",
                "status": 500,
                "body_raw": "oops",
                "times": 2,
            },
            {
                "path": SHARE,
                "chat_id": str(chats[1]),
                "mode": "respond",
                "status": 200,
                "body_raw": "\x00{{{",
            },
            {
                "path": SHARE,
                "chat_id": str(chats[2]),
                "mode": "respond",
                "status": 502,
                "body_raw": "<html>bad gateway</html>",
                "content_type": "text/html",
                "times": 1,
            },
        ]
    )
    worker = procs.worker(concurrency=16)
    procs.beat()
    worker_consuming(app)
    # Malformed task messages, as a buggy publisher or a hand-edited queue would send them.
    bad_args = [
        ("not-a-uuid", today.isoformat()),
        (str(uuid.uuid4()), "yesterday"),
        (None, None),
        (str(uuid.uuid4()), today.isoformat()),
    ]  # the last: a chat nobody knows
    for args in bad_args:
        app.send_task(SHARE_TASK, args=args, queue=SHARE_QUEUE)
    assert deps.settings.redis_url
    raw = redis.Redis.from_url(deps.settings.redis_url)
    try:
        raw.lpush(SHARE_QUEUE, b"this is not a celery message")
        raw.lpush(SHARE_QUEUE, json.dumps({"body": "e30=", "headers": {"task": "cardshare.nope"}}).encode())
    finally:
        raw.close()
    sweep_now(deps)
    settle(deps, today, chats, timeout=SETTLE_S, fig=fig)
    assert worker.alive
    # The CLI answers bad input with one line and a non-zero exit.
    cli = subprocess.run(
        [sys.executable, "-c", "from worker.cli.main import main; main()", "share", "'; DROP TABLE x"],
        env=procs.env(),
        capture_output=True,
        text=True,
        timeout=CLI_S,
        check=False,
    )
    report = check(deps, world.sim, today)
    log = (procs.log_dir / "worker.log").read_text()
    fig.add(
        bad_messages=len(bad_args) + 2,
        worker_alive=worker.alive,
        rejected_logged=log.count("task.bad_arguments"),
        cli_exit=cli.returncode,
    )
    fig.add_check(report)
    fig.write()
    assert report.missed == []
    assert report.duplicates == []
    assert report.succeeded == 40
    assert log.count("task.bad_arguments") >= 3
    assert cli.returncode == 2
    assert len(cli.stderr.strip().splitlines()) == 1
    assert "is malformed" in cli.stderr
