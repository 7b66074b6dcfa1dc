"""The usage outbox: every ledger row written while enrolled reaches the central server once.

Queueing is not done here: migration ``m007_sync_outbox`` (sidecar.sync.migrations) installs a
trigger that, while `enable()` has switched it on, adds each new usage row's id to the
``outbox`` table in the same transaction as the row, whichever path writes it (the ledger's
batches, the journal's recovery after a crash). A row is therefore either in sqlite and
queued, or in neither (and then still in the journal).

`Uploader` empties the queue, oldest first: it reads a batch, maps each row to the server's
record (`record()`), posts it, and deletes the acknowledged entries in one transaction only
after the server answered. A crash between the server's answer and that delete re-sends the
batch at the next start; the server recognises the ids (same content: a duplicate, counted
once) and the entries are then deleted. Rows the server refuses for good (an id it holds with
other content: a conflict; a record it cannot take) are moved to ``outbox_parked`` and
counted, never retried. An unreachable or failing server is retried with exponential backoff
and jitter; a revoked credential stops the uploader (the queue stays until `disable()`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import random
import re
import sqlite3
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import sqlite_utils

from sidecar.ledger.store import open_db
from sidecar.sync.client import DeviceClient, SyncError, SyncRefused, SyncUnavailable
from sidecar.sync.settings import SyncConfig

log = logging.getLogger(__name__)

OUTBOX_KEY = "outbox"  # the sync_meta row whose presence turns the trigger on
UNKNOWN_MODEL = "unknown"  # the server needs a model; a row that names none (an early refusal) says so
MAX_TEXT = 200  # the server's limit on model, route and provider
FIRST_RETRY = 0.5  # seconds; doubled per failed attempt up to cfg.retry_max_seconds
_ULID = re.compile(r"^[0-9A-HJKMNP-TV-Z]{26}$")
_TOKENS = ("input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens")
_SELECT = (
    "SELECT o.seq, o.usage_id, u.id, u.ts, u.requested_model, u.upstream_model, u.route, u.provider, "
    + ", ".join(f"u.{t}" for t in _TOKENS)
    + ", u.cost_usd FROM outbox o LEFT JOIN usage u ON u.id = o.usage_id ORDER BY o.seq LIMIT ?"
)
# A 4xx that is about the records themselves: the batch is split until the bad one is alone.
_BAD_RECORDS = (400, 413, 422)

Publish = Callable[[str, dict[str, Any]], None]


class InvalidRecord(ValueError):
    """A ledger row the server's record format cannot express."""


def record(row: sqlite3.Row | tuple[Any, ...]) -> dict[str, Any]:
    """The server's usage record for a ledger row (id, ts, requested_model, upstream_model,
    route, provider, the four token counts, cost_usd); InvalidRecord when it cannot be one.

    The model is the one the ledger priced the row by (the upstream's, else the requested
    one), "unknown" for a row that names none, so the server's cost per model adds up."""
    rid, ts, requested, upstream, route, provider, *tokens, cost = row
    if not isinstance(rid, str) or not _ULID.match(rid):
        raise InvalidRecord(f"id {rid!r} is not a ULID")
    if isinstance(ts, bool) or not isinstance(ts, int | float) or not 0 < ts < 1e11:
        raise InvalidRecord(f"ts {ts!r} is not UTC epoch seconds")
    out: dict[str, Any] = {"id": rid, "ts": float(ts), "model": (upstream or requested or UNKNOWN_MODEL)[:MAX_TEXT]}
    for name, value in zip(_TOKENS, tokens, strict=True):
        value = value or 0
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**53:
            raise InvalidRecord(f"{name} {value!r} is not a token count")
        out[name] = value
    cost = cost or 0.0
    if isinstance(cost, bool) or not isinstance(cost, int | float) or not (math.isfinite(cost) and 0 <= cost < 1e9):
        raise InvalidRecord(f"cost_usd {cost!r} is not a cost")
    out["cost_usd"] = float(cost)
    out["route"] = route[:MAX_TEXT] if isinstance(route, str) else None
    out["provider"] = provider[:MAX_TEXT] if isinstance(provider, str) else None
    return out


@dataclass
class Batch:
    """Outbox entries read together: records to send (with their entries' seqs), entries to
    park (seq, usage id, reason) and entries whose usage row no longer exists."""

    records: list[tuple[list[int], dict[str, Any]]] = field(default_factory=list)
    park: list[tuple[int, str, str]] = field(default_factory=list)
    orphans: list[int] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.records) + len(self.park) + len(self.orphans)


class Uploader:
    """Uploads the outbox to the central server: `run()` forever, `drain()` until empty."""

    def __init__(
        self,
        db_file: Path,
        client: DeviceClient,
        cfg: SyncConfig,
        publish: Publish,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.db_file = db_file
        self.client = client
        self.cfg = cfg
        self.publish = publish
        self.clock = clock
        self.backlog: int | None = None  # entries waiting, as of the last look
        self.last_upload: float | None = None  # when the server last acknowledged a batch
        self.last_error: str | None = None  # the last failure, until an upload succeeds
        self.uploaded_total = 0  # records acknowledged (accepted or duplicates) by this uploader
        self.duplicates_total = 0  # of which the server already held (a re-send after a lost answer)
        self.conflicts = 0  # entries parked so far (in the store, across restarts)
        self.stopped: str | None = None  # why run() ended for good (a revoked credential)
        self._db: sqlite_utils.Database | None = None
        self._db_lock = threading.Lock()  # one worker thread at a time on the connection
        self._step_lock = asyncio.Lock()  # run() and drain() never send the same batch at once
        self._wake = asyncio.Event()
        self._rng = random.Random()
        self._failures = 0  # failed attempts in a row
        self._sleep: Callable[[float], Awaitable[None]] = asyncio.sleep  # the backoff's wait (a test seam)

    # ------------------------------------------------------------------ switching it on and off

    @staticmethod
    def enable(db_file: Path) -> None:
        """Turn the outbox trigger on (enrolled: called at start, before serving). Rows
        written before stay local: they were not the org's."""
        _with_db(db_file, lambda db: db.execute("INSERT OR IGNORE INTO sync_meta (key, value) VALUES (?, '1')", [OUTBOX_KEY]))

    @staticmethod
    def disable(db_file: Path) -> None:
        """Unenrolled: the trigger off and the outbox (parked entries too) emptied, at once."""

        def off(db: sqlite_utils.Database) -> None:
            db.execute("DELETE FROM sync_meta WHERE key = ?", [OUTBOX_KEY])
            db.execute("DELETE FROM outbox")
            db.execute("DELETE FROM outbox_parked")

        _with_db(db_file, off)

    # ------------------------------------------------------------------ the loop

    async def run(self) -> None:
        """Upload forever: a full batch is followed at once by the next, an empty outbox is
        looked at again every cfg.upload_interval_seconds (or on `wake()`). Returns only
        when the credential is revoked."""
        try:
            while True:
                moved = await self._attempt()
                if self.stopped:
                    return
                if moved is not None and moved >= self.cfg.upload_batch:
                    continue
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self.cfg.upload_interval_seconds)
        finally:
            await asyncio.shield(asyncio.to_thread(self._close_db))

    async def drain(self) -> None:
        """Upload until the outbox is empty, retrying failures with the same backoff (bound it
        with a timeout). Raises SyncRefused when the credential is revoked."""
        while True:
            moved = await self._attempt()
            if self.stopped:
                raise SyncRefused(f"uploading usage stopped: {self.stopped}", 401)
            if moved == 0:
                return

    def wake(self) -> None:
        """Look at the outbox now instead of at the end of the interval."""
        self._wake.set()

    async def close(self) -> None:
        """Close the store connection (run() does so itself when it ends)."""
        await asyncio.to_thread(self._close_db)

    def state(self) -> dict[str, Any]:
        """Backlog, last upload and error, what was uploaded and parked, and why it stopped."""
        return {
            "backlog": self.backlog,
            "last_upload": self.last_upload,
            "last_error": self.last_error,
            "uploaded_total": self.uploaded_total,
            "duplicates": self.duplicates_total,
            "conflicts": self.conflicts,
            "stopped": self.stopped,
        }

    # ------------------------------------------------------------------ one batch

    async def _attempt(self) -> int | None:
        """One batch; the entries it moved out of the outbox, or None after a failure (which
        has then been waited out)."""
        try:
            return await self._step()
        except SyncRefused as e:
            if not e.revoked:
                await self._failed(e)
                return None
            self.stopped = self.last_error = f"the central server no longer accepts this device ({e})"
            log.error("sync: usage upload stopped: %s", self.stopped)
            self.publish("sync_outbox", self.state())
            return None
        except (SyncUnavailable, sqlite3.Error, OSError) as e:
            await self._failed(e)
            return None
        except Exception as e:  # a bug must not end uploads for the life of the daemon
            log.exception("sync: usage upload failed unexpectedly")
            await self._failed(e)
            return None

    async def _failed(self, e: Exception) -> None:
        first = self.last_error is None
        self.last_error = str(e) if isinstance(e, SyncError) else f"{type(e).__name__}: {e}"
        self._failures += 1
        (log.warning if first else log.debug)("sync: usage upload failed (attempt %d): %s", self._failures, self.last_error)
        if first:
            self.publish("sync_outbox", self.state())
        ceiling = min(self.cfg.retry_max_seconds, FIRST_RETRY * 2 ** min(self._failures - 1, 20))
        delay = self._rng.uniform(ceiling / 2, ceiling)  # jitter: a fleet back from an outage spreads out
        retry_after = getattr(e, "retry_after", None)
        if retry_after:
            delay = min(max(delay, retry_after), self.cfg.retry_max_seconds)
        await self._sleep(delay)

    async def _step(self) -> int:
        async with self._step_lock:
            batch, self.backlog = await asyncio.to_thread(self._locked, self._read, self.cfg.upload_batch)
            if not batch:
                return 0
            acked: list[int] = []
            park = list(batch.park)
            if batch.records:
                acked, refused = await self._send(batch.records)
                park += refused
            self.backlog, self.conflicts = await asyncio.to_thread(self._locked, self._settle, acked + batch.orphans, park)
        if self.last_error is not None:
            log.info("sync: usage upload works again")
        self.last_error, self._failures = None, 0
        return len(batch)

    async def _send(self, records: list[tuple[list[int], dict[str, Any]]]) -> tuple[list[int], list[tuple[int, str, str]]]:
        """Post `records`; (seqs to delete, entries to park). A batch refused as a whole for
        its content is split until the refused record is alone, and that one is parked."""
        try:
            answer = await self.client.upload([r for _, r in records])
        except SyncRefused as e:
            if e.revoked or e.status not in _BAD_RECORDS:
                raise
            if len(records) == 1:
                seqs, rec = records[0]
                log.error("sync: the central server refused usage record %s (%s); parked", rec["id"], e)
                return [], [(s, rec["id"], f"refused: {e}") for s in seqs]
            mid = len(records) // 2
            a_acked, a_park = await self._send(records[:mid])
            b_acked, b_park = await self._send(records[mid:])
            return a_acked + b_acked, a_park + b_park
        conflicts = _check(answer, len(records))
        acked: list[int] = []
        park: list[tuple[int, str, str]] = []
        for seqs, rec in records:
            if rec["id"] in conflicts:
                log.error("sync: the central server holds another record with id %s; parked", rec["id"])
                park += [(s, rec["id"], "conflict: the server holds another record with this id") for s in seqs]
            else:
                acked += seqs
        self.uploaded_total += len(records) - len(conflicts)
        self.duplicates_total += int(answer["duplicates"])
        self.last_upload = self.clock()
        return acked, park

    # ------------------------------------------------------------------ the store (worker threads)

    def _locked(self, fn: Callable[..., Any], *args: Any) -> Any:
        with self._db_lock:
            if self._db is None:
                self._db = open_db(self.db_file)
            return fn(self._db, *args)

    def _close_db(self) -> None:
        with self._db_lock:
            if self._db is not None:
                db, self._db = self._db, None
                db.close()

    @staticmethod
    def _read(db: sqlite_utils.Database, limit: int) -> tuple[Batch, int]:
        """The oldest `limit` entries, and how many wait in all (shown while offline too)."""
        batch = Batch()
        by_id: dict[str, list[int]] = {}
        for seq, usage_id, *row in db.execute(_SELECT, [limit]).fetchall():
            if row[0] is None:
                batch.orphans.append(seq)  # the usage row is gone: nothing to send
            elif usage_id in by_id:
                by_id[usage_id].append(seq)  # queued twice: sent once
            else:
                try:
                    rec = record(tuple(row))
                except InvalidRecord as e:
                    log.error("sync: usage record %s cannot be uploaded (%s); parked", usage_id, e)
                    batch.park.append((seq, usage_id, f"invalid: {e}"))
                    continue
                by_id[usage_id] = [seq]
                batch.records.append((by_id[usage_id], rec))
        return batch, int(db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0])

    @staticmethod
    def _settle(db: sqlite_utils.Database, done: list[int], park: list[tuple[int, str, str]]) -> tuple[int, int]:
        """Delete the acknowledged entries and park the refused ones, in one transaction;
        (backlog, parked) afterwards."""
        now = time.time()
        with db.atomic():
            db.conn.executemany("DELETE FROM outbox WHERE seq = ?", [(s,) for s in [*done, *(p[0] for p in park)]])
            db.conn.executemany(
                "INSERT OR REPLACE INTO outbox_parked (usage_id, parked_at, reason) VALUES (?, ?, ?)",
                [(i, now, reason) for _, i, reason in park],
            )
        backlog = db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0]
        parked = db.execute("SELECT COUNT(*) FROM outbox_parked").fetchone()[0]
        return int(backlog), int(parked)


def _check(answer: dict[str, Any], sent: int) -> set[str]:
    """The conflicting ids of a well-formed answer that accounts for every record sent;
    SyncUnavailable otherwise (nothing is deleted on an answer that cannot be read)."""
    accepted, duplicates, conflicts = answer.get("accepted"), answer.get("duplicates"), answer.get("conflicts")
    if (
        isinstance(accepted, int)
        and isinstance(duplicates, int)
        and isinstance(conflicts, list)
        and all(isinstance(c, str) for c in conflicts)
        and accepted + duplicates + len(set(conflicts)) == sent
    ):
        return set(conflicts)
    raise SyncUnavailable(f"the server's answer to an upload does not account for the {sent} records sent: {answer!r:.200}")


def _with_db(db_file: Path, fn: Callable[[sqlite_utils.Database], Any]) -> None:
    db = open_db(db_file)
    try:
        with db.atomic():
            fn(db)
    finally:
        db.close()
