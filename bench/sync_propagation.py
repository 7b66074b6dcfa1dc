"""Push to enforced: how long an org policy push takes to be enforced by enrolled sidecars.

One central server and N sidecars (real processes on loopback, `sidecar.testing.org`), a
fake upstream. Each round pushes an org policy that flips whether a model is denied; each
sidecar is probed with that model every few milliseconds until its answer flips. The time
from the push's answer to the first flipped probe is that sidecar's propagation time.

    python bench/sync_propagation.py                     # 3 sidecars, 20 pushes, SQLite
    python bench/sync_propagation.py --postgres          # the server on a throwaway PostgreSQL
    python bench/sync_propagation.py --sidecars 3 --pushes 50
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

from sidecar.testing.fake_anthropic import FakeAnthropic
from sidecar.testing.fake_behaviours import Text
from sidecar.testing.org import Member, Org

MODEL = "claude-haiku-4-5"
PROBE_EVERY = 0.005


def pct(values: list[float], p: float) -> float:
    """The p-th percentile (nearest rank)."""
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(p / 100 * len(s) + 0.5) - 1))]


async def flipped(org: Org, m: Member, denied: bool, since: float, limit: float = 30.0) -> float:
    """Seconds from `since` until `m` answers MODEL as `denied` says."""
    while True:
        status, _ = await org.message(m, MODEL)
        if (status == 400) == denied:
            return time.monotonic() - since
        if time.monotonic() - since > limit:
            raise RuntimeError(f"{m.name} did not enforce the push within {limit} s")
        await asyncio.sleep(PROBE_EVERY)


async def run(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="sidecar-bench-sync-") as tmp:
        root = Path(tmp)
        cluster = None
        if args.postgres:
            from sidecar.testing.postgres import PgCluster

            cluster = PgCluster()
            cluster.__enter__()
            db_url = await cluster.new_database()
        else:
            db_url = f"sqlite:///{root / 'central.db'}"
        try:
            async with FakeAnthropic(default=Text("ok")) as fake, Org(db_url, root, fake.url) as org:
                members = [await org.add_sidecar(f"dev{i}@example.com") for i in range(args.sidecars)]
                await asyncio.sleep(2.0)  # every sidecar holds its long-poll
                samples: list[float] = []
                for i in range(args.pushes):
                    denied = i % 2 == 0
                    await org.push("org", {"policy": {"deny_models": [MODEL] if denied else []}})
                    since = time.monotonic()
                    samples += await asyncio.gather(*(flipped(org, m, denied, since) for m in members))
                    await asyncio.sleep(0.2)
                ms = [s * 1000 for s in samples]
                print(f"push -> enforced, {args.sidecars} sidecars x {args.pushes} pushes ({'PostgreSQL' if args.postgres else 'SQLite'}):")
                print(f"  p50 {statistics.median(ms):.1f} ms   p99 {pct(ms, 99):.1f} ms   max {max(ms):.1f} ms   (n={len(ms)})")
        finally:
            if cluster is not None:
                cluster.__exit__(None, None, None)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sidecars", type=int, default=3)
    p.add_argument("--pushes", type=int, default=20)
    p.add_argument("--postgres", action="store_true", help="the server's database on a throwaway PostgreSQL 15")
    asyncio.run(run(p.parse_args(argv)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
