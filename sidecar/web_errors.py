"""A sidecar error as an aiohttp response: the Anthropic error envelope (sidecar/errors.py).

Low in the tree, so the domain's own endpoints (gateway) answer errors the way the proxied
ones do without importing the HTTP layer (sidecar.proxy).
"""

from __future__ import annotations

from aiohttp import web

from sidecar.errors import SidecarError


def error_response(err: SidecarError) -> web.Response:
    """The Anthropic error envelope for a sidecar error."""
    return web.Response(
        status=err.status,
        body=err.envelope(),
        content_type="application/json",
        headers=err.headers,
    )
