"""The dashboard's state: a plain model that control-API payloads and live events are fed into.

Nothing here touches the terminal, so it is tested on its own. Sources (the live control
API, a replay) call the `apply_*` reducers; widgets read the model. Each reducer bumps the
version of the sections it changed, and the app re-renders only those sections, at most a
few times a second, however fast events arrive.

Totals come from the sidecar's ledger (`/status`, `/usage`) and are bumped by each live
`request` event until the next poll replaces them, so spend moves the moment a request ends.
"""

from __future__ import annotations

import time
from collections import Counter, OrderedDict, deque
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, tzinfo
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from tui.clock import Clock
from tui.plan import PlanUsage, parse_unified
from tui.records import IN_FLIGHT, LOST, RequestRow, Tally, as_float, as_str

Availability = Literal["loading", "missing", "ready"]
Severity = Literal["information", "warning", "error"]
BURN_WINDOW = 3600.0  # seconds of history behind the burn rate
BURN_MIN_SPAN = 600.0  # never divide by less than this, or one request reads as a fortune/hour
SESSION_DAYS = 7  # the sessions view covers this many local days
DAILY_DAYS = 14  # the daily spend chart covers this many local days
FEATURES = ("routes", "cache", "policy", "mcp")  # control-API parts a sidecar may not have
# Attributes of Claude Code's `api_request` events the attribution view groups spend by, with
# their labels. Only `query_source` (main, subagent, sdk, ...) was seen from a real client;
# the others are asked for and shown as "not reported" while every row's key is empty.
TELEMETRY_ATTRIBUTES = (
    ("query_source", "Source / subagent"),
    ("skill_name", "Skill"),
    ("plugin_name", "Plugin"),
    ("mcp_server_name", "MCP server"),
)
TELEMETRY_DAYS = 7  # the attribution view covers this many local days


@dataclass
class Feature:
    """A part of the control API that may be missing (404: not configured, or an older sidecar)."""

    state: Availability = "loading"
    data: dict[str, Any] = field(default_factory=dict)


@dataclass
class Connection:
    """How the dashboard's link to the sidecar stands."""

    state: Literal["connecting", "connected", "retrying"] = "connecting"
    url: str | None = None
    detail: str = ""
    pid: int | None = None
    version: str | None = None
    retry_at: float | None = None


@dataclass(frozen=True)
class Alert:
    """Something to tell the user once (a toast)."""

    severity: Severity
    message: str


@dataclass
class RowChanges:
    """What the live table must do since it last looked: rows to add or update, rows to drop."""

    rebuild: bool = False
    changed: dict[str, None] = field(default_factory=dict)  # an ordered set of ids
    evicted: list[str] = field(default_factory=list)


class Dashboard:
    """Everything the dashboard shows, and the reducers that change it."""

    def __init__(self, clock: Clock, max_rows: int = 500, zone: tzinfo | None = None) -> None:
        self.clock = clock
        self.max_rows = max_rows
        self.zone: tzinfo = zone or datetime.now().astimezone().tzinfo or ZoneInfo("UTC")
        self.versions: Counter[str] = Counter()
        self.alerts: deque[Alert] = deque(maxlen=50)
        self.connection = Connection()
        self.status: dict[str, Any] = {}
        self.today, self.month = Tally(), Tally()
        self.today_key, self.month_key = self._keys(clock.now())
        self.rows: OrderedDict[str, RequestRow] = OrderedDict()
        self._row_changes = RowChanges()
        self.by_model: dict[str, Tally] = {}
        self.by_route: dict[str, Tally] = {}
        self.daily: dict[str, float] = {}  # local date -> spend
        self.hourly: dict[int, float] = {}  # local hour of today -> spend seen live
        self.live_since: float | None = None
        self.sessions: dict[str, Tally] = {}
        self.session_seen: dict[str, float] = {}
        self._burn: dict[str, tuple[float, float]] = {}  # request id -> (ts, cost) in the burn window
        self.burn_known_since: float | None = None  # every request after this is in _burn (the ledger's history)
        self.routes = Feature()
        self.cache = Feature()
        self.policy = Feature()
        self.mcp = Feature()
        self.telemetry = Feature()  # data: {"by": {attribute: rows}, "sessions": [...]}
        self.plan: PlanUsage | None = None
        self.dropped_events = 0
        self.bad_events = 0

    # ---------------------------------------------------------------- helpers

    def _touch(self, *sections: str) -> None:
        for s in sections:
            self.versions[s] += 1

    def local(self, ts: float) -> datetime:
        """`ts` as a local time in the sidecar's zone."""
        return datetime.fromtimestamp(ts, self.zone)

    def _keys(self, ts: float) -> tuple[str, str]:
        d = self.local(ts).date()
        return d.isoformat(), d.strftime("%Y-%m")

    def today_date(self) -> date:
        """Today's local date, as the totals count it."""
        return date.fromisoformat(self.today_key)

    def take_row_changes(self) -> RowChanges:
        """Hand the live table what changed since its last call (it is the only consumer)."""
        changes, self._row_changes = self._row_changes, RowChanges()
        return changes

    def alert(self, severity: Severity, message: str) -> None:
        """Queue a message for the user."""
        self.alerts.append(Alert(severity, message))

    # ---------------------------------------------------------------- connection

    def set_connection(self, state: Literal["connecting", "connected", "retrying"], url: str | None, detail: str = "", retry_at: float | None = None) -> None:
        """Record the link's state; a lost link leaves in-flight rows without an outcome."""
        if state != "connected" and self.connection.state == "connected":
            self._lose_in_flight()
        if state == "connected" and self.live_since is None:
            self.live_since = self.clock.now()
        self.connection = Connection(state, url, detail, self.connection.pid, self.connection.version, retry_at)
        self._touch("connection")

    def _lose_in_flight(self) -> None:
        for row in self.rows.values():
            if row.in_flight:
                row.outcome = LOST
                self._row_changed(row.id)
        self._touch("requests")

    # ---------------------------------------------------------------- API payloads

    def apply_status(self, data: dict[str, Any]) -> None:
        """A `/status` answer: the ledger's totals for today and this month, sync state."""
        self.status = data
        usage = data.get("usage")
        if not isinstance(usage, dict):
            usage = {}  # no ledger yet: nothing spent
        zone_name = as_str(usage, "timezone")
        if zone_name:
            try:
                self.zone = ZoneInfo(zone_name)
            except (ZoneInfoNotFoundError, ValueError):
                self.alert("warning", f"the sidecar's time zone {zone_name!r} is unknown here; using this machine's")
        self.today_key, self.month_key = self._keys(self.clock.now())
        for name in ("today", "month"):
            total = usage.get(name)
            tally = Tally.from_report(total) if isinstance(total, dict) else Tally()
            key = as_str(total, "key") if isinstance(total, dict) else None
            setattr(self, name, tally)
            if key:
                setattr(self, f"{name}_key", key)
        if self.daily or self.today.cost_usd:
            self.daily[self.today_key] = self.today.cost_usd
        self._touch("totals", "spend", "budget", "connection")

    def apply_usage(self, group: str, rows: list[dict[str, Any]]) -> None:
        """A `/usage?group_by=...` answer: model and route breakdowns, sessions, days."""
        clean = [r for r in rows if isinstance(r, dict)]
        if group in ("model", "route"):
            table = {str(r.get("key") or "(none)"): Tally.from_report(r) for r in clean}
            setattr(self, f"by_{group}", table)
            self._touch("spend")
        elif group == "session":
            self.sessions = {str(r.get("key") or "(none)"): Tally.from_report(r) for r in clean}
            self._touch("sessions")
        elif group == "daily":
            self.daily = {str(r.get("key")): as_float(r, "cost_usd") or 0.0 for r in clean if r.get("key")}
            self._touch("spend")
        else:
            raise ValueError(f"unknown usage group {group!r}")

    def apply_feature(self, name: str, data: dict[str, Any] | None) -> None:
        """A `/routes`, `/cache` or `/policy` answer; None when the sidecar answered 404."""
        if name not in FEATURES:
            raise ValueError(f"unknown feature {name!r}")
        feature: Feature = getattr(self, name)
        if data is None:
            feature.state, feature.data = "missing", {}
        else:
            feature.state, feature.data = "ready", data
        self._touch(name, *(("budget", "totals") if name == "policy" else ()))

    def apply_telemetry(self, by: dict[str, list[dict[str, Any]]] | None, sessions: list[dict[str, Any]] | None) -> None:
        """`/claude-code/spend?by=` rows per attribute and `/claude-code/sessions`; None for a 404."""
        if by is None or sessions is None:
            self.telemetry.state, self.telemetry.data = "missing", {}
        else:
            clean = {attr: [r for r in rows if isinstance(r, dict)] for attr, rows in by.items() if isinstance(rows, list)}
            self.telemetry.state = "ready"
            self.telemetry.data = {"by": clean, "sessions": [s for s in sessions if isinstance(s, dict)]}
        self._touch("telemetry")

    def apply_history(self, rows: list[dict[str, Any]]) -> None:
        """`/requests` rows (the ledger's recent requests, newest first): into the table, oldest
        first, beside what arrived live. The ledger's totals already count them, so nothing is counted."""
        before = list(self.rows)
        for data in rows:
            if not isinstance(data, dict) or "id" not in data:
                continue
            old = self.rows.get(str(data["id"]))
            if old is not None and not old.in_flight and old.outcome != LOST:
                continue  # seen live already
            row = RequestRow.finished(data, 0.0)
            self.rows[row.id] = row
            if old is not None:
                self._row_changed(row.id)  # an in-flight or lost row gets its outcome
                self._touch("requests")
        ordered = sorted(self.rows.values(), key=lambda r: (r.ts, r.id))[-self.max_rows :]
        self.rows = OrderedDict((r.id, r) for r in ordered)
        if list(self.rows) == before:
            return  # nothing new (rows seen live, or older than the table keeps)
        self._row_changes = RowChanges(rebuild=True)
        self._touch("requests")

    def apply_recent_spend(self, rows: list[dict[str, Any]], since: float, complete: bool) -> None:
        """`/requests?brief=1` rows since `since`: the burn rate's window from the ledger, so it
        reads right at once; `complete` is False when the answer was cut at its limit."""
        spend = {
            str(r["id"]): (ts, as_float(r, "cost_usd") or 0.0)
            for r in rows
            if isinstance(r, dict) and "id" in r and (ts := as_float(r, "ts")) is not None
        }
        self._burn.update(spend)
        known = since if complete or not spend else min(ts for ts, _ in spend.values())
        self.burn_known_since = known if self.burn_known_since is None else min(self.burn_known_since, known)
        self._touch("totals")

    def apply_route(self, route: dict[str, Any]) -> None:
        """One changed route (the answer of an enable or disable call)."""
        routes = self.routes.data.get("routes")
        if not isinstance(routes, list):
            return
        self.routes.data["routes"] = [route if r.get("name") == route.get("name") else r for r in routes if isinstance(r, dict)]
        self._touch("routes")

    # ---------------------------------------------------------------- live events

    def apply_event(self, kind: str, data: Any, received_at: float | None = None) -> None:
        """One event from `/sidecar/v1/events`."""
        received_at = time.perf_counter() if received_at is None else received_at
        if not isinstance(data, dict):
            self.bad_events += 1
            self.alert("warning", f"ignored a {kind!r} event whose data is not an object")
            return
        handler = getattr(self, f"_on_{kind}", None)
        if handler is None:
            return  # a newer sidecar's event: nothing to show for it
        try:
            handler(data, received_at)
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            self.bad_events += 1
            self.alert("warning", f"ignored a malformed {kind!r} event ({type(e).__name__}: {e})")

    def _on_hello(self, data: dict[str, Any], received_at: float) -> None:
        pid = data.get("pid")
        old = self.connection.pid
        if isinstance(pid, int) and old is not None and pid != old:
            self.alert("information", f"the sidecar restarted (pid {old} -> {pid})")
        self.connection.pid = pid if isinstance(pid, int) else None
        self.connection.version = as_str(data, "version")
        self._touch("connection")

    def _on_request_started(self, data: dict[str, Any], received_at: float) -> None:
        row = RequestRow.started(data, received_at)
        if row.id not in self.rows:
            self._insert(row)
            self._touch("requests")

    def _on_request(self, data: dict[str, Any], received_at: float) -> None:
        row = RequestRow.finished(data, received_at)
        old = self.rows.get(row.id)
        if old is not None and not old.in_flight and old.outcome != LOST:
            return  # already counted
        if old is not None:
            self.rows[row.id] = row
            self._row_changed(row.id)
        else:
            self._insert(row)
        self._count(row)
        self._touch("requests", "totals", "spend", "sessions", "budget")

    def _on_routes_changed(self, data: dict[str, Any], received_at: float) -> None:
        routes = data["routes"]
        if not isinstance(routes, list):
            raise TypeError("routes is not a list")
        self.apply_feature("routes", {"routes": routes})

    def _on_breaker(self, data: dict[str, Any], received_at: float) -> None:
        target, route, state = str(data["target"]), as_str(data, "route"), str(data["state"])
        for r in self.routes.data.get("routes", []):
            if route is not None and r.get("name") != route:
                continue
            for t in [*r.get("targets", []), *r.get("fallbacks", [])]:
                if t.get("id") == target:
                    t["breaker"] = state
        if state == "open":
            self.alert("warning", f"circuit open for {target}" + (f" on route {route}" if route else ""))
        self._touch("routes")

    def _on_budget_threshold(self, data: dict[str, Any], received_at: float) -> None:
        period, fraction = str(data["period"]), float(data["fraction"])
        spent, limit = as_float(data, "spent_usd"), as_float(data, "limit_usd")
        money = f" (${spent:.2f} of ${limit:.2f})" if spent is not None and limit is not None else ""
        self.alert("error" if fraction >= 1 else "warning", f"{period} budget {fraction:.0%} used{money}")
        for b in self.policy.data.get("budgets", []):
            if b.get("period") == period and spent is not None:
                b["spent_usd"] = spent
        self._touch("budget", "totals")

    def _on_ratelimit(self, data: dict[str, Any], received_at: float) -> None:
        unified = data.get("unified")
        if not isinstance(unified, dict):
            raise TypeError("unified is not an object")
        self.plan = parse_unified(unified, self.clock.now())
        self._touch("plan", "totals")

    def _on_mcp_server_up(self, data: dict[str, Any], received_at: float) -> None:
        self._mcp_server(str(data["server"]), "up", None, data.get("tools"))

    def _on_mcp_server_down(self, data: dict[str, Any], received_at: float) -> None:
        name, error = str(data["server"]), as_str(data, "error")
        self._mcp_server(name, "down", error, None)
        self.alert("warning", f"MCP server {name} is down" + (f": {error}" if error else ""))

    def _mcp_server(self, name: str, state: str, error: str | None, tools: Any) -> None:
        """A server's new state, until the next `/mcp` poll brings the whole picture."""
        for server in self.mcp.data.get("servers", []):
            if isinstance(server, dict) and server.get("name") == name:
                server["state"], server["error"] = state, error
                if isinstance(tools, int):
                    server["tools"] = tools
                self._touch("mcp")

    def _on_shutdown(self, data: dict[str, Any], received_at: float) -> None:
        self.connection.detail = "the sidecar is stopping"
        self._touch("connection")

    def _on_dropped(self, data: dict[str, Any], received_at: float) -> None:
        count = int(data.get("count", 1))
        self.dropped_events += count
        self.alert("warning", f"the dashboard fell behind; the sidecar dropped {count} event(s) for it")
        self._touch("connection")

    # ---------------------------------------------------------------- rows and totals

    def _insert(self, row: RequestRow) -> None:
        self.rows[row.id] = row
        self._row_changed(row.id)
        while len(self.rows) > self.max_rows:
            old_id, _ = self.rows.popitem(last=False)
            changes = self._row_changes
            changes.changed.pop(old_id, None)
            changes.evicted.append(old_id)  # the table skips ids it never showed
            if len(changes.evicted) > self.max_rows:
                changes.rebuild, changes.evicted = True, []

    def _row_changed(self, row_id: str) -> None:
        self._row_changes.changed[row_id] = None

    def _count(self, row: RequestRow) -> None:
        """Add a finished request to today's and this month's figures until the next poll."""
        day = self.local(row.ts).date()
        if day.isoformat() > self.today_key:
            self._roll_over(day)
        if day.strftime("%Y-%m") == self.month_key:
            self.month.add(row)
        if day.isoformat() == self.today_key:
            self.today.add(row)
            self.by_model.setdefault(row.model_key, Tally()).add(row)
            self.by_route.setdefault(row.route or "(none)", Tally()).add(row)
            hour = self.local(row.ts).hour
            self.hourly[hour] = self.hourly.get(hour, 0.0) + row.cost_usd
            self.daily[self.today_key] = self.daily.get(self.today_key, 0.0) + row.cost_usd
            self._bump_budgets(row.cost_usd)
        session = row.session_id or "(none)"
        self.sessions.setdefault(session, Tally()).add(row)
        self.session_seen[session] = max(row.ts, self.session_seen.get(session, 0.0))
        self._burn[row.id] = (row.ts, row.cost_usd)

    def _roll_over(self, day: date) -> None:
        """A request from a new local day: today's figures start again (and the month's, maybe)."""
        self.today_key = day.isoformat()
        self.today, self.by_model, self.by_route, self.hourly = Tally(), {}, {}, {}
        if day.strftime("%Y-%m") != self.month_key:
            self.month_key, self.month = day.strftime("%Y-%m"), Tally()

    def _bump_budgets(self, cost: float) -> None:
        now = self.clock.now()
        for b in self.policy.data.get("budgets", []):
            resets = b.get("resets_at")
            try:
                expired = resets is not None and datetime.fromisoformat(str(resets)).timestamp() <= now
            except ValueError:
                expired = False
            if not expired and isinstance(b.get("spent_usd"), int | float):
                b["spent_usd"] += cost

    # ---------------------------------------------------------------- derived figures

    def burn_rate(self) -> float | None:
        """Dollars per hour over the last hour: from the ledger's recent history once loaded
        (whether or not the dashboard was open then), else as seen live; None before either."""
        known = self.burn_known_since if self.burn_known_since is not None else self.live_since
        if known is None:
            return None
        now = self.clock.now()
        start = now - BURN_WINDOW
        if any(ts < start for ts, _ in self._burn.values()):
            self._burn = {i: (ts, cost) for i, (ts, cost) in self._burn.items() if ts >= start}
        span = max(min(BURN_WINDOW, now - known), BURN_MIN_SPAN)
        return sum(cost for _, cost in self._burn.values()) / span * 3600

    def projected_today(self) -> float | None:
        """Today's spend at local midnight if the burn rate holds."""
        rate = self.burn_rate()
        if rate is None:
            return None
        now = self.local(self.clock.now())
        midnight = datetime.combine(now.date() + timedelta(days=1), datetime.min.time(), self.zone)
        return self.today.cost_usd + rate * max(midnight.timestamp() - now.timestamp(), 0.0) / 3600

    def in_flight(self) -> int:
        """Requests started and not yet finished."""
        return sum(1 for r in self.rows.values() if r.outcome == IN_FLIGHT)
