"""Issue 19, point 2: the receiver never loses an event Linq's schema allows, reads are bounded,
and signed but unusable bodies get 400. Through the real receiver (the app under uvicorn with
cardshare's server settings; the read limits through the `cardshare webhooks` process itself)."""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
from sqlalchemy import text

from tests.support.cli import cardshare, env_for
from tests.support.receiver import SECRET, ReceiverServer
from tests.support.world import World
from worker.config import Secret, Settings
from worker.deps import Deps
from worker.ingest.webhooks import create_app
from worker.simulator import SimulatorAdmin
from worker.simulator.webhooks import EventSpec, build_event, signed_headers
from worker.store.chats import mark_opted_out
from worker.store.session import transaction

pytestmark = pytest.mark.acceptance

LINE = "+12223334444"


@pytest.fixture
def receiver(settings: Settings, deps: Deps) -> Iterator[ReceiverServer]:
    app = create_app(settings.replace(webhook_secrets=(Secret(SECRET),)), deps.sessions)
    with ReceiverServer(app) as server:
        yield server


def chat_row(deps: Deps, chat_id: str | uuid.UUID) -> Any:
    with deps.sessions() as s:
        return s.execute(
            text("SELECT * FROM chats WHERE id = :c"), {"c": uuid.UUID(str(chat_id))}
        ).one_or_none()


def count(deps: Deps, table: str) -> int:
    with deps.sessions() as s:
        return int(s.execute(text(f"SELECT count(*) FROM {table}")).scalar_one())


def post_signed(
    url: str, raw: bytes, *, timestamp: int | None = None, webhook_id: str = "wh-x"
) -> httpx.Response:
    ts = int(time.time()) if timestamp is None else timestamp
    return httpx.post(url, content=raw, headers=signed_headers(SECRET, webhook_id, ts, raw), timeout=10)


def event_bytes(**spec: Any) -> bytes:
    spec.setdefault("sent_at", time.time() - 60)
    return json.dumps(build_event(EventSpec(**spec))).encode()


# --------------------------------------------------------------------------- null handles


def test_null_owner_handle_on_an_inbound_message_clears_the_opt_out_of_a_known_chat(
    receiver: ReceiverServer, world: World, deps: Deps, sim: SimulatorAdmin
) -> None:
    world.line(LINE)
    chat = world.chat(LINE)
    with transaction(deps.sessions) as s:
        mark_opted_out(s, chat)
    answer = sim.deliver_webhook(
        receiver.url,
        SECRET,
        event_type="message.received",
        version="2026-02-03",
        chat_id=str(chat),
        text="yes please",
        nulls=["owner_handle"],
        sent_at=dt.datetime.now(dt.UTC).isoformat(),
    )
    assert answer["status"] == 200, answer
    assert json.loads(answer["body"]) == {"status": "recorded"}
    assert chat_row(deps, chat).opted_out is False


def test_null_recipient_handle_on_a_2025_inbound_message_resolves_from_the_chat(
    receiver: ReceiverServer, world: World, deps: Deps, sim: SimulatorAdmin
) -> None:
    world.line(LINE)
    chat = world.chat(LINE)
    with transaction(deps.sessions) as s:
        mark_opted_out(s, chat)
    answer = sim.deliver_webhook(
        receiver.url,
        SECRET,
        event_type="message.received",
        version="2025-01-01",
        chat_id=str(chat),
        nulls=["recipient_handle", "recipient_phone"],
        sent_at=dt.datetime.now(dt.UTC).isoformat(),
    )
    assert (answer["status"], json.loads(answer["body"])) == (200, {"status": "recorded"})
    row = chat_row(deps, chat)
    assert (row.line_phone, row.opted_out) == (LINE, False)


def test_an_event_for_an_unknown_chat_with_null_handles_is_kept_until_the_chat_is_known(
    receiver: ReceiverServer, world: World, deps: Deps, sim: SimulatorAdmin, settings: Settings
) -> None:
    """chat.created with `is_me: null` and a message.sent with no owner/sender handle, for a chat
    cardshare does not know: answered 200 `pending`, kept; once the chat is known (here: a sync
    would record it; the test records it directly) the recovery pass applies both."""
    chat = uuid.uuid4()
    sent = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)
    created = sim.deliver_webhook(
        receiver.url, SECRET, event_type="chat.created", chat_id=str(chat), nulls=["is_me"], is_group=False
    )
    message = sim.deliver_webhook(
        receiver.url,
        SECRET,
        event_type="message.sent",
        chat_id=str(chat),
        nulls=["owner_handle", "sender_handle"],
        sent_at=sent.isoformat(),
    )
    for answer in (created, message):
        assert (answer["status"], json.loads(answer["body"])) == (200, {"status": "pending"}), answer
    assert chat_row(deps, chat) is None
    assert count(deps, "webhook_pending") == 2
    # Linq's retry of a kept event is a duplicate, not a second pending row.
    again = sim.deliver_webhook(
        receiver.url,
        SECRET,
        event_type="message.sent",
        chat_id=str(chat),
        event_id=message["event_id"],
        timestamp=int(message["timestamp"]) - 1,  # Linq signs each retry anew
        nulls=["owner_handle", "sender_handle"],
        sent_at=sent.isoformat(),
    )
    assert json.loads(again["body"]) == {"status": "duplicate"}
    world.line(LINE)
    world.chat(LINE, chat_id=chat, outbound_at=False, in_sim=False)
    done = cardshare(settings, "recover")
    assert done.returncode == 0, done.stderr
    assert "2 applied" in done.stdout
    assert count(deps, "webhook_pending") == 0
    row = chat_row(deps, chat)
    assert abs((row.last_outbound_at - sent).total_seconds()) < 0.01


# --------------------------------------------------------------------------- timestamps


def test_a_year_1_time_is_refused_and_a_year_9999_time_clamped(
    receiver: ReceiverServer, world: World, deps: Deps, settings: Settings
) -> None:
    world.line(LINE)
    chat = uuid.uuid4()
    doc = build_event(EventSpec(chat_id=str(chat), line=LINE, event_id="e-old", sent_at=time.time()))
    doc["data"]["sent_at"] = "0001-01-01T00:00:00Z"
    doc["created_at"] = "0001-01-01T00:00:00Z"
    old = post_signed(receiver.url, json.dumps(doc).encode())
    assert old.status_code == 400
    assert "before 2000" in old.json()["error"]
    assert chat_row(deps, chat) is None

    doc = build_event(EventSpec(chat_id=str(chat), line=LINE, event_id="e-future", sent_at=time.time()))
    doc["data"]["sent_at"] = "9999-12-31T23:59:59Z"
    before = dt.datetime.now(dt.UTC)
    future = post_signed(receiver.url, json.dumps(doc).encode())
    assert future.status_code == 200, future.text
    row = chat_row(deps, chat)
    assert before - dt.timedelta(seconds=5) <= row.last_outbound_at <= dt.datetime.now(dt.UTC)
    # ... and the commands that read it still work.
    history = cardshare(settings, "history", str(chat))
    assert history.returncode == 0, history.stderr


# --------------------------------------------------------------------------- unusable bodies


def _deep(n: int) -> bytes:
    return b'{"event_type":"message.sent","event_id":"deep","data":' + b"[" * n + b"]" * n + b"}"


UNUSABLE = {
    "NUL in event_id": event_bytes(event_id="a\x00b", chat_id=str(uuid.uuid4())),
    "NUL in the chat id": json.dumps(
        build_event(EventSpec(chat_id="3c9a1f2e-7b44-4d0a-8e6f-91a2b3c4d5e6\x00", sent_at=time.time()))
    ).encode(),
    "JSON nested 100 000 deep": _deep(100_000),
    "data is a list": b'{"event_type":"message.sent","event_id":"l1","data":[1,2]}',
    "event_id is a number": b'{"event_type":"message.sent","event_id":5,"data":{}}',
    "sent_at is a number": json.dumps(
        {**build_event(EventSpec(chat_id=str(uuid.uuid4()), sent_at=time.time())), "created_at": 1}
    ).encode(),
    "is_group is a string": event_bytes(chat_id=str(uuid.uuid4())).replace(
        b'"is_group": false', b'"is_group": "no"'
    ),
}


@pytest.mark.parametrize("case", list(UNUSABLE), ids=list(UNUSABLE))
def test_signed_but_unusable_bodies_get_400_not_500(receiver: ReceiverServer, deps: Deps, case: str) -> None:
    answer = post_signed(receiver.url, UNUSABLE[case])
    assert answer.status_code == 400, (answer.status_code, answer.text)
    assert count(deps, "chats") == 0


# --------------------------------------------------------------------------- replay


@pytest.mark.parametrize("spelling", ["{ts}.0", "0{ts}", "+{ts}", "{ts}.9", "{ts}e0"])
def test_the_same_request_with_its_timestamp_spelled_differently_is_a_replay(
    receiver: ReceiverServer, deps: Deps, spelling: str
) -> None:
    raw = event_bytes(chat_id=str(uuid.uuid4()), line=LINE, event_id=f"ev-{uuid.uuid4()}")
    ts = int(time.time())
    headers = signed_headers(SECRET, "wh-r", ts, raw)
    first = httpx.post(receiver.url, content=raw, headers=headers)
    assert first.status_code == 200, first.text
    respelled = {**headers, "webhook-timestamp": spelling.format(ts=ts)}
    second = httpx.post(receiver.url, content=raw, headers=respelled)
    assert second.status_code == 401, second.text


# --------------------------------------------------------------------------- read limits


@pytest.fixture
def webhooks_process(settings: Settings, tmp_path: Path) -> Iterator[tuple[str, int, psutil.Process]]:
    """`cardshare webhooks` itself, with 1-second read timeouts."""
    env = env_for(
        settings,
        CARDSHARE_WEBHOOK_SECRETS=SECRET,
        CARDSHARE_WEBHOOK_HEADER_TIMEOUT="1",
        CARDSHARE_WEBHOOK_BODY_TIMEOUT="1",
    )
    out = (tmp_path / "webhooks.out").open("w+")
    proc = subprocess.Popen(
        [sys.executable, "-c", "from worker.cli.main import main; main()", "webhooks", "--port", "0"],
        env=env,
        stdout=out,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    deadline = time.monotonic() + 60
    port = 0
    while not port:
        assert proc.poll() is None, (tmp_path / "webhooks.out").read_text()
        assert time.monotonic() < deadline, "receiver did not start"
        found = re.search(r"http://127\.0\.0\.1:(\d+)/webhooks/linq", (tmp_path / "webhooks.out").read_text())
        port = int(found.group(1)) if found else 0
        time.sleep(0.1)
    yield "127.0.0.1", port, psutil.Process(proc.pid)
    proc.terminate()
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, 9)
        proc.wait(5)
    out.close()


def _recv_all(sock: socket.socket, timeout: float) -> bytes:
    sock.settimeout(timeout)
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except (TimeoutError, ConnectionResetError):
        pass
    return data


def test_a_chunked_upload_is_cut_off_at_the_limit_without_buffering_it(
    webhooks_process: tuple[str, int, psutil.Process],
) -> None:
    host, port, proc = webhooks_process
    rss_before = proc.memory_info().rss
    with socket.create_connection((host, port)) as sock:
        sock.sendall(
            b"POST /webhooks/linq HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
            b"Content-Type: application/json\r\n\r\n"
        )
        chunk = b"x" * 65536
        sent = 0
        try:
            for _ in range(50 * 16):  # up to 50 MiB, far past the limit
                sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                sent += len(chunk)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the receiver stopped reading and closed: the point
        answer = _recv_all(sock, 5)
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert sent < 50 * 1024 * 1024  # it did not read it all
    assert proc.memory_info().rss - rss_before < 20 * 1024 * 1024


def test_a_slow_header_is_cut_off_by_the_header_timeout(
    webhooks_process: tuple[str, int, psutil.Process],
) -> None:
    host, port, _ = webhooks_process
    with socket.create_connection((host, port)) as sock:
        started = time.monotonic()
        closed = False
        for byte in b"POST /webhooks/linq HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 40:
            try:
                sock.sendall(bytes([byte]))
            except (BrokenPipeError, ConnectionResetError):
                closed = True
                break
            sock.settimeout(0.2)
            try:
                if sock.recv(1) == b"":
                    closed = True
                    break
            except ConnectionResetError:
                closed = True
                break
            except TimeoutError:
                pass
        assert closed, "the connection stayed open while the header dribbled in"
        assert time.monotonic() - started < 6


def test_a_slow_body_gets_408(webhooks_process: tuple[str, int, psutil.Process]) -> None:
    host, port, _ = webhooks_process
    with socket.create_connection((host, port)) as sock:
        sock.sendall(b'POST /webhooks/linq HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n{"a":')
        answer = _recv_all(sock, 5)
    assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
