"""The request model and the stage protocol: what every room on the request path shares.

The request path is an ordered list of stages (mitmproxy's addon pattern), assembled in
one place, `sidecar.proxy.stages.request_path()`; docs/architecture.md lists them. This
module sits low in the tree (it knows the wire format and the usage record, nothing of
HTTP), so providers, the router and the stages import it, never the HTTP layer.

Hooks of a stage:

- ``async on_request(ctx) -> Answer | None``: in list order, before anything goes upstream.
  A stage may raise a SidecarError to refuse the request, change the body with
  ``ctx.replace_body``, record decisions with ``ctx.decide``, or return a Reply to answer
  without going upstream (a cache hit). Later
  stages do not run then. The last stage, Dispatch (sidecar.proxy.stages), always answers:
  the router picks a target and opens the upstream's answer, which the HTTP layer relays.
- ``on_complete(ctx)``: once the response is complete, refused or failed, just BEFORE its
  final byte goes to the client (the message_stop chunk of a stream, a whole answer, an
  error), so that the last stage can make the request's records durable first; or after
  the response broke off. Runs once; never raises into the request (failures are logged).
  It is the error hook too: a refusal, an upstream failure or a broken stream reaches it
  with ``ctx.status`` and ``ctx.outcome`` (rejected, upstream_error, aborted,
  client_closed) set, so a stage settles what it holds (a budget reservation, a span) in
  one place.

- ``on_answered(ctx)`` (optional; a stage that has it is a `Settler`): once per request,
  after every complete hook and after the answer's final byte was handed to the client's
  connection (or the request ended without one). For work no answer waits for and no record
  depends on: counters, cache stores, hashing the audit entry the journal already holds.
  Never raises into the request.

- ``on_response(ctx) -> EventFilter | None`` (optional; a stage that has it is a
  `Responder`): once the upstream's answer opened, in list order, the stage's filter for this
  request's answer, or None. The filters (`EventFilter`) see the Anthropic response on its
  way to the client: every SSE event of a stream, or the whole message of a non-streaming
  answer. The stages that have the hook are found once, when the path is assembled
  (`responders()`); a request no filter wants is relayed byte for byte without being parsed.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import msgspec
from multidict import CIMultiDict, CIMultiDictProxy

from sidecar.errors import InvalidRequest
from sidecar.ledger.record import UsageRecord, new_ulid
from sidecar.protocol.anthropic import MessageSummary, RequestHead, body_error

_EMPTY: CIMultiDictProxy[str] = CIMultiDictProxy(CIMultiDict())


@dataclass(slots=True)
class Decision:
    """One policy decision taken on a request (for the audit log and the TUI's detail view)."""

    stage: str  # e.g. "budget", "guardrail", "tools", "router", "cache"
    action: str  # allow | deny | redact | warn | reroute | strip | hit | ...
    reason: str


@dataclass(slots=True)
class RequestContext:
    """Everything the stages know about one proxied request."""

    endpoint: str
    body: bytes
    head: RequestHead
    session_id: str | None
    agent_id: str | None
    headers: CIMultiDictProxy[str] = field(default_factory=lambda: _EMPTY)
    method: str = "POST"
    # The target as the client encoded it (e.g. /v1/messages?beta=true), what goes upstream:
    # decoding it would turn %0D%0A into a line break in the upstream request head.
    path_qs: str = ""
    id: str = field(default_factory=new_ulid)
    ts: float = field(default_factory=time.time)
    t0: float = field(default_factory=time.perf_counter)
    provider: str = ""
    upstream_model: str | None = None
    route: str | None = None
    target: str | None = None
    attempts: int = 0
    fallback: str | None = None
    cache_outcome: str | None = None
    saved_usd: float = 0.0
    usage: UsageRecord | None = None  # the priced ledger row, set by the meter (the audit reuses it)
    provider_allowed: Callable[[str], bool] | None = None  # set by the policy gate; the router obeys it
    translated: bool = False  # the upstream spoke another protocol (its answer echoes the client's model)
    status: int = 0
    outcome: str = "ok"
    first_byte_at: float | None = None
    response_bytes: int = 0
    upstream_request_id: str | None = None
    summary: MessageSummary = field(default_factory=MessageSummary)
    decisions: list[Decision] = field(default_factory=list)
    # Extra response headers a stage wants the client to see (e.g. x-sidecar-cache).
    response_headers: dict[str, str] = field(default_factory=dict)
    # The budget's standing as Claude Code's unified headers (sidecar.gateway.unified): sent on
    # a successful answer in place of the upstream's own `anthropic-ratelimit-*` headers.
    unified_headers: dict[str, str] | None = None
    record: bool = True  # False: neither metered nor audited (refused because storage is down)
    body_replaced: bool = False  # a stage replaced the body the head was read from
    # Runs the stages' on_complete once (see finish()); set by the handler.
    on_finish: Callable[[], None] | None = None
    _json: dict[str, Any] | None = None

    @property
    def stream(self) -> bool:
        """Whether the client asked for SSE."""
        return bool(self.head.stream)

    @property
    def count_tokens(self) -> bool:
        """Whether this is a `count_tokens` call (never billable, never cached)."""
        return self.endpoint.endswith("/count_tokens")

    def json(self) -> dict[str, Any]:
        """The request body as a dict, decoded once on first use (the passthrough never needs it)."""
        if self._json is None:
            try:
                obj = msgspec.json.decode(self.body)
            except (msgspec.DecodeError, RecursionError) as e:
                raise body_error(e) from None
            if not isinstance(obj, dict):
                raise InvalidRequest("the request body must be a JSON object")
            self._json = obj
        return self._json

    def replace_body(self, obj: dict[str, Any]) -> None:
        """Replace the request body (a policy changed it): it is re-encoded once, here."""
        self._json = obj
        self.body = msgspec.json.encode(obj)
        self.body_replaced = True

    def finish(self) -> None:
        """Complete the request (meter, audit, journal) before its final byte goes out, so an
        answer the client received whole is always on disk; later calls do nothing."""
        done, self.on_finish = self.on_finish, None
        if done is not None:
            done()

    def decide(self, stage: str, action: str, reason: str) -> None:
        """Record a policy decision."""
        self.decisions.append(Decision(stage, action, reason))

    @property
    def cost_usd(self) -> float:
        """What the meter priced this request at (0 before it has)."""
        return self.usage.cost_usd if self.usage is not None else 0.0

    @property
    def served_model(self) -> str | None:
        """The model that served the request, as the ledger records it: a translated answer
        echoes the client's model, so the real one is what was asked upstream."""
        return self.upstream_model if self.translated else (self.summary.model or self.upstream_model)

    @property
    def billed_models(self) -> tuple[str, ...]:
        """The models the request may be priced by, in order: the first with a price is the
        one (the ledger's choice; the gate settles with it). What served it; for an answer
        in the client's protocol, then the model asked upstream (a gateway that names the
        model its own way must not make it free); with nothing served, the client's model."""
        served = self.served_model or self.head.model
        if self.translated or not self.upstream_model or self.upstream_model == served:
            return (served,) if served else ()
        return (served, self.upstream_model) if served else (self.upstream_model,)

    def to_record(self) -> UsageRecord:
        """The ledger row for this request (cost is filled in by the ledger)."""
        now = time.perf_counter()
        u = self.summary.usage
        # Time to first token: the first content delta of a stream, else the first byte.
        first = self.summary.first_delta_at or self.first_byte_at
        return UsageRecord(
            id=self.id,
            ts=self.ts,
            endpoint=self.endpoint,
            requested_model=self.head.model,
            provider=self.provider,
            upstream_model=self.served_model,
            stream=self.stream,
            session_id=self.session_id,
            agent_id=self.agent_id,
            route=self.route,
            status=self.status,
            outcome=self.outcome,
            error_type=self.summary.error_type,
            stop_reason=self.summary.stop_reason,
            input_tokens=u.input_tokens,
            output_tokens=u.output_tokens,
            cache_read_tokens=u.cache_read_tokens,
            cache_write_tokens=u.cache_write_tokens,
            latency_ms=round((now - self.t0) * 1000, 3),
            ttft_ms=None if first is None else round((first - self.t0) * 1000, 3),
            request_bytes=len(self.body),
            response_bytes=self.response_bytes,
            upstream_request_id=self.upstream_request_id,
            target=self.target,
            attempts=self.attempts,
            fallback=self.fallback,
            cache_outcome=self.cache_outcome,
            saved_usd=self.saved_usd,
        )


class Answer:
    """What a stage's request hook answers with; the stages after it do not run. Either a
    `Reply` of the stage's own, or the upstream's answer the dispatch stage opened
    (sidecar.routing.router.Opened). The HTTP layer sends it (sidecar.proxy.handlers)."""


@dataclass
class Reply(Answer):
    """An answer a stage gives in place of the upstream's (e.g. a cache hit)."""

    body: bytes
    status: int = 200
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)


class Stage(Protocol):
    """A step on the request path."""

    async def on_request(self, ctx: RequestContext) -> Answer | None:
        """Before the request goes upstream; may raise a SidecarError to refuse it."""

    def on_complete(self, ctx: RequestContext) -> None:
        """Called once the response has been fully sent, refused or failed."""


class Responder(Stage, Protocol):
    """A stage that also sees the answers on their way back to the client."""

    def on_response(self, ctx: RequestContext) -> EventFilter | None:
        """This stage's filter for `ctx`'s answer, or None (it need not see it)."""


def responders(stages: list[Stage]) -> list[Responder]:
    """The stages of `stages` with a response hook, in order (found once per request path)."""
    return [s for s in stages if callable(getattr(s, "on_response", None))]  # type: ignore[misc]


class Settler(Stage, Protocol):
    """A stage with work to do after the answer went out."""

    def on_answered(self, ctx: RequestContext) -> None:
        """After the answer's final byte (see the module doc); must not change what was recorded."""


def settlers(stages: list[Stage]) -> list[Settler]:
    """The stages of `stages` with an answered hook, in order (found once per request path)."""
    return [s for s in stages if callable(getattr(s, "on_answered", None))]  # type: ignore[misc]


class EventFilter(Protocol):
    """Sees (and may rewrite) the Anthropic response on its way to the client.

    `passive` declares a filter that only observes (e.g. the cache's collector): when every
    filter of a request is passive the relay passes the upstream's bytes on unchanged.
    `on_bytes` is a passive filter's reader of the stream's raw bytes (None: it needs parsed
    events); when every filter has one, the relay parses nothing at all."""

    passive: bool

    @property
    def on_bytes(self) -> Callable[[bytes], None] | None:
        """Reads a stream's raw bytes in place of `on_event`, or None."""

    def on_event(self, event: str, data: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
        """One SSE event of a stream; return the events to send instead (usually [(event, data)])."""

    def on_message(self, message: dict[str, Any]) -> dict[str, Any]:
        """A whole non-streaming response body (a message or an error envelope)."""

    def on_end(self, complete: bool) -> None:
        """The response is over; `complete` is True when it ended with message_stop and no error."""
