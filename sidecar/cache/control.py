"""The cache's part of the local control API (docs/control-api.md).

- ``GET /sidecar/v1/cache``: `CacheStats` (entries, bytes, lookups, hits by tier, misses,
  hit rate, tokens and dollars saved, shadow would-be hits); ``{"mode": "off"}`` when off.
- ``POST /sidecar/v1/cache/clear``: ``{"cleared": N}``.
"""

from __future__ import annotations

from aiohttp import web

from sidecar.cache.stage import CacheStage

CACHE = web.AppKey("cache", CacheStage)


async def stats(request: web.Request) -> web.Response:
    """The cache's figures."""
    cache = request.app[CACHE]
    if cache.cfg.mode == "off":
        return web.json_response({"mode": "off"})
    return web.json_response(await cache.stats())


async def clear(request: web.Request) -> web.Response:
    """Delete every stored answer."""
    return web.json_response({"cleared": await request.app[CACHE].clear()})


def add_routes(app: web.Application) -> None:
    """Register the cache endpoints on `app` (the app must set `app[CACHE]` at start-up)."""
    app.router.add_get("/sidecar/v1/cache", stats)
    app.router.add_post("/sidecar/v1/cache/clear", clear)
