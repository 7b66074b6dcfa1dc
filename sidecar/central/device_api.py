"""The endpoints enrolled sidecars call: enroll, policy long-poll, usage, leases, unenroll."""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

from aiohttp import web

from sidecar.central.notify import RECHECK_SECONDS
from sidecar.central.serving import (
    LIMITER,
    NOTIFIER,
    OPTIONS,
    STORE,
    bearer,
    json_body,
    require_device,
)
from sidecar.errors import InvalidRequest, RateLimited
from sidecar.text import showable


def add_routes(app: web.Application) -> None:
    """Register the device endpoints."""
    app.router.add_get("/v1/signing-key", signing_key)
    app.router.add_post("/v1/enroll", enroll)
    app.router.add_get("/v1/policy", policy)
    app.router.add_post("/v1/usage", usage)
    app.router.add_post("/v1/leases", lease)
    app.router.add_post("/v1/leases/{lease_id}/return", lease_return)
    app.router.add_delete("/v1/device", unenroll)
    app.router.add_post("/v1/device/status", device_status)


async def signing_key(request: web.Request) -> web.Response:
    """The policy-signing public key (devices pin it at enrollment)."""
    key = await request.app[STORE].signing_key()
    return web.json_response({"public_key": key.public_b64, "key_id": key.key_id, "algorithm": "Ed25519"})


async def enroll(request: web.Request) -> web.Response:
    """Exchange a one-time enrollment token for a device credential and the signing key."""
    opts = request.app[OPTIONS]
    wait = request.app[LIMITER].allow("enroll", request.remote or "unknown", opts.enroll_per_minute)
    if wait:
        raise RateLimited(f"too many enrollment attempts; retry in {wait:.0f} s", headers={"retry-after": str(max(1, round(wait)))})
    body = await json_body(request)
    token, name = body.get("token"), body.get("name", "sidecar")
    if not isinstance(token, str) or not isinstance(name, str) or not 0 < len(name) <= 200:
        raise InvalidRequest("expected {\"token\": \"cse_...\", \"name\": \"this machine\"}")
    if not showable(name):
        raise InvalidRequest("the device name must be plain text: no control characters or bidirectional marks")
    store = request.app[STORE]
    device, credential = await store.enroll(token, name)
    key = await store.signing_key()
    return web.json_response(
        {"device_id": device.id, "developer_id": device.developer_id, "credential": credential,
         "public_key": key.public_b64, "key_id": key.key_id},
        status=201,
    )  # fmt: skip


def _version_param(request: web.Request) -> int | None:
    after = request.query.get("after")
    if after is None:
        tag = request.headers.get("if-none-match", "").strip().removeprefix("W/").strip('"')
        after = tag.removeprefix("v") if tag.startswith("v") else None
    if after is None:
        return None
    try:
        value = int(after)
    except ValueError:
        raise InvalidRequest("after must be a policy version (an integer)") from None
    if value < 0:
        raise InvalidRequest("after must not be negative")
    return value


async def policy(request: web.Request) -> web.Response:
    """The device's signed effective policy; with ?after=V (or If-None-Match) held until a
    version newer than V exists or the wait ends (then 304)."""
    device = await require_device(request)
    store, notifier = request.app[STORE], request.app[NOTIFIER]
    after = _version_param(request)
    try:
        wait = min(float(request.query.get("wait", request.app[OPTIONS].max_wait)), request.app[OPTIONS].max_wait)
    except ValueError:
        raise InvalidRequest("wait must be a number of seconds") from None
    if not wait >= 0:
        raise InvalidRequest("wait must be a number of seconds")
    deadline = time.monotonic() + wait
    while True:
        event = notifier.waiter()
        version = await store.current_version()
        if after is None or version > after:
            break
        left = deadline - time.monotonic()
        if left <= 0 or notifier.closing:
            return web.Response(status=304, headers={"etag": f'W/"v{version}"'})
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(event.wait(), min(left, RECHECK_SECONDS))
    if after is not None:  # held a while: a device revoked meanwhile gets nothing more
        device = await store.device_for(bearer(request))
    version, envelope = await store.device_policy(device)
    return web.json_response(envelope, headers={"etag": f'W/"v{version}"', "cache-control": "no-store"})


async def usage(request: web.Request) -> web.Response:
    """Insert a batch of usage records idempotently."""
    device = await require_device(request)
    body = await json_body(request)
    result = await request.app[STORE].ingest(device, body.get("records"))
    return web.json_response(result)


async def lease(request: web.Request) -> web.Response:
    """Grant a slice of the shared budget pools for the current period."""
    device = await require_device(request)
    body = await json_body(request)
    result = await request.app[STORE].grant_lease(
        device, body.get("amount_usd"), body.get("period", "day"), body.get("ttl_seconds", 3600.0)
    )
    return web.json_response(result)


async def lease_return(request: web.Request) -> web.Response:
    """Close a lease early and give back what was not spent."""
    device = await require_device(request)
    body = await json_body(request)
    await request.app[STORE].return_lease(device, request.match_info["lease_id"], body.get("used_usd"))
    return web.json_response({"returned": True})


async def unenroll(request: web.Request) -> web.Response:
    """The device revokes its own credential."""
    device = await require_device(request)
    await request.app[STORE].revoke_device(device, device.id)
    return web.json_response({"revoked": device.id})


async def device_status(request: web.Request) -> web.Response:
    """The device reports the policy version it enforces, or why it refused the newest one,
    and its usage backlog (shown to admins by `admin devices list`)."""
    device = await require_device(request)
    body = await json_body(request)
    fields: dict[str, Any] = {k: body[k] for k in ("policy_version", "policy_error", "outbox_backlog") if k in body}
    for name in ("policy_version", "outbox_backlog"):
        value = fields.get(name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**62):
            raise InvalidRequest(f"{name} must be a non-negative integer")
    error = fields.get("policy_error")
    if error is not None and not isinstance(error, str):
        raise InvalidRequest("policy_error must be a string")
    if error:
        fields["policy_error"] = error[:500]
    await request.app[STORE].report_status(device, fields)
    return web.json_response({"recorded": True})
