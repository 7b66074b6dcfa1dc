"""Budget leases: this device's slices of the org's and team's shared pools, enforced locally.

The central server shares out the pools of the org and team policy (`pools.daily_usd`,
`pools.monthly_usd`) as leases: the device asks for `lease_usd` of every pool it draws from,
for the current day and (when a monthly pool exists) month, spends it without asking again
and gives back what it did not use. The server never grants more than a pool has left,
counting an open lease as its full amount and a closed one as what the device reported
using, so all devices together stay within a pool as long as each one (a) admits a request
only when its worst case fits the room left in its lease and (b) never reports less than
it spent.

Accounting. A request holds its worst case (what the local budgets reserve) in the current
lease of each period; after the response the hold is settled with the real cost. A renewed
lease (half of it spent, a request that does not fit, or close to expiry) takes no new
holds: it is returned with exactly what its requests cost once they have all settled, or,
when it is about to expire first, with what they still hold counted as spent (never less
than they will cost). A cost above its hold (the input estimate was low) is carried to the
current lease, so it is reported too.

Renewal runs in `run()`, off the request path; a request that does not fit waits at most
WAIT_SECONDS for the renewal it asks for. When the server says the pool has nothing left for
it, the request is refused with 429 `billing_error` naming the team (or org) budget and its
reset. When the server cannot be reached, requests are admitted against the lease held and,
once that is spent or expired, without one (fail open, shown in `state()`): an offline
laptop keeps working, as it does under its last good policy, and what it spends meanwhile
is reported with the next lease it gets, so the pool counts it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from sidecar.errors import BudgetExhausted, RateLimited
from sidecar.gateway.unified import Cap, rejection
from sidecar.policy.budgets import duration, usd
from sidecar.sync.client import DeviceClient, SyncError, SyncRefused

log = logging.getLogger(__name__)

PERIODS = ("day", "month")
_ADJECTIVE = {"day": "daily", "month": "monthly"}
_FIELD = {"day": "daily_usd", "month": "monthly_usd"}
RENEW_AT = 0.5  # renew once less than this fraction of a lease is left
WAIT_SECONDS = 5.0  # longest a request waits for the renewal it needs
RECHECK_SECONDS = 10.0  # after a short grant, how soon a request may ask the pool again
PROBE_SECONDS = 600.0  # how often a period without a pool is asked again (a policy change asks at once)
RETRY_MAX_SECONDS = 60.0
CLOSE_SECONDS = 5.0
SETTLE_RETRY_SECONDS = 5
EPS = 1e-9

Publish = Callable[[str, dict[str, Any]], None]


@dataclass(eq=False)
class _Lease:
    """One lease of one period, as this device spends it."""

    id: str
    period: str
    key: str
    amount: float
    expires_at: float
    margin: float  # renew (and, when retiring, return) this long before it expires
    used: float = 0.0  # settled cost charged to it
    held: float = 0.0  # worst cases of the requests in flight on it
    holds: int = 0
    reported: float | None = None  # what it was returned with

    @property
    def room(self) -> float:
        """What a new request may still hold in it."""
        return self.amount - self.used - self.held


@dataclass(frozen=True)
class _Short:
    """A grant smaller than asked: the fullest pool, its limit, what it has left after the grant, its reset."""

    at: float
    pool: str
    name: str
    limit: float
    remaining: float
    resets_at: float
    tz: str


@dataclass
class _Account:
    """The leases of one period (day or month)."""

    period: str
    pooled: bool | None = None  # None: not known yet; False: no pool of this period applies
    lease: _Lease | None = None  # the lease new holds go to
    retiring: list[_Lease] = field(default_factory=list)
    want: float = 0.0  # the largest hold a waiting request needs
    short: _Short | None = None
    offline: str | None = None
    retry_at: float = 0.0
    failures: int = 0
    checked: float = 0.0  # when the server last answered for this period
    debt: float = 0.0  # spend with no open lease to charge it to yet (offline, or past its lease)

    def in_flight(self) -> int:
        return sum(x.holds for x in [*([self.lease] if self.lease else []), *self.retiring])


@dataclass(eq=False)
class LeaseHold:
    """What one admitted request holds in the leases until it settles."""

    owner: LeaseManager
    amount: float
    leases: list[_Lease]
    unleased: list[str] = field(default_factory=list)  # periods admitted without a lease (offline)


class LeaseManager:
    """Asks for, enforces, renews and returns this device's leases of the shared pools."""

    def __init__(self, client: DeviceClient, publish: Publish, clock: Callable[[], float] = time.time) -> None:
        self.client = client
        self.publish = publish
        self.clock = clock
        self.lease_usd = 5.0
        self.ttl = 3600.0
        self.accounts = {p: _Account(p) for p in PERIODS}
        self.closed = False
        self._wake = asyncio.Event()
        self._changed = asyncio.Event()

    def configure(self, lease_usd: float, ttl_seconds: float) -> None:
        """Take the org's lease size and lifetime; ask again whether pools apply (the policy
        changed, and with it maybe the pools): until the server answers, a period it had
        left unpooled is unknown again, so requests wait for the answer (bounded) instead of
        passing unmetered under a pool pushed a moment ago."""
        self.lease_usd, self.ttl = float(lease_usd), float(ttl_seconds)
        for a in self.accounts.values():
            a.checked, a.short, a.retry_at = 0.0, None, 0.0
            if a.pooled is False:
                a.pooled = None
        self._wake.set()

    # ------------------------------------------------------------------ request path

    async def admit(self, amount_usd: float) -> LeaseHold | None:
        """Hold `amount_usd` in the lease of every pooled period; None when no pool applies.

        Raises BudgetExhausted when a pool has nothing left for it, RateLimited when room
        may come back soon (requests in flight here, or a renewal that did not answer in time).
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + WAIT_SECONDS
        while True:
            changed = self._changed
            result = self._try(amount_usd)
            if not isinstance(result, _Account):
                return result
            if loop.time() >= deadline:
                raise RateLimited(
                    f"the {_ADJECTIVE[result.period]} lease of the shared budget could not be renewed in time "
                    f"(the central server is slow); retry in a few seconds",
                    headers={"retry-after": str(SETTLE_RETRY_SECONDS)},
                )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(changed.wait(), deadline - loop.time())

    @property
    def applies(self) -> bool:
        """A shared pool may limit this device: some period is pooled or not known yet."""
        return not self.closed and any(a.pooled is not False for a in self.accounts.values())

    def _try(self, amount: float) -> LeaseHold | _Account | None:
        """Take the holds, or the account a renewal must answer first."""
        if self.closed:
            return None
        now = self.clock()
        pooled = [a for a in self.accounts.values() if a.pooled is not False]
        if not pooled:
            return None
        take: list[_Lease] = []
        unleased: list[str] = []
        for a in pooled:
            lease = a.lease if a.lease is not None and now < a.lease.expires_at - a.lease.margin / 2 else None
            if lease is not None and lease.room >= amount - EPS:
                take.append(lease)
                continue
            if a.offline is not None:
                unleased.append(a.period)  # the server is unreachable: fail open, charged to the next lease
                continue
            if a.short is not None and now - a.short.at < RECHECK_SECONDS:
                if a.in_flight():
                    raise self._crowded(a, amount)
                raise self._exhausted(a, amount, now)
            a.want = max(a.want, amount)
            self._wake.set()
            return a
        for lease in take:
            lease.held += amount
            lease.holds += 1
            if lease.room < RENEW_AT * lease.amount:
                self._wake.set()
        return LeaseHold(self, amount, take, unleased)

    def settle(self, hold: LeaseHold, cost_usd: float) -> None:
        """Release `hold` and charge the request's real cost."""
        for lease in hold.leases:
            lease.held -= hold.amount
            lease.holds -= 1
            if not lease.holds:
                lease.held = 0.0
            a = self.accounts[lease.period]
            cap = lease.reported if lease.reported is not None else lease.amount
            part = min(cost_usd, max(0.0, cap - lease.used))
            lease.used += part
            if cost_usd - part > EPS:
                self._carry(a, lease, cost_usd - part)
            if lease.holds == 0 and lease in a.retiring:
                self._wake.set()
        for period in hold.unleased:
            self.accounts[period].debt += cost_usd

    def _carry(self, a: _Account, lease: _Lease, excess: float) -> None:
        cur = a.lease
        if cur is not None and cur is not lease and cur.key == lease.key:
            cur.used += excess
        else:
            a.debt += excess

    def _crowded(self, a: _Account, amount: float) -> RateLimited:
        assert a.short is not None
        return RateLimited(
            f"{_who(a.short)} shared {_ADJECTIVE[a.period]} budget has no room for this request (about {usd(amount)}) "
            f"while {a.in_flight()} request(s) in flight hold this device's share; it waits for them to finish",
            headers={"retry-after": str(SETTLE_RETRY_SECONDS)},
        )

    def _exhausted(self, a: _Account, amount: float, now: float) -> BudgetExhausted:
        s = a.short
        assert s is not None
        left = s.remaining + (a.lease.room if a.lease is not None else 0.0)
        if left <= EPS:
            state = f"is used up ({usd(s.limit)} spent or held by its devices)"
        else:
            state = f"cannot fit this request (about {usd(amount)}; {usd(left)} of it is left)"
        try:
            tz: Any = ZoneInfo(s.tz)
        except (ValueError, KeyError):
            tz = ZoneInfo("UTC")
        reset = datetime.fromtimestamp(s.resets_at, tz)
        message = (
            f"{_who(s)} shared {_ADJECTIVE[a.period]} budget of {usd(s.limit)} {state}; it resets at "
            f"{reset:%Y-%m-%d %H:%M} {s.tz} (in {duration(s.resets_at - now)}), so wait until then or ask an org "
            f"admin to raise {_who(s)} pools.{_FIELD[a.period]}."
        )
        cap = Cap(a.period, s.limit, s.limit, s.resets_at)
        return BudgetExhausted(message, headers=rejection(cap, now, group_pool=True))

    # ------------------------------------------------------------------ background

    async def run(self) -> None:
        """Ask for, renew and return leases until cancelled."""
        while not self.closed:
            self._wake.clear()  # before the tick: a request that asks during it is not forgotten
            try:
                await self._tick()
            except Exception:  # a bug here must not stop the leases of a long-running daemon
                log.exception("lease upkeep failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._sleep())

    def _sleep(self) -> float:
        now = self.clock()
        until = [5.0]
        for a in self.accounts.values():
            if a.offline is not None:
                until.append(a.retry_at - now)
                continue
            if a.lease is not None:
                until.append(a.lease.expires_at - a.lease.margin - now)
            until += [x.expires_at - x.margin / 2 - now for x in a.retiring]
        return max(0.05, min(until))

    async def _tick(self) -> None:
        now = self.clock()
        for a in self.accounts.values():
            if a.offline is not None and now < a.retry_at:
                continue
            for lease in list(a.retiring):
                if lease.holds == 0 or now >= lease.expires_at - lease.margin / 2:
                    await self._return(a, lease)
            if self._due(a, now):
                await self._renew(a)

    def _due(self, a: _Account, now: float) -> bool:
        if a.offline is not None and now < a.retry_at:
            return False
        if a.pooled is None:
            return True
        if a.pooled is False:
            return now - a.checked >= PROBE_SECONDS
        recheck = a.short is None or now - a.short.at >= RECHECK_SECONDS
        lease = a.lease
        if lease is None:
            return recheck
        if now >= lease.expires_at - lease.margin:
            return True
        return recheck and (lease.room < RENEW_AT * lease.amount or a.want > lease.room)

    async def _renew(self, a: _Account) -> None:
        """Ask for a new lease; it replaces the current one unless it is smaller than what that has left."""
        old = a.lease
        if old is not None and old.holds == 0:
            a.lease = None
            await self._return(a, old)  # first, so the pool has its room back for the new grant
            old = None
        ask = max(self.lease_usd, a.want) + a.debt
        now = self.clock()
        try:
            answer = await self.client.lease(ask, a.period, self.ttl)
        except SyncError as e:
            self._offline(a, e, now)
            self._notify()
            return
        a.offline, a.failures, a.checked = None, 0, now
        granted = answer.get("granted_usd")
        if granted is None:
            a.pooled, a.short, a.want = False, None, 0.0
            if old is not None:
                a.lease = None
                a.retiring.append(old)
            self._notify()
            return
        a.pooled = True
        granted = float(granted)
        a.short = _short(answer, now) if granted < ask - EPS else None
        new = None
        if granted > EPS and answer.get("lease_id"):
            expires = float(answer["expires_at"])
            new = _Lease(str(answer["lease_id"]), a.period, str(answer.get("period")), granted, expires,
                         margin=min(60.0, 0.2 * max(0.0, expires - now)))  # fmt: skip
        expiring = old is not None and self.clock() >= old.expires_at - old.margin
        if new is not None and (self.closed or (old is not None and not expiring and new.amount <= old.room)):
            await self._return(a, new)  # not worth more than what the current lease has left
        elif new is not None:
            new.used = min(a.debt, new.amount)  # spent offline or past its lease: reported with this one
            a.debt -= new.used
            if old is not None:
                a.retiring.append(old)
            a.lease = new
            self.publish("lease", {"event": "granted", "period": a.period, "lease_id": new.id, "amount_usd": granted})
        elif old is not None and expiring:
            a.lease = None
            a.retiring.append(old)
        if a.lease is None and a.short is not None:
            self.publish("lease", {"event": "exhausted", "period": a.period, "pool": a.short.pool})
        a.want = 0.0
        self._notify()

    async def _return(self, a: _Account, lease: _Lease) -> None:
        """Close `lease`, reporting its spend and what its requests in flight still hold."""
        used = min(lease.amount, lease.used + lease.held)
        try:
            await self.client.lease_return(lease.id, round(used, 9))
        except SyncRefused:
            pass  # already closed (expired): the server counted the usage it was sent
        except SyncError as e:
            if self.clock() < lease.expires_at:
                if lease not in a.retiring:
                    a.retiring.append(lease)
                self._offline(a, e, self.clock())
                return
        lease.reported = used
        if lease in a.retiring:
            a.retiring.remove(lease)
        self.publish("lease", {"event": "returned", "period": a.period, "lease_id": lease.id, "used_usd": used})

    def _offline(self, a: _Account, e: SyncError, now: float) -> None:
        if a.offline is None:
            log.warning("budget leases: %s; requests are admitted without a lease until it answers", e)
        a.offline = str(e)
        a.failures += 1
        delay = min(RETRY_MAX_SECONDS, 2.0 ** min(a.failures, 6))
        a.retry_at = now + delay * random.uniform(0.5, 1.0)

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    async def close(self) -> None:
        """Return every lease (best effort, bounded), counting what requests in flight hold as spent."""
        self.closed = True
        self._wake.set()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(CLOSE_SECONDS):
                for a in self.accounts.values():
                    leases = [*([a.lease] if a.lease else []), *a.retiring]
                    a.lease = None
                    for lease in leases:
                        await self._return(a, lease)
        self._notify()

    def state(self) -> dict[str, Any]:
        """Each period's pool, lease and standing (for status)."""
        out: dict[str, Any] = {"lease_usd": self.lease_usd, "ttl_seconds": self.ttl, "periods": {}}
        for a in self.accounts.values():
            lease = a.lease
            out["periods"][a.period] = {
                "pooled": a.pooled,
                "lease_id": lease.id if lease else None,
                "amount_usd": lease.amount if lease else 0.0,
                "used_usd": round(lease.used, 9) if lease else 0.0,
                "held_usd": round(lease.held, 9) if lease else 0.0,
                "expires_at": lease.expires_at if lease else None,
                "in_flight": a.in_flight(),
                "retiring": len(a.retiring),
                "exhausted": None if a.short is None else {"pool": a.short.name, "limit_usd": a.short.limit,
                                                           "remaining_usd": a.short.remaining},
                "offline": a.offline,
            }  # fmt: skip
        return out


def _who(s: _Short) -> str:
    return "the org's" if s.pool == "org" else f"{s.name}'s"


def _short(answer: dict[str, Any], now: float) -> _Short:
    """The fullest pool of a grant answer (servers without the details: a nameless pool)."""
    remaining = answer.get("remaining") or {}
    limits = answer.get("limits") or {}
    names = answer.get("names") or {}
    pools = list(remaining) or list(answer.get("pools") or ["org"])
    pool = min(pools, key=lambda p: (float(remaining.get(p, 0.0)), p == "org"))
    left = max(0.0, float(remaining.get(pool, 0.0)) - float(answer.get("granted_usd") or 0.0))
    return _Short(
        now, pool, str(names.get(pool, pool)), float(limits.get(pool, 0.0)), left,
        float(answer.get("resets_at") or answer.get("expires_at") or now), str(answer.get("timezone") or "UTC"),
    )  # fmt: skip
