"""The stages of the HTTP layer, and `request_path()`: the one list of the request path.

The request model and the stage protocol (hooks, Reply, response filters) are in
sidecar.pipeline; docs/architecture.md lists every stage with the file it lives in.
"""

from __future__ import annotations

import asyncio
import logging

from sidecar.errors import StorageUnavailable
from sidecar.events import EventBus
from sidecar.ledger.health import StorageHealth
from sidecar.ledger.journal import Journal
from sidecar.ledger.writer import Ledger
from sidecar.observability.tracing import Tracing
from sidecar.pipeline import Reply, RequestContext, Stage
from sidecar.policy import estimate
from sidecar.routing.router import Opened, Router

log = logging.getLogger(__name__)


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
        estimate.charge(ctx, "meter")  # a stream that broke off is booked the content it delivered
        rec = self.ledger.record(ctx.to_record(), ctx.billed_models)
        ctx.usage = rec
        if log.isEnabledFor(logging.DEBUG):  # header names only: their values may be credentials
            log.debug(
                "request %s %s model=%s -> %s route=%s status=%d outcome=%s cache=%s %.1f ms; headers: %s",
                rec.id, rec.endpoint, rec.requested_model, rec.provider or "-", rec.route, rec.status, rec.outcome,
                rec.cache_outcome, rec.latency_ms, ", ".join(sorted({k.lower() for k in ctx.headers})),
            )
        if self.bus.subscribers:
            self.bus.publish("request", rec.to_dict())


# Records (usage rows, audit entries) waiting for SQLite above which a new request waits
# until half of them are written. The writer thread gets the interpreter only between the
# event loop's turns, so a loop kept busy by a flood of requests can outrun it; holding new
# requests for a moment keeps the backlog, and the memory it holds, bounded.
BACKLOG_LIMIT = 4000
BACKLOG_WAIT_SECONDS = 5.0  # the longest a request is held (then it goes on all the same)
_BACKLOG_POLL_SECONDS = 0.002


class StorageGate:
    """Refuses new requests while their usage cannot be recorded, and holds them while too
    many records wait to be written (see sidecar.ledger.health)."""

    def __init__(self, health: StorageHealth, backlog_limit: int = BACKLOG_LIMIT) -> None:
        self.health = health
        self.backlog_limit = backlog_limit
        self.held = 0  # requests that waited for the backlog to drain

    async def on_request(self, ctx: RequestContext) -> Reply | None:
        """503 while storage is degraded and the config says refuse; a short wait while the
        writer is behind."""
        if self.health.refuse and (error := self.health.error) is not None:
            ctx.record = False  # nothing to meter, and nowhere to put it
            raise StorageUnavailable(
                f"usage cannot be recorded ({error}); refusing new requests until storage recovers "
                f"({self.health.pending} records waiting)"
            )
        if self.health.pending > self.backlog_limit:
            await self._drain()
        return None

    async def _drain(self) -> None:
        self.held += 1
        loop = asyncio.get_running_loop()
        until = loop.time() + BACKLOG_WAIT_SECONDS
        # Polled: the backlog is the sum over several sinks that the writer thread drains.
        while self.health.pending > self.backlog_limit // 2 and self.health.error is None and loop.time() < until:  # noqa: ASYNC110
            await asyncio.sleep(_BACKLOG_POLL_SECONDS)

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


class Dispatch:
    """The last stage: the router picks a route and a target, calls the provider (retrying
    and falling back before the first byte), and answers with the opened upstream exchange,
    which the HTTP layer relays to the client (sidecar.proxy.relay)."""

    def __init__(self, router: Router) -> None:
        self.router = router

    async def on_request(self, ctx: RequestContext) -> Opened:
        """Open the upstream's answer (raises a SidecarError when no target answers)."""
        return await self.router.open(ctx)

    def on_complete(self, ctx: RequestContext) -> None:
        """Nothing: the stages above it record the request."""


def request_path(
    *,
    health: StorageHealth,
    bus: EventBus,
    gate: Stage,
    cache: Stage,
    ledger: Ledger,
    journal: Journal,
    router: Router,
    tracer: Tracing | None = None,
    metrics: Stage | None = None,
    audit: Stage | None = None,
) -> list[Stage]:
    """The request path, in order (docs/architecture.md has the same list with each file).

    Request hooks run top to bottom until a stage answers: a refusal (a SidecarError), a
    cache hit, or Dispatch, last, which always does. The relay then runs the response
    filters the stages added, and complete hooks run top to bottom just before the final
    byte goes out, so the last one can make the request's records durable first. Answered
    hooks (counters, cache stores) run after that byte: no answer waits for them."""
    return [
        *([tracer] if tracer else []),  # opens the span first, so it covers every refusal too
        StorageGate(health),  # refuses while usage cannot be recorded
        Announce(bus),  # `request_started` for the TUI and the tray
        gate,  # PolicyGate: models, providers, budgets, rate limits, guardrails, tool filter
        cache,  # CacheStage: an exact or semantic hit answers here; once answered, stores a new answer
        Meter(ledger, bus),  # on complete: prices the request and writes its usage row
        *([metrics] if metrics else []),  # once answered: Prometheus counters, as the meter priced
        *([tracer.ender] if tracer else []),  # on complete: ends the span
        *([audit] if audit else []),  # on complete: chains the audit entry
        JournalSync(journal),  # on complete: one append makes the records durable before the final byte
        Dispatch(router),  # routes, calls the provider; its answer is relayed
    ]
