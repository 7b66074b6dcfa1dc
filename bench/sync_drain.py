"""The usage outbox: what its trigger costs the ledger writer, and how fast a backlog drains.

    python bench/sync_drain.py [--records 100000] [--rounds 5] [--backend sqlite|postgresql|both]

1. Writer cost: a real Ledger (with its journal, as in the daemon) writes `--records` rows
   with the outbox trigger off and as many with it on, in alternating rounds on the same
   store so machine noise lands on both; rows/s of each (from record() to flushed).
2. Drain: the rows written with the trigger on are the backlog. One Uploader (the daemon's,
   default [sync] settings: batches of 500, one at a time) empties it into a fresh central
   server (`claude-sidecar central serve`, a child process) on SQLite, then on a throwaway
   PostgreSQL 15 (fsync off) when installed; records/s, checked against the server's count.

All traffic stays on 127.0.0.1; every process started here is stopped on exit.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from contextlib import AsyncExitStack
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.central_common import enroll, start
from sidecar.ledger.journal import Journal
from sidecar.ledger.pricing import Pricing
from sidecar.ledger.store import open_db
from sidecar.ledger.writer import Ledger
from sidecar.sync.client import DeviceClient
from sidecar.sync.outbox import Uploader
from sidecar.sync.settings import SyncConfig
from sidecar.testing import postgres
from sidecar.testing.factories import usage_record
from sidecar.testing.postgres import PgCluster


async def write_rows(db_file: Path, n: int) -> float:
    """Record `n` rows through a Ledger with a journal and wait until flushed; rows/s."""
    journal = Journal(db_file.parent / "journal")
    await asyncio.to_thread(journal.recover, db_file)
    ledger = Ledger(db_file, Pricing(), journal)
    await ledger.start()
    models = ("claude-sonnet-4-5", "claude-haiku-4-5", "claude-opus-4-1")
    recs = [usage_record(None, models[i % 3], input_tokens=100 + i % 70_000, output_tokens=i % 4000,
                         cache_read_tokens=i % 60_000, route="default") for i in range(n)]  # fmt: skip
    t0 = time.perf_counter()
    for i, r in enumerate(recs):
        ledger.record(r)
        if i % 8 == 7:
            journal.sync()  # the request path syncs the journal once per answer
    journal.sync()
    await ledger.flush()
    elapsed = time.perf_counter() - t0
    await ledger.close()
    journal.close()
    return n / elapsed


async def writer_cost(db_file: Path, total: int, rounds: int) -> tuple[float, float]:
    """(rows/s with the trigger off, rows/s with it on), alternating rounds."""
    per = total // rounds
    rates: dict[bool, list[float]] = {False: [], True: []}
    await write_rows(db_file, 2000)  # warm-up: price data, the store created
    for i in range(rounds * 2):
        on = (i % 2 == 1) if rounds % 2 else (i % 4 in (1, 2))  # off/on order varies
        await asyncio.to_thread(Uploader.enable if on else _off, db_file)
        rates[on].append(await write_rows(db_file, per))
    await asyncio.to_thread(_off, db_file)
    return _rate(rates[False], per), _rate(rates[True], per)


def _rate(rates: list[float], per: int) -> float:
    """The overall rate of several rounds of `per` rows (total rows / total time)."""
    return len(rates) * per / sum(per / r for r in rates)


def _off(db_file: Path) -> None:
    """The trigger off, the backlog kept (Uploader.disable would empty it)."""
    db = open_db(db_file)
    try:
        with db.atomic():
            db.execute("DELETE FROM sync_meta WHERE key = 'outbox'")
    finally:
        db.close()


def _requeue(db_file: Path, ids: list[str]) -> None:
    db = open_db(db_file)
    try:
        with db.atomic():
            db.execute("DELETE FROM outbox")
            db.conn.executemany("INSERT INTO outbox (usage_id) VALUES (?)", [(i,) for i in ids])
    finally:
        db.close()


def _backlog(db_file: Path) -> list[str]:
    db = open_db(db_file)
    try:
        return [r[0] for r in db.execute("SELECT usage_id FROM outbox ORDER BY seq")]
    finally:
        db.close()


async def drain(db_file: Path, db_url: str, ids: list[str]) -> float:
    """Drain the backlog `ids` into a fresh central server at `db_url`; records/s."""
    await asyncio.to_thread(_requeue, db_file, ids)
    async with AsyncExitStack() as stack:
        (base,), admin = await start(stack, db_url)
        http = await stack.enter_async_context(aiohttp.ClientSession())
        (device,) = await enroll(http, base, admin, 1)
        client = DeviceClient(base, device["credential"])
        stack.push_async_callback(client.close)
        up = Uploader(db_file, client, SyncConfig(), lambda kind, data: None)
        t0 = time.perf_counter()
        await up.drain()
        elapsed = time.perf_counter() - t0
        await up.close()
        async with http.get(base + "/v1/admin/usage", params={"by": "day"},
                            headers={"authorization": f"Bearer {admin}"}) as r:  # fmt: skip
            counted = sum(row["requests"] for row in (await r.json())["rows"])
        assert counted == len(ids) == up.state()["uploaded_total"], (counted, len(ids), up.state())
        return len(ids) / elapsed


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--records", type=int, default=100_000)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--backend", choices=("sqlite", "postgresql", "both"), default="both")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        db_file = Path(d) / "data" / "sidecar.db"
        off, on = await writer_cost(db_file, args.records, args.rounds)
        print(f"ledger writer, {args.records} rows each way in {args.rounds} rounds (journal on, as in the daemon):")
        print(f"  trigger off {off:10,.0f} rows/s   on {on:10,.0f} rows/s   "
              f"cost {(1 / on - 1 / off) * 1e6:+.1f} us/row ({(off / on - 1) * 100:+.1f} %)")  # fmt: skip
        ids = await asyncio.to_thread(_backlog, db_file)
        print(f"drain of a {len(ids)}-record backlog, one Uploader (batches of {SyncConfig().upload_batch}):")
        if args.backend in ("sqlite", "both"):
            with tempfile.TemporaryDirectory() as c:
                rate = await drain(db_file, f"sqlite:///{c}/central.db", ids)
            print(f"  sqlite      {rate:10,.0f} records/s   ({len(ids) / rate:.1f} s)")
        if args.backend in ("postgresql", "both"):
            if not postgres.available():
                print("  postgresql  skipped (PostgreSQL 15 is not installed)")
                return
            with PgCluster() as pg:
                rate = await drain(db_file, await pg.new_database(), ids)
            print(f"  postgresql  {rate:10,.0f} records/s   ({len(ids) / rate:.1f} s)")


if __name__ == "__main__":
    asyncio.run(main())
