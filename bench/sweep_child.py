"""One measured enqueue run in its own process (so ru_maxrss is this run's peak).

python -m bench.sweep_child --mode cardshare|naive|lpush --n N   (DATABASE_URL, REDIS_URL set)
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import resource
import time

import psycopg
import redis
from sqlalchemy import text

from bench.common import (
    API_KEY,
    LINE,
    configure_celery,
    engine,
    settings_from_env,
    share_task,
    simulator,
    sweeper,
)

QUEUE = "cardshare"
MESSAGE = b"x" * 950  # one Celery message is ~950 bytes


def reset(dsn: str, client: redis.Redis) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("TRUNCATE share_days, attempts, sweep_runs")
        # A chat the last run marked today is skipped by the sweep: unmark them (the column
        # exists from migration 0007; a --baseline-ref tree before it runs its own copy of this).
        conn.execute("UPDATE chats SET marked_day = '1970-01-01' WHERE marked_day > '1970-01-01'")
    client.flushdb()


def wait_for(client: redis.Redis, key: str, n: int, started: float, timeout: float = 3600) -> float:
    while client.llen(key) < n:
        if time.perf_counter() - started > timeout:
            raise TimeoutError(f"{key} has {client.llen(key)} of {n}")
        time.sleep(0.005)
    return time.perf_counter() - started


def run_cardshare(n: int) -> float:
    sim = simulator()
    base = sim.start()
    sim.admin.add_cards([{"phone_number": LINE, "first_name": "Bench", "is_active": True}])
    settings = settings_from_env(linq_api_key=API_KEY, linq_base_url=base)
    app = configure_celery(settings)
    client = redis.Redis.from_url(settings.redis_url or "")
    with sweeper(settings, app) as sweep:
        started = time.perf_counter()
        report = sweep()
        # Fail now, not after wait_for's hour, when the sweep enqueued fewer than asked.
        if report.enqueued != n:
            raise SystemExit(f"the sweep enqueued {report.enqueued} of {n} due chats: {report}")
        seconds = wait_for(client, QUEUE, n, started)
    sim.stop()
    return seconds


def run_naive(n: int) -> float:
    """The obvious loop: stream the due rows, one apply_async per chat."""
    settings = settings_from_env()
    configure_celery(settings)
    share_chat = share_task()
    assert settings.database_url
    eng = engine(settings.database_url)
    client = redis.Redis.from_url(settings.redis_url or "")
    day = dt.datetime.now(dt.UTC).date().isoformat()
    started = time.perf_counter()
    with eng.connect() as conn:
        rows = conn.execution_options(stream_results=True, yield_per=1000).execute(
            text(
                "SELECT c.id FROM chats c JOIN lines l ON l.phone_number = c.line_phone "
                "WHERE c.service = 'iMessage' AND l.card_active AND c.first_outbound_at <= now()"
            )
        )
        for (chat_id,) in rows:
            share_chat.apply_async(args=(str(chat_id), day))
    seconds = wait_for(client, QUEUE, n, started)
    eng.dispose()
    return seconds


def run_lpush(n: int) -> float:
    """The ceiling: raw pipelined LPUSH of message-sized values, nothing else."""
    client = redis.Redis.from_url(os.environ["REDIS_URL"])
    started = time.perf_counter()
    pipe = client.pipeline(transaction=False)
    for i in range(n):
        pipe.lpush("ceiling", MESSAGE)
        if i % 1000 == 999:
            pipe.execute()
    pipe.execute()
    return wait_for(client, "ceiling", n, started)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mode", choices=["cardshare", "naive", "lpush"], required=True)
    parser.add_argument("--n", type=int, required=True)
    args = parser.parse_args()
    dsn = os.environ["DATABASE_URL"].replace("postgresql+psycopg://", "postgresql://")
    client = redis.Redis.from_url(os.environ["REDIS_URL"])
    reset(dsn, client)
    seconds = {"cardshare": run_cardshare, "naive": run_naive, "lpush": run_lpush}[args.mode](args.n)
    maxrss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        json.dumps(
            {
                "mode": args.mode,
                "n": args.n,
                "seconds": round(seconds, 2),
                "per_s": round(args.n / seconds),
                "maxrss_mb": round(maxrss_mb, 1),
            }
        )
    )


if __name__ == "__main__":
    main()
