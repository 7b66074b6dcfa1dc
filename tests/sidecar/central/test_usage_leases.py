"""Usage ingestion (idempotent by ULID), reports, and budget leases under concurrency."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from sidecar.ledger.record import new_ulid
from sidecar.testing.central import Central
from sidecar.testing.factories import usage_dicts


async def _totals(c: Central, by: str = "model") -> dict[str, Any]:
    rows = (await c.admin("GET", "/v1/admin/usage", params={"by": by}))["rows"]
    return {r["key"]: r for r in rows}


async def test_same_batch_three_times_counts_once(central: Central) -> None:
    cred = (await central.enroll_device("ada@example.com", team="core"))["credential"]
    batch = usage_dicts(50)
    answers = [await central.call("POST", "/v1/usage", cred, json={"records": batch}) for _ in range(3)]
    assert [a[1]["accepted"] for a in answers] == [50, 0, 0]
    assert [a[1]["duplicates"] for a in answers] == [0, 50, 50]
    totals = await _totals(central)
    assert sum(r["requests"] for r in totals.values()) == 50
    assert abs(sum(r["cost_usd"] for r in totals.values()) - sum(r["cost_usd"] for r in batch)) < 1e-9


async def test_same_batch_three_times_concurrently_counts_once(central: Central) -> None:
    creds = [(await central.enroll_device(f"d{i}@example.com"))["credential"] for i in range(2)]
    batch = usage_dicts(300, seed=7)
    answers = await asyncio.gather(
        *(central.call("POST", "/v1/usage", creds[i % 2], json={"records": batch}) for i in range(3))
    )
    assert all(status == 200 for status, _ in answers), answers
    assert sum(a["accepted"] for _, a in answers) == 300
    assert all(a["accepted"] + a["duplicates"] == 300 and a["conflicts"] == [] for _, a in answers)
    totals = await _totals(central, "day")
    assert sum(r["requests"] for r in totals.values()) == 300
    assert sum(r["input_tokens"] for r in totals.values()) == sum(r["input_tokens"] for r in batch)


async def test_reused_id_with_other_content_is_refused_and_reported(central: Central) -> None:
    cred = (await central.enroll_device("ada@example.com"))["credential"]
    batch = usage_dicts(5)
    await central.call("POST", "/v1/usage", cred, json={"records": batch})
    changed = [dict(batch[0], cost_usd=99.0), *usage_dicts(2, seed=3, ts=time.time() - 1000)]
    status, answer = await central.call("POST", "/v1/usage", cred, json={"records": changed})
    assert status == 200 and answer == {"accepted": 2, "duplicates": 0, "conflicts": [batch[0]["id"]]}
    totals = await _totals(central, "day")
    assert sum(r["requests"] for r in totals.values()) == 7
    assert max(r["cost_usd"] for r in totals.values()) < 99


async def test_bad_records_are_refused_whole(central: Central) -> None:
    cred = (await central.enroll_device("ada@example.com"))["credential"]
    for bad in ({"id": "nope", "ts": 1.0, "model": "m"}, {"id": new_ulid(), "ts": "x", "model": "m"},
                {"id": new_ulid(), "ts": 1e9, "model": "m", "input_tokens": -1}, "x"):  # fmt: skip
        status, body = await central.call("POST", "/v1/usage", cred, json={"records": [*usage_dicts(1), bad]})
        assert status == 400 and body["error"]["type"] == "invalid_request_error"
    assert await _totals(central) == {}


async def test_reports_group_by_developer_team_model_route_and_day(central: Central) -> None:
    a = (await central.enroll_device("ada@example.com", team="core"))["credential"]
    b = (await central.enroll_device("bo@example.com"))["credential"]
    ra, rb = usage_dicts(10, 1), usage_dicts(4, 2, ts=time.time() - 3 * 86400)
    await central.call("POST", "/v1/usage", a, json={"records": ra})
    await central.call("POST", "/v1/usage", b, json={"records": rb})
    by_dev = await _totals(central, "developer")
    assert by_dev["ada@example.com"]["requests"] == 10 and by_dev["bo@example.com"]["requests"] == 4
    by_team = await _totals(central, "team")
    assert by_team["core"]["requests"] == 10 and by_team["(no team)"]["requests"] == 4
    assert sum(r["requests"] for r in (await _totals(central, "route")).values()) == 14
    days = await _totals(central, "day")
    today = time.strftime("%Y-%m-%d", time.gmtime())
    rows = (await central.admin("GET", "/v1/admin/usage", params={"by": "day", "since": today}))["rows"]
    assert sum(r["requests"] for r in rows) <= 10 < sum(r["requests"] for r in days.values())
    status, _ = await central.call("GET", "/v1/admin/usage", central.admin_token, params={"by": "color"})
    assert status == 400


async def _pools(c: Central, org: float, team: float | None = None) -> None:
    await c.admin("POST", "/v1/admin/policy", json={"document": {"pools": {"daily_usd": org}}})
    if team is not None:
        await c.admin("POST", "/v1/admin/policy", json={"scope": "team:core", "document": {"pools": {"daily_usd": team}}})


async def test_twenty_devices_at_once_never_get_more_than_the_pool(central: Central) -> None:
    await central.admin("POST", "/v1/admin/teams", json={"name": "core"})
    creds = [(await central.enroll_device(f"d{i}@example.com", team="core" if i % 2 else None))["credential"] for i in range(20)]
    await _pools(central, org=100.0, team=30.0)
    for _round in range(2):  # a second round finds the pool already spent
        answers = await asyncio.gather(
            *(central.call("POST", "/v1/leases", cred, json={"amount_usd": 7.5, "period": "day"}) for cred in creds)
        )
        assert all(s == 200 for s, _ in answers), answers
        team_granted = sum(a["granted_usd"] for i, (_, a) in enumerate(answers) if i % 2)
        assert team_granted <= 30.0 + 1e-9
        pools = {p["pool"]: p for p in (await central.admin("GET", "/v1/admin/leases"))["pools"]}
        assert pools["org"]["outstanding_usd"] <= 100.0 + 1e-9
        assert pools["org"]["outstanding_usd"] == 100.0  # 20 x 7.5 > 100: the pool is fully handed out
        assert any(i % 2 and a["granted_usd"] == 0 for i, (_, a) in enumerate(answers))  # the team ran dry


async def test_returned_and_expired_leases_give_back_what_was_unused(central: Central) -> None:
    dev = await central.enroll_device("ada@example.com")
    cred = dev["credential"]
    await _pools(central, org=10.0)
    _, lease = await central.call("POST", "/v1/leases", cred, json={"amount_usd": 8, "period": "day"})
    assert lease["granted_usd"] == 8
    _, second = await central.call("POST", "/v1/leases", cred, json={"amount_usd": 8, "period": "day"})
    assert second["granted_usd"] == 2
    status, _ = await central.call("POST", f"/v1/leases/{lease['lease_id']}/return", cred, json={"used_usd": 3})
    assert status == 200
    _, third = await central.call("POST", "/v1/leases", cred, json={"amount_usd": 8, "period": "day"})
    assert third["granted_usd"] == 5  # 10 - 3 used - 2 outstanding
    # a lease that expires unreturned counts only the usage the device reported during it
    _, short = await central.call("POST", "/v1/leases", cred, json={"amount_usd": 1, "ttl_seconds": 0.3})
    assert short["granted_usd"] == 0  # nothing left
    await central.call("POST", f"/v1/leases/{second['lease_id']}/return", cred, json={"used_usd": 0})
    await central.call("POST", f"/v1/leases/{third['lease_id']}/return", cred, json={"used_usd": 0})
    _, short = await central.call("POST", "/v1/leases", cred, json={"amount_usd": 4, "ttl_seconds": 0.5})
    assert short["granted_usd"] == 4
    spent = dict(usage_dicts(1)[0], ts=time.time(), cost_usd=1.5)
    await central.call("POST", "/v1/usage", cred, json={"records": [spent]})
    await asyncio.sleep(0.7)
    _, after = await central.call("POST", "/v1/leases", cred, json={"amount_usd": 100})
    assert abs(after["granted_usd"] - (10 - 3 - 1.5)) < 1e-9
    status, _ = await central.call("POST", f"/v1/leases/{lease['lease_id']}/return", cred, json={"used_usd": 0})
    assert status == 404  # already closed


async def test_without_pools_a_lease_is_unlimited(central: Central) -> None:
    cred = (await central.enroll_device("ada@example.com"))["credential"]
    status, answer = await central.call("POST", "/v1/leases", cred, json={"amount_usd": 5})
    assert status == 200 and answer["granted_usd"] is None and answer["lease_id"] is None


def test_periods_are_cut_in_the_pools_time_zone() -> None:
    from zoneinfo import ZoneInfo

    from sidecar.central.lease_store import period_key

    # 2026-12-07 03:00 UTC is still 2026-12-06 in New York (UTC-5)
    at = 1796612400.0
    assert period_key("day", at) == ("2026-12-07", 1796688000.0)
    ny = ZoneInfo("America/New_York")
    day, end = period_key("day", at, ny)
    assert day == "2026-12-06" and end == 1796619600.0  # midnight in New York, 05:00 UTC
    month, end = period_key("month", 1798772400.0, ny)  # 2027-01-01 03:00 UTC: still December there
    assert month == "2026-12" and end == 1798779600.0


async def test_pools_timezone_is_validated_and_used(central: Central) -> None:
    status, body = await central.call("POST", "/v1/admin/policy", central.admin_token,
                                      json={"document": {"pools": {"daily_usd": 5, "timezone": "Mars/Olympus"}}})  # fmt: skip
    assert status == 400 and "time zone" in body["error"]["message"]
    await central.admin("POST", "/v1/admin/policy", json={"document": {"pools": {"daily_usd": 5, "timezone": "Pacific/Kiritimati"}}})
    cred = (await central.enroll_device("ada@example.com"))["credential"]
    _, lease = await central.call("POST", "/v1/leases", cred, json={"amount_usd": 1})
    assert lease["period"] == time.strftime("%Y-%m-%d", time.gmtime(time.time() + 14 * 3600))  # UTC+14
