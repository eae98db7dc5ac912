"""Linq's OpenAPI schemas (copied into tests/fixtures/linq/openapi-webhooks.json) as Hypothesis
strategies: OpenAPI 3.0's dialect turned into JSON Schema that hypothesis-jsonschema draws from."""

from __future__ import annotations

import datetime as dt
import json
import uuid
from functools import cache
from pathlib import Path
from typing import Any

from hypothesis import strategies as st
from hypothesis_jsonschema import from_schema

FIXTURE = Path(__file__).parent.parent / "fixtures" / "linq" / "openapi-webhooks.json"
# Keywords that only document (or are OpenAPI's own); JSON Schema validators ignore or reject them.
_DROP = {"example", "examples", "description", "deprecated", "discriminator", "xml", "externalDocs",
         "readOnly", "writeOnly", "title"}  # fmt: skip


@cache
def document() -> dict[str, Any]:
    return dict(json.loads(FIXTURE.read_text()))


def webhook_names() -> list[str]:
    return sorted(document()["webhooks"])


def _convert(node: Any, *, closed: bool) -> Any:
    """nullable -> anyOf null; objects closed to their declared properties (`closed`), so drawn
    events look like Linq's rather than carrying random extra keys that change their version."""
    if isinstance(node, list):
        return [_convert(v, closed=closed) for v in node]
    if not isinstance(node, dict):
        return node
    out = {k: _convert(v, closed=closed) for k, v in node.items() if k not in _DROP and k != "nullable"}
    if out.get("format") == "date-time":
        out["format"] = "linq-date-time"  # this century (see FORMATS)
    if closed and out.get("type") == "object" and "properties" in out and "additionalProperties" not in out:
        out["additionalProperties"] = False
    if node.get("nullable"):
        return {"anyOf": [{"type": "null"}, out]}
    return out


def _flatten_all_of(node: Any, schemas: dict[str, Any]) -> Any:
    """allOf of objects merged into one object (hypothesis-jsonschema cannot close an allOf whose
    parts each declare only some of the properties)."""
    if isinstance(node, list):
        return [_flatten_all_of(v, schemas) for v in node]
    if not isinstance(node, dict):
        return node
    node = {k: _flatten_all_of(v, schemas) for k, v in node.items()}
    parts = node.get("allOf")
    if isinstance(parts, list):
        merged: dict[str, Any] = {"type": "object", "properties": {}, "required": []}
        resolved = []
        for part in parts:
            while isinstance(part, dict) and "$ref" in part and len(part) == 1:
                part = _flatten_all_of(schemas[part["$ref"].rsplit("/", 1)[1]], schemas)
            resolved.append(part)
        if all(
            isinstance(p, dict) and p.get("type", "object") == "object" and "properties" in p
            for p in resolved
        ):
            for p in resolved:
                for name, prop in p["properties"].items():
                    merged["properties"][name] = prop  # later parts refine earlier ones (data)
                merged["required"] += [r for r in p.get("required", []) if r not in merged["required"]]
            rest = {k: v for k, v in node.items() if k != "allOf"}
            return {**rest, **merged}
    return node


def schema_for(name: str, *, closed: bool = True) -> dict[str, Any]:
    """A self-contained JSON Schema for one webhook of the document, e.g. `message.sent.v2026`,
    its event_type and webhook_version pinned to what that webhook says."""
    doc = document()
    schemas = doc["components"]["schemas"]
    flat = {k: _flatten_all_of(v, schemas) for k, v in schemas.items()}
    root = _flatten_all_of(doc["webhooks"][name], flat)
    while "$ref" in root and len(root) == 1:
        root = flat[root["$ref"].rsplit("/", 1)[1]]
    event_type, version = name.rsplit(".", 1)
    root = json.loads(json.dumps(root))
    root["properties"]["event_type"] = {"const": event_type}
    root["properties"]["webhook_version"] = {"const": "2025-01-01" if version == "v2025" else "2026-02-03"}
    converted = _convert({**root, "components": {"schemas": flat}}, closed=closed)
    return dict(converted)


def _date_times() -> st.SearchStrategy[str]:
    # Linq's clock: this century. (Before 2000 is refused as unusable, by design.)
    return st.datetimes(
        min_value=dt.datetime(2000, 1, 1),  # noqa: DTZ001 - naive bounds, as st.datetimes wants
        max_value=dt.datetime(2100, 1, 1),  # noqa: DTZ001
        timezones=st.just(dt.UTC),
    ).map(lambda d: d.isoformat().replace("+00:00", "Z"))


FORMATS: dict[str, st.SearchStrategy[str]] = {
    "uuid": st.uuids().map(str),
    "linq-date-time": _date_times(),
    "int32": st.just("0"),
}


def events(name: str) -> st.SearchStrategy[dict[str, Any]]:
    """Events of one webhook, each with a fresh event_id (so none is taken for Linq's retry)."""
    drawn: st.SearchStrategy[Any] = from_schema(schema_for(name), custom_formats=FORMATS)
    return drawn.map(lambda doc: {**doc, "event_id": str(uuid.uuid4())})


def error_bodies() -> st.SearchStrategy[dict[str, Any]]:
    """Linq's error envelope (ErrorResponse) as the schema allows it."""
    doc = document()
    schemas = doc["components"]["schemas"]
    root = _convert(
        {"$ref": "#/components/schemas/ErrorResponse", "components": {"schemas": schemas}}, closed=False
    )
    drawn: st.SearchStrategy[Any] = from_schema(root, custom_formats=FORMATS)
    return drawn
