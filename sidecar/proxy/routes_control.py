"""Control API for routes: list them with their health, enable or disable one at run time."""

from __future__ import annotations

from aiohttp import web

from sidecar.appkeys import ROUTER
from sidecar.errors import NotFound


async def list_routes(request: web.Request) -> web.Response:
    """`GET /sidecar/v1/routes`."""
    return web.json_response({"routes": request.app[ROUTER].describe()})


async def toggle(request: web.Request) -> web.Response:
    """`POST /sidecar/v1/routes/{name}/enable` and `.../disable`."""
    name, action = request.match_info["name"], request.match_info["action"]
    router = request.app[ROUTER]
    try:
        route = router.set_enabled(name, action == "enable")
    except KeyError:
        known = ", ".join(r.name for r in router.routes) or "none configured"
        raise NotFound(f"no route named {name!r} (routes: {known})") from None
    return web.json_response(route.describe())


def add_routes(app: web.Application) -> None:
    """Register the routes endpoints."""
    app.router.add_get("/sidecar/v1/routes", list_routes)
    app.router.add_post("/sidecar/v1/routes/{name}/{action:enable|disable}", toggle)
