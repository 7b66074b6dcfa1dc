"""The one batched writer: the ledger, the audit log and the cache write from one thread,
and a store that fails does not hold back the others' rows."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from sidecar.audit.log import HEAD_FILE, AuditLog, read_head
from sidecar.cache.entries import Entries
from sidecar.cache.store import CacheStore, Entry
from sidecar.ledger import store as ledger_store
from sidecar.ledger.pricing import Pricing
from sidecar.ledger.store import open_db
from sidecar.ledger.writer import Ledger
from sidecar.storage.batch import THREAD_NAME, BatchWriter
from sidecar.testing.factories import usage_record
from sidecar.testing.fake_anthropic import FakeAnthropic
from tests.sidecar.cache.conftest import cached_sidecar


def _entry(key: str) -> Entry:
    msg = {"type": "message", "role": "assistant", "content": [{"type": "text", "text": key}], "stop_reason": "end_turn"}
    return Entry(exact_key=key, prefix_key="p", message=msg, created_at=1.0, used_at=1.0, input_tokens=10, output_tokens=5)


def _usage_ids(path: Path) -> set[str]:
    db = open_db(path)
    try:
        return {r[0] for r in db.execute("SELECT id FROM usage").fetchall()}
    finally:
        db.close()


@dataclass
class Stores:
    writer: BatchWriter
    ledger: Ledger
    audit: AuditLog
    entries: Entries
    ledger_db: Path
    cache_db: Path


@pytest.fixture
async def stores(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Stores]:
    """The three stores on one writer; the cache in a file of its own (so it can be locked alone).
    sqlite's busy wait is cut short so that a locked file fails at once instead of after 5 s."""
    monkeypatch.setattr(ledger_store, "BUSY_TIMEOUT_MS", 20)
    writer = BatchWriter()
    db, cache_db = tmp_path / "sidecar.db", tmp_path / "cache.db"
    ledger = Ledger(db, Pricing(), writer=writer)
    audit = AuditLog(db, tmp_path / HEAD_FILE, writer=writer)
    entries = Entries(await asyncio.to_thread(CacheStore.open, cache_db), 1 << 30, writer=writer)
    await ledger.start()
    await audit.start()
    try:
        yield Stores(writer, ledger, audit, entries, db, cache_db)
    finally:
        await audit.close()
        await entries.close()
        await ledger.close()
        await writer.close()


async def test_the_three_stores_write_from_one_thread_in_shared_trips(stores: Stores, monkeypatch: pytest.MonkeyPatch) -> None:
    threads: dict[str, set[int]] = {"ledger": set(), "audit": set(), "cache": set()}
    for name, obj, attr in (("ledger", stores.ledger, "_write"), ("audit", stores.audit, "_write"), ("cache", stores.entries, "_write_batch")):
        real = getattr(obj, attr)

        def spy(*args: object, _real: object = real, _name: str = name) -> object:
            threads[_name].add(threading.get_ident())
            return _real(*args)  # type: ignore[operator]

        monkeypatch.setattr(obj, attr, spy)
    trips = stores.writer.trips
    recs = [stores.ledger.record(usage_record(None, "claude-opus-4-8")) for _ in range(5)]
    for i in range(5):
        stores.audit.append("request", {"n": i})
    await asyncio.gather(stores.ledger.flush(), stores.audit.flush())
    # Due at the same moment, the ledger's and the audit log's batches went in one trip.
    assert stores.writer.trips == trips + 1
    put = stores.entries.put(_entry("k"))
    assert put is not None and await put == []
    assert _usage_ids(stores.ledger_db) == {r.id for r in recs}
    head = read_head(stores.audit.head_file)
    assert head is not None and head.seq == 5
    idents = set().union(*threads.values())
    assert all(threads.values()) and len(idents) == 1
    (ident,) = idents
    names = [t.name for t in threading.enumerate() if t.ident == ident]
    assert names and names[0].startswith(THREAD_NAME)
    assert len([t for t in threading.enumerate() if t.name.startswith(THREAD_NAME)]) == 1


def _lock(path: Path) -> sqlite3.Connection:
    """Another connection holding `path`'s write lock (a second process, a backup tool)."""
    conn = sqlite3.connect(str(path), isolation_level=None)
    conn.execute("BEGIN EXCLUSIVE")
    return conn


async def test_a_locked_cache_does_not_hold_back_ledger_rows(stores: Stores) -> None:
    lock = _lock(stores.cache_db)
    try:
        puts = [stores.entries.put(_entry(f"k{i}")) for i in range(3)]
        recs = [stores.ledger.record(usage_record(None, "claude-opus-4-8")) for _ in range(20)]
        await asyncio.wait_for(stores.ledger.flush(), 10)
        assert _usage_ids(stores.ledger_db) == {r.id for r in recs}
        assert stores.ledger.error is None
        for p in puts:  # the cache's cost is the lost answers, reported, never a ledger row
            assert p is not None and await asyncio.wait_for(p, 10) == []
        assert stores.entries.error is not None and "locked" in stores.entries.error
    finally:
        lock.rollback()
        lock.close()
    put = stores.entries.put(_entry("after"))
    assert put is not None and await asyncio.wait_for(put, 10) == []
    assert stores.entries.error is None


async def test_a_locked_ledger_is_retried_while_the_cache_goes_on(stores: Stores) -> None:
    lock = _lock(stores.ledger_db)
    try:
        recs = [stores.ledger.record(usage_record(None, "claude-opus-4-8")) for _ in range(20)]
        for _ in range(100):  # until the ledger's first write has failed
            if stores.ledger.error is not None:
                break
            await asyncio.sleep(0.05)
        assert stores.ledger.error is not None and "locked" in stores.ledger.error
        # The ledger waits out its backoff; the writer does not wait with it.
        puts = [stores.entries.put(_entry(f"k{i}")) for i in range(3)]
        await asyncio.wait_for(stores.entries.drain(), 10)
        assert all(p is not None and p.result() == [] for p in puts)
        assert stores.entries.error is None
        got = await stores.entries.get("k2")
        assert got is not None
        assert stores.ledger.pending == len(recs)
    finally:
        lock.rollback()
        lock.close()
    await asyncio.wait_for(stores.ledger.flush(), 10)
    assert _usage_ids(stores.ledger_db) == {r.id for r in recs}
    assert stores.ledger.error is None


async def test_the_daemon_runs_one_writer_thread(fake: FakeAnthropic, hermetic_env: Path) -> None:
    """Ledger, audit log and cache in a running sidecar (each has written at start: the audit
    log its start entry, the cache its key map): one database thread between them."""
    async with cached_sidecar(fake, hermetic_env):
        names = [t.name for t in threading.enumerate()]
        assert len([n for n in names if n.startswith(THREAD_NAME)]) == 1, names
        assert not [n for n in names if "cache-db" in n], names


def test_urgent_writes_on_uvloop(tmp_path: Path) -> None:
    """The daemon runs on uvloop, whose call_at for a time already past is a plain Handle:
    two urgent requests in one tick (a stats read and a flush) must both go through."""
    import uvloop

    async def main() -> None:
        entries = Entries(await asyncio.to_thread(CacheStore.open, tmp_path / "cache.db"), 1 << 30)
        try:
            put = entries.put(_entry("k"))
            first, second = entries.write(entries.store.sizes), entries.write(entries.store.sizes)
            assert (await asyncio.wrap_future(first))[0] == (await asyncio.wrap_future(second))[0] == 1
            assert put is not None and await put == []
        finally:
            await entries.close()

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(main())
