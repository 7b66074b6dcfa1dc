"""The aiohttp application factory: state under typed AppKeys, resources in cleanup_ctx."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from sidecar.appkeys import (
    BUS,
    CONFIG,
    LEDGER,
    PATHS,
    PROVIDERS,
    RESPONDERS,
    ROUTER,
    RUNTIME,
    SETTLERS,
    STAGES,
    STORAGE,
    SYNC,
    Runtime,
)
from sidecar.audit.stage import AuditStage, open_audit
from sidecar.cache import control as cache_control
from sidecar.cache.control import CACHE
from sidecar.cache.stage import open_cache
from sidecar.central import enrollment
from sidecar.config import Config
from sidecar.errors import StorageError
from sidecar.events import EventBus
from sidecar.gateway import routes as gateway_routes
from sidecar.ledger.health import StorageHealth
from sidecar.ledger.journal import JOURNAL_DIR, Journal
from sidecar.ledger.pricing import Pricing
from sidecar.ledger.writer import Ledger
from sidecar.mcp import idle as mcp_idle
from sidecar.observability import metrics as observe_metrics
from sidecar.observability import tracing as observe_tracing
from sidecar.paths import Paths
from sidecar.pipeline import responders, settlers
from sidecar.policy import control as policy_control
from sidecar.policy.control import POLICY
from sidecar.policy.gate import open_policy
from sidecar.policy.model import Policy
from sidecar.providers import factory
from sidecar.proxy import control, handlers, routes_control
from sidecar.proxy.ingress import ingress
from sidecar.proxy.listener import end_unframed_http10
from sidecar.proxy.reload import Reloader
from sidecar.proxy.stages import request_path
from sidecar.routing.router import Router
from sidecar.secrets import ResolvedKey, SecretStore, resolve_keys
from sidecar.storage.batch import BatchWriter
from sidecar.sync.merge import CentralOverlay
from sidecar.sync.policy import CentralPolicy
from sidecar.sync.service import SyncService
from sidecar.tasks import TaskSet

RELOADER = web.AppKey("reloader", Reloader)
AUDIT: web.AppKey[AuditStage | None] = web.AppKey("audit_stage")
OVERLAY = web.AppKey("central_overlay", CentralOverlay)


def create_app(
    cfg: Config,
    paths: Paths,
    token: str,
    keys: dict[str, list[ResolvedKey]] | None = None,
    config_path: Path | None = None,
) -> web.Application:
    """Build the sidecar's app; `keys` are the resolved credentials per provider name. With
    `config_path`, routes and providers reload when that file changes (and on SIGHUP)."""
    app = web.Application(middlewares=[ingress], client_max_size=cfg.server.max_body_bytes)
    app[CONFIG] = cfg
    app[PATHS] = paths
    app[RUNTIME] = Runtime(token=token, started_at=time.time())
    app[BUS] = EventBus()
    resolved = keys or {}
    stats = observe_metrics.install(app) if cfg.observability.metrics else None

    async def http_session(app: web.Application) -> AsyncIterator[None]:
        connector = aiohttp.TCPConnector(limit=256, ttl_dns_cache=300, keepalive_timeout=60)
        session = aiohttp.ClientSession(
            connector=connector,
            # A transparent proxy keeps no cookies: Set-Cookie goes back to the client as is.
            cookie_jar=aiohttp.DummyCookieJar(),
            # Send only the client's own User-Agent and Content-Type, never aiohttp's defaults.
            skip_auto_headers=("User-Agent", "Content-Type"),
            # A compressed upstream answer is decoded and goes back plain over loopback
            # (Content-Encoding is dropped on the way down).
            auto_decompress=True,
        )
        try:
            app[PROVIDERS] = {p.name: factory.build(p, resolved.get(p.name, []), session) for p in cfg.providers}
        except BaseException:
            await session.close()  # an adapter refused its options: leave nothing open
            raise
        app[ROUTER] = Router(cfg, app[PROVIDERS], on_event=app[BUS].publish)
        tasks = TaskSet()
        store = SecretStore(paths.config_dir / "credentials.json")
        # The Reloader also lays the org's central policy (when enrolled) over the local
        # config; it watches the file only when there is one.
        reloader = app[RELOADER] = Reloader(
            config_path or paths.config_file,
            app[ROUTER],
            app[PROVIDERS],
            session,
            lambda c: {p.name: resolve_keys(p, store) for p in c.providers},
            app[BUS].publish,
            running=cfg,
            apply_policy=lambda policy: _apply_policy(app, policy),
            overlay=app[OVERLAY],
        )
        if config_path is not None:
            app[RUNTIME].reloader = reloader
            tasks.spawn(reloader.watch(), name="config-watch")
        yield
        await tasks.close()
        for provider in app[PROVIDERS].values():
            provider.close()
        reloader.close()
        await session.close()

    async def ledger(app: web.Application) -> AsyncIterator[None]:
        journal = Journal(paths.data_dir / JOURNAL_DIR)
        writer = BatchWriter()  # the one database thread of the ledger, the audit log and the cache
        try:
            recovered = await asyncio.to_thread(journal.recover, paths.db_file)
            led = Ledger(paths.db_file, Pricing(cfg.pricing), journal, writer)
            await led.start()
        except (OSError, sqlite3.Error) as e:
            await writer.close()
            raise StorageError(f"cannot open the usage store in {paths.data_dir}: {e}") from None
        app[LEDGER] = led
        gate = app[POLICY] = await open_policy(cfg, paths, led, app[BUS])
        gate.models_for = app[ROUTER].models_for  # a reservation is priced by the models the route serves
        enrolled = await asyncio.to_thread(enrollment.enrollment_file(paths).exists)
        audit = app[AUDIT] = await open_audit(
            cfg, paths, led.pricing, gate.policy, journal, recovered, keep_open=enrolled, writer=writer
        )
        cache = app[CACHE] = await open_cache(cfg, paths, led.pricing, writer=writer)
        writers: list[Any] = [led] if audit is None else [led, audit.audit]
        health = app[STORAGE] = StorageHealth(
            journal, writers, refuse=cfg.usage.on_storage_failure == "refuse", others=[cache.entries]
        )
        tracer = observe_tracing.build(cfg.observability, {p.name: p.type for p in cfg.providers})
        app[STAGES] = request_path(
            health=health, bus=app[BUS], gate=gate, cache=cache, ledger=led, journal=journal, router=app[ROUTER],
            tracer=tracer, metrics=stats, audit=audit,
        )  # fmt: skip
        app[RESPONDERS] = responders(app[STAGES])
        app[SETTLERS] = settlers(app[STAGES])
        yield
        if tracer is not None:
            await asyncio.to_thread(tracer.close)  # exports what is left, off the loop
        if audit is not None:
            await audit.close()
        await cache.close()
        await led.close()
        await writer.close()
        journal.close()

    async def sync(app: web.Application) -> AsyncIterator[None]:
        """While enrolled: the org's policy in force, usage uploaded, budget leases held."""
        reloader, overlay = app[RELOADER], app[OVERLAY]

        def install(central: CentralPolicy | None) -> None:
            reason = f"central policy v{central.version}" if central else "the local config (not enrolled)"
            overlay.install(central, lambda: reloader.apply_now(reason))

        service = app[SYNC] = SyncService(cfg, paths, app[POLICY], install, app[BUS].publish)
        await service.start()
        yield
        await service.close()

    async def announce_shutdown(app: web.Application) -> None:
        app[BUS].publish("shutdown", {})

    app[OVERLAY] = CentralOverlay()
    app.cleanup_ctx.extend([http_session, ledger, sync])
    app.on_shutdown.append(announce_shutdown)
    app.on_response_prepare.append(end_unframed_http10)
    handlers.add_routes(app)
    gateway_routes.add_routes(app, handlers.messages, handlers.models)
    control.add_routes(app)
    routes_control.add_routes(app)
    policy_control.add_routes(app)
    cache_control.add_routes(app)
    if cfg.mcp.servers:
        # The MCP SDK is loaded only when there is a server to serve.
        from sidecar.mcp import server as mcp_server

        mcp_server.add_routes(app)  # after the ledger in cleanup_ctx: it audits through app[STAGES]
    else:
        mcp_idle.add_routes(app)
    return app


def _apply_policy(app: web.Application, policy: Policy) -> None:
    """Put a policy in force now (a central push, a config reload): the gate's rules and the
    audit log's switches."""
    app[POLICY].apply_policy(policy)
    if (audit := app.get(AUDIT)) is not None:
        audit.apply_policy(policy)
