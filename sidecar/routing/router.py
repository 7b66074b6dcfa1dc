"""The router: picks the target for a request and relays the upstream's answer.

(First version: every request goes to the default provider. Routes come next.)
"""

from __future__ import annotations

from aiohttp import web

from sidecar.config import Config
from sidecar.providers.base import Attempt, Provider
from sidecar.proxy.context import RequestContext
from sidecar.proxy.relay import relay


class Router:
    """Chooses a provider, model and key for each request."""

    def __init__(self, cfg: Config, providers: dict[str, Provider]) -> None:
        self.cfg = cfg
        self.providers = providers
        default = next((p for p in cfg.providers if p.type == "anthropic"), cfg.providers[0])
        self.default = providers[default.name]
        self._turn = 0

    async def handle(self, ctx: RequestContext, request: web.Request) -> web.StreamResponse:
        """Send `ctx` upstream and relay the answer."""
        provider = self.default
        key = None
        if provider.keys:
            self._turn += 1
            key = provider.keys[self._turn % len(provider.keys)]
        attempt = Attempt(ctx, request.method, request.rel_url.path_qs, request.headers, key=key)
        ctx.provider = provider.name
        ctx.upstream_model = attempt.upstream_model
        ctx.attempts += 1
        call = await provider.send(attempt)
        return await relay(ctx, request, call)
