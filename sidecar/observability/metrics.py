"""Prometheus metrics: a stage that counts each completed request, and `GET /metrics`.

Labels are low-cardinality only: provider, model, route, outcome (and a token type, a
cache outcome, a policy stage and action, a period, a routing target). Never a user,
session or request id. A label whose values a client chooses (the model it names) keeps
at most `MAX_VALUES` distinct values; the rest count as "other".

Gauges that describe state (breakers, budgets, requests in flight) are read when scraped,
so they cost nothing on the request path. The registry belongs to the app (no global).
"""

from __future__ import annotations

import bisect
import itertools
import time
from collections.abc import Callable, Iterable
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    InfoMetricFamily,
    Metric,
)
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4, generate_latest
from prometheus_client.samples import Sample
from prometheus_client.utils import floatToGoString

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


class Tally:
    """A counter family kept as plain numbers by label values, spelled for Prometheus only
    when scraped (prometheus_client's Counter validates and locks on every increment)."""

    def __init__(self, name: str, doc: str, labels: tuple[str, ...]) -> None:
        self.name, self.doc, self.labels = name, doc, labels
        self.values: dict[tuple[str, ...], float] = {} if labels else {(): 0.0}
        self.created: dict[tuple[str, ...], float] = {} if labels else {(): time.time()}

    def inc(self, key: tuple[str, ...], n: float = 1.0) -> None:
        """Add `n` to the child with label values `key`."""
        v = self.values.get(key)
        if v is None:
            self.created[key] = time.time()
            v = 0.0
        self.values[key] = v + n

    def collect(self) -> Iterable[Metric]:
        """The family as prometheus_client's Counter writes it (`_total` and `_created`)."""
        fam = CounterMetricFamily(self.name, self.doc, labels=self.labels)
        for key, v in list(self.values.items()):
            fam.add_metric(list(key), v, created=self.created[key])
        return [fam]


class Spread:
    """A histogram family kept as bucket counts by label values (see Tally)."""

    def __init__(self, name: str, doc: str, labels: tuple[str, ...], buckets: tuple[float, ...]) -> None:
        self.name, self.doc, self.labels, self.bounds = name, doc, labels, buckets
        self.counts: dict[tuple[str, ...], list[int]] = {}
        self.sums: dict[tuple[str, ...], float] = {}
        self.created: dict[tuple[str, ...], float] = {}

    def observe(self, key: tuple[str, ...], value: float) -> None:
        """Count `value` in the bucket of the child with label values `key`."""
        counts = self.counts.get(key)
        if counts is None:
            counts = self.counts[key] = [0] * (len(self.bounds) + 1)
            self.sums[key] = 0.0
            self.created[key] = time.time()
        counts[bisect.bisect_left(self.bounds, value)] += 1  # a bucket holds values <= its bound
        self.sums[key] += value

    def collect(self) -> Iterable[Metric]:
        """The family as prometheus_client's Histogram writes it (cumulative buckets, +Inf)."""
        fam = HistogramMetricFamily(self.name, self.doc, labels=self.labels)
        edges = [floatToGoString(b) for b in self.bounds] + ["+Inf"]  # type: ignore[no-untyped-call]
        for key, counts in list(self.counts.items()):
            cumulative = list(itertools.accumulate(counts))
            fam.add_metric(list(key), list(zip(edges, cumulative, strict=True)), self.sums[key])
            fam.samples.append(Sample(f"{self.name}_created", dict(zip(self.labels, key, strict=True)), self.created[key]))
        return [fam]


class Metrics:
    """The metrics stage: on completion, adds the request to the counters and histograms."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        labels = ("provider", "model", "route", "outcome")
        self.requests = Tally(f"{PREFIX}_requests", "Requests answered, by outcome (ok, rejected, upstream_error, "
                              "client_closed, aborted).", labels)
        self.responses = Tally(f"{PREFIX}_responses", "Responses by HTTP status class (2xx, 4xx, 5xx).",
                               ("provider", "status_class"))
        self.latency = Spread(f"{PREFIX}_request_duration_seconds", "Time from the request's arrival to its "
                              "last byte, for requests that went upstream.", ("provider", "model"), LATENCY_BUCKETS)
        self.ttft = Spread(f"{PREFIX}_time_to_first_token_seconds", "Time from the request's arrival to its "
                           "first content (streams) or first byte.", ("provider", "model"), TTFT_BUCKETS)
        self.tokens = Tally(f"{PREFIX}_tokens", "Tokens by type (input, output, cache_read, cache_write).",
                            ("provider", "model", "type"))
        self.cost = Tally(f"{PREFIX}_cost_usd", "What the requests cost, in USD, as the ledger prices them.",
                          ("provider", "model"))
        self.cache = Tally(f"{PREFIX}_cache_requests", "Cache outcomes (hit-exact, hit-semantic, miss, "
                           "shadow-hit, bypass).", ("outcome",))
        self.saved = Tally(f"{PREFIX}_cache_saved_usd", "What cache hits saved, in USD.", ())
        self.decisions = Tally(f"{PREFIX}_policy_decisions", "Decisions taken on requests, by stage and action.",
                               ("stage", "action"))
        for family in (self.requests, self.responses, self.latency, self.ttft, self.tokens, self.cost, self.cache,
                       self.saved, self.decisions):
            self.registry.register(family)
        self._model = Bounded()
        self._route = Bounded()
        self._provider = Bounded()

    def watch(self, read: Callable[[], Iterable[Metric]]) -> None:
        """Add gauges computed from live state at each scrape."""
        self.registry.register(StateCollector(read))

    async def on_request(self, ctx: RequestContext) -> Reply | None:
        """Nothing before dispatch."""
        return None

    def on_complete(self, ctx: RequestContext) -> None:
        """Nothing: a request is counted once its answer went out."""

    def on_answered(self, ctx: RequestContext) -> None:
        """Count the request, after its answer's final byte (its latency runs to that byte)."""
        provider = self._provider(ctx.provider)
        model = self._model(ctx.upstream_model if ctx.translated else (ctx.summary.model or ctx.upstream_model or ""))
        self.requests.inc((provider, model, self._route(ctx.route), ctx.outcome))
        if ctx.status:
            self.responses.inc((provider, f"{ctx.status // 100}xx"))
        if ctx.cache_outcome is not None:
            self.cache.inc((ctx.cache_outcome,))
            if ctx.saved_usd:
                self.saved.inc((), ctx.saved_usd)
        for d in ctx.decisions:
            self.decisions.inc((d.stage, d.action))
        if not ctx.provider:
            return  # refused before it was routed: no upstream figures
        now = time.perf_counter()
        pm = (provider, model)
        self.latency.observe(pm, now - ctx.t0)
        first = ctx.summary.first_delta_at or ctx.first_byte_at
        if first is not None:
            self.ttft.observe(pm, first - ctx.t0)
        u = ctx.summary.usage
        for kind, n in (("input", u.input_tokens), ("output", u.output_tokens),
                        ("cache_read", u.cache_read_tokens), ("cache_write", u.cache_write_tokens)):
            if n:
                self.tokens.inc((provider, model, kind), n)
        if ctx.cost_usd:
            self.cost.inc(pm, ctx.cost_usd)

    def refused_at_ingress(self, status: int) -> None:
        """Count a model request the ingress refused (401, 403): it has a ledger row too."""
        self.requests.inc(("", "", "", "rejected"))
        self.responses.inc(("", f"{status // 100}xx"))

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
