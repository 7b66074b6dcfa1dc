"""Typed keys for the runtime state kept on the aiohttp Application."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from aiohttp import web

from sidecar.config import Config
from sidecar.events import EventBus
from sidecar.ledger.health import StorageHealth
from sidecar.ledger.writer import Ledger
from sidecar.paths import Paths
from sidecar.pipeline import RequestContext, Stage
from sidecar.providers.base import Provider

if TYPE_CHECKING:
    from sidecar.proxy.reload import Reloader
    from sidecar.routing.router import Router
    from sidecar.sync.service import SyncService


@dataclass
class Runtime:
    """Process-wide facts the control API reports."""

    token: str
    started_at: float
    address: str = ""
    unix_socket: str | None = None
    in_flight: dict[str, RequestContext] = field(default_factory=dict)
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    reloader: Reloader | None = None


CONFIG = web.AppKey("config", Config)
PATHS = web.AppKey("paths", Paths)
RUNTIME = web.AppKey("runtime", Runtime)
BUS = web.AppKey("bus", EventBus)
LEDGER = web.AppKey("ledger", Ledger)
STORAGE = web.AppKey("storage", StorageHealth)
PROVIDERS: web.AppKey[dict[str, Provider]] = web.AppKey("providers")
ROUTER: web.AppKey[Router] = web.AppKey("router")
STAGES: web.AppKey[list[Stage]] = web.AppKey("stages")
SYNC: web.AppKey[SyncService] = web.AppKey("sync")
