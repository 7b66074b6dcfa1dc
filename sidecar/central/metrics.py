"""`GET /metrics` on the central server: the org's aggregates for Prometheus (admin token).

Read from the store at each scrape (usage rows are append-only and deduplicated, so the
sums only grow: counters). Labels are the org's own team and model names, never a
developer, device or request.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4, generate_latest

from sidecar import __version__
from sidecar.central.serving import STORE, require_admin

PREFIX = "claude_sidecar_org"
TOKEN_COLUMNS = (("input", "input_tokens"), ("output", "output_tokens"), ("cache_read", "cache_read_tokens"),
                 ("cache_write", "cache_write_tokens"))


def _families(by: str, rows: Sequence[Any]) -> Iterable[Metric]:
    requests = CounterMetricFamily(f"{PREFIX}_{by}_requests", f"Requests reported by the org's sidecars, by {by}.",
                                   labels=(by,))
    tokens = CounterMetricFamily(f"{PREFIX}_{by}_tokens", f"Tokens by {by} and type.", labels=(by, "type"))
    cost = CounterMetricFamily(f"{PREFIX}_{by}_cost_usd", f"Cost in USD by {by}.", labels=(by,))
    for r in rows:
        key = str(r["key"])
        requests.add_metric([key], float(r["requests"] or 0))
        for kind, col in TOKEN_COLUMNS:
            tokens.add_metric([key, kind], float(r[col] or 0))
        cost.add_metric([key], float(r["cost_usd"] or 0))
    return (requests, tokens, cost)


class _Snapshot:
    def __init__(self, metrics: list[Metric]) -> None:
        self.metrics = metrics

    def collect(self) -> Iterable[Metric]:
        return self.metrics


async def handler(request: web.Request) -> web.Response:
    """The exposition: org totals by team and by model, active devices, the server's version."""
    await require_admin(request)
    store = request.app[STORE]
    by_team, by_model = await store.usage_report("team"), await store.usage_report("model")
    devices = sum(int(d["devices"] or 0) for d in await store.list_developers())
    info = InfoMetricFamily(f"{PREFIX}_build", "The central server.")
    info.add_metric([], {"version": __version__})
    metrics: list[Metric] = [info, *_families("team", by_team), *_families("model", by_model),
                             GaugeMetricFamily(f"{PREFIX}_devices", "Enrolled, not revoked devices.", value=devices)]
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Snapshot(metrics))
    return web.Response(body=generate_latest(registry), headers={"content-type": CONTENT_TYPE_PLAIN_0_0_4})
