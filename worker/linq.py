"""The only door to Linq: the official SDK over our own httpx.Client, errors normalized to
`LinqCallError`, answers as plain dataclasses. Nothing else in `worker` imports the SDK.

The SDK runs with max_retries=0 (retries live in `rules.retrying`, docs/linq-contract.md §9.1).
Each caller gets its own small client: one httpx pool shared by many threads spends most of its
CPU walking the pool, and building a client costs ~40 ms, so never one per call
(docs/linq-contract.md §9.3).
"""

from __future__ import annotations

import datetime as dt
import threading
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import httpx

from worker.config import Settings
from worker.rules.classify import CallResult, Transport
from worker.rules.retrying import parse_retry_after

if TYPE_CHECKING:
    import linq
    from linq import LinqAPIV3
    from linq.types import SetContactCard
else:

    class _SDK:
        """`linq`, imported on first use. The SDK's pydantic models cost 0.45-0.9 s of CPU to
        import on the 2-core box (`python -X importtime`, the largest part of a command's start):
        `status`, `history`, `recover` and `share` without --wait never call Linq. The import
        system's own lock makes a first use from many threads at once safe."""

        def __getattr__(self, name: str) -> Any:
            import linq as sdk

            value = getattr(sdk, name)
            setattr(self, name, value)
            return value

    linq = _SDK()

NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout, httpx.UnsupportedProtocol)


@dataclass(frozen=True)
class LinqResponse:
    status: int
    trace_id: str | None


@dataclass(frozen=True)
class Card:
    phone_number: str
    first_name: str
    last_name: str | None
    image_url: str | None
    is_active: bool


@dataclass(frozen=True)
class SavedCard:
    """Linq's answer to a card write: the card as saved (maybe not active yet), and the call."""

    card: Card
    status: int
    trace_id: str | None


@dataclass(frozen=True)
class Line:
    """One of the account's phone numbers; `line_type` "RCS" never carries iMessage; `reputation`
    HEALTHY, AT_RISK or CRITICAL (docs/linq-contract.md §1)."""

    phone_number: str
    line_type: str | None
    reputation: str | None = None


@dataclass(frozen=True)
class Page:
    """One page of a cursor listing: Linq's objects as JSON, and where the next page starts."""

    items: list[dict[str, Any]]
    next_cursor: str | None


class LinqCallError(Exception):
    """One failed Linq call: HTTP status and Linq code, or a transport failure."""

    def __init__(
        self,
        *,
        status: int | None,
        code: int | None,
        message: str,
        trace_id: str | None = None,
        retry_after_s: float | None = None,
        transport: Transport | None = None,
    ) -> None:
        self.status = status
        self.code = code
        self.message = message
        self.trace_id = trace_id
        self.retry_after_s = retry_after_s
        self.transport = transport
        super().__init__(self.one_line())

    @property
    def result(self) -> CallResult:
        return CallResult(status=self.status, code=self.code, transport=self.transport)

    def one_line(self) -> str:
        if self.transport is not None:
            return f"Linq call failed before an answer ({self.transport.value}): {self.message}"
        parts = [f"HTTP {self.status}", f"code {self.code if self.code is not None else '-'}", self.message]
        if self.trace_id:
            parts.append(f"trace {self.trace_id}")
        return "Linq error: " + ", ".join(parts)


def error_from_sdk(exc: linq.APIError, now: dt.datetime | None = None) -> LinqCallError:
    """Normalize any SDK exception; tolerant of non-JSON bodies and missing fields."""
    now = now or dt.datetime.now(dt.UTC)
    if isinstance(exc, linq.APIStatusError):
        response = exc.response
        trace = response.headers.get("x-trace-id") or _body_trace_id(response)
        message = _body_message(exc.body) or response.reason_phrase or "error"
        retry_after = parse_retry_after(response.headers, exc.retry_after, now)
        return LinqCallError(
            status=response.status_code,
            code=exc.code,
            message=message,
            trace_id=trace,
            retry_after_s=retry_after,
        )
    if isinstance(exc, linq.APIConnectionError):
        cause = exc.__cause__
        transport = Transport.NOT_SENT if isinstance(cause, NOT_SENT) else Transport.MAYBE_SENT
        detail = type(cause).__name__ if cause is not None else type(exc).__name__
        return LinqCallError(status=None, code=None, message=detail, transport=transport)
    # APIResponseValidationError and other SDK errors: a 2xx we could not read.
    status = getattr(exc, "status_code", None)
    return LinqCallError(status=status, code=None, message=str(exc))


def _body_message(body: object) -> str | None:
    if isinstance(body, dict):
        msg = body.get("message")
        return str(msg) if msg is not None else None
    if isinstance(body, str) and body:
        return body[:120].replace("\n", " ")
    return None


def _body_trace_id(response: httpx.Response) -> str | None:
    try:
        data = response.json()
    except (ValueError, RecursionError):
        return None
    if isinstance(data, dict):
        trace = data.get("trace_id")
        return str(trace) if trace else None
    return None


class _NoCookies(httpx.Cookies):
    """A jar that keeps nothing. Linq's API sets no cookies and an API client should not replay
    any; httpx otherwise runs every response through http.cookiejar (~4 % of a worker's CPU)."""

    def extract_cookies(self, response: httpx.Response) -> None:
        return None


class _Client(httpx.Client):
    _no_cookies = _NoCookies()

    @property
    def cookies(self) -> httpx.Cookies:
        return self._no_cookies

    @cookies.setter
    def cookies(self, cookies: Any) -> None:
        # Nothing is kept, whoever assigns.
        return None


def http_client(settings: Settings, *, max_connections: int = 4) -> httpx.Client:
    """A small pool for one thread: short timeouts, no redirects to follow silently, no cookies."""
    return _Client(
        timeout=httpx.Timeout(
            connect=settings.http_connect_timeout_s,
            read=settings.http_read_timeout_s,
            write=settings.http_read_timeout_s,
            pool=settings.http_connect_timeout_s,
        ),
        limits=httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections),
        follow_redirects=False,
    )


@dataclass
class LinqGateway:
    """The Linq calls cardshare makes, each raising LinqCallError on failure."""

    sdk: LinqAPIV3
    http: httpx.Client

    @classmethod
    def create(cls, settings: Settings, *, strict: bool = False) -> LinqGateway:
        http = http_client(settings)
        sdk = linq.LinqAPIV3(
            api_key=settings.require_api_key(),
            base_url=settings.linq_base_url,
            max_retries=0,
            http_client=http,
            _strict_response_validation=strict,
        )
        return cls(sdk=sdk, http=http)

    def close(self) -> None:
        self.sdk.close()
        self.http.close()

    def share_contact_card(self, chat_id: str) -> LinqResponse:
        try:
            raw = self.sdk.chats.with_raw_response.share_contact_card(chat_id)
        except linq.APIError as exc:
            raise error_from_sdk(exc) from exc
        # Any 2xx is success; the body is not read (docs/linq-contract.md §5).
        return LinqResponse(status=raw.status_code, trace_id=raw.headers.get("x-trace-id"))

    def list_cards(self, phone_number: str | None = None) -> list[Card]:
        try:
            if phone_number is None:
                resp = self.sdk.contact_card.retrieve()
            else:
                resp = self.sdk.contact_card.retrieve(phone_number=phone_number)
        except linq.APIError as exc:
            raise error_from_sdk(exc) from exc
        return [
            Card(
                phone_number=c.phone_number,
                first_name=c.first_name,
                last_name=c.last_name,
                image_url=c.image_url,
                is_active=c.is_active,
            )
            for c in resp.contact_cards
        ]

    def create_card(
        self, phone_number: str, first_name: str, last_name: str | None = None, image_url: str | None = None
    ) -> SavedCard:
        """POST /v3/contact_card (docs/linq-contract.md §4.2). Never retried: every call is a write."""
        return self._write_card(
            lambda: self.sdk.contact_card.with_raw_response.create(
                phone_number=phone_number,
                first_name=first_name,
                last_name=_given(last_name),
                image_url=_given(image_url),
            )
        )

    def update_card(
        self,
        phone_number: str,
        *,
        first_name: str | None = None,
        last_name: str | None = None,
        image_url: str | None = None,
    ) -> SavedCard:
        """PATCH /v3/contact_card (§4.3): omitted fields stay out of the body, so Linq keeps them."""
        return self._write_card(
            lambda: self.sdk.contact_card.with_raw_response.update(
                phone_number=phone_number,
                first_name=_given(first_name),
                last_name=_given(last_name),
                image_url=_given(image_url),
            )
        )

    def _write_card(self, call: Callable[[], linq.APIResponse[SetContactCard]]) -> SavedCard:
        try:
            raw = call()
            body = raw.parse()
        except linq.APIError as exc:
            raise error_from_sdk(exc) from exc
        card = Card(body.phone_number, body.first_name, body.last_name, body.image_url, body.is_active)
        return SavedCard(card, raw.status_code, raw.headers.get("x-trace-id"))

    def list_lines(self) -> list[Line]:
        """GET /v3/phone_numbers: the account's lines (docs/linq-contract.md §1)."""
        try:
            numbers = self.sdk.phone_numbers.list().phone_numbers
        except linq.APIError as exc:
            raise error_from_sdk(exc) from exc
        return [
            Line(n.phone_number, n.line_type, n.reputation.status if n.reputation is not None else None)
            for n in numbers
        ]

    def list_chats(self, line: str, *, limit: int, cursor: str | None = None) -> Page:
        """One page of GET /v3/chats?from=LINE (docs/linq-contract.md §6.3)."""
        kw: dict[str, Any] = {"from_": line, "limit": limit}
        if cursor is not None:
            kw["cursor"] = cursor
        try:
            page = self.sdk.chats.list_chats(**kw)
        except linq.APIError as exc:
            raise error_from_sdk(exc) from exc
        return Page([c.to_dict(mode="json") for c in page.chats], page.next_cursor or None)

    def list_messages(self, chat_id: str, *, limit: int, cursor: str | None = None) -> Page:
        """One page of GET /v3/chats/{id}/messages (docs/linq-contract.md §6.4)."""
        kw: dict[str, Any] = {"limit": limit}
        if cursor is not None:
            kw["cursor"] = cursor
        try:
            page = self.sdk.chats.messages.list(chat_id, **kw)
        except linq.APIError as exc:
            raise error_from_sdk(exc) from exc
        return Page([m.to_dict(mode="json") for m in page.messages], page.next_cursor or None)


def _given(value: str | None) -> str | linq.Omit:
    return linq.omit if value is None else value


@dataclass
class ClientPool:
    """Linq clients for concurrent callers, closed together at shutdown.

    `lease()` checks a client out and back in: as many clients as calls in flight, whatever runs
    them (threads, or gevent greenlets, which Celery spawns anew for every task). `get()` keeps
    one per thread for code that calls Linq several times in a row (sync, card commands).
    """

    settings: Settings
    _local: threading.local = field(default_factory=threading.local)
    _all: list[LinqGateway] = field(default_factory=list)
    _free: deque[LinqGateway] = field(default_factory=deque)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @contextmanager
    def lease(self) -> Iterator[LinqGateway]:
        # deque.pop/append are atomic: no lock on the path every share takes (a contended lock
        # here showed up as ~3 % of a worker's CPU).
        try:
            gw = self._free.pop()
        except IndexError:
            gw = LinqGateway.create(self.settings)
            with self._lock:
                self._all.append(gw)
        try:
            yield gw
        finally:
            self._free.append(gw)

    def get(self) -> LinqGateway:
        gw: LinqGateway | None = getattr(self._local, "gateway", None)
        if gw is None:
            gw = LinqGateway.create(self.settings)
            self._local.gateway = gw
            with self._lock:
                self._all.append(gw)
        return gw

    def close(self) -> None:
        with self._lock:
            for gw in self._all:
                gw.close()
            self._all.clear()
            self._free.clear()
        self._local = threading.local()
