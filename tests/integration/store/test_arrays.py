"""The page binds' array literals (`store.arrays`) read back in PostgreSQL as the values they
were made from: texts with every character a reason can hold, NULLs, floats, timestamps."""

from __future__ import annotations

import datetime as dt
import math
import uuid
from collections.abc import Iterator

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from worker.store import arrays


@pytest.fixture
def conn(database_url: str) -> Iterator[psycopg.Connection[tuple[object, ...]]]:
    with psycopg.connect(
        database_url.replace("postgresql+psycopg://", "postgresql://"), autocommit=True
    ) as c:
        yield c


def _read(conn: psycopg.Connection[tuple[object, ...]], literal: str, pg_type: str) -> object:
    row = conn.execute(f"SELECT CAST(%s AS {pg_type}[])", (literal,)).fetchone()
    assert row is not None
    return row[0]


# PostgreSQL text holds any character but NUL.
TEXT = st.text(st.characters(exclude_characters="\x00", codec="utf-8"), max_size=40)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.none() | TEXT, max_size=20))
def test_texts_read_back_as_written(
    conn: psycopg.Connection[tuple[object, ...]], values: list[str | None]
) -> None:
    assert _read(conn, arrays.texts(values), "text") == values


def test_the_texts_a_literal_could_misread_stay_texts(conn: psycopg.Connection[tuple[object, ...]]) -> None:
    tricky = ["NULL", "null", "", " ", "a,b", "{x}", '"quoted"', "back\\slash", "paced: 1/s, held 2 h", None]
    assert _read(conn, arrays.texts(tricky), "text") == tricky


def test_uuids_floats_and_timestamps_read_back(conn: psycopg.Connection[tuple[object, ...]]) -> None:
    ids = [uuid.uuid4() for _ in range(5)]
    assert _read(conn, arrays.uuids(ids), "uuid") == ids
    assert _read(conn, arrays.uuids([]), "uuid") == []
    delays = [0.0, 1800, 1e-05, 123456.789, 2.5e300, math.inf]
    assert _read(conn, arrays.floats(delays), "float8") == delays
    zone = dt.timezone(dt.timedelta(hours=-5))
    stamps = [
        dt.datetime(2026, 12, 3, 15, 0, 0, 123456, tzinfo=dt.UTC),
        None,
        dt.datetime(2026, 1, 1, tzinfo=zone),
    ]
    assert _read(conn, arrays.timestamps(stamps), "timestamptz") == stamps


def test_a_naive_datetime_is_refused() -> None:
    with pytest.raises(ValueError, match="naive datetime"):
        arrays.timestamps([dt.datetime(2026, 12, 3)])  # noqa: DTZ001 (the point of the test)
