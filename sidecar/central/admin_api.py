"""The admin API (admin tokens only; the viewer role may only read). The admin CLI uses
nothing but these endpoints."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from sidecar.central.serving import NOTIFIER, STORE, json_body, require_admin
from sidecar.errors import InvalidRequest
from sidecar.text import showable


def add_routes(app: web.Application) -> None:
    """Register the admin endpoints."""
    r = app.router
    r.add_get("/v1/admin/whoami", whoami)
    r.add_get("/v1/admin/admins", list_admins)
    r.add_post("/v1/admin/admins", create_admin)
    r.add_delete("/v1/admin/admins/{name}", revoke_admin)
    r.add_get("/v1/admin/teams", list_teams)
    r.add_post("/v1/admin/teams", create_team)
    r.add_get("/v1/admin/developers", list_developers)
    r.add_post("/v1/admin/developers", create_developer)
    r.add_patch("/v1/admin/developers/{developer}", move_developer)
    r.add_get("/v1/admin/enrollment-tokens", list_enrollments)
    r.add_post("/v1/admin/enrollment-tokens", create_enrollment)
    r.add_delete("/v1/admin/enrollment-tokens/{enrollment_id}", revoke_enrollment)
    r.add_get("/v1/admin/devices", list_devices)
    r.add_delete("/v1/admin/devices/{device_id}", revoke_device)
    r.add_get("/v1/admin/policy", show_policy)
    r.add_post("/v1/admin/policy", push_policy)
    r.add_get("/v1/admin/policy/history", policy_history)
    r.add_post("/v1/admin/policy/rollback", rollback_policy)
    r.add_get("/v1/admin/usage", usage_report)
    r.add_get("/v1/admin/leases", leases)
    r.add_get("/v1/admin/audit", audit)


def _str(body: dict[str, Any], key: str, required: bool = True, plain: bool = True) -> str | None:
    """`body[key]`, a non-empty string; `plain` (names, which other admins' terminals print):
    without control characters or bidirectional marks."""
    v = body.get(key)
    if v is None and not required:
        return None
    if not isinstance(v, str) or not v.strip() or len(v) > 500:
        raise InvalidRequest(f"{key} must be a non-empty string")
    if plain and not showable(v):
        raise InvalidRequest(f"{key} must be plain text: no control characters or bidirectional marks")
    return v


def _int(value: str | None, name: str, default: int | None = None) -> int | None:
    if value is None:
        return default
    try:
        n = int(value)
    except ValueError:
        raise InvalidRequest(f"{name} must be an integer") from None
    if not 0 <= n < 2**62:
        raise InvalidRequest(f"{name} is out of range")
    return n


async def whoami(request: web.Request) -> web.Response:
    """The calling admin."""
    a = await require_admin(request)
    return web.json_response({"id": a.id, "name": a.name, "role": a.role})


async def list_admins(request: web.Request) -> web.Response:
    """Every admin user."""
    await require_admin(request)
    return web.json_response({"admins": await request.app[STORE].list_admins()})


async def create_admin(request: web.Request) -> web.Response:
    """A new admin user; the token is in this answer only."""
    actor = await require_admin(request, write=True)
    body = await json_body(request)
    name, role = _str(body, "name"), _str(body, "role", required=False) or "viewer"
    assert name is not None
    token = await request.app[STORE].create_admin(actor, name, role)
    return web.json_response({"name": name, "role": role, "token": token}, status=201)


async def revoke_admin(request: web.Request) -> web.Response:
    """Revoke an admin user's token."""
    actor = await require_admin(request, write=True)
    await request.app[STORE].revoke_admin(actor, request.match_info["name"])
    return web.json_response({"revoked": request.match_info["name"]})


async def list_teams(request: web.Request) -> web.Response:
    """Every team."""
    await require_admin(request)
    return web.json_response({"teams": await request.app[STORE].list_teams()})


async def create_team(request: web.Request) -> web.Response:
    """A new team."""
    actor = await require_admin(request, write=True)
    name = _str(await json_body(request), "name")
    assert name is not None
    return web.json_response(await request.app[STORE].create_team(actor, name), status=201)


async def list_developers(request: web.Request) -> web.Response:
    """Every developer."""
    await require_admin(request)
    return web.json_response({"developers": await request.app[STORE].list_developers()})


async def create_developer(request: web.Request) -> web.Response:
    """A new developer."""
    actor = await require_admin(request, write=True)
    body = await json_body(request)
    email = _str(body, "email")
    assert email is not None
    row = await request.app[STORE].create_developer(actor, email, _str(body, "name", False), _str(body, "team", False))
    return web.json_response(row, status=201)


async def move_developer(request: web.Request) -> web.Response:
    """Move a developer to another team (``{"team": null}``: no team); a new policy version."""
    actor = await require_admin(request, write=True)
    body = await json_body(request)
    if "team" not in body:
        raise InvalidRequest("expected {\"team\": \"NAME\"} or {\"team\": null}")
    row = await request.app[STORE].move_developer(actor, request.match_info["developer"], _str(body, "team", False))
    request.app[NOTIFIER].wake()
    return web.json_response(row)


async def create_enrollment(request: web.Request) -> web.Response:
    """A one-time, expiring enrollment token for a developer (shown in this answer only)."""
    actor = await require_admin(request, write=True)
    body = await json_body(request)
    developer = _str(body, "developer")
    assert developer is not None
    ttl = body.get("ttl_seconds", 86400)
    if isinstance(ttl, bool) or not isinstance(ttl, int | float):
        raise InvalidRequest("ttl_seconds must be a number")
    row = await request.app[STORE].create_enrollment(actor, developer, float(ttl))
    return web.json_response(row, status=201)


async def list_enrollments(request: web.Request) -> web.Response:
    """Outstanding enrollment tokens (ids, never the tokens)."""
    await require_admin(request)
    return web.json_response({"tokens": await request.app[STORE].list_enrollments()})


async def revoke_enrollment(request: web.Request) -> web.Response:
    """Make an outstanding enrollment token unusable."""
    actor = await require_admin(request, write=True)
    await request.app[STORE].revoke_enrollment(actor, request.match_info["enrollment_id"])
    return web.json_response({"revoked": request.match_info["enrollment_id"]})


async def list_devices(request: web.Request) -> web.Response:
    """Every device."""
    await require_admin(request)
    return web.json_response({"devices": await request.app[STORE].list_devices()})


async def revoke_device(request: web.Request) -> web.Response:
    """Revoke a device; its next call is refused."""
    actor = await require_admin(request, write=True)
    await request.app[STORE].revoke_device(actor, request.match_info["device_id"])
    return web.json_response({"revoked": request.match_info["device_id"]})


async def show_policy(request: web.Request) -> web.Response:
    """A scope's document (latest or as of ?version=) and its effective merge."""
    await require_admin(request)
    q = request.query
    row = await request.app[STORE].show_policy(q.get("scope", "org"), _int(q.get("version"), "version"))
    return web.json_response(row)


async def push_policy(request: web.Request) -> web.Response:
    """Validate and store a scope's new document; wakes every long-poll."""
    actor = await require_admin(request, write=True)
    body = await json_body(request)
    scope = _str(body, "scope", required=False) or "org"
    if "document" not in body:
        raise InvalidRequest("expected {\"scope\": \"org\", \"document\": {...}}")
    comment = _str(body, "comment", required=False, plain=False)
    version = await request.app[STORE].push_policy(actor, scope, body["document"], comment)
    request.app[NOTIFIER].wake()
    return web.json_response({"version": version, "scope": scope}, status=201)


async def policy_history(request: web.Request) -> web.Response:
    """Policy versions, newest first."""
    await require_admin(request)
    q = request.query
    limit = _int(q.get("limit"), "limit", 100) or 100
    rows = await request.app[STORE].history(q.get("scope"), min(limit, 1000))
    return web.json_response({"versions": rows})


async def rollback_policy(request: web.Request) -> web.Response:
    """Make an older document of a scope current again, as a new version."""
    actor = await require_admin(request, write=True)
    body = await json_body(request)
    version = body.get("version")
    if isinstance(version, bool) or not isinstance(version, int) or not 0 < version < 2**62:
        raise InvalidRequest("version must be a positive integer")
    scope = _str(body, "scope", required=False) or "org"
    new = await request.app[STORE].rollback(actor, scope, version)
    request.app[NOTIFIER].wake()
    return web.json_response({"version": new, "scope": scope}, status=201)


async def usage_report(request: web.Request) -> web.Response:
    """Usage totals grouped by developer, team, model, route or day."""
    await require_admin(request)
    q = request.query
    rows = await request.app[STORE].usage_report(q.get("by", "developer"), q.get("since"), q.get("until"))
    return web.json_response({"by": q.get("by", "developer"), "rows": rows})


async def leases(request: web.Request) -> web.Response:
    """The budget pools: limit, outstanding and used per period."""
    await require_admin(request)
    return web.json_response({"pools": await request.app[STORE].lease_overview()})


async def audit(request: web.Request) -> web.Response:
    """The server's audit chain (entries after ?after=SEQ)."""
    await require_admin(request)
    after = _int(request.query.get("after"), "after", 0) or 0
    entries = await request.app[STORE].audit_entries(after)
    return web.json_response({"entries": [e.to_json() for e in entries]})
