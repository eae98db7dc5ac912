"""v2 List Contacts (`GET /api/partner/v2/contacts`): the account's CRM contacts, page by page.

The official SDK covers v3 only, so this is a small httpx call. v2 differs from v3 in three
ways (docs/linq-contract.md §8): the token goes in `X-LINQ-INTEGRATION-TOKEN`, pagination is
by page number (`per_page` at most 100), and errors come in two other envelopes whose codes
are strings. Nothing is retried: this is an operator's read, and the error says what happened.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

import httpx

from worker.cards.desk import KEY_SETTING
from worker.config import Settings
from worker.errors import CardshareError, InputError
from worker.linq import NOT_SENT, http_client

MAX_PER_PAGE = 100
DEFAULT_PER_PAGE = 25
V2_PREFIX = "/api/partner"
MAX_PAGES = 100_000  # a server that never reports the last page must not loop forever


class ContactsError(CardshareError):
    """A v2 List Contacts call failed; the message is one line with status, code and trace id."""

    def __init__(
        self, *, status: int | None, code: str | None, message: str, trace_id: str | None = None
    ) -> None:
        self.status = status
        self.code = code
        self.message = message
        self.trace_id = trace_id
        super().__init__(self.one_line())

    def one_line(self) -> str:
        if self.status is None:
            return f"contacts: Linq could not be reached ({self.message})"
        hint = ""
        if self.status in (401, 403):
            hint = f"check {KEY_SETTING} (sent as X-LINQ-INTEGRATION-TOKEN). "
        parts = [f"HTTP {self.status}", f"code {self.code or '-'}", self.message]
        if self.trace_id:
            parts.append(f"trace {self.trace_id}")
        return " ".join(f"contacts: {hint}Linq error: {', '.join(parts)}".split())


def contacts_url(base_url: str) -> str:
    """v2 lives on the v3 host under `/api/partner/v2`: `https://h/api/partner` -> `.../v2/contacts`."""
    url = httpx.URL(base_url)
    path = url.path.rstrip("/")
    root = path[: path.index(V2_PREFIX) + len(V2_PREFIX)] if V2_PREFIX in path else path
    return str(url.copy_with(path=f"{root}/v2/contacts", query=None, fragment=None))


def parse_v2_error(status: int, body: bytes, headers: Mapping[str, str]) -> ContactsError:
    """Either v2 envelope (standard-error or render_error), or a body that is not JSON at all."""
    trace = headers.get("x-trace-id")
    data: Any
    try:
        data = json.loads(body) if body else None
    except ValueError:
        data = None
    code: str | None = None
    message: str | None = None
    if isinstance(data, dict):
        trace = trace or _str(data.get("trace_id"))
        errors = data.get("errors")
        if "error_code" in data or "message" in data:
            # standard error: {"status": "error", "error_code": "...", "message": "...", "errors": ["..."]}
            code = _str(data.get("error_code"))
            message = _str(data.get("message"))
            details = [str(e) for e in errors if isinstance(e, str)] if isinstance(errors, list) else []
            details = [d for d in details if d != message]
            if details:
                message = f"{message or 'error'} ({'; '.join(details)})"
        elif isinstance(errors, list) and errors and isinstance(errors[0], dict):
            # render_error: {"errors": [{"status": 404, "code": "not_found", "title", "detail"}]}
            first = errors[0]
            code = _str(first.get("code"))
            message = _str(first.get("detail")) or _str(first.get("title"))
    if message is None:
        text = body.decode("utf-8", "replace").strip()
        message = text[:120] if text and data is None else _reason(status)
    return ContactsError(status=status, code=code, message=message, trace_id=trace)


def _str(value: object) -> str | None:
    return str(value) if value is not None and value != "" else None


def _reason(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "error"


@dataclass(frozen=True)
class ContactsPage:
    contacts: list[dict[str, Any]]
    current_page: int
    per_page: int
    total_pages: int
    total_count: int

    @property
    def last(self) -> bool:
        return self.current_page >= self.total_pages

    def pagination(self) -> dict[str, int]:
        return {
            "current_page": self.current_page,
            "per_page": self.per_page,
            "total_pages": self.total_pages,
            "total_count": self.total_count,
        }


def parse_page(data: object) -> ContactsPage:
    """The 200 body; a shape we cannot read is an error, not an empty page."""
    if not isinstance(data, dict) or not isinstance(data.get("contacts"), list):
        raise ContactsError(status=200, code=None, message="unexpected response: no contacts list")
    pagination = data.get("pagination")
    if not isinstance(pagination, dict):
        raise ContactsError(status=200, code=None, message="unexpected response: no pagination")
    try:
        numbers = {k: int(pagination[k]) for k in ("current_page", "per_page", "total_pages", "total_count")}
    except (KeyError, TypeError, ValueError):
        raise ContactsError(status=200, code=None, message="unexpected response: bad pagination") from None
    contacts = [c for c in data["contacts"] if isinstance(c, dict)]
    return ContactsPage(contacts=contacts, **numbers)


@dataclass
class ContactsClient:
    """GET v2 contacts with the integration token; one httpx client for all pages."""

    url: str
    token: str
    http: httpx.Client

    @classmethod
    def create(cls, settings: Settings) -> ContactsClient:
        return cls(contacts_url(settings.linq_base_url), settings.require_api_key(), http_client(settings))

    def close(self) -> None:
        self.http.close()

    def page(self, page: int = 1, per_page: int = DEFAULT_PER_PAGE) -> ContactsPage:
        if page < 1:
            raise InputError("--page must be at least 1")
        if not 1 <= per_page <= MAX_PER_PAGE:
            raise InputError(f"--per-page must be within 1..{MAX_PER_PAGE}")
        try:
            response = self.http.get(
                self.url,
                params={"page": page, "per_page": per_page},
                headers={"X-LINQ-INTEGRATION-TOKEN": self.token, "Accept": "application/json"},
            )
        except httpx.HTTPError as exc:
            sent = "" if isinstance(exc, NOT_SENT) else "; no answer"
            raise ContactsError(status=None, code=None, message=f"{type(exc).__name__}{sent}") from exc
        if response.status_code >= 400 or response.status_code < 200:
            raise parse_v2_error(response.status_code, response.content, response.headers)
        try:
            data = response.json()
        except ValueError:
            raise ContactsError(
                status=response.status_code,
                code=None,
                message="response is not JSON",
                trace_id=response.headers.get("x-trace-id"),
            ) from None
        return parse_page(data)

    def pages(self, per_page: int = MAX_PER_PAGE) -> Iterator[ContactsPage]:
        """Every page, from 1 until `current_page >= total_pages`."""
        number = 1
        while number <= MAX_PAGES:
            current = self.page(number, per_page)
            yield current
            if current.last or not current.contacts:
                return
            number += 1
