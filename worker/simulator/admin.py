"""The simulator's own admin API (`/_sim/...`): seed data, tune rules, inject faults, read counters.

No auth: it only ever listens on loopback next to tests and demos. Bad input answers 400
`{"error": "..."}`; chats, cards and fault rules are validated as a batch, so a bad one adds none.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from worker.simulator.state import E164, Card, SimState

AdminHandler = Callable[[Request], Awaitable[Any]]


def admin_routes(state: SimState) -> list[Route]:
    """Routes to mount under /_sim."""
    admin = _Admin(state)
    table: list[tuple[str, list[str], AdminHandler]] = [
        ("/health", ["GET"], admin.health),
        ("/reset", ["POST"], admin.reset),
        ("/config", ["GET", "POST"], admin.config),
        ("/lines", ["GET", "POST"], admin.lines),
        ("/cards", ["GET", "POST"], admin.cards),
        ("/chats", ["POST"], admin.chats),
        ("/contacts", ["POST"], admin.contacts),
        ("/faults", ["GET", "POST", "DELETE"], admin.faults),
        ("/shares", ["GET"], admin.shares),
        ("/requests", ["GET"], admin.requests),
        ("/inflight", ["GET"], admin.inflight),
        ("/webhooks/deliver", ["POST"], admin.deliver_webhook),
    ]
    return [Route(path, _json_endpoint(handler), methods=methods) for path, methods, handler in table]


def _json_endpoint(handler: AdminHandler) -> Callable[[Request], Awaitable[Response]]:
    async def endpoint(request: Request) -> Response:
        try:
            return JSONResponse(await handler(request))
        except (ValueError, TypeError, KeyError) as exc:
            return JSONResponse({"error": f"{type(exc).__name__}: {exc}"}, 400)

    return endpoint


async def _body(request: Request) -> dict[str, Any]:
    raw = await request.body()
    if not raw.strip():
        return {}
    body = await request.json()
    if not isinstance(body, dict):
        raise ValueError("body must be a JSON object")
    return body


def _items(body: Mapping[str, Any], key: str) -> list[Mapping[str, Any]]:
    items = body.get(key)
    if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
        raise ValueError(f"'{key}' must be a list of objects")
    return items


class _Admin:
    def __init__(self, state: SimState) -> None:
        self.state = state

    async def health(self, request: Request) -> Any:
        return {"ok": True}

    async def reset(self, request: Request) -> Any:
        self.state.reset()
        return {"ok": True}

    async def config(self, request: Request) -> Any:
        if request.method == "POST":
            return self.state.configure(**await _body(request))
        return self.state.config

    async def lines(self, request: Request) -> Any:
        if request.method == "POST":
            for item in _items(await _body(request), "lines"):
                self.state.add_line(
                    item["phone_number"],
                    line_type=item.get("line_type", "iMessage"),
                    reputation=item.get("reputation", "HEALTHY"),
                    card_activation=item.get("card_activation", "immediate"),
                )
        return {"lines": self.state.list_lines()}

    async def cards(self, request: Request) -> Any:
        # GET here, unlike GET /v3/contact_card, does not count as a read that activates cards.
        if request.method == "POST":
            cards = [_card(item) for item in _items(await _body(request), "cards")]
            for card in cards:
                self.state.put_card(card)
        return {"cards": [card.to_json() for card in self.state.cards.values()]}

    async def chats(self, request: Request) -> Any:
        added = self.state.add_chats(_items(await _body(request), "chats"))
        return {"added": added, "total": len(self.state.chats)}

    async def contacts(self, request: Request) -> Any:
        body = await _body(request)
        given = _items(body, "contacts") if "contacts" in body else []
        added = self.state.add_contacts(int(body.get("count", 0)), given)
        return {"added": added, "total": len(self.state.contacts)}

    async def faults(self, request: Request) -> Any:
        if request.method == "POST":
            self.state.faults.add(_items(await _body(request), "rules"))
        elif request.method == "DELETE":
            self.state.faults.clear()
        return {"rules": self.state.faults.to_json()}

    async def shares(self, request: Request) -> Any:
        events = request.query_params.get("events", "") not in ("", "0", "false")
        return self.state.shares_json(events=events)

    async def requests(self, request: Request) -> Any:
        return dict(self.state.request_counts)

    async def inflight(self, request: Request) -> Any:
        return list(self.state.inflight.values())

    async def deliver_webhook(self, request: Request) -> Any:
        from worker.simulator.webhooks import deliver

        return await deliver(self.state, await _body(request))


def _card(item: Mapping[str, Any]) -> Card:
    phone, first_name = item["phone_number"], item["first_name"]
    if not isinstance(phone, str) or not E164.match(phone) or not isinstance(first_name, str):
        raise ValueError("a card needs an E.164 phone_number and a string first_name")
    return Card(
        phone_number=phone,
        first_name=first_name,
        last_name=item.get("last_name"),
        image_url=item.get("image_url"),
        is_active=bool(item.get("is_active", True)),
    )
