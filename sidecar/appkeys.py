"""The app keys: typed `web.AppKey`s for the runtime state kept on the aiohttp Application.

Low in the tree (with the domain), so the domain's own endpoints (gateway, MCP, metrics)
read the app's state without importing the HTTP layer that assembles it (sidecar.proxy).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from aiohttp import web

from sidecar.config import Config
from sidecar.events import EventBus
from sidecar.ledger.health import StorageHealth
from sidecar.ledger.writer import Ledger
from sidecar.paths import Paths
from sidecar.pipeline import RequestContext, Responder, Settler, Stage
from sidecar.providers.base import Provider

if TYPE_CHECKING:
    from sidecar.routing.router import Router
    from sidecar.sync.service import SyncService


class ConfigReloader(Protocol):
    """What the server needs of the config reloader (sidecar.proxy.reload.Reloader): SIGHUP reloads."""

    async def reload(self, reason: str) -> bool:
        """Read the config file again and apply it; False when it was refused."""
        ...


@dataclass
class Runtime:
    """Process-wide facts the control API reports."""

    token: str
    started_at: float
    address: str = ""
    unix_socket: str | None = None
    in_flight: dict[str, RequestContext] = field(default_factory=dict)
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    reloader: ConfigReloader | None = None  # set when the config file is watched
    fast_path_served: int = 0  # requests the listener's fast path answered (sidecar.proxy.lane)


CONFIG = web.AppKey("config", Config)
PATHS = web.AppKey("paths", Paths)
RUNTIME = web.AppKey("runtime", Runtime)
BUS = web.AppKey("bus", EventBus)
LEDGER = web.AppKey("ledger", Ledger)
STORAGE = web.AppKey("storage", StorageHealth)
PROVIDERS: web.AppKey[dict[str, Provider]] = web.AppKey("providers")
ROUTER: web.AppKey[Router] = web.AppKey("router")
STAGES: web.AppKey[list[Stage]] = web.AppKey("stages")
RESPONDERS: web.AppKey[list[Responder]] = web.AppKey("responders")  # the stages with a response hook
SETTLERS: web.AppKey[list[Settler]] = web.AppKey("settlers")  # the stages with an answered hook
SYNC: web.AppKey[SyncService] = web.AppKey("sync")
# The handlers the listener's fast path serves, by exact path (sidecar.proxy.lane).
FAST_PATHS: web.AppKey[dict[str, Callable[[web.Request], Awaitable[web.StreamResponse]]]] = web.AppKey("fast_paths")
