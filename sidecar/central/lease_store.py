"""Budget leases: slices of the org's and the team's shared pools, granted to devices.

A pool is the `pools.daily_usd` / `pools.monthly_usd` of the org or team policy document,
for one period (``2026-12-06`` or ``2026-12``), cut in the org's `pools.timezone` (UTC by
default). Granting locks the pool rows (org
first, then team, so two grants never deadlock): ``SELECT ... FOR UPDATE`` on PostgreSQL,
the ``BEGIN IMMEDIATE`` write lock on SQLite. Inside that lock it closes expired leases,
counting as spent only what the device's usage records show it spent during the lease,
then grants at most what remains in every pool:

    committed = sum(amount of open leases) + sum(used of closed leases)
    granted   = min(asked, limit - committed of each pool)

so the grants of any number of concurrent devices never exceed a pool.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Any
from zoneinfo import ZoneInfo

from sidecar.central import tokens
from sidecar.central.db import Row, Tx
from sidecar.central.people_store import Device
from sidecar.central.policy_store import PolicyStore
from sidecar.errors import InvalidRequest, NotFound

PERIODS = {"day": "daily_usd", "month": "monthly_usd"}
MAX_TTL = 86400.0


def period_key(period: str, now: float, tz: tzinfo = UTC) -> tuple[str, float]:
    """The name of the day or month that `now` falls in, in zone `tz`, and when it ends."""
    t = datetime.fromtimestamp(now, tz)
    if period == "day":
        start = t.replace(hour=0, minute=0, second=0, microsecond=0)
        nxt = (start + timedelta(days=1)).replace(hour=0)
        return start.strftime("%Y-%m-%d"), _midnight(nxt, tz)
    start = t.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    nxt = start.replace(year=start.year + 1, month=1) if start.month == 12 else start.replace(month=start.month + 1)
    return start.strftime("%Y-%m"), _midnight(nxt, tz)


def _midnight(local: datetime, tz: tzinfo) -> float:
    # Wall-clock arithmetic, then re-attached to the zone: a DST change in between moves
    # the UTC offset of midnight, not the date.
    return datetime(local.year, local.month, local.day, tzinfo=tz).timestamp()


_MIN_USED = "CASE WHEN amount_usd < {used} THEN amount_usd ELSE {used} END"
_SPENT = (
    "COALESCE((SELECT SUM(u.cost_usd) FROM usage u WHERE u.device_id = leases.device_id"
    " AND u.ts >= leases.granted_at AND u.ts < leases.expires_at), 0)"
)


class LeaseStore(PolicyStore):
    """Grants, returns and the pool overview."""

    async def _pools(self, tx: Tx, device: Device, field: str) -> list[tuple[str, float]]:
        out = []
        for scope in ["org", *([f"team:{device.team_id}"] if device.team_id else [])]:
            limit = ((await self._doc(tx, scope)).get("pools") or {}).get(field)
            if limit:
                out.append((scope, float(limit)))
        return out

    async def grant_lease(self, device: Device, amount_usd: Any, period: Any, ttl_seconds: Any = 3600.0) -> Row:
        """Grant up to `amount_usd` of every pool the device draws from, for the current period."""
        if period not in PERIODS:
            raise InvalidRequest("period must be 'day' or 'month'")
        for name, v in (("amount_usd", amount_usd), ("ttl_seconds", ttl_seconds)):
            if isinstance(v, bool) or not isinstance(v, int | float) or not 0 < v < 1e9:
                raise InvalidRequest(f"{name} must be a positive number")
        now = time.time()
        async with self.db.tx() as tx:
            tz_name = ((await self._doc(tx, "org")).get("pools") or {}).get("timezone")
            key, period_end = period_key(period, now, ZoneInfo(tz_name) if tz_name else UTC)
            expires = min(now + min(float(ttl_seconds), MAX_TTL), period_end)
            pools = await self._pools(tx, device, PERIODS[period])
            granted = float(amount_usd)
            remaining: dict[str, float] = {}
            for pool, limit in pools:  # org before team: one lock order for every grant
                await tx.execute(
                    "INSERT INTO lease_pools (pool, period, limit_usd) VALUES (?, ?, ?)"
                    " ON CONFLICT (pool, period) DO UPDATE SET limit_usd = excluded.limit_usd",
                    pool, key, limit,
                )  # fmt: skip
                await tx.fetch("SELECT limit_usd FROM lease_pools WHERE pool = ? AND period = ?" + tx.for_update, pool, key)
                await tx.execute(
                    "UPDATE leases SET closed_at = ?, used_usd = " + _MIN_USED.format(used=_SPENT)
                    + " WHERE pool = ? AND period = ? AND closed_at IS NULL AND expires_at <= ?",
                    now, pool, key, now,
                )  # fmt: skip
                committed = await tx.fetchval(
                    "SELECT COALESCE(SUM(CASE WHEN closed_at IS NULL THEN amount_usd ELSE used_usd END), 0)"
                    " FROM leases WHERE pool = ? AND period = ?", pool, key,
                )  # fmt: skip
                remaining[pool] = max(0.0, limit - float(committed))
                granted = min(granted, remaining[pool])
            names = {pool: "org" for pool, _ in pools}
            if device.team_id and f"team:{device.team_id}" in names:
                team = await tx.fetchval("SELECT name FROM teams WHERE id = ?", device.team_id)
                names[f"team:{device.team_id}"] = f"team {team or device.team_id}"
            lease_id = tokens.new_id("lse_")
            if pools and granted > 0:
                await tx.executemany(
                    "INSERT INTO leases (id, pool, device_id, period, amount_usd, granted_at, expires_at)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?)",
                    [(lease_id, pool, device.id, key, granted, now, expires) for pool, _ in pools],
                )  # fmt: skip
        return {
            "lease_id": lease_id if pools and granted > 0 else None,
            "granted_usd": granted if pools else None,  # None: no shared pool limits this device
            "period": key, "expires_at": expires, "pools": sorted(remaining),
            # what the device needs to say which pool ran dry and when it refills
            "limits": dict(pools), "remaining": remaining, "names": names,
            "resets_at": period_end, "timezone": tz_name or "UTC",
        }  # fmt: skip

    async def return_lease(self, device: Device, lease_id: str, used_usd: Any) -> None:
        """Close a lease early, giving back what was not spent."""
        if isinstance(used_usd, bool) or not isinstance(used_usd, int | float) or used_usd < 0:
            raise InvalidRequest("used_usd must be a non-negative number")
        async with self.db.tx() as tx:
            rows = await tx.fetch(
                "SELECT pool FROM leases WHERE id = ? AND device_id = ? AND closed_at IS NULL", lease_id, device.id
            )
            if not rows:
                raise NotFound(f"no open lease {lease_id!r} of this device")
            await tx.execute(
                "UPDATE leases SET closed_at = ?, used_usd = " + _MIN_USED.format(used="?")
                + " WHERE id = ? AND device_id = ? AND closed_at IS NULL",
                time.time(), float(used_usd), float(used_usd), lease_id, device.id,
            )  # fmt: skip

    async def lease_overview(self) -> list[Row]:
        """Each pool and period: limit, outstanding (open leases) and spent (closed)."""
        async with self.db.tx() as tx:
            return await tx.fetch(
                "SELECT p.pool, p.period, p.limit_usd,"
                " COALESCE(SUM(CASE WHEN l.closed_at IS NULL THEN l.amount_usd ELSE 0 END), 0) AS outstanding_usd,"
                " COALESCE(SUM(CASE WHEN l.closed_at IS NULL THEN 0 ELSE l.used_usd END), 0) AS used_usd,"
                " COUNT(l.id) AS leases FROM lease_pools p"
                " LEFT JOIN leases l ON l.pool = p.pool AND l.period = p.period"
                " GROUP BY p.pool, p.period, p.limit_usd ORDER BY p.period DESC, p.pool"
            )
