"""The tray menu as plain data, built from a `TrayState` by a pure function.

`menu_model(state)` lists what the menu shows: a status line, today's and this month's
spend, the budgets, each route with a check mark when it is on and the upstream it last
used (choosing one toggles it), the cache, then the actions. `tray.backend` turns the list
into a pystray menu; tests read it directly.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from tray.render import money
from tray.state import Route, TrayState

# A menu taller than the screen is useless; the rest are one command away.
MAX_ROUTES = 15


class Do(enum.Enum):
    """What a menu item does when chosen."""

    TOGGLE_ROUTE = "toggle_route"
    OPEN_TUI = "open_tui"
    OPEN_LOGS = "open_logs"
    START = "start"
    STOP = "stop"
    QUIT = "quit"


@dataclass(frozen=True)
class Action:
    """A menu item's action; for TOGGLE_ROUTE, the route and whether to switch it on."""

    do: Do
    route: str | None = None
    enable: bool | None = None


@dataclass(frozen=True)
class MenuEntry:
    """One line of the menu. Without an action it is information, shown greyed out."""

    text: str
    action: Action | None = None
    checked: bool | None = None  # None: not a checkable item
    default: bool = False  # the item a click on the icon runs (where the platform has one)
    separator: bool = False


SEPARATOR = MenuEntry("", separator=True)


def menu_model(state: TrayState) -> list[MenuEntry]:
    """The menu for `state`, top to bottom."""
    entries = [MenuEntry(_status_line(state))]
    if state.running:
        entries += _spend(state)
        if state.sync is not None:
            entries.append(MenuEntry(f"Org sync: {state.sync}"))
        entries += _routes(state.routes)
        if state.cache is not None:
            entries += [SEPARATOR, MenuEntry(_cache_line(state))]
    entries += [
        SEPARATOR,
        MenuEntry("Open dashboard (TUI)", Action(Do.OPEN_TUI), default=True),
        MenuEntry("Open logs", Action(Do.OPEN_LOGS)),
        MenuEntry("Stop sidecar", Action(Do.STOP))
        if state.running
        else MenuEntry("Start sidecar", Action(Do.START)),
        SEPARATOR,
        MenuEntry("Quit tray", Action(Do.QUIT)),
    ]
    return entries


def _status_line(state: TrayState) -> str:
    if not state.running:
        return f"Sidecar: {state.problem or 'not running'}"
    where = (state.address or "").removeprefix("http://")
    line = (
        f"Sidecar paused at {where}: every route is off"
        if state.paused
        else f"Sidecar running at {where}"
    )
    return line + (f" ({state.in_flight} in flight)" if state.in_flight else "")


def _spend(state: TrayState) -> list[MenuEntry]:
    requests = f"{state.today_requests} request" + ("" if state.today_requests == 1 else "s")
    entries = [
        MenuEntry(f"Today: {money(state.today_usd)} in {requests}"),
        MenuEntry(f"This month: {money(state.month_usd)}"),
    ]
    for b in state.budgets or ():
        over = ", over" if b.fraction >= 1 else ""
        entries.append(
            MenuEntry(
                f"{b.period.capitalize()} budget: {money(b.spent_usd)} of {money(b.limit_usd)} ({b.fraction:.0%}{over})"
            )
        )
    return entries


def _routes(routes: tuple[Route, ...] | None) -> list[MenuEntry]:
    if routes is None:  # this sidecar has no routes endpoint
        return []
    if not routes:
        return [SEPARATOR, MenuEntry("No routes configured")]
    entries = [SEPARATOR, MenuEntry("Routes (choose one to switch it on or off)")]
    for r in routes[:MAX_ROUTES]:
        entries.append(
            MenuEntry(
                _route_text(r), Action(Do.TOGGLE_ROUTE, r.name, not r.enabled), checked=r.enabled
            )
        )
    if len(routes) > MAX_ROUTES:
        entries.append(
            MenuEntry(f"... and {len(routes) - MAX_ROUTES} more (claude-sidecar routes list)")
        )
    return entries


def _route_text(r: Route) -> str:
    used = f" → {r.last_upstream}" if r.last_upstream else " (not used yet)"
    return r.name + used + (" (failing)" if r.degraded else "")


def _cache_line(state: TrayState) -> str:
    cache = state.cache
    if cache is None or not cache.on:
        return "Cache: off"
    rate = f", {cache.hit_rate:.0%} hits" if cache.hit_rate is not None else ""
    return f"Cache: on ({cache.mode}{rate})"
