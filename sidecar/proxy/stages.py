"""The request path as an ordered list of stages (mitmproxy's addon pattern).

Each stage is a small object with named hooks; `default_stages()` is the one place that
says which stages run and in what order:

    StorageGate -> Announce -> policy gate -> cache -> (router and provider, in the handler)
    -> Meter -> (Metrics) -> (audit) -> JournalSync

Hooks:

- ``async on_request(ctx) -> Reply | None``: before anything goes upstream. A stage may
  raise a SidecarError to refuse the request, change the body with ``ctx.replace_body``,
  record decisions with ``ctx.decide``, add response filters to ``ctx.filters``, or return
  a Reply to answer without going upstream (a cache hit). Later stages do not run then.
- ``on_complete(ctx)``: once the response is complete, refused or failed, just BEFORE its
  final byte goes to the client (the message_stop chunk of a stream, a whole answer, an
  error), so that the last stage can make the request's records durable first; or after
  the response broke off. Runs once; never raises into the request (failures are logged).

Response filters (`EventFilter`) see the Anthropic response on its way to the client:
every SSE event of a stream, or the whole message of a non-streaming answer. A request
with no filters is relayed byte for byte without being parsed.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Protocol

from sidecar.errors import StorageUnavailable
from sidecar.ledger.health import StorageHealth
from sidecar.ledger.journal import Journal
from sidecar.ledger.writer import Ledger
from sidecar.proxy.context import RequestContext
from sidecar.proxy.events import EventBus

log = logging.getLogger(__name__)


@dataclass
class Reply:
    """An answer a stage gives in place of the upstream's (e.g. a cache hit)."""

    body: bytes
    status: int = 200
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)


class Stage(Protocol):
    """A step on the request path."""

    async def on_request(self, ctx: RequestContext) -> Reply | None:
        """Before the request goes upstream; may raise a SidecarError to refuse it."""

    def on_complete(self, ctx: RequestContext) -> None:
        """Called once the response has been fully sent, refused or failed."""


class EventFilter(Protocol):
    """Sees (and may rewrite) the Anthropic response on its way to the client."""

    def on_event(self, event: str, data: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
        """One SSE event of a stream; return the events to send instead (usually [(event, data)])."""

    def on_message(self, message: dict[str, Any]) -> dict[str, Any]:
        """A whole non-streaming response body (a message or an error envelope)."""

    def on_end(self, complete: bool) -> None:
        """The response is over; `complete` is True when it ended with message_stop and no error."""


class Announce:
    """Tells event subscribers (TUI, tray) that a request has started."""

    def __init__(self, bus: EventBus) -> None:
        self.bus = bus

    async def on_request(self, ctx: RequestContext) -> Reply | None:
        """Publish `request_started`."""
        if self.bus.subscribers:
            self.bus.publish(
                "request_started",
                {"id": ctx.id, "ts": ctx.ts, "model": ctx.head.model, "session_id": ctx.session_id, "stream": ctx.stream},
            )
        return None

    def on_complete(self, ctx: RequestContext) -> None:
        """Nothing: the meter announces completion with the priced record."""


class Meter:
    """Writes the usage row for every request and publishes it as a `request` event."""

    def __init__(self, ledger: Ledger, bus: EventBus) -> None:
        self.ledger = ledger
        self.bus = bus

    async def on_request(self, ctx: RequestContext) -> Reply | None:
        """Nothing to do before dispatch."""
        return None

    def on_complete(self, ctx: RequestContext) -> None:
        """Price and record the request; publish it."""
        if not ctx.record:
            return
        rec = self.ledger.record(ctx.to_record())
        ctx.usage = rec
        ctx.cost_usd = rec.cost_usd
        if log.isEnabledFor(logging.DEBUG):  # header names only: their values may be credentials
            log.debug(
                "request %s %s model=%s -> %s route=%s status=%d outcome=%s cache=%s %.1f ms; headers: %s",
                rec.id, rec.endpoint, rec.requested_model, rec.provider or "-", rec.route, rec.status, rec.outcome,
                rec.cache_outcome, rec.latency_ms, ", ".join(sorted({k.lower() for k in ctx.headers})),
            )
        if self.bus.subscribers:
            self.bus.publish("request", rec.to_dict())


class StorageGate:
    """Refuses new requests while their usage cannot be recorded (see sidecar.ledger.health)."""

    def __init__(self, health: StorageHealth) -> None:
        self.health = health

    async def on_request(self, ctx: RequestContext) -> Reply | None:
        """503 while storage is degraded and the config says refuse."""
        if self.health.refuse and (error := self.health.error) is not None:
            ctx.record = False  # nothing to meter, and nowhere to put it
            raise StorageUnavailable(
                f"usage cannot be recorded ({error}); refusing new requests until storage recovers "
                f"({self.health.pending} records waiting)"
            )
        return None

    def on_complete(self, ctx: RequestContext) -> None:
        """Nothing."""


class JournalSync:
    """The last stage: writes what the meter and the audit log journaled for this request in
    one append, before the final byte of the answer goes out."""

    def __init__(self, journal: Journal) -> None:
        self.journal = journal

    async def on_request(self, ctx: RequestContext) -> Reply | None:
        """Nothing."""
        return None

    def on_complete(self, ctx: RequestContext) -> None:
        """Append the request's records to the journal."""
        self.journal.sync()


def default_stages(
    ledger: Ledger, bus: EventBus, extra: list[Stage] | None = None, metrics: Stage | None = None
) -> list[Stage]:
    """The stages of the request path, in order: `extra` (policy gate, cache) run between the
    announcement and the meter; `metrics` (sidecar.observability.metrics) counts after the meter priced."""
    return [Announce(bus), *(extra or []), Meter(ledger, bus), *([metrics] if metrics else [])]
