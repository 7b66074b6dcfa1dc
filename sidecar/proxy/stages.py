"""The request path as an ordered list of stages (mitmproxy's addon pattern).

Each stage is a small object with named hooks; `default_stages()` is the one place that
says which stages run and in what order. Issue by issue, policy, cache and routing
stages join this list.
"""

from __future__ import annotations

from typing import Protocol

from sidecar.ledger.writer import Ledger
from sidecar.proxy.context import RequestContext
from sidecar.proxy.events import EventBus


class Stage(Protocol):
    """A step on the request path."""

    def on_request(self, ctx: RequestContext) -> None:
        """Called before the request goes upstream; may raise a SidecarError to refuse it."""

    def on_complete(self, ctx: RequestContext) -> None:
        """Called once the response has been fully sent, refused or failed."""


class Announce:
    """Tells event subscribers (TUI, tray) that a request has started."""

    def __init__(self, bus: EventBus) -> None:
        self.bus = bus

    def on_request(self, ctx: RequestContext) -> None:
        """Publish `request_started`."""
        if self.bus.subscribers:
            self.bus.publish(
                "request_started",
                {"id": ctx.id, "ts": ctx.ts, "model": ctx.head.model, "session_id": ctx.session_id, "stream": ctx.stream},
            )

    def on_complete(self, ctx: RequestContext) -> None:
        """Nothing: the meter announces completion with the priced record."""


class Meter:
    """Writes the usage row for every request and publishes it as a `request` event."""

    def __init__(self, ledger: Ledger, bus: EventBus) -> None:
        self.ledger = ledger
        self.bus = bus

    def on_request(self, ctx: RequestContext) -> None:
        """Nothing to do before dispatch."""

    def on_complete(self, ctx: RequestContext) -> None:
        """Price and record the request; publish it."""
        rec = self.ledger.record(ctx.to_record())
        if self.bus.subscribers:
            self.bus.publish("request", rec.to_dict())


def default_stages(ledger: Ledger, bus: EventBus) -> list[Stage]:
    """The stages of the request path, in order."""
    return [Announce(bus), Meter(ledger, bus)]
