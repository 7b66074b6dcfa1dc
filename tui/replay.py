"""A Source that replays recorded control-API answers and events, and changes nothing.

Steps are `(kind, payload)` pairs in the order they happened: `status`, `usage:<group>`
(the rows), `routes` / `cache` / `policy` / `mcp` (None for a 404), `telemetry`
(`{"by": {attribute: rows}, "sessions": [...]}`, None for a 404), or `event:<type>` (an event
from the stream). The demo, the snapshot tests and the benchmark feed the app this way.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from tui.client import ControlError
from tui.state import FEATURES, Dashboard

Step = tuple[str, Any]


def apply_step(model: Dashboard, step: Step) -> None:
    """Feed one recorded step into `model`; an unknown kind is a ValueError."""
    kind, payload = step
    if kind == "status":
        model.apply_status(payload)
    elif kind.startswith("usage:"):
        model.apply_usage(kind.removeprefix("usage:"), payload)
    elif kind in FEATURES:
        model.apply_feature(kind, payload)
    elif kind == "telemetry":
        model.apply_telemetry(*((payload["by"], payload["sessions"]) if payload is not None else (None, None)))
    elif kind.startswith("event:"):
        model.apply_event(kind.removeprefix("event:"), payload)
    else:
        raise ValueError(f"unknown replay step {kind!r}")


class ReplaySource:
    """Connects to nothing: applies the steps, then keeps the dashboard open."""

    def __init__(self, steps: Sequence[Step], url: str = "replay") -> None:
        self.steps = list(steps)
        self.url = url

    async def run(self, model: Dashboard) -> None:
        """Apply every step, then wait until cancelled."""
        model.set_connection("connected", self.url)
        for step in self.steps:
            apply_step(model, step)
        await asyncio.Event().wait()

    async def set_route(self, name: str, enabled: bool) -> dict[str, Any]:
        """A replay cannot change the sidecar."""
        raise ControlError("this is a replay: there is no sidecar to change")

    async def clear_cache(self) -> int:
        """A replay cannot change the sidecar."""
        raise ControlError("this is a replay: there is no sidecar to change")

    def reconnect_now(self) -> None:
        """Nothing to reconnect to."""
