"""Prometheus metrics: a stage that counts each completed request, and `GET /metrics`.

Labels are low-cardinality only: provider, model, route, outcome (and a token type, a
cache outcome, a policy stage and action, a period, a routing target). Never a user,
session or request id. A label whose values a client chooses (the model it names) keeps
at most `MAX_VALUES` distinct values; the rest count as "other".

Gauges that describe state (breakers, budgets, requests in flight) are read when scraped,
so they cost nothing on the request path. The registry belongs to the app (no global).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, InfoMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4, generate_latest

from sidecar import __version__
from sidecar.pipeline import Reply, RequestContext

PREFIX = "claude_sidecar"
MAX_VALUES = 64
OTHER = "other"
LATENCY_BUCKETS = (0.005, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0)
TTFT_BUCKETS = (0.005, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0)
BREAKER_STATES = ("closed", "half_open", "open")


class Bounded:
    """Keeps a label's distinct values below a cap (the first ones seen stay themselves)."""

    def __init__(self, cap: int = MAX_VALUES) -> None:
        self.cap = cap
        self.seen: set[str] = set()

    def __call__(self, value: str | None) -> str:
        v = value or ""
        if v in self.seen:
            return v
        if len(self.seen) >= self.cap:
            return OTHER
        self.seen.add(v)
        return v


class StateCollector:
    """Gauges read at scrape time from the app's live objects."""

    def __init__(self, read: Callable[[], Iterable[Metric]]) -> None:
        self.read = read

    def collect(self) -> Iterable[Metric]:
        """The current values."""
        return self.read()


class Metrics:
    """The metrics stage: on completion, adds the request to the counters and histograms."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        r = self.registry
        labels = ("provider", "model", "route", "outcome")
        self.requests = Counter(f"{PREFIX}_requests", "Requests answered, by outcome (ok, rejected, upstream_error, "
                                "client_closed, aborted).", labels, registry=r)
        self.responses = Counter(f"{PREFIX}_responses", "Responses by HTTP status class (2xx, 4xx, 5xx).",
                                 ("provider", "status_class"), registry=r)
        self.latency = Histogram(f"{PREFIX}_request_duration_seconds", "Time from the request's arrival to its "
                                 "last byte, for requests that went upstream.", ("provider", "model"),
                                 buckets=LATENCY_BUCKETS, registry=r)
        self.ttft = Histogram(f"{PREFIX}_time_to_first_token_seconds", "Time from the request's arrival to its "
                              "first content (streams) or first byte.", ("provider", "model"),
                              buckets=TTFT_BUCKETS, registry=r)
        self.tokens = Counter(f"{PREFIX}_tokens", "Tokens by type (input, output, cache_read, cache_write).",
                              ("provider", "model", "type"), registry=r)
        self.cost = Counter(f"{PREFIX}_cost_usd", "What the requests cost, in USD, as the ledger prices them.",
                            ("provider", "model"), registry=r)
        self.cache = Counter(f"{PREFIX}_cache_requests", "Cache outcomes (hit-exact, hit-semantic, miss, "
                             "shadow-hit, bypass).", ("outcome",), registry=r)
        self.saved = Counter(f"{PREFIX}_cache_saved_usd", "What cache hits saved, in USD.", (), registry=r)
        self.decisions = Counter(f"{PREFIX}_policy_decisions", "Decisions taken on requests, by stage and action.",
                                 ("stage", "action"), registry=r)
        self._model = Bounded()
        self._route = Bounded()
        self._provider = Bounded()
        # Each labelled child, looked up once: `labels()` validates and locks on every call.
        self._kids: dict[tuple[Any, tuple[str, ...]], Any] = {}

    def _kid(self, metric: Any, *labels: str) -> Any:
        kid = self._kids.get((metric, labels))
        if kid is None:
            kid = self._kids[(metric, labels)] = metric.labels(*labels)
        return kid

    def watch(self, read: Callable[[], Iterable[Metric]]) -> None:
        """Add gauges computed from live state at each scrape."""
        self.registry.register(StateCollector(read))

    async def on_request(self, ctx: RequestContext) -> Reply | None:
        """Nothing before dispatch."""
        return None

    def on_complete(self, ctx: RequestContext) -> None:
        """Count the completed request."""
        kid = self._kid
        provider = self._provider(ctx.provider)
        model = self._model(ctx.upstream_model if ctx.translated else (ctx.summary.model or ctx.upstream_model or ""))
        kid(self.requests, provider, model, self._route(ctx.route), ctx.outcome).inc()
        if ctx.status:
            kid(self.responses, provider, f"{ctx.status // 100}xx").inc()
        if ctx.cache_outcome is not None:
            kid(self.cache, ctx.cache_outcome).inc()
            if ctx.saved_usd:
                self.saved.inc(ctx.saved_usd)
        for d in ctx.decisions:
            kid(self.decisions, d.stage, d.action).inc()
        if not ctx.provider:
            return  # refused before it was routed: no upstream figures
        now = time.perf_counter()
        kid(self.latency, provider, model).observe(now - ctx.t0)
        first = ctx.summary.first_delta_at or ctx.first_byte_at
        if first is not None:
            kid(self.ttft, provider, model).observe(first - ctx.t0)
        u = ctx.summary.usage
        for kind, n in (("input", u.input_tokens), ("output", u.output_tokens),
                        ("cache_read", u.cache_read_tokens), ("cache_write", u.cache_write_tokens)):
            if n:
                kid(self.tokens, provider, model, kind).inc(n)
        if ctx.cost_usd:
            kid(self.cost, provider, model).inc(ctx.cost_usd)

    def refused_at_ingress(self, status: int) -> None:
        """Count a model request the ingress refused (401, 403): it has a ledger row too."""
        self._kid(self.requests, "", "", "", "rejected").inc()
        self._kid(self.responses, "", f"{status // 100}xx").inc()

    def exposition(self) -> bytes:
        """The Prometheus text format of every metric."""
        return generate_latest(self.registry)


METRICS = web.AppKey("sidecar.metrics", Metrics)


def state_gauges(app: web.Application) -> Callable[[], Iterable[Metric]]:
    """Gauges from the app's state: build info, in flight, breakers, budgets."""
    from sidecar.appkeys import ROUTER, RUNTIME
    from sidecar.policy.control import POLICY

    def read() -> Iterable[Metric]:
        info = InfoMetricFamily(f"{PREFIX}_build", "The running sidecar.")
        info.add_metric([], {"version": __version__})
        yield info
        yield GaugeMetricFamily(f"{PREFIX}_in_flight_requests", "Requests being answered now.",
                                value=len(app[RUNTIME].in_flight))
        router = app.get(ROUTER)
        if router is not None:
            g = GaugeMetricFamily(f"{PREFIX}_breaker_state", "1 for the state each routing target's circuit "
                                  "breaker is in (closed, half_open, open).", labels=("target", "state"))
            for target, breaker in sorted(router.breakers.items()):
                now = breaker.current()
                for state in BREAKER_STATES:
                    g.add_metric([target, state], 1.0 if now == state else 0.0)
            yield g
        gate = app.get(POLICY)
        if gate is not None:
            yield from _budget_gauges(gate.budgets.state())

    return read


def _budget_gauges(budgets: list[dict[str, Any]]) -> Iterable[Metric]:
    util = GaugeMetricFamily(f"{PREFIX}_budget_utilisation_ratio", "Spent share of each budget (1 = used up).",
                             labels=("period",))
    spent = GaugeMetricFamily(f"{PREFIX}_budget_spent_usd", "Spent in the current budget period.", labels=("period",))
    limit = GaugeMetricFamily(f"{PREFIX}_budget_limit_usd", "Each budget's limit.", labels=("period",))
    for b in budgets:
        spent.add_metric([b["period"]], b["spent_usd"])
        limit.add_metric([b["period"]], b["limit_usd"])
        util.add_metric([b["period"]], b["spent_usd"] / b["limit_usd"] if b["limit_usd"] else 0.0)
    return (util, spent, limit)


async def metrics_handler(request: web.Request) -> web.Response:
    """`GET /metrics`: the Prometheus exposition (needs the local token, like the control API)."""
    body = request.app[METRICS].exposition()
    return web.Response(body=body, headers={"content-type": CONTENT_TYPE_PLAIN_0_0_4})  # every Prometheus reads it


def install(app: web.Application) -> Metrics:
    """Create the metrics for `app` and serve them at /metrics."""
    m = app[METRICS] = Metrics()
    m.watch(state_gauges(app))
    app.router.add_get("/metrics", metrics_handler)
    return m
