"""Webhook receiver benchmark: signed message.sent deliveries per second, and latency.

python -m bench.webhooks [--requests 20000] [--clients 2] [--threads 16] [--runs 3] [--quick]

cardshare's receiver (`cardshare webhooks`: verify the Standard Webhooks signature, parse,
dedupe and record in one short transaction) against the ceiling measured in the same run: the
same uvicorn/Starlette stack answering 200 without verifying or writing (bench/webhook_baseline.py).
The load comes from separate client processes with every delivery signed in advance. Each run
empties the tables, starts each server afresh and loads the ceiling then cardshare, so the ratio
is per run; the servers' CPU per request is measured from their process trees.
"""

from __future__ import annotations

import argparse
import base64
import datetime as dt
import json
import multiprocessing as mp
import os
import statistics
import subprocess
import sys
import time
import uuid
from typing import Any

import httpx
import psycopg
from standardwebhooks import Webhook

from bench import repeat
from bench.common import LINE, free_port, reset_state, servers, table, webhook_receiver_command

SECRET = "whsec_" + base64.b64encode(b"cardshare-bench-webhook-secret!!").decode()


def payload(chat_id: str, event_id: str) -> bytes:
    return json.dumps(
        {
            "api_version": "v3",
            "webhook_version": "2026-02-03",
            "event_type": "message.sent",
            "event_id": event_id,
            "created_at": "2026-11-24T08:00:00Z",
            "trace_id": uuid.uuid4().hex,
            "partner_id": "bench",
            "data": {
                "id": str(uuid.uuid4()),
                "chat": {
                    "id": chat_id,
                    "is_group": False,
                    "owner_handle": {
                        "id": "h1",
                        "handle": LINE,
                        "joined_at": "2026-01-01T00:00:00Z",
                        "service": "iMessage",
                        "is_me": True,
                    },
                },
                "direction": "outbound",
                "sender_handle": {
                    "id": "h1",
                    "handle": LINE,
                    "joined_at": "2026-01-01T00:00:00Z",
                    "service": "iMessage",
                    "is_me": True,
                },
                "service": "iMessage",
                "parts": [{"type": "text", "value": "hi"}],
                "sent_at": "2026-11-24T07:59:59Z",
                "delivered_at": None,
                "read_at": None,
            },
        }
    ).encode()


def client_proc(url: str, n: int, threads: int, out: Any) -> None:
    """Sign n deliveries up front, then post them from `threads` threads; report latencies."""
    from concurrent.futures import ThreadPoolExecutor

    hook = Webhook(SECRET)
    reqs = []
    for _ in range(n):
        event_id = str(uuid.uuid4())
        body = payload(str(uuid.uuid4()), event_id)
        ts = int(time.time())
        sig = hook.sign(event_id, dt.datetime.fromtimestamp(ts, dt.UTC), body.decode())
        reqs.append(
            (
                body,
                {
                    "webhook-id": event_id,
                    "webhook-timestamp": str(ts),
                    "webhook-signature": sig,
                    "content-type": "application/json",
                },
            )
        )
    chunks = [reqs[i::threads] for i in range(threads)]

    def run(chunk: list[tuple[bytes, dict[str, str]]]) -> list[float]:
        lat = []
        with httpx.Client(timeout=30) as client:
            for body, headers in chunk:
                t = time.perf_counter()
                r = client.post(url, content=body, headers=headers)
                lat.append(time.perf_counter() - t)
                if r.status_code != 200:
                    raise RuntimeError(f"{r.status_code} {r.text[:200]}")
        return lat

    start = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        lats = [x for chunk_lat in pool.map(run, chunks) for x in chunk_lat]
    out.put((time.perf_counter() - start, lats))


def load(url: str, total: int, clients: int, threads: int) -> dict[str, float]:
    queue: Any = mp.get_context("spawn").Queue()
    procs = [
        mp.get_context("spawn").Process(target=client_proc, args=(url, total // clients, threads, queue))
        for _ in range(clients)
    ]
    for p in procs:
        p.start()
    results = [queue.get(timeout=900) for _ in procs]
    for p in procs:
        p.join(30)
    elapsed = max(r[0] for r in results)
    lats = sorted(x for r in results for x in r[1])
    return {
        "requests": len(lats),
        "per_s": round(len(lats) / elapsed, 1),
        "p50_ms": round(1000 * statistics.median(lats), 2),
        "p99_ms": round(1000 * lats[int(len(lats) * 0.99) - 1], 2),
    }


def wait_up(url: str) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            httpx.post(url, content=b"{}", timeout=1)
            return
        except httpx.HTTPError:
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not come up")


CEILING = "ceiling (uvicorn+Starlette, no work)"
CARDSHARE = "cardshare webhooks"
NO_EVENT_PATH = "cardshare webhooks, event path off"
KEYS = {CEILING: "ceiling", NO_EVENT_PATH: "no_event_path", CARDSHARE: "cardshare"}
# The event path's share of a delivery's cost: every delivery here is a new chat that its
# message makes due (the line has an active card), so with it on each one is marked and published.
EXTRA_ENV = {NO_EVENT_PATH: {"CARDSHARE_SHARE_ON_OUTBOUND": "false"}}


OF_CEILING = {"cardshare": "of_ceiling", "no_event_path": "no_event_path_of_ceiling"}


def active_line(dsn: str) -> None:
    """The bench line with an active card: each delivery's chat becomes due."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO lines (phone_number, first_name, card_active, card_checked_at) "
            "VALUES (%s, 'Bench', true, now()) ON CONFLICT DO NOTHING",
            (LINE,),
        )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=20000)
    parser.add_argument("--clients", type=int, default=2)
    parser.add_argument("--threads", type=int, default=16)
    repeat.add_arguments(parser, quick={"requests": 1000})
    args = repeat.parse(parser)
    bench = repeat.Bench("webhooks", args)
    with servers() as srv:
        bench.track(srv.pids)
        env = {
            **os.environ,
            "DATABASE_URL": srv.database_url,
            "REDIS_URL": srv.redis.url,
            "CARDSHARE_WEBHOOK_SECRETS": SECRET,
            "CARDSHARE_LOG_LEVEL": "WARNING",
            "CARDSHARE_LOG_FORMAT": "json",
        }
        commands = {
            CEILING: lambda port: [sys.executable, "-m", "bench.webhook_baseline", str(port)],
            NO_EVENT_PATH: webhook_receiver_command,
            CARDSHARE: webhook_receiver_command,
        }
        for run in bench.runs():
            for name, command in commands.items():
                key = KEYS[name]
                reset_state(srv)
                active_line(srv.dsn)
                port = free_port()
                proc = subprocess.Popen(
                    command(port),
                    env={**env, **EXTRA_ENV.get(name, {})},
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                    start_new_session=True,
                )
                try:
                    url = f"http://127.0.0.1:{port}/webhooks/linq"
                    wait_up(url)
                    with run.measure(key):
                        server_before = repeat.tree_seconds([proc.pid])
                        pg_before = repeat.tree_seconds([srv.postgres_pid()])
                        result: dict[str, Any] = load(url, args.requests, args.clients, args.threads)
                        server_cpu = repeat.tree_seconds([proc.pid]) - server_before
                        pg_cpu = repeat.tree_seconds([srv.postgres_pid()]) - pg_before
                    n = max(result["requests"], 1)
                    result["server_cpu_ms_per_request"] = round(1000 * server_cpu / n, 3)
                    result["postgres_cpu_ms_per_request"] = round(1000 * pg_cpu / n, 3)
                finally:
                    proc.terminate()
                    proc.wait(30)
                run.figures[key] = result
                print(name, result, flush=True)
            run.figures["of_ceiling"] = round(
                run.figures["cardshare"]["per_s"] / run.figures["ceiling"]["per_s"], 3
            )
            run.figures["no_event_path_of_ceiling"] = round(
                run.figures["no_event_path"]["per_s"] / run.figures["ceiling"]["per_s"], 3
            )
        bench.machine.update(srv.versions())
    saved = bench.finish()
    rows = [
        [
            name,
            bench.cell(f"{key}.per_s"),
            "1.00" if key == "ceiling" else bench.cell(OF_CEILING[key], 2),
            bench.cell(f"{key}.p50_ms", 2),
            bench.cell(f"{key}.p99_ms", 2),
            bench.cell(f"{key}.server_cpu_ms_per_request", 2),
            bench.cell(f"{key}.postgres_cpu_ms_per_request", 3),
        ]
        for name, key in KEYS.items()
    ]
    print(f"\nmedian (min-max, spread) of {args.runs} runs")
    print(
        table(
            [
                "server",
                "requests/s",
                "of ceiling",
                "p50 ms",
                "p99 ms",
                "server CPU ms/req",
                "PostgreSQL CPU ms/req",
            ],
            rows,
        )
    )
    print(f"\nsaved {saved}")


if __name__ == "__main__":
    main()
