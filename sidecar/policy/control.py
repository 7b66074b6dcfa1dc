"""`GET /sidecar/v1/policy`: the policy in force and its budgets and limits right now
(`PolicyState` in docs/control-api.md)."""

from __future__ import annotations

from aiohttp import web

from sidecar.policy.gate import PolicyGate

POLICY = web.AppKey("policy", PolicyGate)


async def policy_state(request: web.Request) -> web.Response:
    """Budgets (limit, spent, reserved, reset), limits (rates, in flight) and the policy's digest."""
    gate = request.app.get(POLICY)
    return web.json_response(gate.state() if gate is not None else {"configured": False})


def add_routes(app: web.Application) -> None:
    """Register the policy endpoint on `app`."""
    app.router.add_get("/sidecar/v1/policy", policy_state)
