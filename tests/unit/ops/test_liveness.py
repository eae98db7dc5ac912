"""Liveness from the heartbeat file alone: stale, stalled while holding messages, a task past its
hard limit; idle is live; files of exited processes do not count."""

from __future__ import annotations

import dataclasses
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

from worker.ops import liveness


def record(**changes: object) -> liveness.LocalRecord:
    now = time.time()
    base = liveness.LocalRecord(
        kind="worker",
        node="celery@test",
        host=socket.gethostname(),
        pid=os.getpid(),
        started_at=now - 100,
        heartbeat_at=now,
        progress_at=now,
        completed=5,
        held=0,
        interval_s=5.0,
        connected=True,
    )
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


def test_a_fresh_idle_worker_is_live() -> None:
    now = time.time()
    verdict = liveness.assess(record(progress_at=now - 3600), now=now, stall_s=300)
    assert verdict.ok, verdict.line  # holding nothing for an hour is idle, not stuck
    assert "5 tasks finished, holding 0" in verdict.line


def test_a_stale_file_means_a_frozen_process() -> None:
    now = time.time()
    verdict = liveness.assess(record(heartbeat_at=now - 21), now=now, stall_s=300)
    assert not verdict.ok
    assert "heartbeat file 21s old (limit 20s)" in verdict.line
    assert liveness.assess(record(heartbeat_at=now - 19), now=now, stall_s=300).ok


def test_holding_messages_without_progress_is_a_stall() -> None:
    now = time.time()
    stuck = record(held=3, progress_at=now - 301)
    verdict = liveness.assess(stuck, now=now, stall_s=300)
    assert not verdict.ok
    assert "holds 3 messages and finished no task for 5m" in verdict.line
    assert liveness.assess(record(held=3, progress_at=now - 299), now=now, stall_s=300).ok


def test_a_task_past_its_hard_limit_fails_liveness() -> None:
    now = time.time()
    grace = liveness.OVERRUN_GRACE_S
    over = record(held=1, longest_task_s=90 + grace + 1, longest_task_limit_s=90.0)
    verdict = liveness.assess(over, now=now, stall_s=300)
    assert not verdict.ok
    assert "past its hard time limit of 90s" in verdict.line
    within = record(held=1, longest_task_s=90 + grace - 1, longest_task_limit_s=90.0)
    assert liveness.assess(within, now=now, stall_s=300).ok


def test_the_writer_tracks_progress_and_the_probe_reads_only_live_processes(tmp_path: Path) -> None:
    held = [0]
    completed = [0]
    beat = liveness.LocalHeartbeat(
        tmp_path, kind="worker", node="celery@a/b", interval_s=0.2, counters=lambda: (completed[0], held[0])
    )
    first = beat.beat()
    assert beat.path.parent == tmp_path.resolve() / "health"
    assert "/" not in beat.path.name.removeprefix("worker-")
    held[0] = 2
    busy = beat.beat()
    assert busy.progress_at == first.progress_at  # holding work, nothing finished: no progress
    completed[0] = 1
    assert beat.beat().progress_at > first.progress_at
    assert liveness.probe(tmp_path, kind="worker", stall_s=60).ok
    assert liveness.probe(tmp_path, kind="worker", stall_s=60, node="celery@a/b").ok
    assert not liveness.probe(tmp_path, kind="worker", stall_s=60, node="celery@other").ok
    assert not liveness.probe(tmp_path, kind="beat", stall_s=60).ok
    # The same file written by a process that has exited does not count.
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True)
    liveness.write(beat.path, dataclasses.replace(beat.beat(), pid=int(gone.stdout)))
    verdict = liveness.probe(tmp_path, kind="worker", stall_s=60)
    assert not verdict.ok
    assert "1 file(s) of exited processes" in verdict.line
    beat.stop()
    assert not beat.path.exists()  # a clean exit leaves nothing to misread
