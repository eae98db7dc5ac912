"""First outbound -> share accepted: how long the card takes to follow the day's first message.

python -m bench.first_outbound [--chats 20000] [--rate 200] [--sweep-interval 900] [--workers 2]
                               [--concurrency 64] [--runs 3] [--quick]

N chats become due through signed `message.sent` deliveries sent at --rate per second to the real
receiver (`cardshare webhooks`), with Linq's share answering after 200 ms (the simulator) and real
workers (--workers processes, threads pool) sharing; each mode first shares one warm-up chat,
outside the figures, so workers are consuming before the day's messages arrive, as in service.
Two modes per run, in one invocation:
- `event`: the event path on (CARDSHARE_SHARE_ON_OUTBOUND=true, the default): the delivery that
  makes a chat due queues its share;
- `sweep`: the event path off: only the sweep shares, run every --sweep-interval seconds from the
  first delivery (the default interval is production's 15 minutes; --quick uses 30 s, stated in
  the output).
The figure is README's "How fast the card follows": from each message's `sent_at` (its slot at
--rate, when Linq sent it; the webhook follows as soon as the receiver takes it, so a receiver
slower than --rate shows as a longer "recorded") to Linq's 2xx, p50 and p99 over the run's
chat-days, read from `share_days`.
"""

from __future__ import annotations

import argparse
import base64
import datetime as dt
import json
import os
import subprocess
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import psycopg
from standardwebhooks import Webhook

from bench import repeat
from bench.common import (
    API_KEY,
    LINE,
    bench_settings,
    configure_celery,
    free_port,
    reset_state,
    servers,
    simulator,
    sweeper,
    table,
    webhook_receiver_command,
    worker_command,
)

SECRET = "whsec_" + base64.b64encode(b"cardshare-bench-webhook-secret!!").decode()
SHARE_LATENCY_MS = 200
MODES = ("event", "sweep")


def payload(chat_id: str, event_id: str, sent_at: dt.datetime) -> bytes:
    handle = {
        "id": "h1",
        "handle": LINE,
        "joined_at": "2026-01-01T00:00:00Z",
        "service": "iMessage",
        "is_me": True,
    }
    return json.dumps(
        {
            "api_version": "v3",
            "webhook_version": "2026-02-03",
            "event_type": "message.sent",
            "event_id": event_id,
            "created_at": sent_at.isoformat(),
            "trace_id": uuid.uuid4().hex,
            "partner_id": "bench",
            "data": {
                "id": str(uuid.uuid4()),
                "chat": {"id": chat_id, "is_group": False, "owner_handle": handle},
                "direction": "outbound",
                "sender_handle": handle,
                "service": "iMessage",
                "parts": [{"type": "text", "value": "hi"}],
                "sent_at": sent_at.isoformat(),
                "delivered_at": None,
                "read_at": None,
            },
        }
    ).encode()


def deliver_all(url: str, chats: list[str], rate: float, threads: int = 32) -> float:
    """Each chat's message.sent at its slot (`rate` per second), delivered and signed as soon as a
    client thread is free; seconds."""
    hook = Webhook(SECRET)
    start = time.time() + 0.5
    errors: list[str] = []
    local = threading.local()

    def send(i: int) -> None:
        slot = start + i / rate
        time.sleep(max(0.0, slot - time.time()))
        now = dt.datetime.now(dt.UTC)
        event_id = str(uuid.uuid4())
        # The message was sent at its slot; its webhook goes out when a client thread is free
        # (signed then). A receiver slower than `rate` makes deliveries late, and that wait counts.
        body = payload(chats[i], event_id, dt.datetime.fromtimestamp(slot, dt.UTC))
        headers = {
            "webhook-id": event_id,
            "webhook-timestamp": str(int(now.timestamp())),
            "webhook-signature": hook.sign(event_id, now, body.decode()),
            "content-type": "application/json",
        }
        client = getattr(local, "client", None)
        if client is None:
            client = local.client = httpx.Client(timeout=30)
        r = client.post(url, content=body, headers=headers)
        if r.status_code != 200:
            errors.append(f"{r.status_code} {r.text[:120]}")

    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(send, range(len(chats))))
    if errors:
        raise RuntimeError(f"{len(errors)} deliveries failed, first: {errors[0]}")
    return time.time() - start


def _load(out: list[float], url: str, chats: list[str], rate: float) -> None:
    out.append(deliver_all(url, chats, rate))


def latency(dsn: str, warm: str) -> dict[str, float]:
    """p50/p99 from first outbound to accepted share, and where it went: to the chat-day's
    mark (the receiver, `created_at`), queued (to the worker's claim) and the share itself."""
    spans = {
        "": "finished_at - outbound_at",
        "recorded_": "created_at - outbound_at",
        "queued_": "claimed_at - created_at",
        "sharing_": "finished_at - claimed_at",
    }
    cols = ", ".join(
        f"percentile_cont({q}) WITHIN GROUP (ORDER BY EXTRACT(EPOCH FROM {span}))"
        for span in spans.values()
        for q in (0.5, 0.99)
    )
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute(
            f"SELECT count(*), {cols}, count(*) FILTER (WHERE attempts > 1 OR claims > 1) FROM share_days "
            "WHERE status = 'succeeded' AND outbound_at IS NOT NULL AND chat_id <> %s",
            (warm,),
        ).fetchone()
    assert row is not None
    # Chat-days that needed a second attempt or claim (a retry, a redelivery): a long "sharing".
    out: dict[str, float] = {"shared": int(row[0]), "retried": int(row[-1])}
    for i, prefix in enumerate(spans):
        out[f"{prefix}p50_s"] = round(float(row[1 + 2 * i] or 0), 2)
        out[f"{prefix}p99_s"] = round(float(row[2 + 2 * i] or 0), 2)
    return out


def shared(dsn: str) -> int:
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute("SELECT count(*) FROM share_days WHERE status = 'succeeded'").fetchone()
    return int(row[0]) if row else 0


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--chats", type=int, default=20000)
    parser.add_argument("--rate", type=float, default=200.0)
    parser.add_argument("--sweep-interval", type=float, default=900.0)
    parser.add_argument("--concurrency", type=int, default=64, help="threads per worker")
    parser.add_argument("--workers", type=int, default=2, help="worker processes (the e2e shape)")
    repeat.add_arguments(parser, quick={"chats": 1000, "sweep_interval": 30.0})
    args = repeat.parse(parser)
    bench = repeat.Bench("first_outbound", args)
    with servers() as srv, simulator() as sim:
        bench.track(srv.pids)
        settings = bench_settings(
            database_url=srv.database_url, redis_url=srv.redis.url, linq_base_url=sim.base_url
        )
        app = configure_celery(settings)
        env = {
            **os.environ,
            **settings.to_env(),
            "LINQ_API_V3_API_KEY": API_KEY,
            "CARDSHARE_WEBHOOK_SECRETS": SECRET,
            "CARDSHARE_LOG_LEVEL": "WARNING",
            "CARDSHARE_LOG_FORMAT": "json",
        }
        for run in bench.runs():
            for mode in MODES:
                reset_state(srv)
                sim.admin.reset()
                sim.admin.add_cards([{"phone_number": LINE, "first_name": "Bench", "is_active": True}])
                chats = [str(uuid.uuid4()) for _ in range(args.chats)]
                warm = str(uuid.uuid4())
                sim.admin.add_chats([{"id": c, "line": LINE, "service": "iMessage"} for c in [warm, *chats]])
                sim.admin.add_faults(
                    [{"path": "/share_contact_card$", "mode": "pass", "latency_ms": SHARE_LATENCY_MS}]
                )
                with psycopg.connect(srv.dsn, autocommit=True) as conn:
                    conn.execute(
                        "INSERT INTO lines (phone_number, first_name, card_active, card_checked_at) "
                        "VALUES (%s, 'Bench', true, now())",
                        (LINE,),
                    )
                menv = {**env, "CARDSHARE_SHARE_ON_OUTBOUND": "true" if mode == "event" else "false"}
                port = free_port()
                procs = [
                    subprocess.Popen(
                        cmd,
                        env=menv,
                        stdout=subprocess.DEVNULL,
                        stderr=subprocess.DEVNULL,
                        start_new_session=True,
                    )
                    for cmd in (
                        webhook_receiver_command(port),
                        *(
                            worker_command(
                                pool="threads",
                                concurrency=args.concurrency,
                                loglevel="WARNING",
                                hostname=f"bench{i}@%h",
                            )
                            for i in range(args.workers)
                        ),
                    )
                ]
                try:
                    url = f"http://127.0.0.1:{port}/webhooks/linq"
                    deadline = time.monotonic() + 120
                    while True:
                        try:
                            if (
                                httpx.get(url.replace("/webhooks/linq", "/healthz"), timeout=1).status_code
                                == 200
                            ):
                                break
                        except httpx.HTTPError:
                            pass
                        if time.monotonic() > deadline:
                            raise RuntimeError("receiver did not start")
                        time.sleep(0.2)
                    while len(app.control.ping(timeout=0.5)) < args.workers:
                        if time.monotonic() > deadline:
                            raise RuntimeError("worker did not start")
                    with sweeper(settings, app) as sweep:
                        # A running service's worker is consuming before the day's messages
                        # arrive: one chat shared first, outside the figures, so a worker's
                        # start-up (its first connections) is not counted as latency.
                        deliver_all(url, [warm], args.rate)
                        if mode == "sweep":
                            sweep()
                        while shared(srv.dsn) < 1:
                            if time.monotonic() > deadline:
                                raise RuntimeError(f"{mode}: the warm-up share did not finish")
                            time.sleep(0.1)
                    with run.measure(mode), sweeper(settings, app) as sweep:
                        started = time.monotonic()
                        delivered: list[float] = []
                        loader = threading.Thread(target=_load, args=(delivered, url, chats, args.rate))
                        loader.start()
                        next_sweep = started + (args.sweep_interval if mode == "sweep" else float("inf"))
                        limit = started + args.chats / args.rate + 2 * args.sweep_interval + 300
                        while shared(srv.dsn) < args.chats + 1:
                            if time.monotonic() >= next_sweep:
                                sweep()
                                next_sweep += args.sweep_interval
                            if time.monotonic() > limit:
                                done = shared(srv.dsn) - 1
                                raise RuntimeError(f"{mode}: only {done} of {args.chats} shared")
                            time.sleep(0.5)
                        loader.join()
                    result: dict[str, Any] = latency(srv.dsn, warm)
                    result["seconds"] = round(time.monotonic() - started, 1)
                    # The receiver keeps up when this is close to chats / rate.
                    result["delivered_per_s"] = round(args.chats / delivered[0], 1) if delivered else 0.0
                finally:
                    for p in procs:
                        p.terminate()
                    for p in procs:
                        try:
                            p.wait(30)
                        except subprocess.TimeoutExpired:
                            p.kill()
                run.figures[mode] = result
                print(mode, result, flush=True)
        bench.machine.update(srv.versions())
    saved = bench.finish()
    label = "quick mode" if args.quick else "full size"
    print(
        f"\n{label}: {args.chats} chats at {args.rate:g}/s, share latency {SHARE_LATENCY_MS} ms, "
        f"sweep-only every {args.sweep_interval:g} s; median (min-max, spread) of {args.runs} runs"
    )
    rows = [
        [
            "event path" if m == "event" else f"sweep only ({args.sweep_interval:g} s)",
            bench.cell(f"{m}.p50_s", 2),
            bench.cell(f"{m}.p99_s", 2),
            bench.cell(f"{m}.shared", 0),
            bench.cell(f"{m}.delivered_per_s", 0),
        ]
        for m in MODES
    ]
    print(table(["mode", "p50 s", "p99 s", "shared", "deliveries/s"], rows))
    spans = [(stage, q) for stage in ("recorded", "queued", "sharing") for q in ("p50", "p99")]
    stages = [
        [
            "event path" if m == "event" else f"sweep only ({args.sweep_interval:g} s)",
            *(bench.cell(f"{m}.{stage}_{q}_s", 2) for stage, q in spans),
        ]
        for m in MODES
    ]
    print(
        "\nwhere it went: outbound -> chat-day marked (recorded), -> claimed by a worker (queued), "
        "-> 2xx (sharing)"
    )
    heads = [f"{stage} {q}" for stage, q in spans]
    print(table(["mode", *heads], stages))
    print(f"\nsaved {saved}")


if __name__ == "__main__":
    main()
