"""Usage ingestion throughput of the central server: records/s with batches of 500.

    python bench/central_ingest.py [--records 100000] [--concurrency 4] [--backend sqlite|postgresql|both]

One server process per backend (`claude-sidecar central serve`), SQLite in a temporary file,
PostgreSQL 15 in a throwaway cluster (fsync off, as in the tests: the figure is the server's
cost, not the disk's). The load comes from this process: `--concurrency` devices each post
batches of 500 fresh records; then every batch is posted once more to measure the
duplicate path (a retried upload).
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import tempfile
import time
from contextlib import AsyncExitStack
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.central_common import enroll, post, records, start
from sidecar.testing.postgres import PgCluster

BATCH = 500


async def run(db_url: str, total: int, concurrency: int) -> tuple[float, float]:
    """(new records/s, duplicate records/s)."""
    async with AsyncExitStack() as stack:
        (base,), admin = await start(stack, db_url)
        http = await stack.enter_async_context(aiohttp.ClientSession())
        devices = await enroll(http, base, admin, concurrency)
        rnd = random.Random(1)
        batches = [records(BATCH, rnd) for _ in range(total // BATCH)]
        await post(http, base + "/v1/usage", {"records": records(BATCH, rnd)}, devices[0]["credential"])  # warm-up

        async def worker(i: int) -> None:
            for b in batches[i::concurrency]:
                answer = await post(http, base + "/v1/usage", {"records": b}, devices[i]["credential"])
                assert answer["conflicts"] == []

        rates = []
        for _pass in range(2):
            t0 = time.perf_counter()
            await asyncio.gather(*(worker(i) for i in range(concurrency)))
            rates.append(len(batches) * BATCH / (time.perf_counter() - t0))
        report = await (await http.get(base + "/v1/admin/usage", params={"by": "day"},
                                       headers={"authorization": f"Bearer {admin}"})).json()  # fmt: skip
        counted = sum(r["requests"] for r in report["rows"])
        assert counted == len(batches) * BATCH + BATCH, counted  # the second pass counted nothing
        return rates[0], rates[1]


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--records", type=int, default=100_000)
    ap.add_argument("--concurrency", type=int, default=4)
    ap.add_argument("--backend", choices=("sqlite", "postgresql", "both"), default="both")
    args = ap.parse_args()
    print(f"usage ingestion: {args.records} records in batches of {BATCH}, {args.concurrency} devices posting at once")
    if args.backend in ("sqlite", "both"):
        with tempfile.TemporaryDirectory() as d:
            new, dup = await run(f"sqlite:///{d}/central.db", args.records, args.concurrency)
        print(f"  sqlite      new {new:10,.0f} records/s   retried (duplicates) {dup:10,.0f} records/s")
    if args.backend in ("postgresql", "both"):
        with PgCluster() as pg:
            new, dup = await run(await pg.new_database(), args.records, args.concurrency)
        print(f"  postgresql  new {new:10,.0f} records/s   retried (duplicates) {dup:10,.0f} records/s")


if __name__ == "__main__":
    asyncio.run(main())
