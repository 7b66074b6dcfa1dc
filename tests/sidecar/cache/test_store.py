"""The cache tables: entries round-trip, sizes stay exact without rescans, LRU order, counters."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

from sidecar.cache.entries import MAX_PENDING_STORES, Entries
from sidecar.cache.store import CacheStore, Entry, summary


def entry(key: str, text: str = "an answer", used: float = 1.0, query: str | None = None) -> Entry:
    msg = {"type": "message", "role": "assistant", "content": [{"type": "text", "text": text}], "stop_reason": "end_turn"}
    return Entry(exact_key=key, prefix_key="p", message=msg, created_at=1.0, used_at=used, query=query,
                 bucket_key="b" if query else None, volatile=("Today's date is 2026-11-28",), input_tokens=10,
                 output_tokens=5, cost_usd=0.01, semantic_ok=query is not None)  # fmt: skip


def test_entries_round_trip_and_sizes_stay_exact(tmp_path: Path) -> None:
    store = CacheStore.open(tmp_path / "sidecar.db")
    try:
        store.put(entry("a", used=3.0, query="what does it do"))
        store.put(entry("b", "x" * 500, used=1.0))
        store.put(entry("c", used=2.0))
        assert store.total_bytes == store.sizes()[1]
        got = store.get("a")
        assert got is not None and got.message["content"][0]["text"] == "an answer"
        assert got.volatile == ("Today's date is 2026-11-28",) and got.tokens == 15 and got.semantic_ok
        assert store.set_embedding("a", b"\0" * 1536) and not store.set_embedding("a", b"\0" * 1536)
        store.put(entry("c", "a longer answer than before", used=2.0))  # a replacement
        assert store.total_bytes == store.sizes()[1]
        assert [i.exact_key for i in store.indexed(0.0)] == ["a"]
        store.served({"a": (9.0, 2)})
        assert store.get("a").hits == 2  # type: ignore[union-attr]
        assert store.lru(1) == ["b"]
        assert store.lru(store.total_bytes) == ["b", "c", "a"]
        assert store.delete(["b", "missing"]) == 1
        assert store.total_bytes == store.sizes()[1] and store.sizes()[0] == 2
        assert store.expired(2.0) == ["a", "c"] and store.expired(1.0) == []
        assert store.clear() == 2 and store.total_bytes == 0 == store.sizes()[1]
    finally:
        store.close()


def test_counters_add_up_across_connections(tmp_path: Path) -> None:
    for _ in range(2):
        store = CacheStore.open(tmp_path / "sidecar.db")
        store.add_counters({"lookups": 3, "hits_exact": 1, "usd_saved": 0.25, "misses": 0})
        store.close()
    store = CacheStore.open(tmp_path / "sidecar.db")
    try:
        counters = store.counters()
    finally:
        store.close()
    s = summary("exact", counters, 0, 0, 1024)
    assert s["lookups"] == 6 and s["hits_exact"] == 2 and s["misses"] == 0
    assert s["usd_saved"] == 0.5 and s["hit_rate"] == round(2 / 6, 4)


async def test_stores_share_a_transaction_and_a_flood_is_shed_not_queued(tmp_path: Path) -> None:
    """Under pressure (the database thread busy) stores wait in a bounded buffer and go in
    batches; past the bound a store is shed (counted), never queued without limit."""
    store = CacheStore.open(tmp_path / "sidecar.db")
    begins: list[str] = []
    store.conn.set_trace_callback(lambda sql: begins.append(sql) if sql.startswith("BEGIN") else None)
    entries = Entries(store, 1 << 30)
    gate = threading.Event()
    blocked = entries.write(gate.wait)  # the database thread is busy
    n = MAX_PENDING_STORES * 3
    futures = [entries.put(entry(f"k{i}", used=float(i))) for i in range(n)]
    kept = [f for f in futures if f is not None]
    assert len(kept) == MAX_PENDING_STORES and entries.shed == n - MAX_PENDING_STORES
    assert entries.meta(f"k{n - 1}") is None and entries.meta("k0") is not None  # a shed store is not a stored key
    gate.set()
    await asyncio.wrap_future(blocked)
    await entries.drain()
    assert all(f.done() and f.result() == [] for f in kept)
    assert store.sizes()[0] == MAX_PENDING_STORES
    assert len(begins) <= 3  # batched: not one transaction per store
    # A lookup queued right after a store reads it (the buffer goes first), and a newer
    # store of the same key replaces the older one.
    entries.put(entry("again", "first"))
    entries.put(entry("again", "second"))
    got = await entries.get("again")
    assert got is not None and got.message["content"][0]["text"] == "second"
    await entries.close()
    assert "shed" in summary("exact", CacheStore.empty_counters(), 0, 0, 1024)


async def test_a_reserved_place_counts_against_the_bound_and_is_never_shed(tmp_path: Path) -> None:
    store = CacheStore.open(tmp_path / "sidecar.db")
    entries = Entries(store, 1 << 30)
    gate = threading.Event()
    blocked = entries.write(gate.wait)
    sink = entries._sink
    try:
        assert all(entries.reserve() for _ in range(MAX_PENDING_STORES - 1))
        assert entries.put(entry("plain")) is not None  # the last free place
        assert not entries.reserve() and entries.put(entry("late")) is None and entries.shed == 2
        kept = [entries.put(entry(f"r{i}"), reserved=True) for i in range(MAX_PENDING_STORES - 3)]
        assert all(f is not None for f in kept) and sink.reserved == 2
        assert entries.put(entry("r0", "newer"), reserved=True) is kept[0]  # replaces: its place is given back
        entries.unreserve()
        assert sink.reserved == 0 and sink.pending == MAX_PENDING_STORES - 2
        assert entries.reserve() and entries.reserve() and not entries.reserve()
        entries.unreserve()
        entries.unreserve()
    finally:
        gate.set()
    await asyncio.wrap_future(blocked)
    await entries.drain()
    got = await entries.get("r0")
    assert got is not None and got.message["content"][0]["text"] == "newer"
    await entries.close()
