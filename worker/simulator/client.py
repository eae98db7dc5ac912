"""A small typed client for the simulator's admin API (`/_sim/...`)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from types import TracebackType
from typing import Any, Literal, NotRequired, TypedDict, Unpack, cast

import httpx

CHAT_BATCH = 5000  # chats per POST: keeps each request body a few MB at most


class LineSpec(TypedDict):
    phone_number: str
    line_type: NotRequired[Literal["iMessage", "RCS"]]
    reputation: NotRequired[Literal["HEALTHY", "AT_RISK", "CRITICAL"]]
    card_activation: NotRequired[Literal["immediate", "on_next_read", "never"]]


class CardSpec(TypedDict):
    phone_number: str
    first_name: str
    last_name: NotRequired[str | None]
    image_url: NotRequired[str | None]
    is_active: NotRequired[bool]


class MessageSpec(TypedDict):
    is_from_me: bool
    sent_at: str
    service: NotRequired[Literal["iMessage", "SMS", "RCS"]]
    text: NotRequired[str]
    reactions: NotRequired[list[str]]


class ChatSpec(TypedDict):
    line: str
    id: NotRequired[str]
    to: NotRequired[str]
    service: NotRequired[Literal["iMessage", "SMS", "RCS"] | None]
    is_group: NotRequired[bool]
    health: NotRequired[Literal["HEALTHY", "AT_RISK", "CRITICAL", "OPTED_OUT"]]
    created_at: NotRequired[str]
    messages: NotRequired[list[MessageSpec]]
    opted_out: NotRequired[bool]


class WebhookSpec(TypedDict):
    """Options of `POST /_sim/webhooks/deliver` beyond url and secret (see simulator/webhooks.py)."""

    event_type: NotRequired[str]
    version: NotRequired[Literal["2025-01-01", "2026-02-03"]]
    chat_id: NotRequired[str]
    line: NotRequired[str]
    to: NotRequired[str]
    service: NotRequired[Literal["iMessage", "SMS", "RCS"]]
    is_group: NotRequired[bool]
    health: NotRequired[Literal["HEALTHY", "AT_RISK", "CRITICAL", "OPTED_OUT"]]
    sent_at: NotRequired[str]
    text: NotRequired[str]
    event_id: NotRequired[str]
    nulls: NotRequired[list[str]]
    reactions: NotRequired[list[str]]
    webhook_id: NotRequired[str]
    timestamp: NotRequired[int]
    legacy: NotRequired[bool]
    standard: NotRequired[bool]
    tamper: NotRequired[bool]
    # account and line events (simulator/webhooks.py build_account_event)
    reputation: NotRequired[str]
    line_status: NotRequired[str]
    previous_reputation: NotRequired[str]
    previous_status: NotRequired[str]
    changed_at: NotRequired[float]
    token_id: NotRequired[str]
    token_prefix: NotRequired[str]
    expires_at: NotRequired[str]
    subscription_id: NotRequired[str]
    target_url: NotRequired[str]
    summary: NotRequired[str]


class LineChange(TypedDict):
    phone_number: str
    after_s: float
    reputation: NotRequired[Literal["HEALTHY", "AT_RISK", "CRITICAL"]]
    status: NotRequired[Literal["ACTIVE", "FLAGGED"]]


class FaultSpec(TypedDict):
    path: str
    mode: NotRequired[Literal["respond", "pass", "accept_then_hang"]]
    method: NotRequired[str]
    chat_id: NotRequired[str]
    status: NotRequired[int]
    code: NotRequired[int | None]
    message: NotRequired[str]
    retry_after: NotRequired[int]
    body_raw: NotRequired[str]
    content_type: NotRequired[str]
    latency_ms: NotRequired[int]
    hang_s: NotRequired[float]
    headers: NotRequired[dict[str, str]]
    times: NotRequired[int | None]
    probability: NotRequired[float]


def admin_root(base_url: str) -> str:
    """`http://host:port/api/partner` -> `http://host:port/_sim`."""
    url = httpx.URL(base_url)
    return str(url.copy_with(path="/_sim", query=None, fragment=None))


class SimulatorAdminError(RuntimeError):
    """The admin API refused a call (bad seed data or rule)."""


class SimulatorAdmin:
    """Drive a running simulator: seed lines, cards, chats and contacts, inject faults, read counters."""

    def __init__(self, base_url: str, *, timeout: float = 30.0) -> None:
        self.root = admin_root(base_url)
        self._http = httpx.Client(base_url=self.root, timeout=timeout)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> SimulatorAdmin:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _call(self, method: str, path: str, body: object = None, params: dict[str, str] | None = None) -> Any:
        response = self._http.request(method, path, json=body, params=params)
        if response.status_code >= 400:
            raise SimulatorAdminError(
                f"simulator admin {method} {path}: {response.status_code} {response.text}"
            )
        return response.json()

    # ---- state ------------------------------------------------------------------------------
    def reset(self) -> None:
        """Forget all lines, cards, chats, contacts, shares, faults and counters; default config."""
        self._call("POST", "/reset")

    def configure(
        self,
        *,
        share_window_s: float | None = None,
        card_write_limit: int | None = None,
        card_write_window_s: float | None = None,
        at_risk_above_per_minute: int | None = None,
        critical_above_per_minute: int | None = None,
    ) -> dict[str, float]:
        """Change rule parameters; returns the whole current config."""
        given = {
            "share_window_s": share_window_s,
            "card_write_limit": card_write_limit,
            "card_write_window_s": card_write_window_s,
            "at_risk_above_per_minute": at_risk_above_per_minute,
            "critical_above_per_minute": critical_above_per_minute,
        }
        body = {key: value for key, value in given.items() if value is not None}
        return cast(dict[str, float], self._call("POST", "/config", body))

    def add_lines(self, lines: Iterable[LineSpec]) -> list[dict[str, Any]]:
        """Create or update lines; returns every line as GET /v3/phone_numbers shows it."""
        return cast(list[dict[str, Any]], self._call("POST", "/lines", {"lines": list(lines)})["lines"])

    def add_line(
        self,
        phone_number: str,
        *,
        line_type: Literal["iMessage", "RCS"] = "iMessage",
        reputation: Literal["HEALTHY", "AT_RISK", "CRITICAL"] = "HEALTHY",
        card_activation: Literal["immediate", "on_next_read", "never"] = "immediate",
    ) -> None:
        spec: LineSpec = {
            "phone_number": phone_number,
            "line_type": line_type,
            "reputation": reputation,
            "card_activation": card_activation,
        }
        self.add_lines([spec])

    def add_cards(self, cards: Iterable[CardSpec]) -> list[dict[str, Any]]:
        """Put cards directly (no write budget, no activation rule); unknown lines are created."""
        return cast(list[dict[str, Any]], self._call("POST", "/cards", {"cards": list(cards)})["cards"])

    def add_card(
        self,
        phone_number: str,
        first_name: str = "Acme",
        *,
        last_name: str | None = None,
        image_url: str | None = None,
        is_active: bool = True,
    ) -> None:
        spec: CardSpec = {
            "phone_number": phone_number,
            "first_name": first_name,
            "last_name": last_name,
            "image_url": image_url,
            "is_active": is_active,
        }
        self.add_cards([spec])

    def cards(self) -> list[dict[str, Any]]:
        """Every card, read without triggering `on_next_read` activation."""
        return cast(list[dict[str, Any]], self._call("GET", "/cards")["cards"])

    def add_chats(self, chats: Sequence[ChatSpec], *, batch: int = CHAT_BATCH) -> int:
        """Add chats in batches; returns how many were added. Unknown lines are created."""
        added = 0
        for start in range(0, len(chats), batch):
            chunk = list(chats[start : start + batch])
            added += int(self._call("POST", "/chats", {"chats": chunk})["added"])
        return added

    def add_contacts(self, count: int = 0, contacts: Sequence[dict[str, Any]] | None = None) -> int:
        """Generate `count` v2 contacts and/or store `contacts` as given; returns how many were added."""
        body: dict[str, Any] = {"count": count}
        if contacts is not None:
            body["contacts"] = list(contacts)
        return int(self._call("POST", "/contacts", body)["added"])

    # ---- line safety ------------------------------------------------------------------------
    def set_line_state(
        self,
        phone_number: str,
        *,
        reputation: Literal["HEALTHY", "AT_RISK", "CRITICAL"] | None = None,
        status: Literal["ACTIVE", "FLAGGED"] | None = None,
    ) -> dict[str, Any]:
        """Linq re-scores or flags a line now; its `phone_number.status_updated` goes to the target."""
        body = {k: v for k, v in (("reputation", reputation), ("status", status)) if v is not None}
        return cast(dict[str, Any], self._call("POST", f"/lines/{phone_number}/state", body))

    def schedule_line_changes(self, changes: Sequence[LineChange]) -> int:
        """Line state changes `after_s` seconds from now, each with its webhook."""
        return int(self._call("POST", "/lines/changes", {"changes": list(changes)})["scheduled"])

    def delete_card(self, phone_number: str) -> None:
        """Remove a line's card (as in Linq's dashboard): `contact_card.deleted` goes out."""
        self._call("DELETE", f"/cards/{phone_number}")

    def set_chat_health(
        self, chat_id: str, health: Literal["HEALTHY", "AT_RISK", "CRITICAL", "OPTED_OUT"]
    ) -> None:
        self._call("POST", f"/chats/{chat_id}/health", {"health": health})

    def set_webhook_target(self, url: str | None, secret: str | None = None) -> None:
        """Where the simulator sends the events it raises by itself (None: nowhere)."""
        if url is None:
            self._call("DELETE", "/webhooks/target")
        else:
            self._call("POST", "/webhooks/target", {"url": url, "secret": secret})

    def webhooks_sent(self) -> list[dict[str, Any]]:
        """Every event the simulator raised by itself, with the receiver's answer."""
        return cast(list[dict[str, Any]], self._call("GET", "/webhooks/sent"))

    def pace(self, window_s: float = 60.0) -> dict[str, Any]:
        """Per line: accepted shares, and the most accepted in any `window_s` (the simulator's own count)."""
        return cast(dict[str, Any], self._call("GET", "/pace", params={"window_s": str(window_s)}))

    # ---- faults -----------------------------------------------------------------------------
    def add_faults(self, rules: Iterable[FaultSpec]) -> list[dict[str, Any]]:
        """Append fault rules; returns all rules with their remaining counts."""
        return cast(list[dict[str, Any]], self._call("POST", "/faults", {"rules": list(rules)})["rules"])

    def add_fault(self, **rule: Unpack[FaultSpec]) -> list[dict[str, Any]]:
        """One rule as keywords: `add_fault(path="/share_contact_card$", status=503, times=2)`."""
        return self.add_faults([rule])

    def faults(self) -> list[dict[str, Any]]:
        return cast(list[dict[str, Any]], self._call("GET", "/faults")["rules"])

    def clear_faults(self) -> None:
        self._call("DELETE", "/faults")

    # ---- observations -----------------------------------------------------------------------
    def shares(self, *, events: bool = False) -> dict[str, Any]:
        """`{"total_accepted", "per_chat"}`, plus `"events"` when asked."""
        params = {"events": "1"} if events else None
        return cast(dict[str, Any], self._call("GET", "/shares", params=params))

    def share_events(self) -> list[dict[str, Any]]:
        return cast(list[dict[str, Any]], self.shares(events=True)["events"])

    def share_count(self, chat_id: str) -> int:
        """How many shares of this chat the simulator accepted."""
        return int(self.shares()["per_chat"].get(chat_id, 0))

    def inflight(self) -> list[dict[str, Any]]:
        """Share requests being handled now: `{chat_id, phase: before_accept|after_accept, since}`."""
        return cast(list[dict[str, Any]], self._call("GET", "/inflight"))

    def requests(self) -> dict[str, int]:
        """Linq requests seen, keyed `"METHOD /route-template"`."""
        return cast(dict[str, int], self._call("GET", "/requests"))

    # ---- webhooks ---------------------------------------------------------------------------
    def deliver_webhook(self, url: str, secret: str, **spec: Unpack[WebhookSpec]) -> dict[str, Any]:
        """Have the simulator sign one event with `secret` and POST it to `url`, as Linq would.

        Returns `{"status": <receiver's HTTP status or None>, "body", "event_id", "webhook_id",
        "timestamp", "chat_id"}`.
        """
        return cast(
            dict[str, Any], self._call("POST", "/webhooks/deliver", {"url": url, "secret": secret, **spec})
        )
