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
from worker.simulator.webhooks import schedule_changes, schedule_emits

AdminHandler = Callable[[Request], Awaitable[Any]]


def admin_routes(state: SimState) -> list[Route]:
    """Routes to mount under /_sim."""
    admin = _Admin(state)
    table: list[tuple[str, list[str], AdminHandler]] = [
        ("/health", ["GET"], admin.health),
        ("/reset", ["POST"], admin.reset),
        ("/config", ["GET", "POST"], admin.config),
        ("/lines", ["GET", "POST"], admin.lines),
        ("/lines/{phone}/state", ["POST"], admin.line_state),
        ("/lines/changes", ["POST"], admin.line_changes),
        ("/cards", ["GET", "POST"], admin.cards),
        ("/cards/{phone}", ["DELETE"], admin.delete_card),
        ("/chats", ["POST"], admin.chats),
        ("/chats/{chat_id}/health", ["POST"], admin.chat_health),
        ("/pace", ["GET"], admin.pace),
        ("/webhooks/target", ["GET", "POST", "DELETE"], admin.webhook_target),
        ("/webhooks/sent", ["GET"], admin.webhooks_sent),
        ("/contacts", ["POST"], admin.contacts),
        ("/faults", ["GET", "POST", "DELETE"], admin.faults),
        ("/shares", ["GET"], admin.shares),
        ("/requests", ["GET"], admin.requests),
        ("/inflight", ["GET"], admin.inflight),
        ("/webhooks/deliver", ["POST"], admin.deliver_webhook),
    ]
    return [Route(path, _json_endpoint(handler, state), methods=methods) for path, methods, handler in table]


def _json_endpoint(handler: AdminHandler, state: SimState) -> Callable[[Request], Awaitable[Response]]:
    async def endpoint(request: Request) -> Response:
        try:
            return JSONResponse(await handler(request))
        except (ValueError, TypeError, KeyError) as exc:
            return JSONResponse({"error": f"{type(exc).__name__}: {exc}"}, 400)
        finally:
            schedule_emits(state)  # what the change made Linq say (a status webhook) goes out

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

    async def line_state(self, request: Request) -> Any:
        """Linq re-scores or flags a line now: `{reputation?, status?}`; sends its webhook."""
        body = await _body(request)
        line = self.state.set_line_state(
            request.path_params["phone"], reputation=body.get("reputation"), status=body.get("status")
        )
        return {**line.to_json(), "status": line.status}

    async def line_changes(self, request: Request) -> Any:
        """Changes over time: `{"changes": [{phone_number, after_s, reputation?, status?}]}`."""
        return {"scheduled": schedule_changes(self.state, _items(await _body(request), "changes"))}

    async def delete_card(self, request: Request) -> Any:
        self.state.delete_card(request.path_params["phone"])
        return {"ok": True}

    async def chat_health(self, request: Request) -> Any:
        chat = self.state.set_chat_health(
            request.path_params["chat_id"], str((await _body(request))["health"])
        )
        return {"id": chat.id, "health": chat.health}

    async def pace(self, request: Request) -> Any:
        return self.state.pace_json(float(request.query_params.get("window_s", 60)))

    async def webhook_target(self, request: Request) -> Any:
        """Where the simulator sends the events it raises itself (its one subscription)."""
        if request.method == "POST":
            body = await _body(request)
            url, secret = body.get("url"), body.get("secret")
            if not isinstance(url, str) or not url.startswith(("http://", "https://")):
                raise ValueError("url must be an http(s) URL")
            if not isinstance(secret, str) or not secret.startswith("whsec_"):
                raise ValueError("secret must be a whsec_ signing secret")
            self.state.webhook_target = {"url": url, "secret": secret}
        elif request.method == "DELETE":
            self.state.webhook_target = None
        target = self.state.webhook_target
        return {"url": target["url"] if target else None}

    async def webhooks_sent(self, request: Request) -> Any:
        return list(self.state.emitted)

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
