"""The menu model: status, spend, budgets, routes (0, 1, many), cache and the actions."""

from __future__ import annotations

from tray.menu import MAX_ROUTES, SEPARATOR, Action, Do, MenuEntry, menu_model
from tray.state import Budget, Cache, Route, TrayState, down

RUNNING = TrayState(
    running=True, address="http://127.0.0.1:8787", today_usd=3.2, today_requests=12, month_usd=45.1
)
ACTIONS = [
    SEPARATOR,
    MenuEntry("Open dashboard (TUI)", Action(Do.OPEN_TUI), default=True),
    MenuEntry("Open logs", Action(Do.OPEN_LOGS)),
    MenuEntry("Stop sidecar", Action(Do.STOP)),
    SEPARATOR,
    MenuEntry("Quit tray", Action(Do.QUIT)),
]


def texts(entries: list[MenuEntry]) -> list[str]:
    return ["---" if e.separator else e.text for e in entries]


def route_items(entries: list[MenuEntry]) -> list[MenuEntry]:
    return [e for e in entries if e.action is not None and e.action.do is Do.TOGGLE_ROUTE]


def test_a_sidecar_without_routes_policy_or_cache_endpoints() -> None:
    assert menu_model(RUNNING) == [
        MenuEntry("Sidecar running at 127.0.0.1:8787"),
        MenuEntry("Today: $3.20 in 12 requests"),
        MenuEntry("This month: $45.10"),
        *ACTIONS,
    ]


def test_no_routes_configured() -> None:
    entries = menu_model(
        TrayState(
            running=True,
            address="http://127.0.0.1:1",
            today_requests=1,
            routes=(),
            cache=Cache("off"),
        )
    )

    assert texts(entries)[:7] == [
        "Sidecar running at 127.0.0.1:1",
        "Today: $0.00 in 1 request",
        "This month: $0.00",
        "---",
        "No routes configured",
        "---",
        "Cache: off",
    ]
    assert route_items(entries) == []


def test_one_route() -> None:
    state = TrayState(
        running=True,
        address="http://127.0.0.1:1",
        routes=(Route("default", True, "anthropic/claude-opus-4-8"),),
    )

    [item] = route_items(menu_model(state))

    assert item == MenuEntry(
        "default → anthropic/claude-opus-4-8",
        Action(Do.TOGGLE_ROUTE, "default", False),
        checked=True,
    )


def test_many_routes_are_listed_up_to_a_limit() -> None:
    routes = tuple(
        Route(f"r{i}", i % 3 != 0, f"openai/m{i}" if i % 2 else None, degraded=i == 4)
        for i in range(40)
    )
    state = TrayState(running=True, address="http://127.0.0.1:1", routes=routes)

    entries = menu_model(state)
    items = route_items(entries)

    assert len(items) == MAX_ROUTES
    for route, item in zip(routes, items, strict=False):
        assert item.checked is route.enabled
        assert item.action == Action(Do.TOGGLE_ROUTE, route.name, not route.enabled)
        assert item.text.startswith(route.name + " ")
    assert items[0].text == "r0 (not used yet)"
    assert items[1].text == "r1 → openai/m1"
    assert items[4].text == "r4 (not used yet) (failing)"
    assert "... and 25 more (claude-sidecar routes list)" in texts(entries)
    assert texts(entries)[4] == "Routes (choose one to switch it on or off)"


def test_budgets_and_cache_lines() -> None:
    state = TrayState(
        running=True,
        address="http://127.0.0.1:1",
        budgets=(Budget("day", 25.0, 31.0), Budget("month", 400.0, 45.1)),
        cache=Cache("semantic", 0.173),
    )

    lines = texts(menu_model(state))

    assert "Day budget: $31.00 of $25.00 (124%, over)" in lines
    assert "Month budget: $45.10 of $400.00 (11%)" in lines
    assert "Cache: on (semantic, 17% hits)" in lines
    assert "Cache: on (exact)" in texts(menu_model(TrayState(running=True, cache=Cache("exact"))))


def test_paused_and_busy_status_lines() -> None:
    paused = TrayState(running=True, address="http://127.0.0.1:1", routes=(Route("a", False),))
    busy = TrayState(running=True, address="http://127.0.0.1:1", in_flight=3)

    assert menu_model(paused)[0].text == "Sidecar paused at 127.0.0.1:1: every route is off"
    assert menu_model(busy)[0].text == "Sidecar running at 127.0.0.1:1 (3 in flight)"


def test_down_offers_start_and_no_stale_numbers() -> None:
    entries = menu_model(down("not answering at http://127.0.0.1:8787"))

    assert entries == [
        MenuEntry("Sidecar: not answering at http://127.0.0.1:8787"),
        SEPARATOR,
        MenuEntry("Open dashboard (TUI)", Action(Do.OPEN_TUI), default=True),
        MenuEntry("Open logs", Action(Do.OPEN_LOGS)),
        MenuEntry("Start sidecar", Action(Do.START)),
        SEPARATOR,
        MenuEntry("Quit tray", Action(Do.QUIT)),
    ]


def test_exactly_one_default_item_and_information_lines_have_no_action() -> None:
    state = TrayState(
        running=True,
        routes=(Route("a", True),),
        budgets=(Budget("day", 1.0, 0.5),),
        cache=Cache("off"),
    )
    for s in (state, down("not running"), RUNNING):
        entries = menu_model(s)
        assert [e.text for e in entries if e.default] == ["Open dashboard (TUI)"]
        checkable = [e for e in entries if e.checked is not None]
        assert all(e.action is not None and e.action.do is Do.TOGGLE_ROUTE for e in checkable)
