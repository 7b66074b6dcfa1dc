"""The gateway protocol's endpoints on the sidecar's app, next to the proxied ones.

- gateway sign-in (sidecar.gateway.oauth);
- `/managed/settings` and `/api/oauth/usage` (sidecar.gateway.settings, .usage);
- `/v1/metrics|logs|traces`: Claude Code's own OTLP, kept and joined to spend (sidecar.gateway.telemetry);
- the Anthropic endpoints again under a base-URL path prefix (`/anthropic/v1/messages`, as
  Bifrost users are used to): the prefix is taken off before anything else sees the path;
- `501 not_supported` with `x-should-retry: false` for any other `/v1/...` path, so the
  client falls back at once instead of asking again.

Register them after the proxied endpoints: aiohttp matches the more specific routes first.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web
from yarl import URL

from sidecar.appkeys import PATHS
from sidecar.errors import NotSupported
from sidecar.gateway import oauth, telemetry
from sidecar.gateway.settings import managed_settings
from sidecar.gateway.usage import oauth_usage
from sidecar.web_errors import error_response

PREFIXES = ("/anthropic",)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _unprefixed(request: web.Request) -> web.Request:
    """`request` with its base-URL prefix taken off the path (the query string kept)."""
    raw = request.rel_url.raw_path_qs
    for prefix in PREFIXES:
        if raw.startswith(prefix + "/"):
            return request.clone(rel_url=URL(raw[len(prefix):], encoded=True))
    return request


def unprefixed(handler: Handler) -> Handler:
    """`handler` under a base-URL prefix (`POST /anthropic/v1/messages` is `POST /v1/messages`)."""

    async def prefixed(request: web.Request) -> web.StreamResponse:
        return await handler(_unprefixed(request))

    return prefixed


async def not_supported(request: web.Request) -> web.Response:
    """Any other Anthropic API path: 501 not_supported, never retried."""
    return error_response(NotSupported(f"{request.method} {request.path} is not served by claude-sidecar"))


def add_routes(app: web.Application, messages: Handler, models: Handler) -> None:
    """Register the gateway endpoints on `app` (after sidecar.proxy.handlers.add_routes);
    `messages` and `models` are the proxied endpoints' handlers, served again under each prefix."""
    oauth.add_routes(app, app[PATHS].state_dir)
    app.router.add_get("/managed/settings", managed_settings)
    app.router.add_get("/api/oauth/usage", oauth_usage)
    telemetry.add_routes(app)
    for prefix in PREFIXES:
        app.router.add_post(prefix + "/v1/messages", unprefixed(messages))
        app.router.add_post(prefix + "/v1/messages/count_tokens", unprefixed(messages))
        app.router.add_get(prefix + "/v1/models", unprefixed(models))
        app.router.add_route("*", prefix + "/v1/{tail:.*}", not_supported)
    app.router.add_route("*", "/v1/{tail:.*}", not_supported)
