"""Where the dashboard's data comes from: the live control API, reconnecting by itself.

`LiveSource.run()` keeps one event stream open and feeds every event into the model.
While it is open, a poller refreshes the ledger-backed figures (status, usage reports,
routes, cache, policy): at once on connecting, shortly after requests settle, and every
few seconds regardless. When the stream breaks (the sidecar stopped, restarted on another
port, or the network hiccuped) it retries with a growing delay, reading the daemon's state
file again each time, so a restarted daemon is found wherever it now listens.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from datetime import datetime, timedelta
from typing import Any, Protocol
from urllib.parse import quote

import aiohttp

from sidecar.protocol.sse import Event
from sidecar.tasks import TaskSet
from tui.client import ControlClient, ControlError, Unreachable
from tui.locate import Locator, NotRunning
from tui.state import (
    BURN_WINDOW,
    DAILY_DAYS,
    FEATURES,
    SESSION_DAYS,
    TELEMETRY_ATTRIBUTES,
    TELEMETRY_DAYS,
    Dashboard,
)

# Claude Code's telemetry reports join its events to the ledger in sqlite: about 0.5 s of
# the daemon's CPU each with a 200k-row ledger (no index on usage.upstream_request_id), so
# they are fetched at most this often (seconds), not on every refresh.
TELEMETRY_INTERVAL = 30.0
HISTORY_ROWS = 200  # today's requests loaded into the table on (re)connecting, newest first
BURN_ROWS = 10_000  # the last hour's requests (id, time, cost) loaded for the burn rate
# Events after which the ledger-backed figures are worth fetching again.
_REFRESH_AFTER = {"request", "budget_threshold", "routes_changed", "mcp_server_up", "mcp_server_down"}


class Source(Protocol):
    """Feeds a Dashboard and carries out the user's actions."""

    async def run(self, model: Dashboard) -> None:
        """Feed `model` until cancelled."""

    async def set_route(self, name: str, enabled: bool) -> dict[str, Any]:
        """Enable or disable route `name`; returns the changed route."""

    async def clear_cache(self) -> int:
        """Empty the response cache; returns how many entries went."""

    def reconnect_now(self) -> None:
        """Skip the wait before the next connection attempt."""


class Backoff:
    """Delays between connection attempts: doubling from `first` up to `cap` seconds."""

    def __init__(self, first: float = 0.25, cap: float = 5.0) -> None:
        self.first, self.cap = first, cap
        self._next = first

    def next(self) -> float:
        """The delay before the next attempt."""
        delay, self._next = self._next, min(self._next * 2, self.cap)
        return delay

    def reset(self) -> None:
        """Start again from the shortest delay (after a good connection)."""
        self._next = self.first


class LiveSource:
    """The control API of a running sidecar, found through `locate`."""

    def __init__(
        self,
        locate: Locator,
        *,
        backoff: Backoff | None = None,
        poll_interval: float = 5.0,
        settle: float = 0.5,
        max_stale: float = 2.0,
        telemetry_interval: float = TELEMETRY_INTERVAL,
    ) -> None:
        self.locate = locate
        self.backoff = backoff or Backoff()
        self.poll_interval, self.settle, self.max_stale = poll_interval, settle, max_stale
        self.telemetry_interval = telemetry_interval
        self._telemetry_at = -float("inf")  # time.monotonic() of the last telemetry fetch
        self._client: ControlClient | None = None
        self._dirty = asyncio.Event()  # a refresh is due
        self._arrived = asyncio.Event()  # an event arrived (to tell when they settle)
        self._wake = asyncio.Event()
        self._poll_error = ""

    # ---------------------------------------------------------------- actions

    def _connected(self) -> ControlClient:
        if self._client is None:
            raise Unreachable("not connected to the sidecar")
        return self._client

    async def set_route(self, name: str, enabled: bool) -> dict[str, Any]:
        """POST `/routes/NAME/enable` or `/disable`; returns the changed route."""
        verb = "enable" if enabled else "disable"
        route = await self._connected().post(f"/routes/{quote(name, safe='')}/{verb}")
        if not isinstance(route, dict):
            raise ControlError(f"the sidecar answered {verb} with {type(route).__name__}, not a route")
        return route

    async def clear_cache(self) -> int:
        """POST `/cache/clear`."""
        answer = await self._connected().post("/cache/clear")
        return int(answer.get("cleared", 0)) if isinstance(answer, dict) else 0

    def reconnect_now(self) -> None:
        """Cut the wait before the next attempt short."""
        self._wake.set()

    # ---------------------------------------------------------------- the loop

    async def run(self, model: Dashboard) -> None:
        """Connect, stream, poll; on any failure wait a little and do it again, forever."""
        async with aiohttp.ClientSession() as session:
            while True:
                url, detail = await self._session_once(session, model)
                delay = self.backoff.next()
                model.set_connection("retrying", url, detail, retry_at=model.clock.now() + delay)
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), delay)

    async def _session_once(self, session: aiohttp.ClientSession, model: Dashboard) -> tuple[str | None, str]:
        """One connection: returns the address tried and why it ended."""
        try:
            target = self.locate()
        except NotRunning as e:
            return None, str(e)
        client = ControlClient(session, target)
        model.set_connection("connecting", target.url)
        tasks = TaskSet()
        try:
            async for event in client.events():
                if self._client is None:
                    self._client = client
                    self.backoff.reset()
                    self._telemetry_at = -float("inf")  # a (re)started sidecar: fetch at once
                    model.set_connection("connected", target.url)
                    tasks.spawn(self._poll(client, model), name="tui-poll")
                self._feed(model, event)
                if event.event == "shutdown":
                    return target.url, "the sidecar stopped"
            return target.url, "the sidecar closed the event stream"
        except ControlError as e:
            return target.url, str(e)
        finally:
            self._client = None
            await tasks.close()

    def _feed(self, model: Dashboard, event: Event) -> None:
        received = time.perf_counter()
        try:
            data = event.json()
        except ValueError:
            model.bad_events += 1
            model.alert("warning", f"ignored a {event.event!r} event that is not JSON")
            return
        model.apply_event(event.event, data, received)
        if event.event in _REFRESH_AFTER:
            self._dirty.set()
            self._arrived.set()

    # ---------------------------------------------------------------- polling

    async def _poll(self, client: ControlClient, model: Dashboard) -> None:
        try:
            await self.load_history(client, model)
        except Unreachable:
            pass  # the event stream notices too, and reconnects
        except ControlError as e:
            model.alert("warning", f"the sidecar did not answer for its recent requests: {e}")
        while True:
            self._dirty.clear()
            try:
                await self.refresh(client, model)
            except Unreachable:
                pass  # the event stream notices too, and reconnects
            except ControlError as e:
                if str(e) != self._poll_error:
                    model.alert("warning", f"the sidecar did not answer a refresh: {e}")
                self._poll_error = str(e)
            else:
                self._poll_error = ""
            await self._wait_for_change()

    async def _wait_for_change(self) -> None:
        """Until requests have settled (or kept coming for `max_stale`), or `poll_interval`."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._dirty.wait(), self.poll_interval)
        if not self._dirty.is_set():
            return
        deadline = time.monotonic() + self.max_stale
        while (left := deadline - time.monotonic()) > 0:
            self._arrived.clear()
            try:
                await asyncio.wait_for(self._arrived.wait(), min(self.settle, left))
            except TimeoutError:
                return  # quiet for `settle` seconds: the ledger has caught up

    async def load_history(self, client: ControlClient, model: Dashboard) -> None:
        """Today's recent requests into the table and the last hour's spend into the burn rate,
        from the ledger: what happened before the dashboard opened (or while it was cut off)."""
        now = model.clock.now()
        midnight = datetime.combine(model.local(now).date(), datetime.min.time(), model.zone).timestamp()
        burn_since = now - BURN_WINDOW
        table, spend = await asyncio.gather(
            client.get("/requests", since=f"{midnight:.3f}", limit=str(HISTORY_ROWS)),
            client.get("/requests", since=f"{burn_since:.3f}", limit=str(BURN_ROWS), brief="1"),
        )
        if isinstance(table, dict) and isinstance(table.get("rows"), list):
            model.apply_history(table["rows"])
        if isinstance(spend, dict) and isinstance(rows := spend.get("rows"), list):
            model.apply_recent_spend(rows, burn_since, complete=len(rows) < BURN_ROWS)

    async def refresh(self, client: ControlClient, model: Dashboard) -> None:
        """Fetch every ledger-backed figure and hand it to the model; raises the first failure."""
        status = await client.get("/status")
        if isinstance(status, dict):
            model.apply_status(status)
        today = model.today_date()
        usage = {"model": 0, "route": 0, "session": SESSION_DAYS - 1, "daily": DAILY_DAYS - 1}
        start = datetime.combine(today - timedelta(days=TELEMETRY_DAYS - 1), datetime.min.time(), model.zone).timestamp()
        since = f"{start:.0f}"
        calls = {
            **{group: client.get("/usage", group_by=group, since=(today - timedelta(days=back)).isoformat()) for group, back in usage.items()},
            "routes": client.get("/routes"),
            "cache": client.get("/cache"),
            "policy": client.get("/policy"),
            "mcp": client.get("/mcp"),
        }
        telemetry = time.monotonic() - self._telemetry_at >= self.telemetry_interval
        if telemetry:
            self._telemetry_at = time.monotonic()
            calls["cc:sessions"] = client.get("/claude-code/sessions", since=since)
            calls.update({f"cc:{attr}": client.get("/claude-code/spend", by=attr, since=since) for attr, _ in TELEMETRY_ATTRIBUTES})
        answers = dict(zip(calls, await asyncio.gather(*calls.values(), return_exceptions=True), strict=True))
        for group in usage:
            answer = answers[group]
            if isinstance(answer, dict) and isinstance(answer.get("rows"), list):
                model.apply_usage(group, answer["rows"])
        for feature in FEATURES:
            answer = answers[feature]
            if not isinstance(answer, BaseException):
                model.apply_feature(feature, answer if isinstance(answer, dict) else None)
        if telemetry:
            _apply_telemetry(model, answers)
        failures = [a for a in answers.values() if isinstance(a, BaseException)]
        if failures:
            raise failures[0]


def _apply_telemetry(model: Dashboard, answers: dict[str, Any]) -> None:
    """Claude Code's telemetry reports, unless one of them failed (then the next poll tries again)."""
    keys = ["cc:sessions", *(f"cc:{attr}" for attr, _ in TELEMETRY_ATTRIBUTES)]
    if any(isinstance(answers[k], BaseException) for k in keys):
        return
    sessions = answers["cc:sessions"]
    if not isinstance(sessions, dict):
        model.apply_telemetry(None, None)  # an older sidecar without the telemetry receiver
        return
    by = {attr: answer.get("rows", []) if isinstance(answer := answers[f"cc:{attr}"], dict) else [] for attr, _ in TELEMETRY_ATTRIBUTES}
    model.apply_telemetry(by, sessions.get("sessions", []) if isinstance(sessions.get("sessions"), list) else [])
