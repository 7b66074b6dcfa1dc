"""Enrollment, token kinds and scopes, revocation, roles and the audit chain."""

from __future__ import annotations

import asyncio

from sidecar.audit.chain import GENESIS, Entry
from sidecar.central import tokens
from sidecar.central.signing import verify_envelope
from sidecar.testing.central import Central


async def test_enrollment_happy_path(central: Central) -> None:
    enrolled = await central.enroll_device("ada@example.com", team="core")
    assert enrolled["credential"].startswith("csd_") and enrolled["device_id"].startswith("dvc_")
    status, key = await central.call("GET", "/v1/signing-key")
    assert status == 200 and key["public_key"] == enrolled["public_key"]
    status, env = await central.call("GET", "/v1/policy", enrolled["credential"])
    assert status == 200
    payload = verify_envelope(env, enrolled["public_key"], enrolled["device_id"])
    assert payload["version"] == 0 and payload["policy"] == {}
    devices = (await central.admin("GET", "/v1/admin/devices"))["devices"]
    assert [d["id"] for d in devices] == [enrolled["device_id"]] and devices[0]["email"] == "ada@example.com"


async def test_tokens_are_stored_hashed_only(central: Central) -> None:
    enrolled = await central.enroll_device("ada@example.com")
    async with central.store.db.tx() as tx:
        rows = await tx.fetch("SELECT token_hash FROM devices UNION ALL SELECT token_hash FROM admins")
    stored = {r["token_hash"] for r in rows}
    assert tokens.hash_token(enrolled["credential"]) in stored
    assert enrolled["credential"] not in stored and central.admin_token not in stored


async def test_reused_enrollment_token_is_refused_even_concurrently(central: Central) -> None:
    await central.admin("POST", "/v1/admin/developers", json={"email": "bo@example.com"})
    enr = await central.admin("POST", "/v1/admin/enrollment-tokens", json={"developer": "bo@example.com"})
    results = await asyncio.gather(
        *(central.call("POST", "/v1/enroll", json={"token": enr["token"], "name": f"m{i}"}) for i in range(5))
    )
    statuses = sorted(s for s, _ in results)
    assert statuses == [201, 401, 401, 401, 401], results
    status, body = await central.call("POST", "/v1/enroll", json={"token": enr["token"]})
    assert status == 401 and body["error"]["type"] == "authentication_error"


async def test_expired_enrollment_token_is_refused(central: Central) -> None:
    await central.admin("POST", "/v1/admin/developers", json={"email": "cy@example.com"})
    enr = await central.admin("POST", "/v1/admin/enrollment-tokens", json={"developer": "cy@example.com", "ttl_seconds": 0.2})
    await asyncio.sleep(0.4)
    status, body = await central.call("POST", "/v1/enroll", json={"token": enr["token"]})
    assert status == 401 and "expired" in body["error"]["message"]


async def test_unknown_or_wrong_kind_enrollment_token_is_refused(central: Central) -> None:
    for token in ("cse_" + "x" * 43, central.admin_token, "nonsense"):
        status, _ = await central.call("POST", "/v1/enroll", json={"token": token})
        assert status == 401


async def test_revoked_device_is_refused_on_its_next_call(central: Central) -> None:
    enrolled = await central.enroll_device("dee@example.com")
    cred = enrolled["credential"]
    assert (await central.call("GET", "/v1/policy", cred))[0] == 200
    await central.admin("DELETE", f"/v1/admin/devices/{enrolled['device_id']}")
    for method, path, kw in (("GET", "/v1/policy", {}), ("POST", "/v1/usage", {"json": {"records": []}})):
        status, body = await central.call(method, path, cred, **kw)
        assert status == 401 and body["error"]["type"] == "authentication_error", (path, body)


async def test_unenroll_revokes_the_own_credential(central: Central) -> None:
    enrolled = await central.enroll_device("eve@example.com")
    status, _ = await central.call("DELETE", "/v1/device", enrolled["credential"])
    assert status == 200
    assert (await central.call("GET", "/v1/policy", enrolled["credential"]))[0] == 401


async def test_device_token_cannot_call_admin_endpoints(central: Central) -> None:
    cred = (await central.enroll_device("fay@example.com"))["credential"]
    for method, path in (("GET", "/v1/admin/teams"), ("POST", "/v1/admin/policy"), ("GET", "/v1/admin/usage"),
                         ("DELETE", "/v1/admin/devices/x"), ("POST", "/v1/admin/enrollment-tokens")):  # fmt: skip
        status, body = await central.call(method, path, cred, json={})
        assert status == 401 and body["error"]["type"] == "authentication_error", (path, status)


async def test_admin_token_cannot_pose_as_a_device(central: Central) -> None:
    for method, path, kw in (("GET", "/v1/policy", {}), ("POST", "/v1/usage", {"json": {"records": []}}),
                             ("POST", "/v1/leases", {"json": {"amount_usd": 1}}), ("DELETE", "/v1/device", {})):  # fmt: skip
        status, body = await central.call(method, path, central.admin_token, **kw)
        assert status == 401 and body["error"]["type"] == "authentication_error", (path, status)


async def test_missing_and_forged_tokens_are_refused(central: Central) -> None:
    assert (await central.call("GET", "/v1/admin/teams"))[0] == 401
    assert (await central.call("GET", "/v1/admin/teams", "csa_" + "A" * 43))[0] == 401
    assert (await central.call("GET", "/v1/policy", "csd_" + "A" * 43))[0] == 401


async def test_viewer_reads_but_cannot_write(central: Central) -> None:
    viewer = await central.admin("POST", "/v1/admin/admins", json={"name": "val", "role": "viewer"})
    assert viewer["token"].startswith("csa_")
    assert (await central.call("GET", "/v1/admin/teams", viewer["token"]))[0] == 200
    status, body = await central.call("POST", "/v1/admin/teams", viewer["token"], json={"name": "x"})
    assert status == 403 and body["error"]["type"] == "permission_error"
    await central.admin("DELETE", "/v1/admin/admins/val")
    assert (await central.call("GET", "/v1/admin/teams", viewer["token"]))[0] == 401


async def test_admin_actions_form_a_verifiable_hash_chain(central: Central) -> None:
    await central.admin("POST", "/v1/admin/teams", json={"name": "core"})
    await central.enroll_device("gil@example.com", team="core")
    await central.admin("POST", "/v1/admin/policy", json={"document": {"limits": {"requests_per_minute": 10}}})
    entries = (await central.admin("GET", "/v1/admin/audit"))["entries"]
    kinds = [e["kind"] for e in entries]
    assert kinds[0] == "admin.bootstrap" and {"team.create", "developer.create", "enrollment.create", "device.enroll", "policy.push"} <= set(kinds)
    prev = GENESIS
    for i, e in enumerate(entries, 1):
        entry = Entry.from_json(e)
        assert entry.seq == i and entry.prev_hash == prev
        assert Entry.digest(entry.seq, entry.ts, entry.kind, entry.request_id, entry.data, prev) == entry.hash
        prev = entry.hash


async def test_enrollment_is_rate_limited(db_url: str) -> None:
    import aiohttp

    from sidecar.central.serving import Options
    from sidecar.testing.central import start_central

    runner, store, url = await start_central(db_url, Options(enroll_per_minute=3, auth_failures_per_minute=5))
    try:
        async with aiohttp.ClientSession() as http:
            statuses = []
            for _ in range(5):
                async with http.post(url + "/v1/enroll", json={"token": "cse_nope"}) as r:
                    statuses.append(r.status)
                    retry = r.headers.get("retry-after")
            assert statuses[:3] == [401, 401, 401] and statuses[3:] == [429, 429] and retry
            statuses = []
            for _ in range(7):
                async with http.get(url + "/v1/admin/teams", headers={"authorization": "Bearer csa_bad"}) as r:
                    statuses.append(r.status)
            assert statuses[:5] == [401] * 5 and statuses[5:] == [429, 429]
    finally:
        await runner.cleanup()
        await store.db.close()


async def test_oversized_body_is_refused_with_413(central: Central) -> None:
    import io

    big = io.BytesIO(b'{"records": [' + b" " * (5 * 1024 * 1024) + b"]}")
    cred = (await central.enroll_device("hal@example.com"))["credential"]
    status, body = await central.call("POST", "/v1/usage", cred, data=big, headers={"content-type": "application/json"})
    assert status == 413 and body["error"]["type"] == "request_too_large"


async def test_a_device_revoked_while_its_long_poll_is_held_gets_no_policy(central: Central) -> None:
    enrolled = await central.enroll_device("ivy@example.com")
    poll = asyncio.ensure_future(central.call("GET", "/v1/policy", enrolled["credential"], params={"after": "0"}))
    await asyncio.sleep(0.3)
    await central.admin("DELETE", f"/v1/admin/devices/{enrolled['device_id']}")
    await central.admin("POST", "/v1/admin/policy", json={"document": {"budget": {"daily_usd": 1}}})
    status, body = await asyncio.wait_for(poll, 5)
    assert status == 401 and body["error"]["type"] == "authentication_error"


async def test_outstanding_enrollment_tokens_are_listed_and_can_be_revoked(central: Central) -> None:
    await central.admin("POST", "/v1/admin/developers", json={"email": "jo@example.com"})
    enr = await central.admin("POST", "/v1/admin/enrollment-tokens", json={"developer": "jo@example.com"})
    listed = (await central.admin("GET", "/v1/admin/enrollment-tokens"))["tokens"]
    assert [t["id"] for t in listed] == [enr["id"]] and listed[0]["email"] == "jo@example.com"
    assert "token" not in listed[0] and "token_hash" not in listed[0]
    await central.admin("DELETE", f"/v1/admin/enrollment-tokens/{enr['id']}")
    assert (await central.admin("GET", "/v1/admin/enrollment-tokens"))["tokens"] == []
    status, _ = await central.call("POST", "/v1/enroll", json={"token": enr["token"]})
    assert status == 401
    status, _ = await central.call("DELETE", f"/v1/admin/enrollment-tokens/{enr['id']}", central.admin_token)
    assert status == 404


async def test_a_device_reports_the_policy_it_enforces_and_admins_see_it(central: Central) -> None:
    dev = await central.enroll_device("rep@example.com")
    cred = dev["credential"]
    status, body = await central.call("POST", "/v1/device/status", cred, json={"policy_version": 7, "policy_error": None, "outbox_backlog": 12})
    assert (status, body) == (200, {"recorded": True})
    row = next(d for d in (await central.admin("GET", "/v1/admin/devices"))["devices"] if d["id"] == dev["device_id"])
    assert (row["policy_version"], row["policy_error"], row["outbox_backlog"]) == (7, None, 12)
    assert row["reported_at"] is not None
    refused = "the signature does not verify with the pinned key"
    await central.call("POST", "/v1/device/status", cred, json={"policy_version": 7, "policy_error": refused})
    await central.call("POST", "/v1/device/status", cred, json={"outbox_backlog": 3})  # only what is sent changes
    row = next(d for d in (await central.admin("GET", "/v1/admin/devices"))["devices"] if d["id"] == dev["device_id"])
    assert (row["policy_version"], row["policy_error"], row["outbox_backlog"]) == (7, refused, 3)
    for bad in ({"policy_version": -1}, {"policy_version": True}, {"outbox_backlog": "3"}, {"policy_error": 5}):
        status, body = await central.call("POST", "/v1/device/status", cred, json=bad)
        assert status == 400, (bad, status, body)
    status, _ = await central.call("POST", "/v1/device/status", central.admin_token, json={"policy_version": 1})
    assert status == 401
