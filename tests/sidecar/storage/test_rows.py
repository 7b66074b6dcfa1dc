"""Many rows per INSERT store what executemany stores, row for row and value for value
(floats bound as parameters, exactly), keep INSERT OR IGNORE's meaning within one statement,
and fail like executemany on a row sqlite refuses."""

from __future__ import annotations

import math
import sqlite3

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sidecar.storage import rows as rows_mod
from sidecar.storage.rows import insert_rows

values = st.one_of(
    st.none(), st.integers(-(2**63), 2**63 - 1), st.floats(allow_nan=False), st.text(max_size=8), st.binary(max_size=4)
)
IGNORE = "INSERT OR IGNORE INTO t (k, a, b) VALUES (?, ?, ?)"


def table() -> sqlite3.Connection:
    conn = sqlite3.connect(":memory:")
    conn.execute("CREATE TABLE t (n INTEGER PRIMARY KEY, k INTEGER UNIQUE, a, b)")
    return conn


def contents(conn: sqlite3.Connection) -> list[tuple[object, ...]]:
    return conn.execute("SELECT n, k, a, b, typeof(a), typeof(b) FROM t ORDER BY n").fetchall()


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 40), values, values), max_size=700), st.sampled_from([1, 3, 256]))
def test_many_rows_per_statement_store_what_executemany_stores(rows: list[tuple[int, object, object]], chunk: int) -> None:
    rows_mod.CHUNK_ROWS, saved = chunk, rows_mod.CHUNK_ROWS
    try:
        one, many = table(), table()
        one.executemany(IGNORE, rows)
        insert_rows(many, IGNORE, rows)
        assert contents(many) == contents(one)
    finally:
        rows_mod.CHUNK_ROWS = saved


def test_floats_are_stored_bit_for_bit() -> None:
    xs = [0.1, 1 / 3, 1765043112.1234567, 5e-324, 1.7976931348623157e308, -0.0, 2.675, 1e-05]
    conn = table()
    insert_rows(conn, IGNORE, [(i, x, None) for i, x in enumerate(xs)])
    got = [r[0] for r in conn.execute("SELECT a FROM t ORDER BY n")]
    assert [math.copysign(1, g) * abs(g) for g in got] == xs and [g.hex() for g in got] == [x.hex() for x in xs]


def test_a_refused_row_fails_the_insert_as_executemany_does() -> None:
    plain = "INSERT INTO t (k, a, b) VALUES (?, ?, ?)"
    rows = [(1, "a", None), (2, "b", None), (1, "dup", None)]
    with pytest.raises(sqlite3.IntegrityError):
        table().executemany(plain, rows)
    with pytest.raises(sqlite3.IntegrityError):
        insert_rows(table(), plain, rows)
    with pytest.raises(ValueError):
        insert_rows(table(), "DELETE FROM t WHERE k = ?", [(1,), (2,)])
