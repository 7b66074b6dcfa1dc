"""The stored answers as the event loop sees them.

`Entries` puts the synchronous `CacheStore` behind one database thread (so sqlite never
runs on the loop, and calls never overlap) and keeps in memory what every request asks:
which keys exist, when each was made and last delivered, and the semantic index. A miss
therefore costs no thread hop at all; a hit costs one, to read the stored message.

New answers are not written one transaction each: `put` adds them to a buffer that goes to
the database thread as one batch (one transaction) STORE_DELAY after the first, or at once
when anything else is asked of the thread, so calls still run in the order they were made.
The buffer and the batches under way hold at most MAX_PENDING_STORES answers: past that a
store is shed (counted in `shed`): under a load the disk cannot keep up with, the cost is a
lost cache entry, never memory without bound (and never a ledger row: that is not here).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np

from sidecar.cache.embedder import Vector
from sidecar.cache.semantic import SemanticIndex
from sidecar.cache.store import CacheStore, Entry

log = logging.getLogger(__name__)

T = TypeVar("T")
EVICT_TO = 0.9  # past the cap, evict down to this fraction of it
STORE_DELAY = 0.05  # seconds a new answer waits to share its transaction with others
MAX_PENDING_STORES = 256  # answers buffered or being written; more are shed


@dataclass
class Meta:
    """What the loop knows about a stored entry without reading it."""

    created_at: float
    used_at: float  # when its answer last went out (stored or served)
    volatile: tuple[str, ...]


class Entries:
    """The cache's store behind its database thread, with the key map and semantic index."""

    def __init__(self, store: CacheStore, max_bytes: int) -> None:
        self.store = store
        self.max_bytes = max_bytes
        self.index = SemanticIndex()
        self._meta: dict[str, Meta] = {}
        self._served: dict[str, tuple[float, int]] = {}  # key -> (last served, hits) not yet written
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sidecar-cache-db")
        self._writes: set[Future[Any]] = set()
        self.error: str | None = None  # the last failed store call, until one succeeds (storage health)
        # The buffer of writes for the next batch, in call order: an Entry to store, or the
        # hits noted before it; a newer store of the same key replaces the buffered one.
        self._buffer: list[Entry | dict[str, tuple[float, int]]] = []
        self._buffered: dict[str, tuple[Entry, asyncio.Future[list[str]]]] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._unwritten = 0  # answers buffered or in a batch under way (bounded by MAX_PENDING_STORES)
        self.shed = 0  # answers not stored because MAX_PENDING_STORES were waiting
        self.on_evicted: Callable[[int], None] | None = None  # told how many entries each batch evicted

    def __len__(self) -> int:
        return len(self._meta)

    # -- the database thread ------------------------------------------------------------

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """Run `fn(*args)` in the database thread and wait for it."""
        return await asyncio.wrap_future(self.write(fn, *args))

    def write(self, fn: Callable[..., T], *args: Any) -> Future[T]:
        """Queue `fn(*args)` in the database thread; failures are logged, `drain` waits for it."""
        if self._buffer:
            self._send()  # the stores buffered before this call run before it
        fut = self._pool.submit(fn, *args)
        self._writes.add(fut)
        fut.add_done_callback(self._written)
        return fut

    def _written(self, fut: Future[Any]) -> None:
        self._writes.discard(fut)
        if not fut.cancelled() and fut.exception() is not None:
            self.error = f"cache: {fut.exception()}"
            log.error("cache store call failed", exc_info=fut.exception())
        elif not fut.cancelled():
            self.error = None

    @property
    def busy(self) -> bool:
        """Whether database work is buffered, queued or running."""
        return bool(self._writes or self._buffer or self._unwritten)

    async def drain(self) -> None:
        """Wait for every buffered and queued database call."""
        while self._buffer or self._writes or self._unwritten:
            self._send()
            if self._writes:
                await asyncio.gather(*(asyncio.wrap_future(f) for f in list(self._writes)), return_exceptions=True)
            else:
                await asyncio.sleep(0)  # a batch is written: its callback is about to run

    async def close(self) -> None:
        """Write the hits noted, finish queued calls, close the store and the thread."""
        self.flush()
        await self.drain()
        try:
            await self.run(self.store.close)
        finally:
            self._pool.shutdown(wait=True)

    # -- entries ------------------------------------------------------------------------

    async def load(self, vectors_since: float | None) -> None:
        """Read the key map, and the vectors of entries made since `vectors_since` (None: none)."""
        self._meta = {k: Meta(c, u, v) for k, c, u, v in await self.run(self.store.metas)}
        if vectors_since is not None:
            rows = await self.run(lambda: list(self.store.indexed(vectors_since)))
            self.index.clear()
            for r in rows:
                self.index.add(r.bucket_key, r.exact_key, r.query, np.frombuffer(r.vector, dtype=np.float32))

    def meta(self, key: str) -> Meta | None:
        """The entry's times and volatile values, if it is stored."""
        return self._meta.get(key)

    async def get(self, key: str) -> Entry | None:
        """Read a stored entry."""
        entry = await self.run(self.store.get, key)
        if entry is None:
            self._forget(key)
        return entry

    def touch(self, key: str, now: float) -> None:
        """Note that the entry's answer was served at `now` (written with the next write or flush)."""
        meta = self._meta.get(key)
        if meta is not None:
            meta.used_at = now
        _, hits = self._served.get(key, (now, 0))
        self._served[key] = (now, hits + 1)

    def flush(self) -> None:
        """Queue the write of the hits noted since the last one."""
        if self._served:
            served, self._served = self._served, {}
            self.write(self.store.served, served)

    def put(self, entry: Entry) -> asyncio.Future[list[str]] | None:
        """Store `entry` (replacing its key's older one) with the next batch; the future gives
        the keys that batch evicted for room. None: the store was shed (see the module doc).

        The key is known at once: a lookup queued after this reads the new entry, as the
        buffer goes to the database thread before any later call.
        """
        key = entry.exact_key
        replaced = self._buffered.get(key)
        if replaced is None and self._unwritten >= MAX_PENDING_STORES:
            self.shed += 1
            return None
        self.index.remove(key)  # a replaced entry's vector must not linger
        self._meta[key] = Meta(entry.created_at, entry.used_at, entry.volatile)
        if self._served:  # eviction orders by last use: the latest hits first
            served, self._served = self._served, {}
            self._buffer.append(served)
        if replaced is None:
            self._unwritten += 1
            done: asyncio.Future[list[str]] = asyncio.get_running_loop().create_future()
        else:
            done = replaced[1]  # the older answer is not written at all: one future for both
        self._buffered[key] = (entry, done)
        self._buffer.append(entry)
        if self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(STORE_DELAY, self._send)
        return done

    def _send(self) -> None:
        """Hand the buffer to the database thread as one batch."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if not self._buffer:
            return
        ops, waiting = self._buffer, self._buffered
        self._buffer, self._buffered = [], {}
        stores = {key: entry for key, (entry, _) in waiting.items()}
        # Submitted here, not through write(): that would send the (now empty) buffer again.
        fut = self._pool.submit(self._write_batch, ops, stores)
        self._writes.add(fut)
        fut.add_done_callback(self._written)
        asyncio.wrap_future(fut).add_done_callback(lambda f: self._batch_done(f, waiting))

    def _batch_done(self, fut: asyncio.Future[list[str]], waiting: dict[str, tuple[Entry, asyncio.Future[list[str]]]]) -> None:
        self._unwritten -= len(waiting)
        # A failed batch is logged and noted in `error` by _written; its answers are not stored.
        victims = [] if fut.cancelled() or fut.exception() is not None else fut.result()
        for key in victims:
            self._forget(key)
        if victims and self.on_evicted is not None:
            self.on_evicted(len(victims))
        for i, (_, done) in enumerate(waiting.values()):
            if not done.done():
                done.set_result(victims if i == len(waiting) - 1 else [])

    def _write_batch(self, ops: list[Entry | dict[str, tuple[float, int]]], stores: dict[str, Entry]) -> list[str]:
        """In the database thread: the buffered writes in order, in one transaction, then
        evict the least recently used over the cap."""
        try:
            for op in ops:
                if isinstance(op, dict):
                    self.store.served(op, commit=False)
                elif stores.get(op.exact_key) is op:  # not replaced by a newer store of its key
                    self.store.put(op, commit=False)
            self.store.conn.commit()
        except BaseException:
            self.store.rollback()
            raise
        total = self.store.total_bytes
        if total <= self.max_bytes:
            return []
        newest = next((op.exact_key for op in reversed(ops) if isinstance(op, Entry)), None)  # as one put at a time would
        victims = [k for k in self.store.lru(total - int(self.max_bytes * EVICT_TO)) if k != newest]
        self.store.delete(victims)
        return victims

    async def set_vector(self, entry: Entry | tuple[str, str, str], vector: Vector) -> bool:
        """Store the prompt vector of an entry (or of `(key, bucket, query)`) and index it."""
        key, bucket, query = (
            (entry.exact_key, entry.bucket_key, entry.query) if isinstance(entry, Entry) else entry
        )
        if bucket is None or query is None:
            return False
        blob = np.asarray(vector, dtype=np.float32).tobytes()
        if not await self.run(self.store.set_embedding, key, blob):
            return False
        if key in self._meta:
            self.index.add(bucket, key, query, vector)
        return True

    async def unembedded(self, since: float) -> list[tuple[str, str, str]]:
        """(key, bucket, prompt) of servable entries made since `since` that have no vector."""
        rows = await self.run(self.store.unembedded, since)
        return [(k, b, q) for k, b, q in rows]

    async def sweep(self, expired_before: float, vectors_since: float | None) -> int:
        """Delete entries made before `expired_before`; drop vectors older than `vectors_since`."""
        self.flush()
        old = [k for k, m in self._meta.items() if m.created_at < expired_before]
        if old:
            await self.run(self.store.delete, old)
            for key in old:
                self._forget(key)
        if vectors_since is not None:
            for key, m in list(self._meta.items()):
                if m.created_at < vectors_since:
                    self.index.remove(key)
        return len(old)

    async def clear(self) -> int:
        """Delete every entry; returns how many there were."""
        await self.drain()
        n = await self.run(self.store.clear)
        self._meta.clear()
        self.index.clear()
        return n

    def _forget(self, key: str) -> None:
        if key in self._buffered:
            return  # a store of it is on its way
        self._meta.pop(key, None)
        self.index.remove(key)

