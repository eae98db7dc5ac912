"""Issue 19, point 4: `cardshare import` reports and skips a bad row whatever is wrong with it,
keeps the good rows of the same batch, and holds only counts and the first bad rows in memory."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from sqlalchemy import text

from tests.support.cli import env_for
from worker.config import Settings
from worker.deps import Deps
from worker.ingest.importer import KEEP_BAD_ROWS

pytestmark = pytest.mark.acceptance

LINE = "+12223334444"
WHEN = "2026-03-02T15:04:05Z"

# Prints this process's peak RSS (KiB) on stderr at exit, after the command's own output.
RUN = (
    "import atexit, resource, sys\n"
    "atexit.register(lambda: print('MAXRSS', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,\n"
    "                              file=sys.stderr))\n"
    "from worker.cli.main import main\n"
    "main()\n"
)


def run_import(settings: Settings, path: Path) -> tuple[subprocess.CompletedProcess[str], int]:
    done = subprocess.run(
        [sys.executable, "-c", RUN, "import", str(path)],
        env=env_for(settings),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    rss = [int(ln.split()[1]) for ln in done.stderr.splitlines() if ln.startswith("MAXRSS ")]
    return done, rss[-1] if rss else 0


def good(chat: uuid.UUID) -> dict[str, object]:
    return {"chat_id": str(chat), "line": LINE, "service": "iMessage", "last_outbound_at": WHEN}


def chats_in_db(deps: Deps) -> set[uuid.UUID]:
    with deps.sessions() as s:
        return set(s.execute(text("SELECT id FROM chats")).scalars())


def test_every_kind_of_bad_row_is_reported_and_the_good_rows_of_its_batch_kept(
    settings: Settings, deps: Deps, tmp_path: Path
) -> None:
    goods = [uuid.uuid4() for _ in range(5)]
    rows: list[str] = [json.dumps(good(goods[0]))]
    bad_rows = {
        "out-of-range time": json.dumps(
            {**good(uuid.uuid4()), "last_outbound_at": "0001-01-01T00:00:00+14:00"}
        ),
        "year 1 UTC": json.dumps({**good(uuid.uuid4()), "last_outbound_at": "0001-01-01T00:00:00Z"}),
        "year 9999": json.dumps({**good(uuid.uuid4()), "last_outbound_at": "9999-12-31T23:59:59+00:00"}),
        "very deep JSON": '{"chat_id": ' + "[" * 50_000 + "]" * 50_000 + "}",
        "NUL in the chat id": json.dumps({**good(uuid.uuid4()), "chat_id": "3c9a1f2e\u0000"}),
        "NUL in the line": json.dumps({**good(uuid.uuid4()), "line": "+1222333\u00004444"}),
        "object as the line": json.dumps({**good(uuid.uuid4()), "line": {"a": [1, 2]}}),
        "number as the time": json.dumps({**good(uuid.uuid4()), "last_outbound_at": 1e308}),
        "a 200 kB line": json.dumps({**good(uuid.uuid4()), "pad": "x" * 200_000}),
        "not JSON": "{nope",
        "a JSON array": "[1, 2]",
    }
    for i, line in enumerate(bad_rows.values()):
        rows.append(line)
        rows.append(json.dumps(good(goods[1 + i % 4])))
    path = tmp_path / "mixed.jsonl"
    path.write_text("\n".join(rows) + "\n")
    done, _ = run_import(settings, path)
    assert "Traceback" not in done.stderr, done.stderr
    assert done.returncode == 1, done.stderr
    reported = [ln for ln in done.stderr.splitlines() if ln.startswith("cardshare: ")]
    assert len(reported) == len(bad_rows), reported
    assert f"{len(bad_rows)} bad rows skipped" in done.stdout
    assert chats_in_db(deps) == set(goods)


def test_memory_stays_bounded_however_many_rows_are_bad(settings: Settings, tmp_path: Path) -> None:
    small, large = tmp_path / "small.jsonl", tmp_path / "large.jsonl"
    bad = json.dumps({"chat_id": "not-a-uuid-" + "x" * 200, "line": LINE, "service": "iMessage"}) + "\n"
    small.write_text(bad * 1_000)
    large.write_text(bad * 200_000)
    _, rss_small = run_import(settings, small)
    done_large, rss_large = run_import(settings, large)
    assert done_large.returncode == 1, done_large.stderr
    assert "Traceback" not in done_large.stderr
    reported = [ln for ln in done_large.stderr.splitlines() if ln.startswith("cardshare: ")]
    assert len(reported) == KEEP_BAD_ROWS
    assert "200000 bad rows skipped" in done_large.stdout
    assert f"the first {KEEP_BAD_ROWS} shown" in done_large.stdout
    assert rss_small > 0
    assert rss_large > 0
    assert rss_large - rss_small < 30 * 1024, (rss_small, rss_large)  # KiB: far less than the rows
