"""PostgreSQL array literals for the bulk binds of a page (a sweep's marks, its note).

psycopg adapts a Python list element by element in Python (a dumper lookup and call for each):
for a sweep page's five 1,000-element arrays that was a fifth of the sweep's own CPU
(bench/README.md §1). Joined here into one text literal each, PostgreSQL parses them instead;
the statements cast the bind (`CAST(:ids AS uuid[])`) as they did for lists.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterable


def uuids(values: Iterable[uuid.UUID]) -> str:
    """`{a,b,...}`: a UUID's text needs no quoting."""
    return "{" + ",".join(map(str, values)) + "}"


def _quoted(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def texts(values: Iterable[str | None]) -> str:
    """Each text quoted (so commas, braces, spaces and the word NULL stay text), None as NULL."""
    return "{" + ",".join("NULL" if v is None else _quoted(v) for v in values) + "}"


def floats(values: Iterable[float]) -> str:
    """repr of a float is text float8 reads back exactly (inf and nan included)."""
    return "{" + ",".join(map(repr, map(float, values))) + "}"


def timestamps(values: Iterable[dt.datetime | None]) -> str:
    """Aware datetimes as ISO 8601 with their offset, None as NULL."""
    out = []
    for v in values:
        if v is None:
            out.append("NULL")
        elif v.tzinfo is None:
            raise ValueError(f"a naive datetime cannot be bound as timestamptz: {v!r}")
        else:
            out.append('"' + v.isoformat() + '"')
    return "{" + ",".join(out) + "}"
