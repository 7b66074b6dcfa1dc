"""The central server's aiohttp application: middlewares and the routes.

Order of the middlewares: errors (every failure becomes the Anthropic error envelope),
then the rate limit on enrollment and failed token authentication. Bodies over
`Options.max_body` are refused with 413 by aiohttp itself (`client_max_size`). What the
endpoints share (app keys, options, authentication) is in sidecar.central.serving.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from aiohttp import web

from sidecar.central import admin_api, device_api, metrics, openapi
from sidecar.central.notify import PolicyNotifier
from sidecar.central.serving import LIMITER, NOTIFIER, OPTIONS, STORE, Options, RateLimiter, errors
from sidecar.central.store import Store


def create_app(store: Store, options: Options | None = None) -> web.Application:
    """The central server's application over an opened `store` (the caller closes it)."""
    opts = options or Options()
    app = web.Application(middlewares=[errors], client_max_size=opts.max_body)
    app[STORE], app[OPTIONS], app[LIMITER] = store, opts, RateLimiter()
    app[NOTIFIER] = PolicyNotifier()

    async def listen(app: web.Application) -> AsyncIterator[None]:
        await app[NOTIFIER].attach(store.db)
        yield

    async def release_polls(app: web.Application) -> None:
        app[NOTIFIER].close()

    app.cleanup_ctx.append(listen)
    app.on_shutdown.append(release_polls)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/openapi.json", openapi.handler)
    app.router.add_get("/metrics", metrics.handler)  # the org's aggregates for Prometheus (admin token)
    device_api.add_routes(app)
    admin_api.add_routes(app)
    return app


async def healthz(request: web.Request) -> web.Response:
    """Liveness (does not touch the database)."""
    return web.json_response({"status": "ok"})
