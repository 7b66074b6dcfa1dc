"""Appending to the audit log: entries are chained at once, written in batches.

`append()` runs on the event loop: it gives the entry the next `seq`, hashes it onto the
chain and queues it; the batch writer (sidecar.storage.batch, one thread shared with the
ledger and the cache) writes queued entries to the `audit` table in one transaction per
batch, so the request path never waits on sqlite. After each batch the
newest (seq, hash) goes to a small head file beside the store: a log cut short at its end
leaves no hole in the chain, and the head file is what shows it (`audit verify`).

With a journal (sidecar.ledger.journal) each entry is also added to it as it is chained, so
entries still queued when the process dies are recovered at the next start. The request path
uses `hold()` instead: the entry gets its `seq` and goes to the journal as a pre-image (its
fields, before hashing), so it is durable when the answer's final byte goes out, and is
chained once the answer went out (`settle()`); every other append settles what is held
first, so the chain's order is the order of `seq`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
import sqlite_utils

from sidecar.audit.chain import GENESIS, Entry
from sidecar.ledger.journal import Journal, audit_line, pre_image_line
from sidecar.ledger.store import open_db
from sidecar.ledger.writer import scrub
from sidecar.paths import replace_file
from sidecar.storage.batch import BatchWriter, Sink
from sidecar.storage.rows import insert_rows

log = logging.getLogger(__name__)

HEAD_FILE = "audit-head.json"
CLOSE_WAIT = 30.0  # seconds close() waits for the queue to be written
CLOSE_WAIT_FAILING = 2.0  # ... when writes are failing and the journal holds the entries
_INSERT = "INSERT INTO audit (seq, ts, kind, request_id, data, prev_hash, hash) VALUES (?, ?, ?, ?, ?, ?, ?)"


@dataclass(frozen=True)
class Head:
    """The newest entry the log has written, as recorded outside the table."""

    seq: int
    hash: str


# What a head file that is there but is not one the log wrote (edited, replaced) reads as:
# no entry has seq 0, so it matches none (the start records it, `verify` reports it).
UNREADABLE = Head(0, "")


def read_head(path: Path) -> Head | None:
    """The head file at `path`; None when there is none (or it cannot be read), UNREADABLE
    when its contents are not a head."""
    try:
        raw = path.read_bytes()
    except OSError:
        return None
    try:
        obj = json.loads(raw.decode())
        head = Head(int(obj["seq"]), str(obj["hash"]))
    except (ValueError, KeyError, TypeError, OverflowError, RecursionError):
        return UNREADABLE
    return head if head.seq > 0 else UNREADABLE


def _write_head(path: Path, head: Head) -> None:
    replace_file(path, json.dumps({"seq": head.seq, "hash": head.hash}))


def last_entry(db: sqlite_utils.Database) -> Entry | None:
    """The newest entry in the table."""
    row = db.execute("SELECT seq, ts, kind, request_id, data, prev_hash, hash FROM audit ORDER BY seq DESC LIMIT 1").fetchone()
    return None if row is None else Entry(*row)


def hash_at(db: sqlite_utils.Database, seq: int) -> str | None:
    """The hash of entry `seq`, if the table holds it."""
    row = db.execute("SELECT hash FROM audit WHERE seq = ?", [seq]).fetchone()
    return None if row is None else str(row[0])


class AuditLog:
    """The append side of the audit log. `writer` is the daemon's one batch writer
    (sidecar.storage.batch), shared with the ledger and the cache; without one the log runs
    its own."""

    def __init__(
        self,
        db_file: Path,
        head_file: Path,
        clock: Callable[[], float] = time.time,
        journal: Journal | None = None,
        writer: BatchWriter | None = None,
    ) -> None:
        self.db_file = db_file
        self.head_file = head_file
        self.clock = clock
        self.journal = journal
        self.error: str | None = None  # the last failed write, until a write succeeds
        self.last: Entry | None = None  # the newest entry of the previous run, once started
        self.writer = writer
        self._owns_writer = writer is None
        self._db: sqlite_utils.Database | None = None
        self._seq = 0  # the newest entry's seq (held ones included)
        self._hash = GENESIS  # the newest chained entry's hash
        # Entries held: (seq, ts, kind, request_id, data, journal segment), in seq order.
        self._held: deque[tuple[int, float, str, str | None, dict[str, Any], int]] = deque()
        self._sink: Sink[tuple[Entry, int]] = Sink(
            "audit",
            self._write_items,
            on_written=self._written,
            on_failed=self._failed,
        )
        self._closed = False

    async def start(self) -> None:
        """Open the store, continue the chain from its newest entry, join the batch writer."""
        self._db = await asyncio.to_thread(open_db, self.db_file)
        last = await asyncio.to_thread(last_entry, self._db)
        if last is not None:
            self._seq, self._hash = last.seq, last.hash
        if self.writer is None:
            self.writer = BatchWriter()
        self.writer.attach(self._sink)
        await self._check_head(last)
        self.last = last

    async def _check_head(self, last: Entry | None) -> None:
        """Note in the chain itself when the table no longer holds what the head file says."""
        head = await asyncio.to_thread(read_head, self.head_file)
        if head is None or self._db is None:
            return
        if await asyncio.to_thread(hash_at, self._db, head.seq) == head.hash:
            return
        found = None if last is None else {"seq": last.seq, "hash": last.hash}
        log.warning("the audit log does not hold the entry its head file names (%s); recording it", head)
        self.append("head_mismatch", {"head": {"seq": head.seq, "hash": head.hash}, "last": found})

    def append(self, kind: str, data: dict[str, Any], request_id: str | None = None, *, sync: bool = True) -> Entry:
        """Chain a new entry and queue it for writing; never blocks. With a journal, the entry
        is in it when this returns; `sync=False` leaves the write to the caller's next
        `journal.sync()` (the request path writes a request's records in one go)."""
        if self._closed:
            raise RuntimeError("audit log is closed")
        if self._held:
            self.settle()
        try:
            entry = Entry.make(self._seq + 1, self.clock(), kind, request_id, data, self._hash)
        except UnicodeEncodeError:  # lone surrogates from undecodable bytes: hash what can be shown
            entry = Entry.make(self._seq + 1, self.clock(), kind, request_id and scrub(request_id), _scrubbed(data), self._hash)
        self._seq, self._hash = entry.seq, entry.hash
        seg = 0
        if self.journal is not None:
            seg = self.journal.add(audit_line(entry.seq, entry.ts, entry.kind, entry.request_id, entry.data, entry.prev_hash, entry.hash))
            if sync:
                self.journal.sync()
        self._sink.add((entry, seg))
        return entry

    def hold(self, kind: str, data: dict[str, Any], request_id: str | None = None) -> None:
        """Journal a new entry now and chain it at the next `settle()` (the request path
        settles once the answer went out; the caller's next `journal.sync()` writes it).
        Without a journal, or with data a pre-image cannot carry, it is appended at once.
        `data` must not change after this."""
        if self._closed:
            raise RuntimeError("audit log is closed")
        seq, ts = self._seq + 1, self.clock()
        try:
            line = None if self.journal is None else pre_image_line(seq, ts, kind, request_id, data)
        except (msgspec.EncodeError, UnicodeError, TypeError, ValueError, OverflowError):
            line = None  # e.g. a lone surrogate: append() scrubs it
        if self.journal is None or line is None:
            self.append(kind, data, request_id, sync=False)
            return
        self._seq = seq
        self._held.append((seq, ts, kind, request_id, data, self.journal.add(line)))

    def settle(self) -> None:
        """Chain the held entries, in order, and queue them for writing."""
        held = self._held
        while held:
            seq, ts, kind, request_id, data, seg = held.popleft()
            entry = Entry.make(seq, ts, kind, request_id, data, self._hash)  # as journal recovery chains it
            self._hash = entry.hash
            self._sink.add((entry, seg))

    @property
    def pending(self) -> int:
        """Entries not yet on disk (held ones included)."""
        return self._sink.pending + len(self._held)

    async def flush(self) -> None:
        """Wait until every entry appended so far is on disk."""
        self.settle()
        await self._sink.flush()

    async def close(self) -> None:
        """Write what is queued, leave the batch writer, close the store."""
        if self._closed:
            return
        self.settle()
        if self._db is not None:
            # A store that is failing now is not waited on for long when the journal holds
            # the entries: the next start writes them.
            wait = CLOSE_WAIT_FAILING if self.journal is not None and self.error else CLOSE_WAIT
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.flush(), wait)
        self._closed = True
        if self.pending:
            log.error(
                "audit log closed with %d entries not written%s",
                self.pending, "; they stay in the journal for the next start" if self.journal else "",
            )  # fmt: skip
        if self.writer is not None:
            await self.writer.detach(self._sink)
            if self._owns_writer:
                await self.writer.close()
        if self._db is not None:
            db, self._db = self._db, None
            await asyncio.to_thread(db.close)

    # -- the sink's hooks: on the loop, but _write_items (in the writer thread) -----------

    def _write_items(self, items: list[tuple[Entry, int]]) -> OSError | None:
        return self._write([e for e, _ in items])

    def _written(self, items: list[tuple[Entry, int]], head_error: OSError | None) -> None:
        self.error = None
        if self.journal is not None:
            self.journal.release(seg for _, seg in items)
        if head_error is not None:
            log.warning("cannot move the audit head file %s: %s", self.head_file, head_error)

    def _failed(self, items: list[tuple[Entry, int]], e: Exception, failures: int) -> bool:
        """Always retried: an entry of the chain is never given up on while the log is open."""
        self.error = f"audit: {e}"
        log.error("writing %d audit entries failed; will retry", len(items), exc_info=e)
        if self.journal is not None:
            self.journal.sync()
        return True

    def _write(self, batch: list[Entry]) -> OSError | None:
        """Insert `batch` in one transaction, then move the head file, in the same trip to the
        writer thread. The head moves only after the entries are committed, in a step of its
        own: a head that cannot be written lags behind (harmless, returned to be logged), it
        never re-queues the batch."""
        assert self._db is not None
        rows = [(e.seq, e.ts, e.kind, e.request_id, e.data, e.prev_hash, e.hash) for e in batch]
        with self._db.atomic():
            insert_rows(self._db.conn, _INSERT, rows)
        try:
            _write_head(self.head_file, Head(batch[-1].seq, batch[-1].hash))
        except OSError as e:
            return e
        return None


def _scrubbed(value: Any) -> Any:
    """`value` with every string made valid UTF-8 (lone surrogates become '?')."""
    if isinstance(value, str):
        return scrub(value)
    if isinstance(value, dict):
        return {scrub(str(k)): _scrubbed(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_scrubbed(v) for v in value]
    return value
