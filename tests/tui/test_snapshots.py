"""Snapshots of the main views: the demo afternoon, frozen at 15:42:10 Berlin time, 130x40.

After an intended change to the look, review the report and run
`pytest tests/tui/test_snapshots.py --snapshot-update`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from textual.pilot import Pilot

from tui.demo import demo_app, show_tab

SIZE = (130, 40)
Compare = Callable[..., bool]


def showing(tab: str, *keys: str) -> Callable[[Pilot[Any]], Awaitable[None]]:
    """A run_before that shows `tab` after pressing `keys`."""

    async def run_before(pilot: Pilot[Any]) -> None:
        await show_tab(pilot, tab, *keys)

    return run_before


@pytest.mark.parametrize("tab", ["requests", "spend", "routes", "cache", "sessions", "budget", "claude-code", "mcp"])
def test_each_tab(snap_compare: Compare, tab: str) -> None:
    assert snap_compare(demo_app(), terminal_size=SIZE, run_before=showing(tab))


def test_request_detail(snap_compare: Compare) -> None:
    """Enter on the live table opens the request under the cursor (two rows above the newest)."""
    assert snap_compare(demo_app(), terminal_size=SIZE, run_before=showing("requests", "up", "up", "enter"))


def test_features_not_configured(snap_compare: Compare) -> None:
    """A sidecar without routes, cache and policy APIs: each panel says so."""
    assert snap_compare(demo_app(features=False), terminal_size=SIZE, run_before=showing("routes"))


@pytest.mark.parametrize("tab", ["claude-code", "mcp"])
def test_telemetry_and_mcp_not_available(snap_compare: Compare, tab: str) -> None:
    """A sidecar without the telemetry and MCP APIs (an older version): the tabs say so."""
    assert snap_compare(demo_app(features=False), terminal_size=SIZE, run_before=showing(tab))
