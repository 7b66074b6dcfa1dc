"""The org story with every part a real process: one central server, three enrolled sidecars.

On SQLite and on PostgreSQL (the server's side):

- a push is enforced by all three (each answers the denied model with the policy's 400);
- a policy tampered with between server and sidecar (a proxy in the middle) is refused, the
  previous one stays in force, and the server learns why the device refused it;
- the server stopped for a while: the sidecars keep serving under the last policy, their
  outboxes grow, and once it is back the server holds exactly the sidecars' ledger rows
  (same ids, same costs: nothing lost, nothing twice);
- a sidecar SIGKILLed while it uploads loses and duplicates nothing.
"""

from __future__ import annotations

import asyncio
import math
import os
import re
import sqlite3
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from sidecar.central.store import open_store
from sidecar.testing.fake_anthropic import FakeAnthropic
from sidecar.testing.fake_behaviours import Text
from sidecar.testing.harness import anthropic_config
from sidecar.testing.org import Member, Org, PolicyTamperer, dumps, flip_policy

ALLOWED, DENIED = "claude-sonnet-4-5", "claude-opus-4-1"
WAIT = 20.0  # generous: the machine is shared; the figures are measured in bench/sync_propagation.py


async def eventually(check: Callable[[], Awaitable[bool]], what: str, wait: float = WAIT) -> float:
    """Seconds until `check()` holds (fails the test after `wait`)."""
    start = time.monotonic()
    while not await check():
        if time.monotonic() - start > wait:
            pytest.fail(f"not within {wait} s: {what}")
        await asyncio.sleep(0.02)
    return time.monotonic() - start


@pytest.fixture
async def upstream() -> AsyncIterator[FakeAnthropic]:
    fake = FakeAnthropic(default=Text("ok", usage={"input_tokens": 1200, "output_tokens": 40}))
    async with fake:
        yield fake


async def server_rows(db_url: str) -> dict[str, float]:
    """Every usage row the server holds: id -> cost."""
    store = await open_store(db_url)
    try:
        async with store.db.tx() as tx:
            return {r["id"]: float(r["cost_usd"]) for r in await tx.fetch("SELECT id, cost_usd FROM usage")}
    finally:
        await store.db.close()


def ledger_rows(members: list[Member]) -> dict[str, float]:
    """Every usage row of the sidecars' ledgers: id -> cost."""
    out: dict[str, float] = {}
    for m in members:
        out.update(m.ledger()["costs"])
    return out


async def denies(org: Org, m: Member, model: str) -> bool:
    status, _ = await org.message(m, model)
    return status == 400


async def passes(org: Org, m: Member, model: str) -> bool:
    status, _ = await org.message(m, model)
    return status == 200


async def backlog(org: Org, m: Member) -> int:
    outbox = (await org.status(m))["sync"].get("outbox") or {}
    return int(outbox.get("backlog", -1))


async def test_push_tamper_outage_and_sigkill_with_three_sidecars(
    db_url: str, tmp_path: Path, upstream: FakeAnthropic
) -> None:
    sync = "[sync]\npoll_wait_seconds = 20\nupload_interval_seconds = 0.2\nupload_batch = 25\nretry_max_seconds = 1\n"
    async with Org(db_url, tmp_path, upstream.url) as org, PolicyTamperer(org.url) as mitm:
        await org.push("org", {"policy": {"deny_models": ["claude-opus-*"]}})
        s1 = await org.add_sidecar("ada@example.com", team="core", extra=sync)
        s2 = await org.add_sidecar("bob@example.com", team="core", extra=sync)
        s3 = await org.add_sidecar("cy@example.com", extra=sync, via=mitm.url)
        members = [s1, s2, s3]
        for m in members:
            await eventually(lambda m=m: denies(org, m, DENIED), f"{m.name} enforces the org policy it started with")
            assert await passes(org, m, ALLOWED)

        # A push is enforced by all three, without a restart.
        await org.push("org", {"policy": {"deny_models": ["claude-opus-*", "claude-haiku-*"]}})
        for m in members:
            await eventually(lambda m=m: denies(org, m, "claude-haiku-4-5"), f"{m.name} enforces the pushed deny")

        # Tampered between server and s3: refused, the previous policy kept, the server told why.
        mitm.tamper = flip_policy
        version = await org.push("org", {"policy": {"deny_models": ["claude-opus-*", "claude-haiku-*", "claude-3-*"]}})
        for m in (s1, s2):
            await eventually(lambda m=m: denies(org, m, "claude-3-haiku"), f"{m.name} enforces v{version}")

        async def s3_refused() -> bool:
            policy = (await org.status(s3))["sync"].get("policy") or {}
            return bool(policy.get("error")) and mitm.tampered > 0

        await eventually(s3_refused, "s3 refuses the tampered policy")
        policy = (await org.status(s3))["sync"]["policy"]
        assert "signature" in str(policy["error"]), dumps(policy)
        assert policy["version"] < version, dumps(policy)
        assert await denies(org, s3, DENIED) and await denies(org, s3, "claude-haiku-4-5")  # the previous one holds
        assert await passes(org, s3, "claude-3-haiku")  # the tampered (and the real new) one is not in force

        async def server_knows() -> bool:
            devices = (await org.admin("GET", "/v1/admin/devices"))["devices"]
            return any(d["name"] == "s3" and d["policy_error"] for d in devices)

        await eventually(server_knows, "the server learns why s3 refused")
        mitm.tamper = None
        await eventually(lambda: denies(org, s3, "claude-3-haiku"), "s3 takes the real policy once the proxy stops lying")

        # The server stopped: the sidecars keep serving under the last policy; outboxes grow.
        await eventually(lambda: _drained(org, members), "everything so far is uploaded")
        await org.stop_central()
        for m in members:
            for _ in range(6):
                assert await passes(org, m, ALLOWED)
            assert await denies(org, m, DENIED)
        for m in members:
            await eventually(lambda m=m: _backlog_at_least(org, m, 7), f"{m.name}'s outbox holds what it served offline")
        await org.start_central()
        await eventually(lambda: _drained(org, members), "the backlogs drain once the server is back", wait=60)
        assert await server_rows(db_url) == ledger_rows(members)

        # SIGKILL while uploading: s1 builds a backlog offline, is killed mid-upload, restarts.
        await org.stop_central()
        await asyncio.gather(*(org.message(s1, ALLOWED, f"q{i}") for i in range(300)))
        await eventually(lambda: _backlog_at_least(org, s1, 300), "s1's outbox holds the 300 offline requests")
        before = len(await server_rows(db_url))
        await org.start_central()

        async def uploading() -> bool:
            return len(await server_rows(db_url)) > before

        await eventually(uploading, "s1 starts uploading its backlog")
        await org.stop(s1, kill=True)
        left = await _outbox_rows(s1)
        assert left > 0, "the kill came after the whole backlog was uploaded: nothing was tested"
        await org.start(s1)
        await eventually(lambda: _drained(org, members), "s1 drains what is left after the kill", wait=60)
        server, ledgers = await server_rows(db_url), ledger_rows(members)
        assert server == ledgers, f"{len(server)} on the server, {len(ledgers)} in the ledgers"
        report = await org.server_usage()
        assert report["requests"] == len(ledgers)


async def _ledger_has(m: Member, n: int) -> bool:
    return m.ledger()["requests"] >= n


async def _backlog_at_least(org: Org, m: Member, n: int) -> bool:
    return await backlog(org, m) >= n


async def _drained(org: Org, members: list[Member]) -> bool:
    for m in members:
        if await backlog(org, m) != 0:
            return False
    return True


async def _outbox_rows(m: Member) -> int:
    """Rows still queued in a stopped member's outbox."""
    db = sqlite3.connect(f"file:{m.db_file}?mode=ro", uri=True)
    try:
        return int(db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0])
    finally:
        db.close()


async def test_a_team_pool_shared_by_three_sidecars_under_load_holds(db_url: str, tmp_path: Path, upstream: FakeAnthropic) -> None:
    pool = 0.30
    async with Org(db_url, tmp_path, upstream.url) as org:
        await org.push("org", {"sync": {"lease_usd": 0.05, "lease_ttl_seconds": 600}})
        members = [await org.add_sidecar(f"dev{i}@example.com", team="core") for i in range(3)]
        version = await org.push("team:core", {"pools": {"daily_usd": pool}})  # pushed while they run

        async def runs(m: Member) -> bool:  # spend before a sidecar learns of a pool is not the pool's
            return ((await org.status(m))["sync"].get("policy") or {}).get("version") == version

        for m in members:
            await eventually(lambda m=m: runs(m), f"{m.name} runs the policy that brought the pool")
        refusals: list[dict[str, Any]] = []
        answered = dict.fromkeys((m.name for m in members), 0)

        async def client(m: Member) -> None:
            for i in range(400):
                status, body = await org.message(m, ALLOWED, f"{m.name} {i}")
                answered[m.name] += 1
                if status == 429 and body["error"]["type"] == "billing_error":
                    refusals.append(body)
                    return
                assert status in (200, 429), (status, body)

        await asyncio.gather(*(client(m) for m in members for _ in range(4)))
        assert len(refusals) == 12, "every client ran into the team's pool"
        assert "team core" in refusals[0]["error"]["message"] and "resets" in refusals[0]["error"]["message"], refusals[0]
        for m in members:  # every answer's row written (the ledger writes in batches)
            await eventually(lambda m=m: _ledger_has(m, answered[m.name]), f"{m.name}'s ledger has every answer")
        spent = math.fsum(m.ledger()["cost_usd"] for m in members)
        outstanding = math.fsum(p["outstanding_usd"] for p in (await org.admin("GET", "/v1/admin/leases"))["pools"])
        assert spent <= pool + outstanding + 1e-9, (spent, pool, outstanding)
        assert spent > pool * 0.5, f"only ${spent:.4f} of the ${pool} pool was spent: the pool was not the limit"


async def test_an_org_policy_turns_the_audit_log_on_for_a_sidecar_whose_config_has_it_off(
    db_url: str, tmp_path: Path, upstream: FakeAnthropic
) -> None:
    async with Org(db_url, tmp_path, upstream.url) as org:
        m = await org.add_sidecar("ada@example.com", extra="[policy]\naudit = false\n")
        assert await passes(org, m, ALLOWED)
        version = await org.push("org", {"policy": {"audit": True}})

        async def running() -> bool:
            return ((await org.status(m))["sync"].get("policy") or {}).get("version") == version

        await eventually(running, "the sidecar takes the org's policy")
        assert await passes(org, m, ALLOWED)
        await org.stop(m)
        db = sqlite3.connect(f"file:{m.db_file}?mode=ro", uri=True)
        try:
            kinds = [r[0] for r in db.execute("SELECT kind FROM audit ORDER BY seq")]
        finally:
            db.close()
        assert kinds.count("request") == 1, kinds  # the request after the push, not the one before
        assert "policy" in kinds, kinds


async def test_enroll_and_unenroll_while_the_daemon_runs(db_url: str, tmp_path: Path, upstream: FakeAnthropic) -> None:
    async with Org(db_url, tmp_path, upstream.url) as org:
        await org.push("org", {"policy": {"deny_models": ["claude-opus-*"]}})
        m = Member("solo", "solo@example.com", tmp_path / "solo", anthropic_config(upstream.url))
        m.home.mkdir()
        m.env = {**os.environ, "CLAUDE_SIDECAR_HOME": str(m.home), "CLAUDE_SIDECAR_CONFIG": str(m.home / "config.toml")}
        org.members.append(m)  # stopped with the org
        await org.start(m)
        assert (await org.status(m))["sync"] == {"enrolled": False, "state": "not enrolled"}
        assert await passes(org, m, DENIED)

        await org.admin("POST", "/v1/admin/developers", {"email": m.email})
        token = (await org.admin("POST", "/v1/admin/enrollment-tokens", {"developer": m.email}))["token"]
        done = await asyncio.to_thread(
            subprocess.run, [sys.executable, "-m", "sidecar", "enroll", org.url, "--token", token], env=m.env, capture_output=True, text=True
        )
        assert done.returncode == 0, done.stderr
        await eventually(lambda: denies(org, m, DENIED), "the running daemon enrolls and enforces the org's policy")
        assert await passes(org, m, ALLOWED)

        async def uploaded() -> bool:
            return (await org.server_usage())["requests"] >= 2  # the refusal and the answer

        await eventually(uploaded, "what it served enrolled is uploaded")
        shown = await asyncio.to_thread(subprocess.run, [sys.executable, "-m", "sidecar", "status"], env=m.env, capture_output=True, text=True)
        assert f"  sync: synced v1 with {org.url} as dvc_" in shown.stdout, shown.stdout
        assert "    org policy: v1, issued " in shown.stdout and re.search(r"    usage upload: 0 waiting, \d+ sent", shown.stdout), shown.stdout

        done = await asyncio.to_thread(subprocess.run, [sys.executable, "-m", "sidecar", "unenroll"], env=m.env, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr

        async def local_again() -> bool:
            return (await org.status(m))["sync"].get("enrolled") is False and await passes(org, m, DENIED)

        await eventually(local_again, "unenrolled, the local config's policy is in force again")
        served = m.ledger()["requests"]
        assert await passes(org, m, ALLOWED)
        await eventually(lambda: _ledger_has(m, served + 1), "the request after unenrolling is in the ledger")
        assert await _outbox_rows(m) == 0  # and nothing is queued for a server it left
        devices = (await org.admin("GET", "/v1/admin/devices"))["devices"]
        assert all(d["revoked_at"] for d in devices), devices
