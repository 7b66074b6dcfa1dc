"""Gateway tokens at ingress: a `csgw_` bearer is checked here and never goes upstream."""

from __future__ import annotations

from aiohttp import web
from multidict import CIMultiDict

from sidecar.errors import AuthenticationFailed
from sidecar.gateway.oauth import GATEWAY, PREFIX


def _bearer(request: web.Request) -> str | None:
    """A `csgw_` token in `Authorization: Bearer` (Claude Code) or `x-api-key` (its OTLP
    exporter, whose header variable cannot carry the space of a Bearer value)."""
    auth = request.headers.get("authorization", "")
    if auth[:7].lower() == "bearer " and auth[7:].strip().startswith(PREFIX):
        return auth[7:].strip()
    key = request.headers.get("x-api-key", "")
    return key if key.startswith(PREFIX) else None


def signed_in(request: web.Request) -> bool:
    """True when the request carries a live gateway token of this sidecar; False when it
    carries none; a `csgw_` bearer that is unknown, revoked or expired is a 401 with
    `x-should-retry: false`, so Claude Code asks the user to sign in again at once."""
    token = _bearer(request)
    if token is None:
        return False
    auth = request.app.get(GATEWAY)
    if auth is None or not auth.valid(token):
        raise AuthenticationFailed(
            "this sidecar gateway sign-in is unknown, revoked or expired; sign in again with /login "
            "(or start Claude Code with `claude-sidecar run -- claude`)"
        )
    return True


def without_gateway_token(request: web.Request) -> web.Request:
    """`request` without the headers that carry a `csgw_` token: the sidecar's own sign-in stays here."""
    if _bearer(request) is None:
        return request
    kept = CIMultiDict(request.headers)
    if kept.get("authorization", "")[7:].strip().startswith(PREFIX):
        kept.popall("authorization", None)
    if kept.get("x-api-key", "").startswith(PREFIX):
        kept.popall("x-api-key", None)
    return request.clone(headers=kept)
