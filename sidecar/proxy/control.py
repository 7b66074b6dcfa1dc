"""The local control API (`/sidecar/v1/...`) used by the CLI, the TUI and the tray.

Every call needs the local token (checked at ingress). Reads of the store run in a thread
so the proxy's event loop never waits on sqlite.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sqlite3
import time
from datetime import date
from typing import Any

from aiohttp import web

from sidecar import __version__
from sidecar.appkeys import BUS, CONFIG, PATHS, PROVIDERS, RUNTIME, STORAGE, SYNC
from sidecar.errors import InvalidRequest
from sidecar.ledger import reports
from sidecar.ledger.store import open_db
from sidecar.proxy.ingress import proxy_needs_token

log = logging.getLogger(__name__)

KEEPALIVE_SECONDS = 15.0
GROUPS = ("daily", "weekly", "monthly", "session", "model", "route")


def _totals(request: web.Request) -> dict[str, Any]:
    paths, cfg = request.app[PATHS], request.app[CONFIG]
    if not paths.db_file.exists():
        return {}
    try:
        db = open_db(paths.db_file)
        try:
            return reports.totals(db, reports.local_zone(cfg.usage.timezone))
        finally:
            db.conn.close()
    except sqlite3.Error as e:  # status must answer when the store does not: `storage` says why
        log.warning("status: cannot read usage totals: %s", e)
        return {}


async def status(request: web.Request) -> web.Response:
    """Pid, address, uptime, providers, in-flight requests and today's spend."""
    rt, cfg, providers = request.app[RUNTIME], request.app[CONFIG], request.app[PROVIDERS]
    totals = await asyncio.to_thread(_totals, request)
    return web.json_response(
        {
            "version": __version__,
            "pid": os.getpid(),
            "address": rt.address,
            "unix_socket": rt.unix_socket,
            "started_at": rt.started_at,
            "uptime_s": round(time.time() - rt.started_at, 3),
            "in_flight": len(rt.in_flight),
            "config_file": str(cfg.source) if cfg.source else None,
            "token_required_on_proxy": proxy_needs_token(cfg, providers),
            "providers": [
                {
                    "name": p.name,
                    "type": p.type,
                    "base_url": p.base_url,
                    "credentials": ", ".join(k.source for k in providers[p.name].keys) or _no_key(p.type),
                }
                for p in cfg.providers
            ],
            "usage": totals,
            "storage": request.app[STORAGE].state() if STORAGE in request.app else None,
            "sync": request.app[SYNC].state() if SYNC in request.app else {"enrolled": False, "state": "not enrolled"},
            "event_subscribers": request.app[BUS].subscribers,
        }
    )


def _no_key(ptype: str) -> str:
    if ptype == "anthropic":
        return "client"
    return "ambient" if ptype in ("bedrock", "vertex") else "none"


def _date_param(request: web.Request, name: str) -> date | None:
    raw = request.query.get(name)
    if not raw:
        return None
    try:
        return date.fromisoformat(raw)
    except ValueError:
        raise InvalidRequest(f"{name}: {raw!r} is not a date (YYYY-MM-DD)") from None


async def usage(request: web.Request) -> web.Response:
    """A usage report: `?group_by=daily|weekly|monthly|session|model|route&since=&until=`."""
    group = request.query.get("group_by", "daily")
    if group not in GROUPS:
        raise InvalidRequest(f"group_by: {group!r} is not one of {', '.join(GROUPS)}")
    since, until = _date_param(request, "since"), _date_param(request, "until")
    paths, cfg = request.app[PATHS], request.app[CONFIG]

    def run() -> list[dict[str, Any]]:
        if not paths.db_file.exists():
            return []
        db = open_db(paths.db_file)
        try:
            return reports.report(db, group, since, until, reports.local_zone(cfg.usage.timezone))  # type: ignore[arg-type]
        finally:
            db.conn.close()

    return web.json_response({"group_by": group, "rows": await asyncio.to_thread(run)})


RECENT_LIMIT = 10_000  # the most rows one /requests answer carries


def _number_param(request: web.Request, name: str, default: float, low: float, high: float) -> float:
    raw = request.query.get(name)
    try:
        value = default if raw is None else float(raw)
    except ValueError:
        raise InvalidRequest(f"{name}: {raw!r} is not a number") from None
    if not low <= value <= high:
        raise InvalidRequest(f"{name}: {raw} is not between {low:g} and {high:g}")
    return value


async def recent_requests(request: web.Request) -> web.Response:
    """The ledger's recent requests, newest first, as `request` events carry them:
    `?since=EPOCH&limit=N` (default the last 24 h, 200 rows); `brief=1` keeps id, ts, endpoint, cost_usd."""
    since = _number_param(request, "since", time.time() - 86400, 0, float("inf"))
    limit = int(_number_param(request, "limit", 200, 1, RECENT_LIMIT))
    brief = request.query.get("brief", "") in ("1", "true")
    paths = request.app[PATHS]

    def run() -> list[dict[str, Any]]:
        if not paths.db_file.exists():
            return []
        db = open_db(paths.db_file)
        try:
            return reports.recent(db, since, limit, brief)
        finally:
            db.conn.close()

    return web.json_response({"since": since, "limit": limit, "rows": await asyncio.to_thread(run)})


async def events(request: web.Request) -> web.StreamResponse:
    """Server-sent events: `request_started` and `request` (the priced usage row) as they happen."""
    bus = request.app[BUS]
    resp = web.StreamResponse(headers={"content-type": "text/event-stream", "cache-control": "no-cache"})
    await resp.prepare(request)
    q = bus.subscribe()
    try:
        await resp.write(b"event: hello\ndata: " + json.dumps({"version": __version__, "pid": os.getpid()}).encode() + b"\n\n")
        while True:
            try:
                ev = await asyncio.wait_for(q.get(), KEEPALIVE_SECONDS)
            except TimeoutError:
                await resp.write(b": keepalive\n\n")
                continue
            await resp.write(
                f"id: {ev['seq']}\nevent: {ev['type']}\ndata: ".encode() + json.dumps(ev["data"]).encode() + b"\n\n"
            )
            if ev["type"] == "shutdown":
                break
    except ConnectionError:
        pass
    finally:
        bus.unsubscribe(q)
    return resp


async def shutdown(request: web.Request) -> web.Response:
    """Ask the daemon to stop (in-flight streams get the configured grace period)."""
    request.app[RUNTIME].stop.set()
    return web.json_response({"stopping": True})


def add_routes(app: web.Application) -> None:
    """Register the control API on `app`."""
    app.router.add_get("/sidecar/v1/status", status)
    app.router.add_get("/sidecar/v1/usage", usage)
    app.router.add_get("/sidecar/v1/events", events)
    app.router.add_get("/sidecar/v1/requests", recent_requests)
    app.router.add_post("/sidecar/v1/shutdown", shutdown)
