"""Budget leases against a real central server process (SQLite): grant, renew, return, refuse,
and three devices sharing one team pool under concurrent load."""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from sidecar.errors import BudgetExhausted, RateLimited
from sidecar.policy.control import POLICY
from sidecar.providers import tokens
from sidecar.sync.client import DeviceClient
from sidecar.sync.leases import LeaseHold, LeaseManager
from sidecar.testing.central import CentralProcess
from sidecar.testing.fake_anthropic import FakeAnthropic, Text
from sidecar.testing.harness import InProcessSidecar, anthropic_config, sidecar_in_process

EPS = 1e-6


@dataclass
class Org:
    """A central server child process and an admin session on it."""

    url: str
    admin: str
    http: aiohttp.ClientSession
    managers: list[LeaseManager] = field(default_factory=list)
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    events: list[tuple[str, dict[str, Any]]] = field(default_factory=list)

    async def call(self, method: str, path: str, **kw: Any) -> Any:
        async with self.http.request(method, self.url + path, headers={"authorization": f"Bearer {self.admin}"}, **kw) as r:
            body = await r.json(content_type=None)
            assert r.status < 300, (r.status, body)
            return body

    async def device(self, email: str, team: str | None) -> str:
        """Enroll a device of a new developer; its credential."""
        await self.call("POST", "/v1/admin/developers", json={"email": email, "team": team})
        token = (await self.call("POST", "/v1/admin/enrollment-tokens", json={"developer": email}))["token"]
        async with self.http.post(self.url + "/v1/enroll", json={"token": token, "name": "laptop"}) as r:
            assert r.status == 201
            return str((await r.json())["credential"])

    async def manager(self, credential: str, lease_usd: float = 5.0, ttl: float = 3600.0) -> LeaseManager:
        """A running LeaseManager for the device."""
        m = LeaseManager(DeviceClient(self.url, credential), lambda kind, data: self.events.append((kind, data)))
        m.configure(lease_usd, ttl)
        self.managers.append(m)
        self.tasks.append(asyncio.ensure_future(m.run()))
        return m

    async def pools(self) -> dict[str, dict[str, Any]]:
        """The lease overview of the current day, by pool."""
        rows = (await self.call("GET", "/v1/admin/leases"))["pools"]
        day = max((r["period"] for r in rows if len(r["period"]) == 10), default="")
        return {r["pool"]: r for r in rows if r["period"] == day}


@pytest.fixture
async def org(tmp_path: Path) -> AsyncIterator[Org]:
    async with CentralProcess(f"sqlite:///{tmp_path / 'central.db'}") as server, aiohttp.ClientSession() as http:
        assert server.bootstrap_token
        o = Org(server.url, server.bootstrap_token, http)
        await o.call("POST", "/v1/admin/teams", json={"name": "core"})
        yield o
        for t in o.tasks:
            t.cancel()
        for m in o.managers:
            await m.close()
            await m.client.close()
        await asyncio.gather(*o.tasks, return_exceptions=True)


async def _team_pool(org: Org, daily: float, org_daily: float | None = None) -> None:
    await org.call("POST", "/v1/admin/policy", json={"scope": "team:core", "document": {"pools": {"daily_usd": daily}}})
    if org_daily is not None:
        await org.call("POST", "/v1/admin/policy", json={"document": {"pools": {"daily_usd": org_daily}}})


async def _until(check: Callable[[], Awaitable[bool]], what: str, rounds: int = 400) -> None:
    for _ in range(rounds):
        if await check():
            return
        await asyncio.sleep(0.025)
    raise AssertionError(f"never: {what}")


async def test_grant_renew_at_half_and_return_at_close(org: Org) -> None:
    await _team_pool(org, daily=20.0)
    m = await org.manager(await org.device("ada@example.com", "core"), lease_usd=5.0)
    holds = [await m.admit(1.0) for _ in range(3)]
    first = m.state()["periods"]["day"]
    assert first["pooled"] is True and first["amount_usd"] == 5.0 and first["held_usd"] == 3.0
    assert m.state()["periods"]["month"]["pooled"] is False  # no monthly pool: that period is not metered
    for h in holds:
        assert h is not None
        m.settle(h, 0.9)  # 2.7 of 5 spent: less than half left, so it is renewed

    async def renewed() -> bool:
        return m.state()["periods"]["day"]["lease_id"] not in (None, first["lease_id"])

    await _until(renewed, "the lease is renewed")
    pools = await org.pools()
    team = next(p for name, p in pools.items() if name.startswith("team:"))
    # the old lease went back with exactly what was spent; the new one is outstanding in full
    assert abs(team["used_usd"] - 2.7) < EPS and team["outstanding_usd"] == 5.0 and team["leases"] == 2
    h = await m.admit(0.5)
    assert h is not None
    m.settle(h, 0.25)
    await m.close()
    team = next(p for name, p in (await org.pools()).items() if name.startswith("team:"))
    assert abs(team["used_usd"] - 2.95) < EPS and team["outstanding_usd"] == 0  # the unused part came back
    assert [e["event"] for k, e in org.events if k == "lease"].count("returned") == 2


async def test_an_empty_team_pool_refuses_naming_the_team_budget_and_its_reset(org: Org) -> None:
    await _team_pool(org, daily=3.0, org_daily=100.0)
    a = await org.manager(await org.device("ada@example.com", "core"), lease_usd=5.0)
    b = await org.manager(await org.device("bo@example.com", "core"), lease_usd=5.0)
    h = await a.admit(2.0)  # a gets all 3 the team has (less than the 5 it asked for)
    assert h is not None
    with pytest.raises(BudgetExhausted) as exc:
        await b.admit(0.5)
    e = exc.value
    assert e.status == 429 and e.error_type == "billing_error"
    assert "team core's shared daily budget of $3.00 is used up" in e.message
    assert "resets at" in e.message and "UTC (in " in e.message and "pools.daily_usd" in e.message
    assert e.headers["x-should-retry"] == "false" and int(e.headers["retry-after"]) > 0
    assert e.headers["anthropic-ratelimit-unified-status"] == "rejected"
    # a's own share: 1.0 left next to the 2.0 held, so 1.5 waits for the request in flight
    with pytest.raises(RateLimited) as crowded:
        await a.admit(1.5)
    assert not isinstance(crowded.value, BudgetExhausted)
    a.settle(h, 2.0)
    with pytest.raises(BudgetExhausted) as exc:
        await a.admit(1.5)
    assert "cannot fit this request (about $1.50; $1.00 of it is left)" in exc.value.message
    h2 = await a.admit(0.75)  # what fits is still admitted
    assert h2 is not None


async def test_without_a_pool_everything_is_admitted_without_a_lease(org: Org) -> None:
    m = await org.manager(await org.device("ada@example.com", None))
    assert await m.admit(1e6) is None
    assert {p["pooled"] for p in m.state()["periods"].values()} == {False}
    assert await org.pools() == {}


async def test_three_devices_under_load_never_spend_more_than_the_team_pool(org: Org) -> None:
    """Bound asserted: at every sample, what the devices spent <= the server's committed
    (used of closed + amount of open leases) <= the pool; after close the server's used equals
    what was spent exactly. (The issue's bound, spend <= pool + leases outstanding, follows.)"""
    limit = 12.0
    await _team_pool(org, daily=limit, org_daily=1000.0)
    managers = [await org.manager(await org.device(f"d{i}@example.com", "core"), lease_usd=1.5) for i in range(3)]
    rnd = random.Random(15)
    spent = [0.0]
    refused = {"exhausted": 0, "crowded": 0}
    samples: list[tuple[float, float]] = []

    async def worker(m: LeaseManager, seed: int) -> None:
        r = random.Random(seed)
        for _ in range(200):
            amount = r.uniform(0.02, 0.4)
            try:
                hold = await m.admit(amount)
            except BudgetExhausted:
                refused["exhausted"] += 1
                return
            except RateLimited:
                refused["crowded"] += 1
                await asyncio.sleep(0.02)
                continue
            assert isinstance(hold, LeaseHold)
            await asyncio.sleep(r.uniform(0, 0.01))
            cost = amount * r.uniform(0.3, 1.0)  # the real cost never exceeds the worst case held
            spent[0] += cost
            m.settle(hold, cost)

    async def sampler() -> None:
        while True:
            before = spent[0]
            team = next(p for name, p in (await org.pools()).items() if name.startswith("team:"))
            samples.append((before, team["used_usd"] + team["outstanding_usd"]))
            await asyncio.sleep(0.005)

    watch = asyncio.ensure_future(sampler())
    await asyncio.gather(*(worker(m, rnd.randrange(1 << 30)) for m in managers for _ in range(8)))
    watch.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await watch
    for m in managers:
        await m.close()
    team = next(p for name, p in (await org.pools()).items() if name.startswith("team:"))
    print(f"spent {spent[0]:.4f} of {limit}; refused {refused}; {team['leases']} leases; {len(samples)} samples")
    assert samples and all(s <= c + EPS and c <= limit + EPS for s, c in samples), samples
    assert spent[0] <= limit + EPS
    assert abs(team["used_usd"] - spent[0]) < 1e-5 and team["outstanding_usd"] == 0
    assert refused["exhausted"] > 0  # the load did run the pool dry
    assert spent[0] > limit - 3 * (1.5 + 0.4)  # and most of it went to requests, not idle leases


# ---------------------------------------------------------------------- through the gate

PRICES = '\n[pricing."claude-opus-4-8"]\ninput = 5.0\noutput = 25.0\ncache_read = 0.5\ncache_write = 6.25\n'
USAGE = {"input_tokens": 200, "output_tokens": 400}
COST = (200 * 5.0 + 400 * 25.0) / 1e6  # what each answer costs: $0.011


def _payload(max_tokens: int = 1000) -> dict[str, Any]:
    return {"model": "claude-opus-4-8", "max_tokens": max_tokens, "stream": True, "messages": [{"role": "user", "content": "hi"}]}


async def _post(http: aiohttp.ClientSession, sc: InProcessSidecar, max_tokens: int = 1000) -> tuple[int, bytes]:
    async with http.post(sc.url + "/v1/messages", json=_payload(max_tokens), headers={"x-api-key": "sk-ant-test"}) as r:
        return r.status, await r.read()


@contextlib.asynccontextmanager
async def _sidecars(org: Org, tmp_path: Path, upstream: str, n: int, extra: str = "", lease_usd: float = 0.1) -> AsyncIterator[list[InProcessSidecar]]:
    async with contextlib.AsyncExitStack() as stack:
        out = []
        for i in range(n):
            sc = await stack.enter_async_context(sidecar_in_process(anthropic_config(upstream, PRICES + extra), tmp_path / f"sc{i}"))
            sc.app[POLICY].leases = await org.manager(await org.device(f"sc{i}@example.com", "core"), lease_usd=lease_usd)
            out.append(sc)
        yield out


async def test_three_sidecars_through_the_gate_stay_within_the_team_pool(org: Org, tmp_path: Path) -> None:
    """The gate holds each request's worst case (here ~$0.026 for max_tokens 1000) in the lease
    and settles the real cost ($0.011): 200s x cost <= the pool, and the server's used after
    close equals it exactly."""
    limit = 0.6
    await _team_pool(org, daily=limit, org_daily=1000.0)
    async with FakeAnthropic(default=Text("ok", usage=USAGE)) as fake, aiohttp.ClientSession() as http:
        async with _sidecars(org, tmp_path, fake.url, 3) as sidecars:
            statuses: list[int] = []

            async def client(sc: InProcessSidecar) -> None:
                for _ in range(40):
                    status, raw = await _post(http, sc)
                    statuses.append(status)
                    if status == 429 and b"billing_error" in raw:
                        assert b"team core's shared daily budget" in raw, raw
                        return

            await asyncio.gather(*(client(sc) for sc in sidecars for _ in range(4)))
            for sc in sidecars:
                await sc.app[POLICY].leases.close()
    ok = statuses.count(200)
    team = next(p for name, p in (await org.pools()).items() if name.startswith("team:"))
    print(f"{ok} answered, spent {ok * COST:.4f} of {limit}; statuses {sorted(set(statuses))}; {team['leases']} leases")
    assert ok * COST <= limit + EPS
    assert abs(team["used_usd"] - ok * COST) < 1e-6 and team["outstanding_usd"] == 0
    assert ok * COST > limit - 3 * 0.1 - 0.03  # at most each sidecar's last lease went unspent
    assert 429 in statuses


async def test_a_pool_refusal_releases_the_local_budget_reservation(org: Org, tmp_path: Path) -> None:
    await _team_pool(org, daily=0.02)
    budget = "\n[budget]\ndaily_usd = 5.0\n"
    async with FakeAnthropic(default=Text("ok", usage=USAGE)) as fake, aiohttp.ClientSession() as http:
        async with _sidecars(org, tmp_path, fake.url, 1, extra=budget, lease_usd=0.02) as (sc,):
            status, raw = await _post(http, sc)  # worst case ~$0.026: more than the team has
            assert status == 429 and b"billing_error" in raw and b"team core" in raw, raw
            gate = sc.app[POLICY]
            day = gate.budgets.state()[0]
            assert day["reserved_usd"] == 0 and day["in_flight"] == 0 and day["spent_usd"] == 0
            status, raw = await _post(http, sc, max_tokens=300)  # ~$0.0085 fits
            assert status == 200, raw
            assert abs(gate.budgets.state()[0]["spent_usd"] - COST) < 1e-9


async def test_offline_a_device_keeps_serving_and_reports_the_spend_with_its_next_lease(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = str(s.getsockname()[1])
    db = f"sqlite:///{tmp_path / 'central.db'}"
    server = await CentralProcess(db, "--port", port).__aenter__()
    try:
        async with aiohttp.ClientSession() as http:
            assert server.bootstrap_token
            org = Org(server.url, server.bootstrap_token, http)
            await org.call("POST", "/v1/admin/teams", json={"name": "core"})
            await _team_pool(org, daily=10.0)
            m = await org.manager(await org.device("ada@example.com", "core"), lease_usd=1.0)
            h = await m.admit(0.4)
            assert h is not None
            m.settle(h, 0.4)
            await server.stop()  # the server goes away with 0.6 of the lease left
            h = await m.admit(0.3)  # served from the lease; the renewal it asks for fails
            assert h is not None and h.leases
            m.settle(h, 0.3)

            async def offline() -> bool:
                return m.state()["periods"]["day"]["offline"] is not None

            await _until(offline, "the renewal finds the server gone")
            h = await m.admit(0.5)  # more than the lease has left: admitted without one
            assert h is not None and h.leases == [] and h.unleased == ["day"]
            m.settle(h, 0.5)
            server = await CentralProcess(db, "--port", port).__aenter__()

            async def back() -> bool:
                day = m.state()["periods"]["day"]
                return day["offline"] is None and day["lease_id"] is not None and day["retiring"] == 0

            try:
                await _until(back, "the leases are renewed once the server is back", rounds=1600)
                assert abs(m.state()["periods"]["day"]["used_usd"] - 0.5) < EPS  # the offline spend rides on the new lease
            finally:
                for t in org.tasks:
                    t.cancel()
                await m.close()
                await m.client.close()
            team = next(p for name, p in (await org.pools()).items() if name.startswith("team:"))
            assert abs(team["used_usd"] - 1.2) < EPS and team["outstanding_usd"] == 0
    finally:
        await server.stop()


async def test_a_lease_expiring_under_a_request_in_flight_is_returned_with_its_hold_counted(org: Org) -> None:
    await _team_pool(org, daily=10.0)
    m = await org.manager(await org.device("ada@example.com", "core"), lease_usd=1.0, ttl=2.0)
    h = await m.admit(0.8)
    assert h is not None
    first = m.state()["periods"]["day"]["lease_id"]

    async def returned() -> bool:
        day = m.state()["periods"]["day"]
        return day["lease_id"] != first and day["retiring"] == 0

    # renewed before it expires; the old one goes back before the server would close it,
    # with the 0.8 still held counted as spent (the request may cost up to that)
    await _until(returned, "the expiring lease is replaced and returned")
    team = next(p for name, p in (await org.pools()).items() if name.startswith("team:"))
    assert abs(team["used_usd"] - 0.8) < EPS
    m.settle(h, 0.3)  # counted already: nothing more is charged anywhere
    assert m.state()["periods"]["day"]["used_usd"] == 0.0
    assert m.accounts["day"].debt == 0.0


async def test_a_monthly_pool_is_leased_and_enforced_next_to_the_daily_one(org: Org) -> None:
    await org.call("POST", "/v1/admin/policy", json={"scope": "team:core", "document": {"pools": {"daily_usd": 50.0, "monthly_usd": 1.0}}})
    m = await org.manager(await org.device("ada@example.com", "core"), lease_usd=5.0)
    h = await m.admit(0.75)
    assert h is not None and sorted(x.period for x in h.leases) == ["day", "month"]
    m.settle(h, 0.75)
    with pytest.raises(BudgetExhausted) as exc:
        await m.admit(0.5)  # the day has room, the month does not
    assert "team core's shared monthly budget of $1.00 cannot fit this request (about $0.50; $0.25 of it is left)" in exc.value.message
    await m.close()
    rows = {(r["pool"].split(":")[0], len(r["period"])): r for r in (await org.call("GET", "/v1/admin/leases"))["pools"]}
    assert rows[("team", 7)]["used_usd"] == 0.75 and rows[("team", 10)]["used_usd"] == 0.75


async def test_without_a_pool_the_gate_does_no_metering_work(org: Org, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An enrolled device that no pool limits pays nothing for its lease manager per request
    (no token estimate, no hold), but one still learning whether a pool applies is metered."""
    estimated: list[int] = []
    real = tokens.estimate

    def counting(*args: Any) -> int:
        estimated.append(1)
        return real(*args)

    monkeypatch.setattr(tokens, "estimate", counting)
    async with FakeAnthropic(default=Text("ok", usage=USAGE)) as fake, aiohttp.ClientSession() as http:
        async with sidecar_in_process(anthropic_config(fake.url, PRICES), tmp_path / "sc") as sc:
            m = await org.manager(await org.device("solo@example.com", None))
            assert m.applies  # not known yet: metered
            assert await m.admit(0.01) is None  # the server says: no pool for this device
            assert not m.applies
            sc.app[POLICY].leases = m
            status, _ = await _post(http, sc)
            assert status == 200 and estimated == []
            m.configure(0.1, 600)  # a new policy may bring a pool: not known again until the server says
            assert m.applies
            await m.close()
