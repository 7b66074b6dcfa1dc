"""Config reload without a restart: on SIGHUP or when the config file changes.

The new file is read and validated first; a bad file is refused (logged, and announced
as a `config_reload_failed` event) and the running routes stay as they were. A good one
replaces the providers that changed and the routes; breakers of unchanged targets keep
their state, and runtime enable/disable choices stay.

Budget limits and thresholds apply at once (the spend so far is kept). Any other change
to the sections below takes effect only at the next start: the reload says so in a
warning naming the sections and a `config_restart_needed` event, and the running values
stay in force (a later reload compares against them, so it warns again until a restart).
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp

from sidecar import config as config_mod
from sidecar.config import BudgetConfig, Config
from sidecar.errors import ConfigError
from sidecar.providers import factory
from sidecar.providers.base import Provider
from sidecar.routing.router import Router
from sidecar.secrets import ResolvedKey

log = logging.getLogger(__name__)

WATCH_INTERVAL = 1.0

KeyResolver = Callable[[Config], dict[str, list[ResolvedKey]]]
BudgetApplier = Callable[[BudgetConfig], bool]  # True when the new budget is in force

# The sections a reload does not rebuild, and how to read each from a Config.
RESTART_SECTIONS: dict[str, Callable[[Config], object]] = {
    "server": lambda c: c.server,
    "pricing": lambda c: c.pricing,
    "usage": lambda c: c.usage,
    "cache": lambda c: c.cache,
    "budget": lambda c: c.governance.budget,
    "limits": lambda c: c.governance.limits,
    "guardrails": lambda c: c.governance.guardrails,
    "tools": lambda c: c.governance.tools,
    "policy": lambda c: c.governance.policy,
}


class Reloader:
    """Re-reads the config file and applies providers and routes to the running router."""

    def __init__(
        self,
        path: Path,
        router: Router,
        providers: dict[str, Provider],
        session: aiohttp.ClientSession,
        resolve: KeyResolver,
        publish: Callable[[str, dict[str, Any]], None],
        running: Config | None = None,
        apply_budget: BudgetApplier | None = None,
    ) -> None:
        self.path = path
        self.router = router
        self.providers = providers  # the app's dict, updated in place
        self.session = session
        self.resolve = resolve
        self.publish = publish
        self.retired: list[Provider] = []  # closed at shutdown: in-flight calls may still use them
        self.apply_budget = apply_budget
        # What is in force of each section a reload does not rebuild.
        self.in_force = {name: read(running) for name, read in RESTART_SECTIONS.items()} if running else {}
        self._lock = asyncio.Lock()
        self._stamp = self._stat()
        self.reloads = 0

    def _stat(self) -> tuple[float, int] | None:
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        return (st.st_mtime, st.st_size)

    async def reload(self, reason: str) -> bool:
        """Read, validate and apply the config file; False (and the old config kept) when it is bad."""
        async with self._lock:
            self._stamp = self._stat()
            try:
                cfg = await asyncio.to_thread(config_mod.load, self.path)
                keys = await asyncio.to_thread(self.resolve, cfg)
            except ConfigError as e:
                log.error("config reload (%s) refused, keeping the running config: %s", reason, e.message)
                self.publish("config_reload_failed", {"reason": reason, "error": e.message})
                return False
            self._apply(cfg, keys)
            applied, pending = self._sections(cfg)
            self.reloads += 1
            log.info("config reloaded (%s): %d routes%s", reason, len(cfg.routes), "".join(f"; [{n}] applied" for n in applied))
            self.publish("routes_changed", {"routes": self.router.describe(), "reason": reason})
            if pending:
                names = " ".join(f"[{n}]" for n in pending)
                log.warning(
                    "config reload (%s): %s changed but cannot be applied to the running sidecar; "
                    "they take effect after a restart (claude-sidecar stop && claude-sidecar start)", reason, names,
                )  # fmt: skip
                self.publish("config_restart_needed", {"reason": reason, "sections": pending})
            return True

    def _sections(self, cfg: Config) -> tuple[list[str], list[str]]:
        """Apply what can be applied live; the sections applied and those that need a restart."""
        applied: list[str] = []
        pending: list[str] = []
        for name, read in RESTART_SECTIONS.items():
            if name not in self.in_force or read(cfg) == self.in_force[name]:
                continue
            if name == "budget" and self.apply_budget is not None and self.apply_budget(cfg.governance.budget):
                self.in_force[name] = read(cfg)
                applied.append(name)
            else:
                pending.append(name)
        return applied, pending

    def _apply(self, cfg: Config, keys: dict[str, list[ResolvedKey]]) -> None:
        fresh: dict[str, Provider] = {}
        for p in cfg.providers:
            old = self.providers.get(p.name)
            if old is not None and old.cfg == p and list(old.keys) == keys.get(p.name, []):
                fresh[p.name] = old
            else:
                fresh[p.name] = factory.build(p, keys.get(p.name, []), self.session)
        for name, old in self.providers.items():
            if fresh.get(name) is not old:
                self.retired.append(old)
        self.providers.clear()
        self.providers.update(fresh)
        self.router.configure(cfg, self.providers)

    async def watch(self, interval: float = WATCH_INTERVAL) -> None:
        """Poll the file's mtime and size; reload when they change."""
        while True:
            await asyncio.sleep(interval)
            stamp = self._stat()
            if stamp != self._stamp and stamp is not None:
                await self.reload("file changed")

    def close(self) -> None:
        """Close the providers replaced by reloads."""
        for p in self.retired:
            p.close()
        self.retired.clear()
