"""The usage ledger: prices each record on the hot path and writes batches in the background."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from dataclasses import fields
from pathlib import Path
from typing import Any

import sqlite_utils

from sidecar.ledger.pricing import Pricing
from sidecar.ledger.record import UsageRecord
from sidecar.ledger.store import open_db
from sidecar.tasks import TaskSet

log = logging.getLogger(__name__)

BATCH_SIZE = 500
# Records wait this long to share one transaction: one write per request would cost more
# CPU than the proxying itself (bench/overhead.py). flush() and close() skip the wait.
FLUSH_INTERVAL = 0.2
_RETRY_DELAYS = (0.1, 0.5, 2.0, 5.0)  # seconds between attempts after a failed write
_COLUMNS = tuple(f.name for f in fields(UsageRecord))
_INSERT = (
    f"INSERT OR IGNORE INTO usage ({', '.join(_COLUMNS)}) "
    f"VALUES ({', '.join('?' for _ in _COLUMNS)})"
)


class Ledger:
    """Records usage without blocking: `record()` queues, a background task writes to sqlite.

    `record()` must be called from the event loop's thread. A failed write is retried
    (the batch is one transaction, so a retry never duplicates rows); records are only
    dropped, loudly, when a write still fails while the ledger closes.
    """

    def __init__(self, db_path: Path, pricing: Pricing) -> None:
        self.db_path = db_path
        self.pricing = pricing
        self._db: sqlite_utils.Database | None = None
        self._queue: deque[UsageRecord] = deque()
        self._wake = asyncio.Event()
        self._urgent = asyncio.Event()
        self._progress = asyncio.Condition()
        self._tasks = TaskSet()
        self._recorded = 0  # records accepted so far
        self._done = 0  # records written (or, on close, given up on) so far
        self._closing = False
        self._closed = False

    async def start(self) -> None:
        """Open the store and the price data (in a thread), then start the flusher."""
        self._db = await asyncio.to_thread(open_db, self.db_path)
        await asyncio.to_thread(self.pricing.warm)
        self._tasks.spawn(self._flusher(), name="ledger-flusher")

    def record(self, rec: UsageRecord) -> UsageRecord:
        """Price `rec`, queue it for writing and return it; never blocks."""
        model = rec.upstream_model or rec.requested_model
        rec.cost_usd, _ = self.pricing.cost(
            rec.provider,
            model,
            rec.input_tokens,
            rec.output_tokens,
            rec.cache_read_tokens,
            rec.cache_write_tokens,
        )
        if self._closed:
            log.error("usage record %s arrived after the ledger closed; not stored", rec.id)
            return rec
        self._queue.append(rec)
        self._recorded += 1
        self._wake.set()
        return rec

    @property
    def pending(self) -> int:
        """Records accepted but not yet on disk."""
        return self._recorded - self._done

    async def flush(self) -> None:
        """Wait until everything recorded so far is on disk."""
        target = self._recorded
        if self._done >= target:
            return
        if self._db is None:
            raise RuntimeError("Ledger.flush() before start()")
        self._urgent.set()
        self._wake.set()
        async with self._progress:
            await self._progress.wait_for(lambda: self._done >= target)

    async def close(self) -> None:
        """Write what is queued, stop the flusher and close the store."""
        if self._closed:
            return
        self._closing = True
        if self._db is None:
            if self.pending:
                log.error("ledger closed before start(); %d usage records not stored", self.pending)
        else:
            while self.pending:  # records may still arrive while the last batch is written
                await self.flush()
        self._closed = True
        await self._tasks.close()
        if self._db is not None:
            db, self._db = self._db, None
            await asyncio.to_thread(db.close)

    async def _flusher(self) -> None:
        failures = 0
        while True:
            await self._wake.wait()
            if not self._urgent.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._urgent.wait(), FLUSH_INTERVAL)
            self._wake.clear()
            self._urgent.clear()
            while self._queue:
                batch = [self._queue.popleft() for _ in range(min(BATCH_SIZE, len(self._queue)))]
                try:
                    await asyncio.to_thread(self._write, batch)
                except Exception:
                    failures += 1
                    if self._closing and failures > 1:
                        log.exception(
                            "lost %d usage records: the store could not be written", len(batch)
                        )
                    else:
                        log.exception("writing %d usage records failed; will retry", len(batch))
                        self._queue.extendleft(reversed(batch))
                        delay = _RETRY_DELAYS[min(failures, len(_RETRY_DELAYS)) - 1]
                        await asyncio.sleep(0 if self._closing else delay)
                        continue
                else:
                    failures = 0
                self._done += len(batch)
                async with self._progress:
                    self._progress.notify_all()

    def _write(self, batch: list[UsageRecord]) -> None:
        """Insert `batch` in one transaction (runs in a worker thread)."""
        assert self._db is not None
        rows: list[tuple[Any, ...]] = [tuple(getattr(r, c) for c in _COLUMNS) for r in batch]
        with self._db.atomic():
            self._db.conn.executemany(_INSERT, rows)
