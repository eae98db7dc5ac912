"""Every value that comes from outside is bounded and typed here, before it reaches SQL. Pure.

Linq's answers (and the SDK's lenient parsing of them) can carry anything: a trace id longer than
its column, a code that is a string or beyond 32 bits, a non-finite or astronomical Retry-After,
NUL bytes (which PostgreSQL text refuses) or terminal escapes in a message. An exception in the
record step would leave a chat-day claimed after Linq accepted its share (docs/decisions.md §13),
so each value is clamped, or dropped with its raw form kept in the bounded error text, and the
caller logs the notes. Nothing here raises for any input.
"""

from __future__ import annotations

import datetime as dt
import math
import re
import unicodedata
from dataclasses import dataclass

TRACE_ID_MAX = 64  # attempts.trace_id, card_writes.trace_id: String(64)
ERROR_MAX = 500  # attempts.error and every other stored error text
REASON_MAX = 300  # share_days.reason
INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1
RETRY_AFTER_MAX_S = 86_400.0  # a day: beyond that a Retry-After is nonsense; the next day's sweep retries
RAW_MAX = 40  # how much of a dropped raw value the error text keeps

# C0 and C1 controls (NUL, ESC, CSI...), DEL, and Unicode format characters (bidi overrides,
# zero-width joiners) never belong in one line of stored text.
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
_SPACE = re.compile(r"[\t\n\r]+")

EARLIEST = dt.datetime(2000, 1, 1, tzinfo=dt.UTC)  # before Linq (and iMessage) existed
# Days an operator may ask about: any zone's day bounds of these stay representable.
DAY_MIN = dt.date(2000, 1, 1)
DAY_MAX = dt.date(9999, 12, 30)


def day_in_range(day: dt.date) -> bool:
    return DAY_MIN <= day <= DAY_MAX


def clean_text(value: object, limit: int = ERROR_MAX) -> str | None:
    """One line of printable text, at most `limit` characters; None for nothing at all."""
    if value is None:
        return None
    text = value if isinstance(value, str) else _safe_str(value)
    text = _SPACE.sub(" ", text)
    text = _CONTROL.sub("", text)
    if any(unicodedata.category(ch) in ("Cf", "Cs", "Co") for ch in text):
        text = "".join(ch for ch in text if unicodedata.category(ch) not in ("Cf", "Cs", "Co"))
    text = text.strip()
    if len(text) > limit:
        text = text[: max(0, limit - 1)] + "…"
    return text or None


def _safe_str(value: object) -> str:
    try:
        return str(value)
    except Exception:
        return f"<unprintable {type(value).__name__}>"


def clean_id(value: object, limit: int = TRACE_ID_MAX) -> tuple[str | None, bool]:
    """An identifier (trace id) cut to its column: (value, whether it was changed)."""
    text = clean_text(value, limit=10 * limit)
    if text is None:
        return None, value is not None
    cut = text[:limit]
    return cut, cut != value


def int32(value: object) -> int | None:
    """An integer that fits a PostgreSQL integer column, else None (bools are not integers)."""
    if isinstance(value, bool) or not isinstance(value, int):
        return None
    return value if INT32_MIN <= value <= INT32_MAX else None


def http_status(value: object) -> int | None:
    v = int32(value)
    return v if v is not None and 100 <= v <= 599 else None


def retry_after(value: object) -> float | None:
    """Seconds to wait: finite, at least 0, at most RETRY_AFTER_MAX_S; None when unusable."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        seconds = float(value)
    except OverflowError:  # an int beyond a float
        return RETRY_AFTER_MAX_S if value > 0 else 0.0
    if math.isnan(seconds):
        return None
    return min(max(seconds, 0.0), RETRY_AFTER_MAX_S)


def timestamp(value: dt.datetime | None, *, now: dt.datetime) -> tuple[dt.datetime | None, str | None]:
    """An outside timestamp range-checked: before 2000 refused (None and a note), later than
    `now` clamped to `now` (a clock far ahead must not keep a chat active forever)."""
    if value is None:
        return None, None
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    if value < EARLIEST:
        return None, f"{value.isoformat()[:32]} is before 2000"
    if value > now:
        return now, f"{value.isoformat()[:32]} is in the future; taken as {now.isoformat()}"
    return value, None


@dataclass(frozen=True)
class BoundAnswer:
    """One Linq answer as it may be stored: every field fits its column; `notes` says what was cut."""

    http_status: int | None
    linq_code: int | None
    error: str | None
    retry_after_s: float | None
    trace_id: str | None
    notes: tuple[str, ...] = ()


def bound_answer(
    *,
    status: object,
    code: object = None,
    message: object = None,
    retry_after_s: object = None,
    trace_id: object = None,
) -> BoundAnswer:
    """Bound every field of one answer. Dropped values are named in `notes` and their raw form
    (cut to RAW_MAX) is appended to the error text, so nothing is silently lost."""
    notes: list[str] = []
    st = http_status(status)
    if status is not None and st is None:
        notes.append(f"http status {_raw(status)} dropped")
    lc = int32(code)
    if code is not None and lc is None:
        notes.append(f"linq code {_raw(code)} dropped (not a 32-bit integer)")
    ra = retry_after(retry_after_s)
    if retry_after_s is not None and ra != retry_after_s:
        notes.append(f"retry-after {_raw(retry_after_s)} taken as {ra}")
    trace, changed = clean_id(trace_id)
    if changed:
        notes.append(f"trace id {_raw(trace_id)} cut to {TRACE_ID_MAX} characters")
    msg = clean_text(message, ERROR_MAX)
    if isinstance(message, str) and msg != message.strip():
        notes.append("message cleaned (control characters or length)")
    if notes:
        msg = clean_text(" | ".join([msg or "", *notes]).lstrip(" |"), ERROR_MAX)
    return BoundAnswer(
        http_status=st, linq_code=lc, error=msg, retry_after_s=ra, trace_id=trace, notes=tuple(notes)
    )


def _raw(value: object) -> str:
    text = clean_text(repr(value) if not isinstance(value, str) else value, RAW_MAX) or "''"
    return text


_SECRET_QUERY = re.compile(r"((?:password|passwd|pass|token|secret|key)=)[^&#\s]*", re.IGNORECASE)


def mask_url(raw: str) -> str:
    """A URL safe to print: the password (whatever follows the user's first `:` up to the last
    `@` of the authority, however malformed) and password-like query values become `****`.
    Used for every URL setting in errors, including URLs that do not parse."""
    text = clean_text(raw, 300) or ""
    scheme, sep, rest = text.partition("://")
    if not sep:
        scheme, rest = "", text
    authority, slash, tail = rest.partition("/")
    if "@" in authority:
        userinfo, host = authority.rsplit("@", 1)
        user, colon, _ = userinfo.partition(":")
        authority = f"{user}:****@{host}" if colon else f"{userinfo}@{host}"
    elif "@" in tail.split("?", 1)[0]:
        # an '@' after a '/' inside the userinfo: hide everything up to the last '@' of the path
        _, _, after = (authority + slash + tail).rpartition("@")
        authority, slash, tail = "****@" + after, "", ""
    masked = f"{scheme}{sep}{authority}{slash}{tail}"
    return _SECRET_QUERY.sub(r"\1****", masked)
