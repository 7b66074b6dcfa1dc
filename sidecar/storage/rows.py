"""Many rows per INSERT statement.

`executemany` runs one `sqlite3_step` per row, and the sqlite3 module lets go of the
interpreter lock around every step. In the writer thread each step then has to win the lock
back from the event loop's thread, which under load holds it almost all the time: a batch of
hundreds of rows took hundreds of hand-overs, the writer fell behind the requests, and the
request path paid a thread switch per row. `insert_rows` writes the same rows with a few
multi-row statements instead (`INSERT ... VALUES (...), (...), ...`): one step, one hand-over
per statement. The values are bound as parameters, as before, so every value (a float too)
is stored exactly as `executemany` stores it.
"""

from __future__ import annotations

import functools
import sqlite3
from collections.abc import Sequence
from typing import Any

CHUNK_ROWS = 256  # the most rows one statement carries (a power of two; sizes halve from it)


def insert_rows(conn: sqlite3.Connection, insert: str, rows: Sequence[Sequence[Any]]) -> None:
    """Run `insert`, an `INSERT ... VALUES (?, ..., ?)` for one row, for every row of `rows`,
    in order, as `conn.executemany(insert, rows)` would (an error aborts the statement)."""
    width = insert.count("?")
    limit = conn.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER) // max(width, 1)
    at = 0
    while at < len(rows):
        n = _chunk(len(rows) - at, max(1, min(CHUNK_ROWS, limit)))
        chunk = rows[at : at + n]
        if n == 1:
            conn.execute(insert, chunk[0])
        else:
            conn.execute(_multi(insert, n), [v for row in chunk for v in row])
        at += n


def _chunk(left: int, most: int) -> int:
    """The largest power of two that is at most `left` and `most` (few distinct statements,
    so sqlite3's statement cache keeps them all prepared)."""
    n = 1
    while n * 2 <= left and n * 2 <= most:
        n *= 2
    return n


@functools.lru_cache(maxsize=64)
def _multi(insert: str, n: int) -> str:
    head, sep, one = insert.rpartition("VALUES")
    if not sep:
        raise ValueError(f"not an INSERT ... VALUES statement: {insert!r}")
    return f"{head}VALUES {', '.join([one.strip()] * n)}"
