"""CPU per share POST against the number of threads making them, and with one event loop.

python -m bench.threads [--per-thread 30] [--latency-ms 200] [--threads 10,50,100,200] [--runs 3]

Why: a worker's CPU per share did not follow the Python work taken out of it (the SDK's request
building, ~1/4 of the SDK+httpx time in py-spy, moved the end-to-end CPU by less than the
noise). This isolates the HTTP call. A client process posts shares to the simulator
(this process, holding each one --latency-ms, as in bench.e2e) from T threads, and its CPU per
request is measured (T x --per-thread requests; clients are made before the clock starts):

- *threads*: each thread has its own `httpx.Client` (what a worker thread does: `ClientPool`);
- *loop*: the same T threads hand each request to one asyncio event loop thread that sends it
  on one of 8 `httpx.AsyncClient`s (connection groups), and wait for its answer: the candidate
  design of issue 18 ("an asyncio HTTP path inside the worker").

The same work per request at every T: what grows with T is what the threads cost each other
(every blocking socket call gives up the GIL and takes it back against T-1 others).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import subprocess
import sys
import threading
import time
import uuid
from typing import Any

from bench import repeat
from bench.common import API_KEY, LINE, simulator, table

GROUPS = 8  # AsyncClients in the loop mode: one pool for 100+ connections walks itself (docs)


def client(base_url: str, threads: int, requests: int, mode: str) -> dict[str, float]:
    """Run in the child: post `requests` shares from `threads` threads; its own CPU and wall."""
    import httpx

    ids = [str(uuid.uuid4()) for _ in range(requests)]
    headers = {"Authorization": f"Bearer {API_KEY}"}
    url = base_url.rstrip("/") + "/v3/chats/{}/share_contact_card"
    todo = list(ids)
    lock = threading.Lock()
    loop: asyncio.AbstractEventLoop | None = None
    groups: list[Any] = []
    if mode == "loop":
        loop = asyncio.new_event_loop()
        threading.Thread(target=loop.run_forever, daemon=True).start()

        async def make() -> list[Any]:
            limits = httpx.Limits(max_connections=threads // GROUPS + 1)
            return [httpx.AsyncClient(limits=limits, headers=headers) for _ in range(GROUPS)]

        groups = asyncio.run_coroutine_threadsafe(make(), loop).result()

    # Made before the clock: a client costs ~40 ms of CPU to build (its SSL context).
    own = [httpx.Client(headers=headers) for _ in range(threads)] if loop is None else []

    def work(i: int) -> None:
        http = own[i] if own else None
        while True:
            with lock:
                if not todo:
                    return
                chat = todo.pop()
            if http is not None:
                http.post(url.format(chat))
            else:
                assert loop is not None
                asyncio.run_coroutine_threadsafe(groups[i % GROUPS].post(url.format(chat)), loop).result()

    pool = [threading.Thread(target=work, args=(i,)) for i in range(threads)]
    usage = resource.getrusage(resource.RUSAGE_SELF)
    cpu0, wall0 = usage.ru_utime + usage.ru_stime, time.monotonic()
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return {
        "cpu_s": usage.ru_utime + usage.ru_stime - cpu0,
        "wall_s": time.monotonic() - wall0,
    }


def measure(sim: Any, args: argparse.Namespace, threads: int, mode: str) -> dict[str, float]:
    requests = threads * args.per_thread
    sim.admin.reset()
    sim.admin.add_cards([{"phone_number": LINE, "first_name": "Bench", "is_active": True}])
    # Unknown chats answer 404 after the same hold: the client's work per request is the same.
    sim.admin.add_faults([{"path": "/share_contact_card$", "mode": "pass", "latency_ms": args.latency_ms}])
    cmd = [
        sys.executable,
        "-m",
        "bench.threads",
        "--client",
        sim.base_url,
        str(threads),
        str(requests),
        mode,
    ]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=os.environ).stdout
    got = json.loads(out.strip().splitlines()[-1])
    return {
        "cpu_ms_per_request": round(1000 * got["cpu_s"] / requests, 3),
        "per_s": round(requests / got["wall_s"], 1),
    }


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--client":
        base, threads, requests, mode = sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
        print(json.dumps(client(base, threads, requests, mode)))
        return
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--per-thread", type=int, default=30, help="requests per thread")
    parser.add_argument("--latency-ms", type=int, default=200)
    parser.add_argument("--threads", default="10,50,100,200")
    repeat.add_arguments(parser, quick={"per_thread": 10})
    args = repeat.parse(parser)
    counts = [int(t) for t in args.threads.split(",")]
    bench = repeat.Bench("threads", args)
    with simulator() as sim:
        for run in bench.runs():
            for mode in ("threads", "loop"):
                for t in counts:
                    with run.measure(f"{mode}-{t}"):
                        run.figures[f"{mode}-{t}"] = got = measure(sim, args, t, mode)
                    print(f"{mode} x {t}: {got['per_s']}/s, {got['cpu_ms_per_request']} ms CPU/request")
    bench.finish()
    print(f"\nmedian (min-max, spread) of {args.runs} runs: client CPU ms per request, requests/s")
    rows = []
    for t in counts:
        rows.append(
            [
                str(t),
                bench.cell(f"threads-{t}.cpu_ms_per_request", 3),
                bench.cell(f"threads-{t}.per_s"),
                bench.cell(f"loop-{t}.cpu_ms_per_request", 3),
                bench.cell(f"loop-{t}.per_s"),
            ]
        )
    print(table(["threads", "own clients: CPU ms", "req/s", "one loop: CPU ms", "req/s"], rows))


if __name__ == "__main__":
    main()
