"""One async database interface over SQLite and PostgreSQL.

SQL is written once, portable, with ``?`` placeholders (rewritten to ``$1..`` for
PostgreSQL). Every access runs in a transaction that holds a write lock from its first
statement: ``BEGIN IMMEDIATE`` on SQLite, row locks (``Tx.for_update``) on PostgreSQL, so
the store's read-check-write steps (leases, versions, the audit chain) cannot interleave.

    sqlite:///path/to/central.db     one file (the default, in the data dir)
    postgresql://user@host:port/db   several stateless replicas may share it
"""

from __future__ import annotations

import asyncio
import logging
import re
import sqlite3
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sidecar.errors import ConfigError
from sidecar.tasks import TaskSet

if TYPE_CHECKING:
    import asyncpg

Row = dict[str, Any]
log = logging.getLogger(__name__)


class Tx(ABC):
    """One transaction: run statements, read rows as dicts."""

    dialect: str
    for_update: str  # appended to a SELECT that must lock its rows (empty on SQLite)

    @abstractmethod
    async def fetch(self, sql: str, *args: Any) -> list[Row]:
        """All rows of a query."""

    async def fetchone(self, sql: str, *args: Any) -> Row | None:
        """The first row of a query, if any."""
        rows = await self.fetch(sql, *args)
        return rows[0] if rows else None

    async def fetchval(self, sql: str, *args: Any) -> Any:
        """The first column of the first row (None when there is no row)."""
        row = await self.fetchone(sql, *args)
        return None if row is None else next(iter(row.values()))

    @abstractmethod
    async def execute(self, sql: str, *args: Any) -> None:
        """Run one statement."""

    @abstractmethod
    async def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        """Run one statement for each row of arguments."""


class Database(ABC):
    """A connection (pool) to the central store."""

    dialect: str
    url: str

    @abstractmethod
    async def open(self) -> None:
        """Connect."""

    @abstractmethod
    async def close(self) -> None:
        """Disconnect."""

    @abstractmethod
    def tx(self) -> AbstractAsyncContextManager[Tx]:
        """A write-locked transaction: ``async with db.tx() as tx: ...``."""

    async def listen(self, channel: str, callback: Callable[[str], Awaitable[None] | None]) -> None:  # noqa: B027
        """Call `callback(payload)` on every notification on `channel` (PostgreSQL only)."""


def connect(url: str) -> Database:
    """The database named by `url` (``sqlite:///path`` or ``postgresql://...``)."""
    if url.startswith("sqlite:///"):
        return SqliteDatabase(Path(url.removeprefix("sqlite:///")).expanduser(), url)
    if url.startswith(("postgresql://", "postgres://")):
        return PostgresDatabase(url)
    raise ConfigError(f"--db {url!r}: expected sqlite:///PATH or postgresql://USER@HOST/DB")


# ------------------------------------------------------------------------------- SQLite


class _SqliteTx(Tx):
    dialect = "sqlite"
    for_update = ""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    async def fetch(self, sql: str, *args: Any) -> list[Row]:
        cur = self.conn.execute(sql, args)
        names = [d[0] for d in cur.description or ()]
        return [dict(zip(names, r, strict=True)) for r in cur.fetchall()]

    async def execute(self, sql: str, *args: Any) -> None:
        self.conn.execute(sql, args)

    async def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        self.conn.executemany(sql, rows)


class SqliteDatabase(Database):
    """One SQLite file in WAL mode; one connection, transactions serialised in-process.

    Statements run on the event loop: they take microseconds to a few milliseconds, and the
    embedded store is meant for one process (several replicas need PostgreSQL)."""

    dialect = "sqlite"

    def __init__(self, path: Path, url: str) -> None:
        self.path, self.url = path, url
        self._conn: sqlite3.Connection | None = None
        self._lock = asyncio.Lock()

    async def open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA busy_timeout=10000")
        conn.execute("PRAGMA foreign_keys=ON")
        self._conn = conn

    async def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def tx(self) -> AbstractAsyncContextManager[Tx]:
        return self._tx()

    @asynccontextmanager
    async def _tx(self) -> AsyncIterator[Tx]:
        assert self._conn is not None, "database not opened"
        async with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield _SqliteTx(self._conn)
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")


# --------------------------------------------------------------------------- PostgreSQL

_PLACEHOLDER = re.compile(r"\?")


def _pg_sql(sql: str, cache: dict[str, str] = {}) -> str:  # noqa: B006 - a deliberate memo
    out = cache.get(sql)
    if out is None:
        n = iter(range(1, 10_000))
        out = cache[sql] = _PLACEHOLDER.sub(lambda _m: f"${next(n)}", sql)
    return out


def _plain(value: Any) -> Any:
    # SUM over BIGINT is NUMERIC in PostgreSQL; the store deals in int and float only.
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    return value


class _PgTx(Tx):
    dialect = "postgresql"
    for_update = " FOR UPDATE"

    def __init__(self, conn: asyncpg.Connection[Any]) -> None:
        self.conn = conn

    async def fetch(self, sql: str, *args: Any) -> list[Row]:
        rows = await self.conn.fetch(_pg_sql(sql), *args)
        return [{k: _plain(v) for k, v in r.items()} for r in rows]

    async def execute(self, sql: str, *args: Any) -> None:
        await self.conn.execute(_pg_sql(sql), *args)

    async def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        await self.conn.executemany(_pg_sql(sql), rows)


class PostgresDatabase(Database):
    """An asyncpg pool, plus one dedicated connection for LISTEN."""

    dialect = "postgresql"

    def __init__(self, url: str, max_size: int = 10) -> None:
        self.url, self.max_size = url, max_size
        self._pool: asyncpg.Pool[Any] | None = None
        self._listener: asyncpg.Connection[Any] | None = None
        self._channels: dict[str, Callable[[str], Any]] = {}
        self._tasks = TaskSet()
        self._closing = False

    async def open(self) -> None:
        import asyncpg

        try:
            self._pool = await asyncpg.create_pool(self.url, min_size=1, max_size=self.max_size)
        except (OSError, asyncpg.PostgresError) as e:
            raise ConfigError(f"cannot connect to {self.url}: {e}") from None

    async def close(self) -> None:
        self._closing = True
        await self._tasks.close()
        if self._listener is not None:
            await self._listener.close()
            self._listener = None
        if self._pool is not None:
            await self._pool.close()
            self._pool = None

    def tx(self) -> AbstractAsyncContextManager[Tx]:
        return self._tx()

    @asynccontextmanager
    async def _tx(self) -> AsyncIterator[Tx]:
        assert self._pool is not None, "database not opened"
        async with self._pool.acquire() as conn, conn.transaction():
            yield _PgTx(conn)

    async def listen(self, channel: str, callback: Callable[[str], Awaitable[None] | None]) -> None:
        self._channels[channel] = callback
        if self._listener is None:
            await self._connect_listener()
        else:
            await self._add_listener(self._listener, channel, callback)

    async def _add_listener(self, conn: asyncpg.Connection[Any], channel: str, callback: Callable[[str], Any]) -> None:
        def on_notify(_conn: Any, _pid: int, _channel: str, payload: str) -> None:
            callback(payload)

        await conn.add_listener(channel, on_notify)

    async def _connect_listener(self) -> None:
        import asyncpg

        conn = await asyncpg.connect(self.url)
        for channel, callback in self._channels.items():
            await self._add_listener(conn, channel, callback)
        conn.add_termination_listener(self._listener_lost)
        self._listener = conn

    def _listener_lost(self, _conn: Any) -> None:
        # A restart, failover or idle timeout cut LISTEN: reconnect, then wake every
        # listener once, since notifications sent meanwhile are lost.
        self._listener = None
        if not self._closing:
            self._tasks.spawn(self._relisten(), name="central-relisten")

    async def _relisten(self) -> None:
        import asyncpg

        delay = 0.2
        while not self._closing:
            try:
                await self._connect_listener()
            except (OSError, asyncpg.PostgresError) as e:
                log.warning("central: LISTEN connection lost; reconnecting in %.1f s (%s)", delay, e)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)
                continue
            for callback in self._channels.values():
                callback("")
            return
