"""Issue 19, point 3: the real `cardshare` command never prints a traceback, never prints
terminal control sequences or markup it did not mean, and never echoes a password."""

from __future__ import annotations

import re
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import pytest
from sqlalchemy import text

from tests.support.cli import cardshare, env_for
from tests.support.world import World
from worker.config import Settings
from worker.deps import Deps
from worker.store.session import transaction

pytestmark = pytest.mark.acceptance

PASSWORD = "s3cretPW"


def one_line_failure(done: subprocess.CompletedProcess[str], *, mentions: str = "") -> None:
    assert done.returncode != 0, (done.stdout, done.stderr)
    assert "Traceback" not in done.stderr + done.stdout, done.stderr
    lines = [ln for ln in done.stderr.splitlines() if ln.strip() and not ln.startswith("{")]
    assert len(lines) == 1, done.stderr
    assert mentions in lines[0], lines[0]


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.parametrize(
    ("args", "mentions"),
    [
        (["history", str(uuid.uuid4()), "--days", "1000000000"], "--days"),
        (["status", "--day", "0001-01-01"], "out of range"),
        (["status", "--day", "9999-12-31"], "out of range"),
        (["check", "--day", "0001-01-01"], "out of range"),
        (["web", "--port", "99999"], "--port"),
        (["webhooks", "--port", "-1"], "--port"),
        (["simulator", "--port", "70000"], "--port"),
        (["check", "--simulator", "ftp://example.com"], "not an http(s) URL"),
        (["check", "--simulator", "http://127.0.0.1:1"], "no share log"),
        (["share", "not-a-uuid\x1b[2J"], "malformed"),
    ],
)
def test_bad_input_is_one_line_and_a_non_zero_exit(
    settings: Settings, args: list[str], mentions: str
) -> None:
    done = cardshare(
        settings, *args, CARDSHARE_WEBHOOK_SECRETS="whsec_AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="
    )
    one_line_failure(done, mentions=mentions)
    assert "\x1b" not in done.stderr


def test_sync_line_with_a_trailing_newline_is_that_line(settings: Settings, world: World) -> None:
    world.line("+12223334444")
    done = cardshare(settings, "sync", "--line", "+12223334444\n", "--lookups", "0")
    assert "Traceback" not in done.stderr, done.stderr
    assert done.returncode == 0, done.stderr
    assert "1 lines" in done.stdout


@pytest.mark.parametrize("command", [["sweep"], ["recover"]])
def test_redis_down_is_one_line(settings: Settings, command: list[str]) -> None:
    url = f"redis://:{PASSWORD}@127.0.0.1:{closed_port()}/0"
    done = cardshare(settings, *command, REDIS_URL=url)
    one_line_failure(done, mentions="Redis")
    assert PASSWORD not in done.stderr + done.stdout


def test_share_with_redis_down_is_one_line(settings: Settings, world: World) -> None:
    world.line()
    chat = world.chat()
    done = cardshare(
        settings, "share", str(chat), REDIS_URL=f"redis://:{PASSWORD}@127.0.0.1:{closed_port()}/0"
    )
    one_line_failure(done, mentions="Redis")
    assert PASSWORD not in done.stderr + done.stdout


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("DATABASE_URL", f"postgresql://app:{PASSWORD}@db.example:notaport/cardshare"),
        ("DATABASE_URL", f"postgresql://app:{PASSWORD}@[db.example/cardshare"),
        ("DATABASE_URL", f"mysql://app:{PASSWORD}@db.example/cardshare"),
        ("DATABASE_URL", f"postgresql://app:{PASSWORD}@db.example:99999/cardshare"),
        ("DATABASE_URL", f"postgresql://app:pa/ss{PASSWORD}@db.example/cardshare x"),
        ("REDIS_URL", f"redis://:{PASSWORD}@redis.example:port/0"),
        ("REDIS_URL", f"http://:{PASSWORD}@redis.example/0"),
        ("REDIS_URL", f"redis://:{PASSWORD}@[redis.example/0"),
        ("LINQ_API_V3_BASE_URL", f"https://user:{PASSWORD}@api.example:xx/api"),
        ("LINQ_API_V3_BASE_URL", f"ftp://user:{PASSWORD}@api.example/api"),
        ("LINQ_API_V3_BASE_URL", f"https://user:{PASSWORD}@/api"),
    ],
)
def test_a_malformed_url_setting_never_echoes_its_password(
    settings: Settings, variable: str, value: str
) -> None:
    done = cardshare(settings, "status", **{variable: value})
    one_line_failure(done, mentions=variable)
    assert done.returncode == 2
    assert PASSWORD not in done.stderr + done.stdout


def _store_reason(deps: Deps, chat: uuid.UUID, day: object, reason: str) -> None:
    with transaction(deps.sessions) as s:
        s.execute(
            text(
                "INSERT INTO share_days (chat_id, day, status, lease_until, reason, finished_at) "
                "VALUES (:c, :d, 'failed', now(), :r, now())"
            ),
            {"c": chat, "d": day, "r": reason},
        )


def test_status_prints_stored_markup_as_text(
    world: World, deps: Deps, settings: Settings, today: object
) -> None:
    world.line()
    chat = world.chat()
    _store_reason(deps, chat, today, "permanent (HTTP 400/-): [/bold] [red]boom[/red] \x1b[2J")
    done = cardshare(settings, "status")
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    assert "[/bold] [red]boom[/red]" in done.stdout
    assert "\x1b" not in done.stdout


def test_history_and_check_neutralize_terminal_escapes_from_linq(
    world: World, deps: Deps, settings: Settings, today: object
) -> None:
    world.line()
    chat = world.chat()
    _store_reason(deps, chat, today, "permanent: \x1b]0;owned\x07 \u202eevil")
    token = uuid.uuid4()
    with transaction(deps.sessions) as s:
        s.execute(
            text(
                "INSERT INTO attempts (chat_id, day, attempt_no, claim_token, started_at, finished_at, "
                "outcome, http_status, error, trace_id) VALUES (:c, :d, 1, :t, now(), now(), 'fatal', 400, "
                ":e, :tr)"
            ),
            {"c": chat, "d": today, "t": token, "e": "Linq said \x1b[31mred\x1b[0m \x9b2J", "tr": "t\x1b[1m"},
        )
    for args in (["history", str(chat)], ["check"]):
        done = cardshare(settings, *args)
        assert "Traceback" not in done.stderr, done.stderr
        for ch in ("\x1b", "\x07", "\x9b", "\u202e"):
            assert ch not in done.stdout, (args, done.stdout)
    history = cardshare(settings, "history", str(chat))
    assert "\\x1b[31mred" in history.stdout


def test_the_status_page_json_with_a_bad_day_is_400(settings: Settings, tmp_path: Path) -> None:
    out = (tmp_path / "web.out").open("w+")
    proc = subprocess.Popen(
        [sys.executable, "-c", "from worker.cli.main import main; main()", "web", "--port", "0"],
        env=env_for(settings),
        stdout=out,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        url = None
        while url is None:
            assert proc.poll() is None, (tmp_path / "web.out").read_text()
            assert time.monotonic() < deadline
            found = re.search(r"(http://127\.0\.0\.1:\d+)/", (tmp_path / "web.out").read_text())
            url = found.group(1) if found else None
            time.sleep(0.1)
        for day in ("0001-01-01", "bad", "9999-12-31", "2026-02-30"):
            answer = httpx.get(f"{url}/status.json", params={"day": day}, timeout=10)
            assert answer.status_code == 400, (day, answer.text)
            assert "error" in answer.json()
    finally:
        proc.terminate()
        proc.wait(20)
        out.close()


@pytest.fixture
def data_dir_is_a_file(tmp_path: Path) -> Path:
    path = tmp_path / "not-a-dir"
    path.write_text("x")
    return path


def test_an_unexpected_error_is_one_line_with_a_hint(settings: Settings, data_dir_is_a_file: Path) -> None:
    """A bug or an environment cardshare did not foresee: one line and the DEBUG hint, and at
    DEBUG the traceback."""
    env = {"CARDSHARE_DATA_DIR": str(data_dir_is_a_file / "sub"), "DATABASE_URL": "", "REDIS_URL": ""}
    done = cardshare(settings, "status", **env)
    one_line_failure(done)
    assert "CARDSHARE_LOG_LEVEL=DEBUG" in done.stderr
    debug = cardshare(settings, "status", CARDSHARE_LOG_LEVEL="DEBUG", **env)
    assert debug.returncode != 0
    assert "Traceback" in debug.stderr


@pytest.mark.parametrize(
    ("flag", "value", "why"),
    [
        ("--image", "https://127.1/logo.jpg", "private or local"),
        ("--image", "https://0x7f000001/logo.jpg", "private or local"),
        ("--image", "https://[::ffff:169.254.169.254]/latest", "private or local"),
        ("--image", "https://cdn.localhost/logo.jpg", "public host"),
        ("--image", "https://metadata.google.internal/computeMetadata/v1/", "metadata"),
        ("--first", "Acme\u202egnp.exe", "invisible formatting"),
        ("--first", "Acme\x9b31m", "control characters"),
    ],
)
def test_card_input_is_refused_in_every_spelling_before_any_call(
    settings: Settings, world: World, flag: str, value: str, why: str
) -> None:
    world.line("+12223334444", active=False)
    before = world.sim.requests()
    args = ["card", "create", "--phone", "+12223334444", "--first", "Acme", flag, value]
    if flag == "--first":
        args = ["card", "create", "--phone", "+12223334444", "--first", value]
    done = cardshare(settings, *args)
    one_line_failure(done, mentions=why)
    assert done.returncode == 2
    assert "\x9b" not in done.stderr
    assert "\u202e" not in done.stderr
    assert world.sim.requests() == before
