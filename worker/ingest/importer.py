"""`cardshare import FILE`: chats and their last outbound time, from a business's previous system.

CSV with a header row, or JSON Lines, with `chat_id`, `line`, `service`, `last_outbound_at` and
optionally `is_group`. `parse_row` is the pure rule (row -> ChatActivity or a reason); good rows
go through `record_activity` in batches, so importing the same file twice changes nothing.
"""

from __future__ import annotations

import csv
import datetime as dt
import json
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Literal

import phonenumbers
from sqlalchemy.orm import Session, sessionmaker

from worker.errors import InputError, StoreUnavailable
from worker.ingest.payloads import E164, MAX_JSON_DEPTH, SERVICES, too_deep
from worker.rules import bounds
from worker.rules.facts import ChatActivity
from worker.sharing.first_outbound import ChatDays, FirstOutbound
from worker.store.chats import record_activity
from worker.store.session import transaction

Format = Literal["csv", "jsonl"]
REQUIRED = ("chat_id", "line", "service", "last_outbound_at")
BATCH = 1000
MAX_LINE_CHARS = 64 * 1024  # a JSON Lines row is a few hundred characters; longer is not a row
KEEP_BAD_ROWS = 100  # bad rows kept (and printed) in full; the rest are only counted
# A last outbound time this far ahead of our clock is bad data, not clock skew.
FUTURE_SLACK = dt.timedelta(minutes=5)
_SERVICES = {s.lower(): s for s in SERVICES}
_TRUE = {"true", "1", "yes", "y", "t"}
_FALSE = {"false", "0", "no", "n", "f"}


@dataclass(frozen=True)
class RowError:
    line: int
    reason: str

    def one_line(self, name: str) -> str:
        return f"{name}:{self.line}: {self.reason}"


@dataclass(frozen=True)
class Row:
    line: int
    activity: ChatActivity


class _Refused(ValueError):
    """One field's problem, in words for the operator."""


def parse_row(fields: Mapping[str | None, object], *, now: dt.datetime) -> ChatActivity | str:
    """One row's facts, or the reason it is refused (naming the column and the value). Never
    raises: whatever is wrong with a row, it is that row's reason."""
    try:
        return _parse(fields, now)
    except _Refused as exc:
        return bounds.clean_text(str(exc), 300) or "is not usable"
    except Exception as exc:  # anything unforeseen in one row must not end the import
        return f"cannot be read ({type(exc).__name__})"


def _parse(fields: Mapping[str | None, object], now: dt.datetime) -> ChatActivity:
    if None in fields:  # csv.DictReader files surplus values under the key None
        raise _Refused("has more values than the header has columns")
    for name, value in fields.items():
        if isinstance(value, str) and "\ufffd" in value:
            raise _Refused(f"{name} is not valid UTF-8 text")
    return ChatActivity(
        _chat_id(_text(fields.get("chat_id"))),
        _phone(_text(fields.get("line"))),
        service=_service(_text(fields.get("service"))),
        is_group=_flag(fields.get("is_group")),
        outbound_at=_timestamp(fields.get("last_outbound_at"), now),
    )


def _text(value: object) -> str:
    return value.strip() if isinstance(value, str) else ""


def _chat_id(raw: str) -> uuid.UUID:
    if not raw:
        raise _Refused("chat_id is empty")
    try:
        return uuid.UUID(raw)
    except ValueError:
        raise _Refused(f"chat_id {raw[:60]!r} is not a UUID (Linq chat ids are UUIDs)") from None


def _phone(raw: str) -> str:
    if not raw:
        raise _Refused("line is empty")
    if E164.fullmatch(raw):
        return raw
    # Other systems write "+1 (222) 333-4444": accept any spelling of a possible E.164 number.
    try:
        number = phonenumbers.parse(raw, None)
    except phonenumbers.NumberParseException:
        number = None
    if number is not None and phonenumbers.is_possible_number(number):
        formatted = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
        if E164.fullmatch(formatted):
            return str(formatted)
    raise _Refused(f"line {raw[:30]!r} is not an E.164 phone number (+, country code, number)")


def _service(raw: str) -> str:
    service = _SERVICES.get(raw.lower())
    if service is None:
        raise _Refused(f"service {raw[:30]!r} is not iMessage, SMS or RCS")
    return service


def _timestamp(value: object, now: dt.datetime) -> dt.datetime:
    if value is None or (isinstance(value, str) and not value.strip()):
        raise _Refused("last_outbound_at is empty (a chat without an outbound message is never due)")
    if not isinstance(value, str):
        raise _Refused(f"last_outbound_at {value!r} is not an ISO-8601 timestamp")
    raw = value.strip()
    try:
        when = dt.datetime.fromisoformat(raw)
    except ValueError:
        raise _Refused(f"last_outbound_at {raw[:40]!r} is not an ISO-8601 timestamp") from None
    if when.tzinfo is None:
        raise _Refused(f"last_outbound_at {raw[:40]!r} has no time zone (add Z or an offset such as +00:00)")
    try:
        utc = when.astimezone(dt.UTC)
    except OverflowError:
        raise _Refused(f"last_outbound_at {raw[:40]!r} is out of range") from None
    if utc < bounds.EARLIEST:
        raise _Refused(f"last_outbound_at {raw[:40]!r} is before 2000")
    if utc > now + FUTURE_SLACK:
        raise _Refused(f"last_outbound_at {raw[:40]!r} is in the future")
    return utc


def _flag(value: object) -> bool | None:
    if value is None or isinstance(value, bool):
        return value
    low = str(value).strip().lower()
    if low == "":
        return None
    if low in _TRUE:
        return True
    if low in _FALSE:
        return False
    raise _Refused(f"is_group {str(value)[:20]!r} is not true or false")


def detect_format(path: Path, head: str) -> Format:
    """By extension, else by the first non-blank character."""
    if head.lstrip().startswith("["):
        raise InputError("the file is one JSON array; write one JSON object per line (JSON Lines)")
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return "csv"
    if suffix in (".jsonl", ".ndjson", ".json"):
        return "jsonl"
    return "jsonl" if head.lstrip().startswith("{") else "csv"


def read_rows(stream: IO[str], fmt: Format, *, now: dt.datetime) -> Iterator[Row | RowError]:
    """Every data row of the file, parsed, with its line number."""
    if fmt == "jsonl":
        yield from _jsonl_rows(stream, now)
    else:
        yield from _csv_rows(stream, now)


def _jsonl_rows(stream: IO[str], now: dt.datetime) -> Iterator[Row | RowError]:
    for number, text in enumerate(_bounded_lines(stream), 1):
        if text is None:
            yield RowError(number, f"is longer than {MAX_LINE_CHARS} characters")
            continue
        if not text.strip():
            continue
        if too_deep(text.encode(), MAX_JSON_DEPTH):
            yield RowError(number, f"nests deeper than {MAX_JSON_DEPTH} levels")
            continue
        try:
            doc = json.loads(text)
        except (ValueError, RecursionError):
            yield RowError(number, "is not a JSON object (JSON Lines: one object per line)")
            continue
        if not isinstance(doc, dict):
            yield RowError(number, "is not a JSON object (JSON Lines: one object per line)")
            continue
        yield _row(number, {str(k).strip().lower(): v for k, v in doc.items()}, now)


def _bounded_lines(stream: IO[str]) -> Iterator[str | None]:
    """The file's lines, never holding more than MAX_LINE_CHARS of one: a longer line is read
    through in pieces and yielded as None."""
    while True:
        text = stream.readline(MAX_LINE_CHARS + 1)
        if not text:
            return
        if len(text) > MAX_LINE_CHARS and not text.endswith("\n"):
            while (rest := stream.readline(MAX_LINE_CHARS)) and not rest.endswith("\n"):
                pass
            yield None
            continue
        yield text


def _csv_rows(stream: IO[str], now: dt.datetime) -> Iterator[Row | RowError]:
    reader = csv.DictReader(stream)
    try:
        header = reader.fieldnames
    except csv.Error as exc:
        raise InputError(f"the CSV header cannot be read: {exc}") from None
    if not header:
        raise InputError("the file is empty (expected a header row: " + ",".join(REQUIRED) + ")")
    reader.fieldnames = [h.strip().lower() for h in header]
    missing = [c for c in REQUIRED if c not in reader.fieldnames]
    if missing:
        raise InputError(
            f"the header lacks {', '.join(missing)} (expected {','.join(REQUIRED)}[,is_group]; "
            "or use JSON Lines)"
        )
    while True:
        try:
            fields = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            yield RowError(reader.line_num, f"is not valid CSV: {exc}")
            continue
        yield _row(reader.line_num, fields, now)


def _row(number: int, fields: Mapping[str | None, object], now: dt.datetime) -> Row | RowError:
    parsed = parse_row(fields, now=now)
    return RowError(number, parsed) if isinstance(parsed, str) else Row(number, parsed)


@dataclass
class ImportReport:
    """Counts, and the first KEEP_BAD_ROWS bad rows: memory stays bounded whatever the file."""

    name: str
    imported: int = 0
    bad_count: int = 0
    bad: list[RowError] = field(default_factory=list)  # the first KEEP_BAD_ROWS only

    def add_bad(self, row: RowError) -> bool:
        """Count a bad row; True when it is among those kept (and shown)."""
        self.bad_count += 1
        if len(self.bad) < KEEP_BAD_ROWS:
            self.bad.append(row)
            return True
        return False

    def one_line(self) -> str:
        bad = self.bad_count
        tail = f"; {bad} bad row{'s' if bad != 1 else ''} skipped" if bad else ""
        if bad > len(self.bad):
            tail += f" (the first {len(self.bad)} shown)"
        return f"imported {self.imported} row{'s' if self.imported != 1 else ''} from {self.name}{tail}"


def import_file(
    path: Path,
    sessions: sessionmaker[Session],
    *,
    now: dt.datetime,
    fmt: Format | None = None,
    on_bad_row: Callable[[RowError], None] = lambda _: None,
    first_outbound: FirstOutbound | None = None,
) -> ImportReport:
    """Record every good row (in batches of BATCH, one transaction each); report every bad one.
    With `first_outbound`, each batch's chats that became due are queued with it."""
    report = ImportReport(path.name)
    try:
        # utf-8-sig drops a spreadsheet's BOM; undecodable bytes become U+FFFD, which
        # parse_row refuses row by row instead of failing the whole file.
        stream = path.open(encoding="utf-8-sig", errors="replace", newline="")
    except OSError as exc:
        raise InputError(f"cannot read {path}: {exc.strerror or exc}") from None
    with stream:
        head = stream.read(4096)
        stream.seek(0)
        batch: list[Row] = []

        def bad(row: RowError) -> None:
            if report.add_bad(row):
                on_bad_row(row)

        for item in read_rows(stream, fmt or detect_format(path, head), now=now):
            if isinstance(item, RowError):
                bad(item)
                continue
            batch.append(item)
            if len(batch) >= BATCH:
                _flush(sessions, batch, report, bad, first_outbound)
        _flush(sessions, batch, report, bad, first_outbound)
    return report


def _flush(
    sessions: sessionmaker[Session],
    batch: list[Row],
    report: ImportReport,
    bad: Callable[[RowError], None],
    first_outbound: FirstOutbound | None = None,
) -> None:
    """One transaction per batch. If the database refuses the batch for a reason other than
    being unreachable, each row is tried alone: the bad one is reported, the good ones kept."""
    if not batch:
        return
    try:
        _write(sessions, [r.activity for r in batch], report, first_outbound)
    except StoreUnavailable:
        raise
    except Exception:
        for row in batch:
            try:
                _write(sessions, [row.activity], report, first_outbound)
            except StoreUnavailable:
                raise
            except Exception as exc:
                bad(RowError(row.line, f"was refused by the database ({type(exc).__name__})"))
    batch.clear()


def _write(
    sessions: sessionmaker[Session],
    facts: list[ChatActivity],
    report: ImportReport,
    first_outbound: FirstOutbound | None = None,
) -> None:
    queued: ChatDays = []
    try:
        with transaction(sessions) as session:
            record_activity(session, facts)
            if first_outbound is not None:
                queued = first_outbound.mark(session, facts)
    except StoreUnavailable as exc:
        raise StoreUnavailable(
            f"{exc}; {report.imported} rows were imported before it (importing is idempotent: run it again)"
        ) from exc
    report.imported += len(facts)
    if first_outbound is not None:
        first_outbound.publish(queued)
