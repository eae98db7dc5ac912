"""Import into real PostgreSQL: good rows kept, bad rows reported by line, idempotent."""

from __future__ import annotations

import datetime as dt
import json
import uuid
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from tests.support.world import World
from worker.deps import Deps
from worker.errors import InputError
from worker.ingest import importer
from worker.store.chats import mark_opted_out
from worker.store.session import transaction

NOW = dt.datetime.now(dt.UTC)
RECENT = (NOW - dt.timedelta(days=1)).replace(microsecond=0)
LINE = "+12223334444"


def snapshot(deps: Deps) -> list[tuple[Any, ...]]:
    with deps.sessions() as s:
        return [
            tuple(r)
            for r in s.execute(
                text(
                    "SELECT id, line_phone, service, is_group, first_outbound_at, last_outbound_at, "
                    "opted_out "
                    "FROM chats ORDER BY id"
                )
            )
        ]


def test_csv_with_bad_rows_keeps_the_good_ones_and_is_idempotent(tmp_path: Path, deps: Deps) -> None:
    good = [uuid.uuid4() for _ in range(3)]
    path = tmp_path / "chats.csv"
    path.write_text(
        "chat_id,line,service,last_outbound_at,is_group\n"
        f"{good[0]},{LINE},iMessage,{RECENT.isoformat()},false\n"
        f"not-a-chat,{LINE},iMessage,{RECENT.isoformat()},\n"
        f"{good[1]},+1 (222) 333-4444,imessage,{RECENT.isoformat()},\n"
        f"{uuid.uuid4()},{LINE},Telegram,{RECENT.isoformat()},\n"
        f"{good[2]},+13334445555,SMS,{RECENT.isoformat()},true\n"
        f"{uuid.uuid4()},{LINE},iMessage,2026-01-01 10:00,\n"
    )
    bad: list[importer.RowError] = []
    report = importer.import_file(path, deps.sessions, now=NOW, on_bad_row=bad.append)
    assert report.imported == 3
    assert [(b.line, b.reason.split(" ")[0]) for b in bad] == [
        (3, "chat_id"),
        (5, "service"),
        (7, "last_outbound_at"),
    ]
    assert (
        bad[0].one_line("chats.csv")
        == "chats.csv:3: chat_id 'not-a-chat' is not a UUID (Linq chat ids are UUIDs)"
    )
    rows = snapshot(deps)
    assert sorted(r[0] for r in rows) == sorted(good)
    by_id = {r[0]: r for r in rows}
    assert by_id[good[1]][1:4] == (LINE, "iMessage", False)
    assert by_id[good[2]][1:4] == ("+13334445555", "SMS", True)
    assert by_id[good[0]][4] == by_id[good[0]][5] == RECENT
    again = importer.import_file(path, deps.sessions, now=NOW)
    assert (again.imported, len(again.bad)) == (3, 3)
    assert snapshot(deps) == rows


def test_import_only_widens_what_is_known(tmp_path: Path, world: World, deps: Deps) -> None:
    world.line(LINE)
    newer = NOW - dt.timedelta(hours=1)
    chat = world.chat(LINE, outbound_at=newer, in_sim=False)
    with transaction(deps.sessions) as s:
        mark_opted_out(s, chat)
    path = tmp_path / "chats.jsonl"
    row = {"chat_id": str(chat), "line": LINE, "service": "iMessage", "last_outbound_at": RECENT.isoformat()}
    path.write_text(json.dumps(row) + "\n")
    assert importer.import_file(path, deps.sessions, now=NOW).imported == 1
    (_, _, _, _, first, last, opted_out) = snapshot(deps)[0]
    assert (first, last) == (RECENT, newer)  # an older import time never hides a newer webhook
    assert opted_out is True  # import says nothing about opt-outs


def test_a_file_that_is_not_a_table_is_refused_whole(tmp_path: Path, deps: Deps) -> None:
    path = tmp_path / "chats.csv"
    path.write_text("id,phone\n1,2\n")
    with pytest.raises(InputError, match="header lacks chat_id, line, service, last_outbound_at"):
        importer.import_file(path, deps.sessions, now=NOW)
    assert snapshot(deps) == []


def test_undecodable_bytes_are_a_bad_row_not_a_crash(tmp_path: Path, deps: Deps) -> None:
    path = tmp_path / "chats.csv"
    good = uuid.uuid4()
    path.write_bytes(
        b"\xef\xbb\xbfchat_id,line,service,last_outbound_at\n"
        + f"{good},{LINE},iMessage,{RECENT.isoformat()}\n".encode()
        + f"{uuid.uuid4()},{LINE},iMessage\xff,{RECENT.isoformat()}\n".encode("latin-1")
    )
    bad: list[importer.RowError] = []
    assert importer.import_file(path, deps.sessions, now=NOW, on_bad_row=bad.append).imported == 1
    assert [(b.line, b.reason) for b in bad] == [(3, "service is not valid UTF-8 text")]
