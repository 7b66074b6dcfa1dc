"""The usage ledger: prices each record on the hot path and writes batches in the background."""

from __future__ import annotations

import asyncio
import logging
import operator
import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import sqlite_utils

from sidecar.ledger.journal import Journal, usage_line
from sidecar.ledger.pricing import Pricing
from sidecar.ledger.record import INSERT_USAGE, USAGE_COLUMNS, UsageRecord
from sidecar.ledger.store import open_db
from sidecar.storage.batch import BATCH_SIZE as BATCH_SIZE  # the ledger batches as every sink does
from sidecar.storage.batch import BatchWriter, Sink
from sidecar.storage.rows import insert_rows

log = logging.getLogger(__name__)

# A failure that says nothing about the rows (the disk, a lock, a read-only file): the batch
# is retried as it is. Any other failure is a row sqlite cannot take: it is isolated.
_TRANSIENT = (sqlite3.OperationalError, OSError)


def scrub(text: str) -> str:
    """`text` as valid UTF-8: lone surrogates (from undecodable header bytes) become '?'."""
    return text.encode("utf-8", "replace").decode("utf-8")


_ROW = operator.attrgetter(*USAGE_COLUMNS)  # a row's values, in one call


def _values(rec: UsageRecord) -> list[Any]:
    """The row's values in column order, every string made valid UTF-8 (in `rec` too)."""
    values = list(_ROW(rec))
    for i, value in enumerate(values):
        if type(value) is str and not value.isascii():
            values[i] = clean = scrub(value)
            setattr(rec, USAGE_COLUMNS[i], clean)
    return values


class Ledger:
    """Records usage without blocking: `record()` queues, the batch writer writes to sqlite.

    `record()` must be called from the event loop's thread. With a journal, each record is
    also added to it (the request path syncs it before the answer's last byte). A failed
    write is retried (the batch is one transaction, so a retry never duplicates rows) for as
    long as the process lives; a row sqlite refuses is written alone, or dropped loudly, so
    one bad row never holds back the others. On close, what still cannot be written stays in
    the journal for the next start. `writer` is the daemon's one batch writer
    (sidecar.storage.batch), shared with the audit log and the cache; without one the
    ledger runs its own.
    """

    def __init__(
        self, db_path: Path, pricing: Pricing, journal: Journal | None = None, writer: BatchWriter | None = None
    ) -> None:
        self.db_path = db_path
        self.pricing = pricing
        self.journal = journal
        self.error: str | None = None  # the last failed write, until a write succeeds
        self.writer = writer
        self._owns_writer = writer is None
        self._db: sqlite_utils.Database | None = None
        self._sink: Sink[tuple[UsageRecord, int]] = Sink(
            "ledger",
            self._write_items,
            on_take=self._taken,
            on_written=self._written,
            on_failed=self._failed,
        )
        self._closed = False

    async def start(self) -> None:
        """Open the store and the price data (in a thread), then join the batch writer."""
        self._db = await asyncio.to_thread(open_db, self.db_path)
        await asyncio.to_thread(self.pricing.warm)
        if self.writer is None:
            self.writer = BatchWriter()
        self.writer.attach(self._sink)

    def record(self, rec: UsageRecord, models: Sequence[str] | None = None) -> UsageRecord:
        """Price `rec` (by the first of `models` with a price; by default the model that
        served it), queue it for writing (and add it to the journal) and return it; never blocks."""
        if models is None:
            model = rec.upstream_model or rec.requested_model
            models = (model,) if model else ()
        rec.cost_usd, _ = self.pricing.cost_of_first(
            rec.provider, models, rec.input_tokens, rec.output_tokens, rec.cache_read_tokens, rec.cache_write_tokens
        )
        if self._closed:
            log.error("usage record %s arrived after the ledger closed; not stored", rec.id)
            return rec
        seg = 0
        if self.journal is None:
            _values(rec)  # scrubbed all the same
        else:
            try:
                seg = self.journal.add(usage_line(_values(rec)))
            except Exception as e:  # a value JSON cannot hold
                log.error("usage record %s cannot be journaled (%s); it is only queued", rec.id, e)
        self._sink.add((rec, seg))
        return rec

    @property
    def pending(self) -> int:
        """Records accepted but not yet on disk."""
        return self._sink.pending

    async def flush(self) -> None:
        """Wait until everything recorded so far is on disk."""
        if not self._sink.pending:
            return
        if self._db is None:
            raise RuntimeError("Ledger.flush() before start()")
        await self._sink.flush()

    async def close(self) -> None:
        """Write what is queued, leave the batch writer and close the store."""
        if self._closed:
            return
        self._sink.closing = True
        if self._db is None:
            if self.pending:
                log.error("ledger closed before start(); %d usage records not stored", self.pending)
        else:
            while self.pending:  # records may still arrive while the last batch is written
                await self.flush()
        self._closed = True
        if self.writer is not None:
            await self.writer.detach(self._sink)
            if self._owns_writer:
                await self.writer.close()
        if self._db is not None:
            db, self._db = self._db, None
            await asyncio.to_thread(db.close)

    # -- the sink's hooks: on the loop, but _write_items (in the writer thread) -----------

    def _taken(self, items: list[tuple[UsageRecord, int]]) -> None:
        if self.journal is not None:
            self.journal.sync()  # records added outside a request, or a probe while degraded

    def _write_items(self, items: list[tuple[UsageRecord, int]]) -> None:
        self._write([rec for rec, _ in items])

    def _written(self, items: list[tuple[UsageRecord, int]], _: object) -> None:
        self.error = None
        if self.journal is not None:
            self.journal.release(seg for _, seg in items)

    def _failed(self, items: list[tuple[UsageRecord, int]], e: Exception, failures: int) -> bool:
        """Retry the batch, unless the ledger is closing and it failed twice already."""
        self.error = f"ledger: {e}"
        if self._sink.closing and failures > 1:
            log.error(
                "%d usage records not written to the store (%s); %s",
                len(items), e,
                "they stay in the journal for the next start" if self.journal else "they are lost",
            )  # fmt: skip
            return False
        log.error("writing %d usage records failed; will retry", len(items), exc_info=e)
        return True

    def _write(self, batch: list[UsageRecord]) -> None:
        """Insert `batch` in one transaction (runs in the writer thread). A row sqlite refuses
        is isolated: the others are written, it is logged and dropped."""
        assert self._db is not None
        rows: list[tuple[Any, ...]] = [tuple(getattr(r, c) for c in USAGE_COLUMNS) for r in batch]
        try:
            with self._db.atomic():
                insert_rows(self._db.conn, INSERT_USAGE, rows)
        except _TRANSIENT:
            raise
        except Exception:
            self._write_each(rows)

    def _write_each(self, rows: list[tuple[Any, ...]]) -> None:
        assert self._db is not None
        with self._db.atomic():
            for row in rows:
                try:
                    self._db.conn.execute(INSERT_USAGE, row)
                except _TRANSIENT:
                    raise
                except Exception as e:
                    log.error("usage record %s cannot be stored (%s: %s); dropped", row[0], type(e).__name__, e)
