"""The stored answers as the event loop sees them.

`Entries` puts the synchronous `CacheStore` behind the daemon's one database thread (the
batch writer, sidecar.storage.batch, shared with the ledger and the audit log: sqlite never
runs on the loop, and calls never overlap) and keeps in memory what every request asks:
which keys exist, when each was made and last delivered, and the semantic index. A miss
therefore costs no thread hop at all; a hit costs one, to read the stored message.

New answers are not written one transaction each: `put` adds them to the cache's sink,
which the writer sends to the thread as one batch (one transaction) STORE_DELAY after the
first, or at once when anything else is asked of the thread, so calls still run in the
order they were made. The sink holds at most MAX_PENDING_STORES answers waiting or being
written: past that a store is shed (counted in `shed`): under a load the disk cannot keep
up with, the cost is a lost cache entry, never memory without bound (and never a ledger
row: that is not here). A batch that fails is not retried: its answers are not stored.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np

from sidecar.cache.embedder import Vector
from sidecar.cache.semantic import SemanticIndex
from sidecar.cache.store import CacheStore, Entry
from sidecar.storage.batch import BatchWriter, Sink

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


class _Store:
    """A store waiting in the sink; a newer store of its key replaces `entry` until it leaves.
    `served`: the hits noted before it, written first (eviction orders by last use)."""

    __slots__ = ("done", "entry", "served")

    def __init__(self, entry: Entry, done: asyncio.Future[list[str]], served: dict[str, tuple[float, int]]) -> None:
        self.entry = entry
        self.done = done
        self.served = served


class Entries:
    """The cache's store behind the database thread, with the key map and semantic index."""

    def __init__(self, store: CacheStore, max_bytes: int, writer: BatchWriter | None = None) -> None:
        self.store = store
        self.max_bytes = max_bytes
        self.index = SemanticIndex()
        self._meta: dict[str, Meta] = {}
        self._served: dict[str, tuple[float, int]] = {}  # key -> (last served, hits) not yet written
        self.writer = writer or BatchWriter()
        self._owns_writer = writer is None
        self._sink: Sink[_Store] = Sink(
            "cache",
            lambda ops: self._write_batch(ops),  # looked up per batch (a test wraps it)
            delay=STORE_DELAY,
            limit=MAX_PENDING_STORES,
            retry_delays=(),
            on_take=self._taken,
            on_written=self._batch_done,
            on_failed=self._batch_failed,
        )
        self.writer.attach(self._sink)
        self._writes: set[Future[Any]] = set()
        self.error: str | None = None  # the last failed store call, until one succeeds (storage health)
        self._buffered: dict[str, _Store] = {}  # stores still in the sink's queue, by key
        self.on_evicted: Callable[[int], None] | None = None  # told how many entries each batch evicted

    @property
    def shed(self) -> int:
        """Answers not stored because MAX_PENDING_STORES were waiting."""
        return self._sink.shed

    def __len__(self) -> int:
        return len(self._meta)

    # -- the database thread ------------------------------------------------------------

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """Run `fn(*args)` in the database thread and wait for it."""
        result: T = await asyncio.wrap_future(self.write(fn, *args))
        return result

    def write(self, fn: Callable[..., T], *args: Any) -> Future[T]:
        """Queue `fn(*args)` in the database thread, after the stores put before it; failures
        are logged, `drain` waits for it."""
        fut = self._sink.call(fn, *args)
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
        return bool(self._writes or self._sink.pending)

    async def drain(self) -> None:
        """Wait for every buffered and queued database call."""
        while self._sink.pending or self._writes:
            await self._sink.flush()
            if self._writes:
                await asyncio.gather(*(asyncio.wrap_future(f) for f in list(self._writes)), return_exceptions=True)

    async def close(self) -> None:
        """Write the hits noted, finish queued calls, close the store, leave the writer."""
        self.flush()
        await self.drain()
        try:
            await self.run(self.store.close)
        finally:
            await self.writer.detach(self._sink)
            if self._owns_writer:
                await self.writer.close()

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

    def reserve(self) -> bool:
        """Hold a place for an answer stored later (`put(entry, reserved=True)` or
        `unreserve()`); False, counted as shed, when MAX_PENDING_STORES are waiting."""
        return self._sink.reserve()

    def unreserve(self) -> None:
        """Give back a place `reserve()` held."""
        self._sink.unreserve()

    def put(self, entry: Entry, *, reserved: bool = False) -> asyncio.Future[list[str]] | None:
        """Store `entry` (replacing its key's older one) with the next batch; the future gives
        the keys that batch evicted for room. None: the store was shed (see the module doc).
        `reserved`: it takes the place a `reserve()` held (it is never shed then).

        The key is known at once: a lookup queued after this reads the new entry, as the
        sink's stores go to the database thread before any later call.
        """
        key = entry.exact_key
        op = self._buffered.get(key)
        if op is not None:  # the older answer is not written at all: one future for both
            op.entry = entry
            if reserved:
                self._sink.unreserve()
        else:
            op = _Store(entry, asyncio.get_running_loop().create_future(), self._served)
            if not self._sink.add(op, reserved=reserved):  # MAX_PENDING_STORES are waiting: shed (counted)
                return None
            self._served = {}  # eviction orders by last use: the latest hits go first
            self._buffered[key] = op
        self.index.remove(key)  # a replaced entry's vector must not linger
        self._meta[key] = Meta(entry.created_at, entry.used_at, entry.volatile)
        return op.done

    def _taken(self, ops: list[_Store]) -> None:
        """On the loop, as a batch leaves for the thread: its stores can no longer be replaced."""
        for op in ops:
            if self._buffered.get(op.entry.exact_key) is op:
                del self._buffered[op.entry.exact_key]

    def _batch_done(self, ops: list[_Store], victims: list[str]) -> None:
        self.error = None
        for key in victims:
            self._forget(key)
        if victims and self.on_evicted is not None:
            self.on_evicted(len(victims))
        for i, op in enumerate(ops):
            if not op.done.done():
                op.done.set_result(victims if i == len(ops) - 1 else [])

    def _batch_failed(self, ops: list[_Store], e: Exception, failures: int) -> bool:
        """Not retried: the batch's answers are not stored (a later request asks upstream)."""
        self.error = f"cache: {e}"
        log.error("cache store call failed", exc_info=e)
        for op in ops:
            if not op.done.done():
                op.done.set_result([])
        return False

    def _write_batch(self, ops: list[_Store]) -> list[str]:
        """In the database thread: the batch's writes in order, in one transaction, then
        evict the least recently used over the cap."""
        try:
            for op in ops:
                if op.served:
                    self.store.served(op.served, commit=False)
                self.store.put(op.entry, commit=False)
            self.store.conn.commit()
        except BaseException:
            self.store.rollback()
            raise
        total = self.store.total_bytes
        if total <= self.max_bytes:
            return []
        newest = ops[-1].entry.exact_key  # as one put at a time would
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

