"""Signed policy: verification, scopes and merge rules, versions, history, long-poll."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest

from sidecar.central.signing import SignatureInvalid, SigningKey, verify_envelope
from sidecar.testing.central import Central, CentralProcess

ORG = {
    "budget": {"daily_usd": 50},
    "limits": {"requests_per_minute": 100},
    "policy": {"models": ["claude-*"], "deny_models": ["claude-opus-*"]},
    "ceilings": ["budget.daily_usd", "limits.requests_per_minute", "guardrails.secrets"],
    "guardrails": {"secrets": "redact"},
}


async def _push(c: Central, doc: Any, scope: str = "org") -> tuple[int, Any]:
    return await c.call("POST", "/v1/admin/policy", c.admin_token, json={"scope": scope, "document": doc})


async def _policy(c: Central, cred: str, **params: Any) -> tuple[int, Any]:
    return await c.call("GET", "/v1/policy", cred, params={k: str(v) for k, v in params.items()})


async def test_signature_verifies_with_the_pinned_key_and_nothing_else(central: Central) -> None:
    dev = await central.enroll_device("ada@example.com")
    assert (await _push(central, ORG))[0] == 201
    status, env = await _policy(central, dev["credential"])
    assert status == 200
    payload = verify_envelope(env, dev["public_key"], dev["device_id"])
    assert payload["version"] == 1 and payload["policy"]["budget"]["daily_usd"] == 50
    assert isinstance(payload["issued_at"], float) and abs(payload["issued_at"] - time.time()) < 60
    # a tampered document
    tampered = dict(env, payload=env["payload"].replace('"daily_usd":50', '"daily_usd":5000'))
    assert tampered["payload"] != env["payload"]
    with pytest.raises(SignatureInvalid, match="signature"):
        verify_envelope(tampered, dev["public_key"], dev["device_id"])
    # a tampered signature
    sig = bytearray(base64.b64decode(env["signature"]))
    sig[0] ^= 1
    with pytest.raises(SignatureInvalid, match="signature"):
        verify_envelope(dict(env, signature=base64.b64encode(bytes(sig)).decode()), dev["public_key"], dev["device_id"])
    # the same payload signed by another key
    forged = SigningKey.generate().sign(json.loads(env["payload"]))
    with pytest.raises(SignatureInvalid, match="signature"):
        verify_envelope(forged, dev["public_key"], dev["device_id"])
    with pytest.raises(SignatureInvalid):
        verify_envelope({"payload": 1}, dev["public_key"], dev["device_id"])


async def test_another_devices_policy_and_an_older_version_are_refused(central: Central) -> None:
    a = await central.enroll_device("ada@example.com")
    b = await central.enroll_device("bo@example.com")
    await _push(central, ORG)
    _, env_b = await _policy(central, b["credential"])
    with pytest.raises(SignatureInvalid, match="issued to device"):
        verify_envelope(env_b, a["public_key"], a["device_id"])
    _, old = await _policy(central, a["credential"])
    await _push(central, {**ORG, "budget": {"daily_usd": 40}})
    _, new = await _policy(central, a["credential"])
    held = verify_envelope(new, a["public_key"], a["device_id"])["version"]
    assert held == 2
    with pytest.raises(SignatureInvalid, match="older"):
        verify_envelope(old, a["public_key"], a["device_id"], min_version=held)
    assert verify_envelope(new, a["public_key"], a["device_id"], min_version=held)["version"] == held


async def test_scopes_merge_and_ceilings_cannot_be_loosened(central: Central) -> None:
    dev = await central.enroll_device("ada@example.com", team="core")
    assert (await _push(central, ORG))[0] == 201
    # a team may tighten a ceiling and add denies
    team_doc = {"budget": {"daily_usd": 20}, "policy": {"deny_models": ["claude-3-*"]}, "guardrails": {"secrets": "block"}}
    assert (await _push(central, team_doc, "team:core"))[0] == 201
    # ... but a developer may not loosen what the org capped
    status, body = await _push(central, {"limits": {"requests_per_minute": 500}}, "developer:ada@example.com")
    assert status == 400 and "ceiling" in body["error"]["message"]
    status, body = await _push(central, {"guardrails": {"secrets": "warn"}}, "developer:ada@example.com")
    assert status == 400 and "guardrails.secrets" in body["error"]["message"]
    # only the org sets ceilings
    status, _ = await _push(central, {"ceilings": ["budget.daily_usd"]}, "team:core")
    assert status == 400
    assert (await _push(central, {"limits": {"requests_per_minute": 30}}, "developer:ada@example.com"))[0] == 201
    _, env = await _policy(central, dev["credential"])
    eff = verify_envelope(env, dev["public_key"], dev["device_id"])["policy"]
    assert eff["budget"]["daily_usd"] == 20 and eff["limits"]["requests_per_minute"] == 30
    assert eff["policy"]["deny_models"] == ["claude-opus-*", "claude-3-*"] and eff["guardrails"]["secrets"] == "block"
    assert "ceilings" not in eff
    # lowering the org's ceiling later binds the narrower scopes too
    assert (await _push(central, {**ORG, "budget": {"daily_usd": 10}}))[0] == 201
    _, env = await _policy(central, dev["credential"])
    assert verify_envelope(env, dev["public_key"], dev["device_id"])["policy"]["budget"]["daily_usd"] == 10


@pytest.mark.parametrize(
    "doc",
    [
        {"budget": {"daily_usd": -1}},
        {"limits": {"requests_per_minute": "many"}},
        {"guardrails": {"secrets": "maybe"}},
        {"bogus": 1},
        {"providers": [{"name": "openai", "type": "openai", "api_key": "sk-123"}]},
        {"routes": [{"name": "r", "match": {"model": "*"}, "targets": [{"provider": "nope"}]}]},
        {"ceilings": ["routes"]},
        [],
    ],
)
async def test_invalid_documents_are_refused_with_the_reason(central: Central, doc: Any) -> None:
    status, body = await _push(central, doc)
    assert status == 400 and body["error"]["type"] == "invalid_request_error", body
    assert (await central.store.current_version()) == 0


async def test_routes_and_providers_without_secrets_are_accepted(central: Central) -> None:
    doc = {
        "providers": [{"name": "anthropic", "type": "anthropic"},
                      {"name": "openai", "type": "openai", "base_url": "https://api.openai.com/v1", "keys": ["keyring:openai"]}],
        "routes": [{"name": "default", "match": {"model": "*"}, "targets": [{"provider": "anthropic"}]}],
    }  # fmt: skip
    assert (await _push(central, doc))[0] == 201
    dev = await central.enroll_device("ada@example.com")
    _, env = await _policy(central, dev["credential"])
    eff = verify_envelope(env, dev["public_key"], dev["device_id"])["policy"]
    assert [p["name"] for p in eff["providers"]] == ["anthropic", "openai"] and eff["routes"][0]["name"] == "default"


async def test_history_show_and_rollback(central: Central) -> None:
    await _push(central, {"budget": {"daily_usd": 10}})
    await _push(central, {"budget": {"daily_usd": 20}})
    hist = (await central.admin("GET", "/v1/admin/policy/history", params={"scope": "org"}))["versions"]
    assert [h["version"] for h in hist] == [2, 1]
    old = await central.admin("GET", "/v1/admin/policy", params={"scope": "org", "version": "1"})
    assert old["document"] == {"budget": {"daily_usd": 10}}
    rb = await central.admin("POST", "/v1/admin/policy/rollback", json={"scope": "org", "version": 1})
    assert rb["version"] == 3
    cur = await central.admin("GET", "/v1/admin/policy", params={"scope": "org"})
    assert cur["version"] == 3 and cur["document"] == {"budget": {"daily_usd": 10}}
    status, _ = await central.call("POST", "/v1/admin/policy/rollback", central.admin_token, json={"version": 99})
    assert status == 404


async def test_etag_and_if_none_match(central: Central) -> None:
    dev = await central.enroll_device("ada@example.com")
    await _push(central, ORG)
    async with central.http.get(central.url + "/v1/policy", headers={"authorization": f"Bearer {dev['credential']}"}) as r:
        assert r.status == 200
        etag = r.headers["etag"]
    assert etag == 'W/"v1"'
    headers = {"authorization": f"Bearer {dev['credential']}", "if-none-match": etag}
    async with central.http.get(central.url + "/v1/policy", headers=headers, params={"wait": "0"}) as r:
        assert r.status == 304 and r.headers["etag"] == etag


async def test_long_poll_returns_soon_after_a_push(central: Central) -> None:
    dev = await central.enroll_device("ada@example.com")
    await _push(central, ORG)
    status, _ = await _policy(central, dev["credential"], after=0)
    assert status == 200  # a newer version exists: answered at once
    poll = asyncio.ensure_future(_policy(central, dev["credential"], after=1))
    await asyncio.sleep(0.3)
    assert not poll.done()  # held
    pushed = time.monotonic()
    await _push(central, {**ORG, "budget": {"daily_usd": 30}})
    status, env = await asyncio.wait_for(poll, 1.0)
    assert status == 200 and time.monotonic() - pushed < 1.0
    assert verify_envelope(env, dev["public_key"], dev["device_id"], 1)["version"] == 2


async def test_long_poll_ends_with_304_when_nothing_changes(central: Central) -> None:
    dev = await central.enroll_device("ada@example.com")
    status, _ = await _policy(central, dev["credential"], after=0, wait=0.3)
    assert status == 304


@dataclass
class Replicas:
    """Two server processes on one PostgreSQL, a client, and a device enrolled on `b`."""

    a: str
    b: str
    http: aiohttp.ClientSession
    admin: dict[str, str]
    dev: dict[str, Any]

    async def post(self, base: str, path: str, body: Any, headers: dict[str, str] | None = None) -> Any:
        """POST that must succeed (as the admin unless `headers` say otherwise)."""
        async with self.http.post(base + path, json=body, headers=self.admin if headers is None else headers) as r:
            assert r.status < 300, await r.text()
            return await r.json()

    async def poll(self) -> tuple[int, Any, float]:
        """A long-poll on replica b for anything newer than version 0; (status, body, when)."""
        cred = {"authorization": f"Bearer {self.dev['credential']}"}
        async with self.http.get(self.b + "/v1/policy", params={"after": "0"}, headers=cred) as r:
            return r.status, await r.json(content_type=None), time.monotonic()


@asynccontextmanager
async def _replicas(pg_cluster: Any) -> AsyncIterator[Replicas]:
    url = await pg_cluster.new_database()
    async with CentralProcess(url, "--max-wait", "20") as a, CentralProcess(url, "--max-wait", "20") as b:
        token = a.bootstrap_token or b.bootstrap_token
        assert token and a.url != b.url
        async with aiohttp.ClientSession() as http:
            r = Replicas(a.url, b.url, http, {"authorization": f"Bearer {token}"}, {})
            await r.post(a.url, "/v1/admin/developers", {"email": "ada@example.com"})
            enr = await r.post(a.url, "/v1/admin/enrollment-tokens", {"developer": "ada@example.com"})
            r.dev = await r.post(b.url, "/v1/enroll", {"token": enr["token"]}, {})
            yield r


async def test_long_poll_wakes_across_two_server_processes_on_one_postgresql(pg_cluster: Any) -> None:
    async with _replicas(pg_cluster) as r:
        polls = [asyncio.ensure_future(r.poll()) for _ in range(3)]
        await asyncio.sleep(0.5)
        assert not any(p.done() for p in polls)
        pushed = time.monotonic()
        await r.post(r.a, "/v1/admin/policy", {"document": ORG})  # lands on replica a
        for status, env, at in await asyncio.wait_for(asyncio.gather(*polls), 2.0):
            assert status == 200 and at - pushed < 1.0
            assert verify_envelope(env, r.dev["public_key"], r.dev["device_id"])["version"] == 1


async def test_a_dropped_listen_connection_is_re_established(pg_cluster: Any) -> None:
    import asyncpg

    async with _replicas(pg_cluster) as r:
        # cut every LISTEN connection, as a database restart or a proxy timeout would
        conn = await asyncpg.connect(pg_cluster.url())
        try:
            killed = await conn.fetch("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE query LIKE 'LISTEN%'")
        finally:
            await conn.close()
        assert len(killed) >= 2
        await asyncio.sleep(1.5)  # the replicas reconnect
        held = asyncio.ensure_future(r.poll())
        await asyncio.sleep(0.5)
        pushed = time.monotonic()
        await r.post(r.a, "/v1/admin/policy", {"document": ORG})
        status, _, at = await asyncio.wait_for(held, 4.0)
        assert status == 200 and at - pushed < 1.0  # woken by NOTIFY, not by the 5 s re-read


async def test_moving_a_developer_to_another_team_is_a_new_version(central: Central) -> None:
    dev = await central.enroll_device("ada@example.com", team="core")
    await central.admin("POST", "/v1/admin/teams", json={"name": "infra"})
    await _push(central, {"budget": {"daily_usd": 10}}, "team:core")
    await _push(central, {"budget": {"daily_usd": 99}}, "team:infra")
    _, env = await _policy(central, dev["credential"])
    held = verify_envelope(env, dev["public_key"], dev["device_id"])
    assert held["policy"]["budget"]["daily_usd"] == 10
    poll = asyncio.ensure_future(_policy(central, dev["credential"], after=held["version"]))
    await asyncio.sleep(0.3)
    moved = await central.admin("PATCH", "/v1/admin/developers/ada@example.com", json={"team": "infra"})
    assert moved["team_id"] and moved["version"] == held["version"] + 1
    status, env = await asyncio.wait_for(poll, 2)
    assert status == 200
    now = verify_envelope(env, dev["public_key"], dev["device_id"], held["version"])
    assert now["policy"]["budget"]["daily_usd"] == 99
    developers = (await central.admin("GET", "/v1/admin/developers"))["developers"]
    assert developers[0]["team"] == "infra"
    moved = await central.admin("PATCH", "/v1/admin/developers/ada@example.com", json={"team": None})
    assert moved["team_id"] is None
    status, _ = await central.call("PATCH", "/v1/admin/developers/nobody@example.com", central.admin_token, json={"team": None})
    assert status == 404
