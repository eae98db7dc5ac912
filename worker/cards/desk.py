"""Contact cards for operators: validate, call Linq once, count the write, refresh the cache.

Linq allows 3 POST/PATCH per 10 minutes per number, and a quick repeat after 503/4004 extends
its upstream limit, so nothing here retries: each failure is explained once and the operator
decides. Every write is recorded in `card_writes` before the call, and a fourth inside the
window is refused without calling (docs/linq-contract.md §4).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import logging
import re
import socket
import unicodedata
import urllib.parse
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import phonenumbers
from sqlalchemy.orm import Session, sessionmaker

from worker.config import Settings
from worker.errors import CardshareError, InputError
from worker.linq import Card, LinqCallError, LinqGateway, SavedCard
from worker.logs import event
from worker.rules.cadence import Policy, share_day
from worker.rules.classify import Transport
from worker.store.cards import (
    CachedLine,
    CardState,
    cached_lines,
    card_writes_used,
    due_today_by_line,
    finish_card_write,
    mark_card_inactive,
    reserve_card_write,
    store_cards,
)
from worker.store.lines import lines
from worker.store.session import transaction

log = logging.getLogger("cardshare.cards")

# Linq's budget for POST + PATCH together, per phone number (docs/linq-contract.md §4.4).
WRITE_LIMIT = 3
WRITE_WINDOW_S = 600.0
IMAGE_URL_MAX = 2048  # what browsers and CDNs reliably accept
NAME_MAX = 256
KEY_SETTING = Settings.env_name("linq_api_key")

# Answers Linq gives before its write rules run: they spend none of the budget (the simulator
# counts the same way). Everything else that reached Linq, errors included, is counted.
NOT_COUNTED_STATUSES = frozenset({400, 401, 403, 422, 429})

Method = Literal["POST", "PATCH"]
_PHONE_CHARS = re.compile(r"^\+[0-9 ()./-]+$")


class CardCommandError(CardshareError):
    """A Linq call for a card failed; the message explains it on one line."""

    def __init__(self, message: str, error: LinqCallError | None = None) -> None:
        self.error = error
        super().__init__(message)


class WriteLimitReached(CardshareError):
    """cardshare already made Linq's 3 card writes for this number in the last 10 minutes."""

    def __init__(self, phone: str, used: int, wait_s: float) -> None:
        self.phone = phone
        self.wait_s = wait_s
        super().__init__(
            f"{used} card writes to {phone} in the last 10 minutes (Linq allows {WRITE_LIMIT}); "
            f"nothing sent. The next write is allowed in {format_wait(wait_s)}"
        )


# --------------------------------------------------------------------------- pure validation


def normalize_phone(raw: str) -> str:
    """The E.164 form of `raw`; InputError unless it is a possible number with a country code.

    Possible (length per country) rather than valid: a new area code must not be refused
    because the bundled numbering metadata is older than the line.
    """
    text = raw.strip()
    if not _PHONE_CHARS.match(text):
        raise InputError(
            f"phone number {raw!r} is not E.164: write + then the country code and number, e.g. +14155550123"
        )
    try:
        parsed = phonenumbers.parse(text, None)
    except phonenumbers.NumberParseException as exc:
        raise InputError(f"phone number {raw!r} is not E.164: {exc}") from None
    if not phonenumbers.is_possible_number(parsed):
        raise InputError(
            f"phone number {raw!r} is not E.164: wrong length for country code +{parsed.country_code}"
        )
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)


def check_image_url(raw: str) -> str:
    """A URL Linq can fetch the photo from: https, a public host, no credentials, sane length."""
    url = raw.strip()

    def bad(why: str) -> InputError:
        return InputError(f"image URL {url[:80]!r} {why}")

    if not url:
        raise bad("is empty")
    if len(url) > IMAGE_URL_MAX:
        raise bad(f"is longer than {IMAGE_URL_MAX} characters")
    if any(ch.isspace() or ord(ch) < 0x20 for ch in url):
        raise bad("contains spaces or control characters")
    try:
        parts = urllib.parse.urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a malformed port
    except ValueError as exc:
        raise bad(f"is malformed ({exc})") from None
    if parts.scheme.lower() != "https":
        raise bad("must be https:// (Linq copies the image from the public internet)")
    if parts.username is not None or parts.password is not None:
        raise bad("must not carry a user name or password")
    host = parts.hostname or ""
    if not host:
        raise bad("has no host")
    problem = host_problem(host)
    if problem is not None:
        raise bad(problem)
    return url


# Names that resolve to the machine itself or to a cloud's metadata service, or that only exist
# on a private network (RFC 6761, 6762, 8375; GCP, AWS and Azure metadata names).
_LOCAL_SUFFIXES = ("localhost", "local", "internal", "home.arpa", "localdomain", "lan", "intranet")
_METADATA_NAMES = frozenset({"metadata", "metadata.google.internal", "instance-data", "metadata.azure.com"})
_NUMERIC_LABEL = re.compile(r"(0x[0-9a-f]*|[0-9]+)")


def host_problem(raw_host: str) -> str | None:
    """Why Linq could not (or must not) fetch from this host, or None for a public one. Pure.

    Every spelling is normalized first, as a resolver or URL parser would: IDNA (which folds
    full-width digits), trailing dots, brackets; then IPv4 in the forms `inet_aton` accepts
    (127.1, 0177.0.0.1, 0x7f000001, 2130706433), IPv6 with the IPv4 it embeds (mapped, 6to4,
    Teredo, NAT64) checked too.
    """
    host = raw_host.strip().strip("[]")
    try:
        host = host.encode("idna").decode("ascii") if host.isascii() is False else host
    except UnicodeError:
        return "has a host name that is not valid IDNA"
    host = host.lower().rstrip(".")
    if not host:
        return "has no host"
    ip = _as_ip(host)
    if ip is not None:
        return None if _is_public(ip) else "points at a private or local address Linq cannot reach"
    labels = host.split(".")
    if _NUMERIC_LABEL.fullmatch(labels[-1]):
        # A URL parser takes a host ending in a number for an IPv4 address; this one is not valid.
        return "needs a public host name (a host ending in a number must be a valid IPv4 address)"
    if host in _METADATA_NAMES:
        return f"needs a public host name ({host} is a cloud metadata service)"
    if any(host == s or host.endswith("." + s) for s in _LOCAL_SUFFIXES):
        return f"needs a public host name ({host} is a local or private name)"
    if len(labels) < 2 or not _valid_hostname(host):
        return "needs a public host name"
    return None


def _as_ip(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        pass
    if re.fullmatch(r"[0-9a-fx.]+", host):
        try:
            return ipaddress.IPv4Address(socket.inet_aton(host))
        except OSError:
            return None
    return None


def _is_public(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    if isinstance(ip, ipaddress.IPv6Address):
        embedded = [ip.ipv4_mapped, ip.sixtofour, ip.teredo[1] if ip.teredo else None]
        if ip in ipaddress.IPv6Network("64:ff9b::/96"):
            embedded.append(ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF))
        if any(v4 is not None and not _is_public(v4) for v4 in embedded):
            return False
    return ip.is_global and not ip.is_multicast and not ip.is_reserved


def _valid_hostname(host: str) -> bool:
    try:
        ascii_host = host.encode("idna").decode("ascii")
    except UnicodeError:
        return False
    labels = ascii_host.rstrip(".").split(".")
    return all(re.fullmatch(r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?", label) for label in labels)


# Allowed although invisible: the zero-width joiner inside emoji sequences (a family, a flag).
_ALLOWED_FORMAT = frozenset({"\u200d"})


def check_name(raw: str, what: str) -> str:
    """A name Linq shows on the customer's phone: no control characters (C0, DEL, C1), no line
    or paragraph separators, and no invisible format characters (bidi overrides and isolates,
    zero-width spaces, BOM) that could disguise it."""
    name = raw.strip()
    if not name:
        raise InputError(f"{what} must not be empty")
    if len(name) > NAME_MAX:
        raise InputError(f"{what} is longer than {NAME_MAX} characters")
    for ch in name:
        category = unicodedata.category(ch)
        if category in ("Cc", "Zl", "Zp", "Cs", "Co", "Cn"):
            raise InputError(f"{what} must not contain control characters (U+{ord(ch):04X})")
        if category == "Cf" and ch not in _ALLOWED_FORMAT:
            raise InputError(
                f"{what} must not contain invisible formatting characters "
                f"such as bidi overrides (U+{ord(ch):04X})"
            )
    return name


def format_wait(seconds: float) -> str:
    """`412` -> `6m52s`; rounds up so a wait is never shown shorter than it is."""
    total = max(0, int(-(-seconds // 1)))
    minutes, secs = divmod(total, 60)
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


def counts_against_budget(status: int | None, transport: Transport | None) -> bool:
    """Did this write spend one of Linq's 3? Unknown outcomes count: Linq may have seen them."""
    if transport is Transport.NOT_SENT:
        return False
    if status is None:
        return True
    return status not in NOT_COUNTED_STATUSES


Op = Literal["list", "create", "update"]


def explain(op: Op, phone: str | None, err: LinqCallError, *, writes_left: int | None = None) -> str:
    """What a failed card call means for the operator and what to do next (one sentence)."""
    status, code = err.status, err.code
    number = phone or "the account"
    if err.transport is Transport.NOT_SENT:
        return "Linq could not be reached; nothing was sent"
    if err.transport is Transport.MAYBE_SENT:
        return (
            "no answer from Linq; the write may have happened: check with "
            f"`cardshare card list --phone {phone}` before trying again"
        )
    if status is not None and 200 <= status < 300:
        return f"Linq answered but its response was unreadable: check `cardshare card list --phone {phone}`"
    if status == 401:
        return f"Linq rejected the API key: check {KEY_SETTING}"
    if status == 403:
        return (
            f"the API key has no access to {number}: check {KEY_SETTING} belongs to the account that owns it"
        )
    if status == 409 and code == 2014:
        return (
            "a card already exists for this number; use card update "
            f"(`cardshare card update --phone {phone} --first ...`)"
        )
    if status == 404 and code in (2012, 2001):
        if op == "update":
            return f"there is no active card to update on {phone}; create one with `cardshare card create`"
        return f"there is no card on {phone}"
    if status == 429:
        wait = f"retry after {format_wait(err.retry_after_s)} (Retry-After)" if err.retry_after_s else ""
        return (
            f"Linq's limit of {WRITE_LIMIT} card writes per 10 minutes for {number} is used up, "
            "possibly by writes made outside cardshare; " + (wait or "wait 10 minutes")
        )
    left = (
        f" ({writes_left} of {WRITE_LIMIT} writes left in this 10-minute window)"
        if writes_left is not None
        else ""
    )
    if status == 503 and code == 4004:
        return (
            "Linq's upstream card write was rate-limited and the card is not active; not retried, because "
            "quick repeats extend that limit: wait several minutes, then run the same command once" + left
        )
    if status == 500 and code == 2022:
        return (
            "Linq did not finish setting up the card; not retried automatically: run the same command again"
            + left
        )
    if status is not None and status >= 500:
        return "Linq failed; not retried automatically: try again later" + left
    if status == 400:
        return "Linq refused the request as malformed"
    return "Linq refused the request"


def failure_line(op: Op, phone: str | None, err: LinqCallError, *, writes_left: int | None = None) -> str:
    """One line: our explanation, then HTTP status, Linq code, message and trace id."""
    where = f"card {op}" + (f" {phone}" if phone else "")
    line = f"{where}: {explain(op, phone, err, writes_left=writes_left)}. {err.one_line()}"
    return " ".join(line.split())


# --------------------------------------------------------------------------- share status (pure)


@dataclass(frozen=True)
class LineView:
    """One line as `card list` shows it: Linq's card, cardshare's cache, and the verdict."""

    phone_number: str
    card: Card | None
    cache: CachedLine | None
    will_share: bool
    reason: str
    due_today: int | None = None

    def to_json(self) -> dict[str, object]:
        card = self.card
        cache = self.cache
        return {
            "phone_number": self.phone_number,
            "card": None
            if card is None
            else {
                "first_name": card.first_name,
                "last_name": card.last_name,
                "image_url": card.image_url,
                "is_active": card.is_active,
            },
            "cache": None
            if cache is None
            else {
                "first_name": cache.first_name,
                "last_name": cache.last_name,
                "image_url": cache.image_url,
                "card_active": cache.card_active,
                "checked_at": cache.card_checked_at.isoformat() if cache.card_checked_at else None,
            },
            "will_share": self.will_share,
            "reason": self.reason,
            "due_today": self.due_today,
        }


def share_verdict(card: Card | None, cache: CachedLine | None) -> tuple[bool, str]:
    """Will the sweep share for this line? It reads the cache, so both must say active."""
    if card is None:
        if cache is not None and cache.card_active:
            return (
                False,
                "no card at Linq; cache stale (says active): shares fail with 2012 until the next sweep",
            )
        return False, "no card at Linq: create one with `cardshare card create`"
    if not card.is_active:
        if cache is not None and cache.card_active:
            return False, "card inactive at Linq; cache stale (says active): the next sweep corrects it"
        return False, "card inactive at Linq: cardshare shares once Linq activates it"
    if cache is None:
        return False, "active at Linq, not in cardshare's cache yet: shares from the next sweep"
    if not cache.card_active:
        return False, "active at Linq; cache stale (says inactive): shares from the next sweep"
    differs = [
        name
        for name, ours, theirs in (
            ("first name", cache.first_name, card.first_name),
            ("last name", cache.last_name, card.last_name),
            ("image", cache.image_url, card.image_url),
        )
        if (ours or None) != (theirs or None)
    ]
    if differs:
        return True, "active; cache differs in " + ", ".join(differs) + " (the next sweep refreshes it)"
    return True, "active at Linq and in cardshare's cache"


def line_views(
    cards: Sequence[Card],
    cached: dict[str, CachedLine],
    *,
    only: str | None,
    due: dict[str, int] | None,
) -> list[LineView]:
    """Linq's cards joined with the cache; lines cardshare knows without a card are listed too."""
    by_phone = {c.phone_number: c for c in cards}
    phones = sorted(set(by_phone) | set(cached)) if only is None else [only]
    views = []
    for phone in phones:
        card, cache = by_phone.get(phone), cached.get(phone)
        if card is None and cache is None and only is None:
            continue
        will, reason = share_verdict(card, cache)
        views.append(LineView(phone, card, cache, will, reason, None if due is None else due.get(phone, 0)))
    return views


# --------------------------------------------------------------------------- calls


@dataclass(frozen=True)
class CardChanges:
    """The fields an update sends; None means "not given", so it is left out of the request."""

    first_name: str | None = None
    last_name: str | None = None
    image_url: str | None = None

    def given(self) -> dict[str, str]:
        fields = {"first_name": self.first_name, "last_name": self.last_name, "image_url": self.image_url}
        return {k: v for k, v in fields.items() if v is not None}


@dataclass(frozen=True)
class WriteResult:
    method: Method
    card: Card
    trace_id: str | None
    writes_used: int


@dataclass
class CardDesk:
    """Card operations over the Linq gateway, the write budget and the line cache."""

    gateway: LinqGateway
    sessions: sessionmaker[Session]

    def views(self, phone: str | None, *, now: dt.datetime, policy: Policy) -> list[LineView]:
        try:
            cards = self.gateway.list_cards(phone)
        except LinqCallError as err:
            if not (phone and err.status == 404 and err.code in (2012, 2001)):
                raise CardCommandError(failure_line("list", phone, err), err) from err
            cards = []  # GET with a number that has no card answers 2012
        with transaction(self.sessions) as s:
            cached = cached_lines(s, None if phone is None else [phone])
            phones = sorted({c.phone_number for c in cards} | set(cached))
            # Each line's own day (docs/decisions.md §12); a line not known yet uses the default.
            days = {r.state.phone: r.state.today(now) for r in lines(s, policy.zone, phones)}
            line_days = {p: days.get(p, share_day(now, policy.zone)) for p in phones}
            due = due_today_by_line(s, line_days, now=now, policy=policy)
        return line_views(cards, cached, only=phone, due=due)

    def create(
        self, phone: str, first_name: str, last_name: str | None = None, image_url: str | None = None
    ) -> WriteResult:
        return self._write(
            "POST", phone, lambda: self.gateway.create_card(phone, first_name, last_name, image_url)
        )

    def update(self, phone: str, changes: CardChanges) -> WriteResult:
        if not changes.given():
            raise InputError("nothing to update: give --first, --last or --image")
        # Omitted fields stay out of the JSON body, so Linq leaves them as they are.
        return self._write(
            "PATCH",
            phone,
            lambda: self.gateway.update_card(
                phone,
                first_name=changes.first_name,
                last_name=changes.last_name,
                image_url=changes.image_url,
            ),
        )

    def _write(self, method: Method, phone: str, call: Callable[[], SavedCard]) -> WriteResult:
        op: Op = "create" if method == "POST" else "update"
        with transaction(self.sessions) as s:
            slot = reserve_card_write(s, phone, method, limit=WRITE_LIMIT, window_s=WRITE_WINDOW_S)
        if slot.write_id is None:
            raise WriteLimitReached(phone, slot.used, slot.wait_s)
        try:
            saved = call()
        except LinqCallError as err:
            counted = counts_against_budget(err.status, err.transport)
            with transaction(self.sessions) as s:
                finish_card_write(
                    s, slot.write_id, status=err.status, code=err.code, trace_id=err.trace_id, counted=counted
                )
                if (err.status, err.code) in ((404, 2012), (503, 4004)):
                    # Linq says the line has no active card now: stop the sweep sharing into a 2012.
                    mark_card_inactive(s, phone)
                used = card_writes_used(s, phone, window_s=WRITE_WINDOW_S)
            event(log, "card_write", method=method, phone=phone, status=err.status, code=err.code,
                  trace_id=err.trace_id, counted=counted)  # fmt: skip
            left = max(0, WRITE_LIMIT - used) if counted else None
            raise CardCommandError(failure_line(op, phone, err, writes_left=left), err) from err
        card, trace = saved.card, saved.trace_id
        with transaction(self.sessions) as s:
            finish_card_write(s, slot.write_id, status=saved.status, code=None, trace_id=trace, counted=True)
            # complete=False: one card says nothing about the other lines.
            store_cards(
                s,
                [CardState(phone, card.first_name, card.last_name, card.image_url, card.is_active)],
                complete=False,
            )
        event(log, "card_write", method=method, phone=phone, status=saved.status, active=card.is_active,
              trace_id=trace)  # fmt: skip
        return WriteResult(method, card, trace, slot.used)
