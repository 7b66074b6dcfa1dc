"""OpenTelemetry spans per request, following the GenAI semantic conventions.

Zero cost when off: without `[observability] otlp_endpoint` this module's stage is not in
the request path and OpenTelemetry is never imported. When on, each request gets one
CLIENT span, exported in batches from a background thread over OTLP/HTTP:

- `gen_ai.operation.name` ("chat"), `gen_ai.provider.name`, `gen_ai.request.model`,
  `gen_ai.request.max_tokens`, `gen_ai.response.model`, `gen_ai.response.finish_reasons`;
- `gen_ai.usage.input_tokens`: for Anthropic, the convention counts every input token, so
  it includes the cache reads and writes, which are also given on their own as
  `gen_ai.usage.cache_read.input_tokens` and `gen_ai.usage.cache_creation.input_tokens`;
- `gen_ai.usage.output_tokens`; `http.response.status_code`; `error.type` on failures;
- `sidecar.request_id`, `sidecar.route`, `sidecar.target`, `sidecar.attempts`,
  `sidecar.cache_outcome`, `sidecar.outcome`, `sidecar.fallback`, `sidecar.cost_usd`.

The trace id is the request's id (a ULID is 128 bits, like a trace id), unless the client
sent a `traceparent` of its own, which the span then continues. The span's `traceparent`
goes upstream with the request (passthrough providers), only when tracing is on.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from multidict import CIMultiDict, CIMultiDictProxy

from sidecar.errors import ConfigError
from sidecar.observability.settings import ObservabilityConfig
from sidecar.pipeline import Reply, RequestContext

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
    from opentelemetry.trace import Span, Tracer

# gen_ai.provider.name well-known values, by provider type.
PROVIDER_NAMES = {
    "anthropic": "anthropic", "bedrock": "aws.bedrock", "vertex": "gcp.vertex_ai", "openai": "openai",
    "gemini": "gcp.gemini",
}
_ULID = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


def ulid_int(ulid: str) -> int:
    """The 128-bit value of a ULID (its Crockford base-32 text)."""
    n = 0
    for ch in ulid:
        n = n * 32 + _ULID.index(ch)
    return n


class Tracing:
    """The tracing stage: opens a span on arrival, fills and ends it on completion."""

    def __init__(self, provider: TracerProvider, provider_types: Mapping[str, str]) -> None:
        from opentelemetry import trace
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

        self.provider = provider
        self.tracer: Tracer = provider.get_tracer("claude-sidecar")
        self.provider_types = dict(provider_types)
        self._trace = trace
        self._propagator = TraceContextTextMapPropagator()
        self._spans: dict[str, Span] = {}
        self._next_trace_id: int | None = None

    def next_trace_id(self) -> int | None:
        """The trace id the next span should take (read by the id generator), once."""
        out, self._next_trace_id = self._next_trace_id, None
        return out

    async def on_request(self, ctx: RequestContext) -> Reply | None:
        """Start the request's span and put its traceparent on the upstream request."""
        parent = self._propagator.extract(ctx.headers) if "traceparent" in ctx.headers else None
        if parent is None or not self._trace.get_current_span(parent).get_span_context().is_valid:
            parent = None
            self._next_trace_id = ulid_int(ctx.id)
        model = ctx.head.model or ""
        attrs: dict[str, Any] = {"gen_ai.operation.name": "chat", "sidecar.request_id": ctx.id,
                                 "gen_ai.request.model": model, "sidecar.stream": ctx.stream,
                                 "sidecar.endpoint": ctx.endpoint}
        if ctx.head.max_tokens is not None:
            attrs["gen_ai.request.max_tokens"] = ctx.head.max_tokens
        start_ns = time.time_ns() - int((time.perf_counter() - ctx.t0) * 1e9)
        span = self.tracer.start_span(f"chat {model}".strip(), context=parent, kind=self._trace.SpanKind.CLIENT,
                                      attributes=attrs, start_time=start_ns)
        self._next_trace_id = None
        self._spans[ctx.id] = span
        carrier: dict[str, str] = {}
        self._propagator.inject(carrier, context=self._trace.set_span_in_context(span))
        headers = CIMultiDict(ctx.headers)
        for k, v in carrier.items():
            headers[k] = v
        ctx.headers = CIMultiDictProxy(headers)
        return None

    def on_complete(self, ctx: RequestContext) -> None:
        """Nothing yet: `end` (the `ender` stage, after the meter priced the request) ends the span."""

    @property
    def ender(self) -> SpanEnd:
        """The stage that ends the spans: placed after the meter, so the cost is known."""
        return SpanEnd(self)

    def end(self, ctx: RequestContext) -> None:
        """Set the outcome, usage and routing attributes and end the span."""
        span = self._spans.pop(ctx.id, None)
        if span is None:
            return
        u = ctx.summary.usage
        ptype = self.provider_types.get(ctx.provider, ctx.provider)
        attrs: dict[str, Any] = {
            "gen_ai.provider.name": PROVIDER_NAMES.get(ptype, ptype or "sidecar"),
            "gen_ai.usage.input_tokens": u.input_tokens + u.cache_read_tokens + u.cache_write_tokens,
            "gen_ai.usage.output_tokens": u.output_tokens,
            "gen_ai.usage.cache_read.input_tokens": u.cache_read_tokens,
            "gen_ai.usage.cache_creation.input_tokens": u.cache_write_tokens,
            "sidecar.attempts": ctx.attempts,
            "sidecar.outcome": ctx.outcome,
            "sidecar.cost_usd": ctx.cost_usd,
        }
        if ctx.status:
            attrs["http.response.status_code"] = ctx.status
        model = ctx.upstream_model if ctx.translated else (ctx.summary.model or ctx.upstream_model)
        for key, value in (("gen_ai.response.model", model), ("sidecar.route", ctx.route),
                           ("sidecar.target", ctx.target), ("sidecar.cache_outcome", ctx.cache_outcome),
                           ("sidecar.fallback", ctx.fallback), ("sidecar.provider", ctx.provider or None)):
            if value:
                attrs[key] = value
        if ctx.summary.stop_reason:
            attrs["gen_ai.response.finish_reasons"] = [ctx.summary.stop_reason]
        first = ctx.summary.first_delta_at or ctx.first_byte_at
        if first is not None:
            attrs["sidecar.time_to_first_token_ms"] = round((first - ctx.t0) * 1000, 3)
        span.set_attributes(attrs)
        if ctx.outcome != "ok" or ctx.status >= 400:
            from opentelemetry.trace import Status, StatusCode

            error = ctx.summary.error_type or ctx.outcome
            span.set_attribute("error.type", error)
            span.set_status(Status(StatusCode.ERROR, ctx.summary.error_message or error))
        span.end()

    def close(self) -> None:
        """Export what is pending and stop the exporter."""
        self.provider.shutdown()


class SpanEnd:
    """Ends the request's span once the request is complete and priced."""

    def __init__(self, tracing: Tracing) -> None:
        self.tracing = tracing

    async def on_request(self, ctx: RequestContext) -> Reply | None:
        """Nothing."""
        return None

    def on_complete(self, ctx: RequestContext) -> None:
        """End the span."""
        self.tracing.end(ctx)


def build(cfg: ObservabilityConfig, provider_types: Mapping[str, str],
          processor: SpanProcessor | None = None) -> Tracing | None:
    """The tracing stage when `cfg` asks for it (or `processor` is given, in tests), else None."""
    if cfg.otlp_endpoint is None and processor is None:
        return None
    try:
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
        from opentelemetry.sdk.trace.id_generator import RandomIdGenerator
    except ImportError:
        raise ConfigError("observability.otlp_endpoint needs OpenTelemetry: pip install 'claude-sidecar[otel]'") from None
    from sidecar import __version__

    class RequestIds(RandomIdGenerator):
        """Trace ids from request ids; span ids (and a continued trace's ids) at random."""

        def generate_trace_id(self) -> int:
            return stage.next_trace_id() or super().generate_trace_id()

    resource = Resource.create({"service.name": cfg.service_name, "service.version": __version__})
    provider = TracerProvider(resource=resource, id_generator=RequestIds())
    if processor is None:
        try:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        except ImportError:
            raise ConfigError(
                "observability.otlp_endpoint needs the OTLP exporter: pip install 'claude-sidecar[otel]'"
            ) from None
        processor = BatchSpanProcessor(OTLPSpanExporter(endpoint=cfg.otlp_endpoint, timeout=10))
    provider.add_span_processor(processor)
    stage = Tracing(provider, provider_types)
    return stage
