"""The cache's tables in the sidecar's sqlite store (created by migration m003_cache_entries).

`CacheStore` is synchronous and owns one connection: the stage calls it from its own single
database thread, so calls never overlap and the event loop never waits on sqlite.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
import sqlite_utils

from sidecar.ledger.store import open_db

COUNTERS = (
    "lookups",
    "hits_exact",
    "hits_semantic",
    "misses",
    "bypass",
    "stored",
    "evicted",
    "shadow_would_hit",
    "shadow_agreed",
    "semantic_skipped",
    "shed",  # answers not stored because too many stores were waiting for the disk
    "tokens_saved",
    "usd_saved",
)
_COLUMNS = (
    "exact_key, prefix_key, bucket_key, query, message, volatile, model, provider, input_tokens, "
    "output_tokens, cache_read_tokens, cache_write_tokens, cost_usd, semantic_ok, created_at, used_at, hits, size"
)


@dataclass
class Entry:
    """One stored answer and what it cost to make."""

    exact_key: str
    prefix_key: str
    message: dict[str, Any]
    created_at: float
    used_at: float
    bucket_key: str | None = None
    query: str | None = None
    volatile: tuple[str, ...] = ()
    model: str | None = None
    provider: str = ""
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    cost_usd: float = 0.0
    semantic_ok: bool = False
    hits: int = 0
    size: int = 0
    _blob: bytes = field(default=b"", repr=False)

    @property
    def tokens(self) -> int:
        """Every token the original request used."""
        return self.input_tokens + self.output_tokens + self.cache_read_tokens + self.cache_write_tokens

    def blob(self) -> bytes:
        """The message as stored."""
        if not self._blob:
            self._blob = msgspec.json.encode(self.message)
        return self._blob


@dataclass(frozen=True)
class Indexed:
    """A stored prompt vector, as the semantic index loads it."""

    bucket_key: str
    exact_key: str
    query: str
    vector: bytes


class CacheStore:
    """Reads and writes the cache tables through one connection."""

    def __init__(self, db: sqlite_utils.Database) -> None:
        self.db = db
        self.conn: sqlite3.Connection = db.conn
        self._total: int | None = None  # bytes stored, kept up to date by every write

    @property
    def total_bytes(self) -> int:
        """The size of every stored entry, without scanning the table on each write."""
        if self._total is None:
            self._total = self.sizes()[1]
        return self._total

    @classmethod
    def open(cls, path: Path) -> CacheStore:
        """Open (creating and migrating if needed) the store at `path`."""
        return cls(open_db(path))

    def close(self) -> None:
        """Close the connection."""
        self.conn.close()

    # -- entries ------------------------------------------------------------------------

    def get(self, exact_key: str) -> Entry | None:
        """The entry stored under `exact_key`, if any."""
        row = self.conn.execute(f"SELECT {_COLUMNS} FROM cache_entries WHERE exact_key = ?", (exact_key,)).fetchone()
        return None if row is None else _entry(row)

    def put(self, entry: Entry, commit: bool = True) -> int:
        """Store `entry` (replacing one with the same key); returns its size in bytes.
        `commit=False` leaves the transaction open for more (then `commit()` or `rollback()`)."""
        blob = entry.blob()
        entry.size = len(blob) + len((entry.query or "").encode())
        total = self.total_bytes
        old = self.conn.execute("SELECT size FROM cache_entries WHERE exact_key = ?", (entry.exact_key,)).fetchone()
        self.conn.execute(
            f"INSERT OR REPLACE INTO cache_entries ({_COLUMNS}) VALUES ({', '.join('?' * 18)})",
            (
                entry.exact_key,
                entry.prefix_key,
                entry.bucket_key,
                entry.query,
                blob,
                json.dumps(list(entry.volatile)),
                entry.model,
                entry.provider,
                entry.input_tokens,
                entry.output_tokens,
                entry.cache_read_tokens,
                entry.cache_write_tokens,
                entry.cost_usd,
                int(entry.semantic_ok),
                entry.created_at,
                entry.used_at,
                entry.hits,
                entry.size,
            ),
        )
        if commit:
            self.conn.commit()
        self._total = total + entry.size - (old[0] if old else 0)
        return entry.size

    def set_embedding(self, exact_key: str, vector: bytes) -> bool:
        """Attach a prompt embedding to a stored entry; False when the entry is gone."""
        total = self.total_bytes
        cur = self.conn.execute(
            "UPDATE cache_entries SET embedding = ?, size = size + ? WHERE exact_key = ? AND embedding IS NULL",
            (vector, len(vector), exact_key),
        )
        self.conn.commit()
        if cur.rowcount > 0:
            self._total = total + len(vector)
        return cur.rowcount > 0

    def served(self, hits: dict[str, tuple[float, int]], commit: bool = True) -> None:
        """Record hits: key -> (when last served, how many times)."""
        self.conn.executemany(
            "UPDATE cache_entries SET used_at = max(used_at, ?), hits = hits + ? WHERE exact_key = ?",
            [(at, n, key) for key, (at, n) in hits.items()],
        )
        if commit:
            self.conn.commit()

    def rollback(self) -> None:
        """Drop the writes of the open transaction (the size is counted again when next asked)."""
        self.conn.rollback()
        self._total = None

    def delete(self, keys: Iterable[str]) -> int:
        """Delete the entries `keys`; returns how many there were."""
        keys = list(keys)
        total = self.total_bytes
        n = 0
        for i in range(0, len(keys), 500):
            chunk = keys[i : i + 500]
            sizes = self.conn.execute(
                f"DELETE FROM cache_entries WHERE exact_key IN ({', '.join('?' * len(chunk))}) RETURNING size", chunk
            ).fetchall()
            n += len(sizes)
            total -= sum(r[0] for r in sizes)
        self.conn.commit()
        self._total = total
        return n

    def metas(self) -> list[tuple[str, float, float, tuple[str, ...]]]:
        """(key, created_at, used_at, volatile values) of every entry."""
        rows = self.conn.execute("SELECT exact_key, created_at, used_at, volatile FROM cache_entries")
        return [(k, c, u, tuple(json.loads(v or "[]"))) for k, c, u, v in rows]

    def expired(self, before: float) -> list[str]:
        """Keys of entries created before `before`."""
        return [r[0] for r in self.conn.execute("SELECT exact_key FROM cache_entries WHERE created_at < ?", (before,))]

    def lru(self, free: int) -> list[str]:
        """The least recently used keys whose sizes add up to at least `free` bytes."""
        out: list[str] = []
        total = 0
        for key, size in self.conn.execute("SELECT exact_key, size FROM cache_entries ORDER BY used_at"):
            if total >= free:
                break
            out.append(key)
            total += size
        return out

    def sizes(self) -> tuple[int, int]:
        """(number of entries, their total size in bytes)."""
        n, total = self.conn.execute("SELECT count(*), coalesce(sum(size), 0) FROM cache_entries").fetchone()
        return int(n), int(total)

    def indexed(self, since: float) -> Iterator[Indexed]:
        """The embedded entries created at or after `since` (for the semantic index)."""
        rows = self.conn.execute(
            "SELECT bucket_key, exact_key, query, embedding FROM cache_entries "
            "WHERE embedding IS NOT NULL AND semantic_ok = 1 AND created_at >= ?",
            (since,),
        )
        for bucket, key, query, vec in rows:
            yield Indexed(bucket, key, query, vec)

    def unembedded(self, since: float) -> list[tuple[str, str, str]]:
        """(key, bucket, prompt) of servable entries still waiting for an embedding."""
        return list(
            self.conn.execute(
                "SELECT exact_key, bucket_key, query FROM cache_entries "
                "WHERE embedding IS NULL AND semantic_ok = 1 AND query IS NOT NULL AND created_at >= ?",
                (since,),
            )
        )

    def clear(self) -> int:
        """Delete every entry; returns how many there were."""
        cur = self.conn.execute("DELETE FROM cache_entries")
        self.conn.commit()
        self._total = 0
        return cur.rowcount

    # -- counters and shadow log ------------------------------------------------------------

    def add_counters(self, deltas: dict[str, float]) -> None:
        """Add `deltas` to the cumulative counters."""
        self.conn.executemany(
            "INSERT INTO cache_stats (name, value) VALUES (?, ?) "
            "ON CONFLICT(name) DO UPDATE SET value = value + excluded.value",
            [(k, v) for k, v in deltas.items() if v],
        )
        self.conn.commit()

    @staticmethod
    def empty_counters() -> dict[str, float]:
        """Every counter at 0."""
        return dict.fromkeys(COUNTERS, 0.0)

    def counters(self) -> dict[str, float]:
        """The cumulative counters (every name in COUNTERS, 0 when never counted)."""
        out = self.empty_counters()
        out.update({k: float(v) for k, v in self.conn.execute("SELECT name, value FROM cache_stats")})
        return out

    def add_shadow(self, row: dict[str, Any]) -> None:
        """Log one would-be semantic hit of shadow mode."""
        self.conn.execute(
            "INSERT OR REPLACE INTO cache_shadow (request_id, ts, entry_key, similarity, query, candidate_query, agreement) "
            "VALUES (:request_id, :ts, :entry_key, :similarity, :query, :candidate_query, :agreement)",
            row,
        )
        self.conn.commit()


def summary(mode: str, counters: dict[str, float], entries: int, size: int, max_bytes: int) -> dict[str, Any]:
    """The `CacheStats` document (docs/control-api.md) from the counters and the table's size."""
    lookups = counters["lookups"]
    hits = counters["hits_exact"] + counters["hits_semantic"]
    return {
        "mode": mode,
        "entries": entries,
        "bytes": size,
        "max_bytes": max_bytes,
        **{k: int(v) for k, v in counters.items() if k != "usd_saved"},
        "hit_rate": round(hits / lookups, 4) if lookups else 0.0,
        "usd_saved": round(counters["usd_saved"], 6),
    }


def _entry(row: tuple[Any, ...]) -> Entry:
    (key, prefix, bucket, query, blob, volatile, model, provider, i, o, cr, cw, cost, sem, created, used, hits, size) = row
    return Entry(
        exact_key=key,
        prefix_key=prefix,
        message=msgspec.json.decode(blob),
        created_at=created,
        used_at=used,
        bucket_key=bucket,
        query=query,
        volatile=tuple(json.loads(volatile or "[]")),
        model=model,
        provider=provider or "",
        input_tokens=i or 0,
        output_tokens=o or 0,
        cache_read_tokens=cr or 0,
        cache_write_tokens=cw or 0,
        cost_usd=cost or 0.0,
        semantic_ok=bool(sem),
        hits=hits,
        size=size,
        _blob=blob,
    )
