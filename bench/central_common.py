"""Shared by the central-server benches: start servers on SQLite or a throwaway PostgreSQL,
enroll devices, make usage records."""

from __future__ import annotations

import random
import statistics
import time
from contextlib import AsyncExitStack
from typing import Any

import aiohttp

from sidecar.ledger.record import new_ulid
from sidecar.testing.central import CentralProcess

FAST = ("--enroll-per-minute", "1000000", "--auth-failures-per-minute", "1000000")


async def start(stack: AsyncExitStack, db_url: str, replicas: int = 1) -> tuple[list[str], str]:
    """`replicas` server processes on one database; their URLs and the bootstrap admin token."""
    procs = []
    for _ in range(replicas):
        procs.append(await stack.enter_async_context(CentralProcess(db_url, *FAST)))
    token = next(p.bootstrap_token for p in procs if p.bootstrap_token)
    assert token
    return [p.url for p in procs], token


async def post(http: aiohttp.ClientSession, url: str, body: Any, token: str | None = None) -> Any:
    """POST JSON, fail loudly on an error."""
    headers = {"authorization": f"Bearer {token}"} if token else {}
    async with http.post(url, json=body, headers=headers) as r:
        if r.status >= 300:
            raise RuntimeError(f"{url}: {r.status} {await r.text()}")
        return await r.json()


async def enroll(http: aiohttp.ClientSession, base: str, admin: str, n: int) -> list[dict[str, Any]]:
    """`n` enrolled devices (one developer each)."""
    out = []
    for i in range(n):
        dev = await post(http, base + "/v1/admin/developers", {"email": f"bench{i}@example.com"}, admin)
        enr = await post(http, base + "/v1/admin/enrollment-tokens", {"developer": dev["id"]}, admin)
        out.append(await post(http, base + "/v1/enroll", {"token": enr["token"], "name": f"bench-{i}"}))
    return out


def records(n: int, rnd: random.Random) -> list[dict[str, Any]]:
    """`n` realistic usage records."""
    now = time.time()
    return [
        {"id": new_ulid(now), "ts": now, "model": rnd.choice(("claude-sonnet-4-5", "claude-haiku-4-5", "claude-opus-4-1")),
         "route": rnd.choice(("default", "background-cheap")), "provider": "anthropic",
         "input_tokens": rnd.randrange(100, 80_000), "output_tokens": rnd.randrange(10, 4000),
         "cache_read_tokens": rnd.randrange(0, 60_000), "cache_write_tokens": rnd.randrange(0, 5000),
         "cost_usd": round(rnd.random() * 0.2, 6)}
        for _ in range(n)
    ]  # fmt: skip


def pct(values: list[float], p: float) -> float:
    """The p-th percentile (nearest rank)."""
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(p / 100 * len(s) + 0.5) - 1))]


def summary(values: list[float]) -> str:
    """p50 / p99 / max in milliseconds."""
    ms = [v * 1000 for v in values]
    return f"p50 {statistics.median(ms):7.1f} ms   p99 {pct(ms, 99):7.1f} ms   max {max(ms):7.1f} ms   (n={len(ms)})"
