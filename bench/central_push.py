"""Policy push latency: from `admin policy push` to N long-polling sidecars holding it.

    python bench/central_push.py [--clients 50] [--rounds 20] [--setup one-sqlite|one-pg|two-pg|all]

Every client is an enrolled device long-polling `GET /v1/policy?after=V` from this process.
A round pushes a new org policy through the admin API (what `claude-sidecar admin policy
push` calls) and measures, for every client, the time from just before the push request to
the moment it holds the new version with its signature verified against the pinned key.
With two replicas the clients are split across both and every push lands on the first, so
half the wake-ups cross replicas through PostgreSQL LISTEN/NOTIFY.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.central_common import enroll, post, start, summary
from sidecar.central.signing import verify_envelope
from sidecar.testing.postgres import PgCluster


async def _hold(http: aiohttp.ClientSession, base: str, dev: dict[str, Any], after: int) -> float:
    """Long-poll until a version newer than `after` is held; the time it was."""
    headers = {"authorization": f"Bearer {dev['credential']}"}
    while True:
        async with http.get(base + "/v1/policy", params={"after": str(after)}, headers=headers) as r:
            if r.status == 304:
                continue
            env = await r.json()
        verify_envelope(env, dev["public_key"], dev["device_id"], after + 1)
        return time.perf_counter()


async def run(db_url: str, replicas: int, clients: int, rounds: int) -> list[float]:
    """Latencies (seconds) of every client in every round."""
    async with AsyncExitStack() as stack:
        bases, admin = await start(stack, db_url, replicas)
        conn = aiohttp.TCPConnector(limit=0)
        http = await stack.enter_async_context(aiohttp.ClientSession(connector=conn))
        devices = await enroll(http, bases[0], admin, clients)
        latencies: list[float] = []
        for version in range(rounds):
            polls = [asyncio.ensure_future(_hold(http, bases[i % replicas], d, version)) for i, d in enumerate(devices)]
            await asyncio.sleep(0.3)  # every poll is held by now
            t0 = time.perf_counter()
            await post(http, bases[0] + "/v1/admin/policy", {"document": {"budget": {"daily_usd": 10 + version}}}, admin)
            latencies += [t - t0 for t in await asyncio.gather(*polls)]
        return latencies


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clients", type=int, default=50)
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--setup", choices=("one-sqlite", "one-pg", "two-pg", "all"), default="all")
    args = ap.parse_args()
    print(f"policy push -> {args.clients} long-polling clients holding it, {args.rounds} pushes")
    if args.setup in ("one-sqlite", "all"):
        with tempfile.TemporaryDirectory() as d:
            lat = await run(f"sqlite:///{d}/central.db", 1, args.clients, args.rounds)
        print(f"  one replica, sqlite       {summary(lat)}")
    if args.setup in ("one-pg", "two-pg", "all"):
        with PgCluster() as pg:
            if args.setup in ("one-pg", "all"):
                lat = await run(await pg.new_database(), 1, args.clients, args.rounds)
                print(f"  one replica, postgresql   {summary(lat)}")
            if args.setup in ("two-pg", "all"):
                lat = await run(await pg.new_database(), 2, args.clients, args.rounds)
                print(f"  two replicas, postgresql  {summary(lat)}")


if __name__ == "__main__":
    asyncio.run(main())
