"""What every endpoint of the central server uses: the app's keys and options, the error
middleware, authentication (admin and device tokens, with a rate limit on failures) and the
JSON body. The app itself is assembled in sidecar.central.app.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from sidecar import web_errors
from sidecar.central.errors import PayloadTooLarge
from sidecar.central.notify import PolicyNotifier
from sidecar.central.store import Admin, Device, Store
from sidecar.errors import (
    AuthenticationFailed,
    InvalidRequest,
    NotFound,
    PermissionDenied,
    RateLimited,
    SidecarError,
)
from sidecar.text import encodable

log = logging.getLogger(__name__)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True)
class Options:
    """Tunables of one server (tests shorten the waits and loosen the limits)."""

    max_body: int = 4 * 1024 * 1024
    max_wait: float = 30.0  # longest policy long-poll
    enroll_per_minute: float = 10.0  # per client address
    auth_failures_per_minute: float = 30.0  # per client address, before 429s


class RateLimiter:
    """Token buckets per (purpose, client address)."""

    def __init__(self) -> None:
        self._buckets: dict[tuple[str, str], tuple[float, float]] = {}

    def allow(self, purpose: str, who: str, per_minute: float, cost: float = 1.0) -> float:
        """0 when allowed (and counted), else seconds until it would be."""
        now = time.monotonic()
        burst = max(per_minute, 1.0)
        tokens, at = self._buckets.get((purpose, who), (burst, now))
        tokens = min(burst, tokens + (now - at) * per_minute / 60.0)
        if tokens < cost:
            self._buckets[(purpose, who)] = (tokens, now)
            return (cost - tokens) * 60.0 / per_minute
        if len(self._buckets) > 100_000:  # a flood of addresses: forget the old buckets
            self._buckets.clear()
        self._buckets[(purpose, who)] = (tokens - cost, now)
        return 0.0

    def check(self, purpose: str, who: str, per_minute: float) -> None:
        """Raise RateLimited when `who` is over the limit for `purpose` (does not count)."""
        now = time.monotonic()
        tokens, at = self._buckets.get((purpose, who), (max(per_minute, 1.0), now))
        tokens = min(max(per_minute, 1.0), tokens + (now - at) * per_minute / 60.0)
        if tokens < 1.0:
            wait = (1.0 - tokens) * 60.0 / per_minute
            raise RateLimited(f"too many attempts from {who}; retry in {wait:.0f} s", headers={"retry-after": str(max(1, round(wait)))})


STORE = web.AppKey("store", Store)
NOTIFIER = web.AppKey("notifier", PolicyNotifier)
OPTIONS = web.AppKey("options", Options)
LIMITER = web.AppKey("limiter", RateLimiter)


def _client(request: web.Request) -> str:
    return request.remote or "unknown"


def error_response(e: SidecarError) -> web.Response:
    """The Anthropic envelope for `e` (sidecar.web_errors); a 403 here is not worth a retry
    either (a viewer's token stays a viewer's), so it says so as the 401 does."""
    resp = web_errors.error_response(e)
    if e.status in (401, 403):
        resp.headers["x-should-retry"] = "false"
    return resp


@web.middleware
async def errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every failure as the Anthropic error envelope; never a traceback to the client. A URL
    with text the store cannot keep (`storable`) is refused before the handler runs."""
    try:
        if not storable([*request.match_info.values(), *request.query.values()]):
            raise InvalidRequest("the URL has a NUL character or an unpaired surrogate")
        return await handler(request)
    except SidecarError as e:
        return error_response(e)
    except web.HTTPRequestEntityTooLarge:
        return error_response(PayloadTooLarge(f"the body is larger than {request.app[OPTIONS].max_body} bytes"))
    except web.HTTPNotFound:
        return error_response(NotFound(f"no endpoint {request.path}"))
    except web.HTTPMethodNotAllowed:
        err = InvalidRequest(f"{request.method} is not allowed on {request.path}")
        err.status = 405
        return error_response(err)
    except web.HTTPException:
        raise
    except Exception:
        log.exception("central: %s %s failed", request.method, request.path)
        return error_response(SidecarError("internal error; the server log has the details"))


def bearer(request: web.Request) -> str:
    """The bearer token of the request (AuthenticationFailed when missing)."""
    auth = request.headers.get("authorization", "")
    scheme, _, token = auth.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise AuthenticationFailed("missing 'Authorization: Bearer TOKEN'")
    return token.strip()


async def _authenticated(request: web.Request, lookup: Callable[[str], Awaitable[Any]]) -> Any:
    limiter, opts = request.app[LIMITER], request.app[OPTIONS]
    limiter.check("auth", _client(request), opts.auth_failures_per_minute)
    try:
        return await lookup(bearer(request))
    except AuthenticationFailed:
        limiter.allow("auth", _client(request), opts.auth_failures_per_minute)
        raise


async def require_admin(request: web.Request, write: bool = False) -> Admin:
    """The admin calling; viewers may only read."""
    admin: Admin = await _authenticated(request, request.app[STORE].admin_for)
    if write and admin.role != "admin":
        raise PermissionDenied(f"{admin.name} is a viewer; this needs the admin role")
    return admin


async def require_device(request: web.Request) -> Device:
    """The enrolled device calling."""
    device: Device = await _authenticated(request, request.app[STORE].device_for)
    return device


async def json_body(request: web.Request) -> dict[str, Any]:
    """The request's JSON object body (InvalidRequest otherwise)."""
    try:
        raw = await request.read()
        body = json.loads(raw) if raw else None
    except (ValueError, UnicodeDecodeError):
        raise InvalidRequest("the body is not valid JSON") from None
    except RecursionError:
        raise InvalidRequest("the body is nested too deeply") from None
    if not isinstance(body, dict):
        raise InvalidRequest("the body must be a JSON object")
    if not storable(body):
        raise InvalidRequest("the body has a string with a NUL character or an unpaired surrogate")
    return body


def storable(value: Any) -> bool:
    """Whether every string in `value` (JSON data) can be stored as text on both backends: no
    NUL (PostgreSQL refuses it) and no unpaired surrogate (not UTF-8). Iterative: a body as
    deep as json.loads allows must not exhaust the stack here."""
    todo = [value]
    while todo:
        v = todo.pop()
        if isinstance(v, str):
            if "\x00" in v or not (v.isascii() or encodable(v)):
                return False
        elif isinstance(v, dict):
            todo.extend(v.keys())
            todo.extend(v.values())
        elif isinstance(v, list):
            todo.extend(v)
    return True
