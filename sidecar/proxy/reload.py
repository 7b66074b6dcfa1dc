"""Config reload without a restart: on SIGHUP or when the config file changes.

The new file is read and validated first; a bad file is refused (logged, and announced
as a `config_reload_failed` event) and the running routes stay as they were. A good one
replaces the providers that changed and the routes; breakers of unchanged targets keep
their state, and runtime enable/disable choices stay.

The governance sections ([budget], [limits], [guardrails], [tools], [policy]) apply at
once through `apply_policy` (the policy gate's: spend so far kept, requests in flight settle
as admitted). A change to the sections in RESTART_SECTIONS takes effect only at the next
start: the reload says so in a warning naming the sections and a `config_restart_needed`
event, and the running values stay in force (a later reload compares against them, so it
warns again until a restart).

An enrolled sidecar runs under its org's central policy: `overlay` turns the local file's
Config into the effective one (`sidecar.sync.merge.overlay`), on every reload, so editing
the local file never lifts the org's rules; `apply_now` re-applies the overlay to the last
good local file when the central policy changes.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp

from sidecar import config as config_mod
from sidecar.config import Config
from sidecar.errors import ConfigError
from sidecar.paths import file_stamp
from sidecar.policy.config import BudgetConfig
from sidecar.policy.model import Policy
from sidecar.providers import factory
from sidecar.providers.base import Provider
from sidecar.routing.router import Router
from sidecar.secrets import ResolvedKey

log = logging.getLogger(__name__)

WATCH_INTERVAL = 1.0  # seconds between looks at the config file
SETTLE_SECONDS = 0.5  # how long a changed file must hold still before it is read

KeyResolver = Callable[[Config], dict[str, list[ResolvedKey]]]
BudgetApplier = Callable[[BudgetConfig], bool]  # True when the new budget is in force
PolicyApplier = Callable[[Policy], None]  # puts a policy in force now (ConfigError: it cannot)
# The effective Config (and Policy) of a local one: the org's central policy laid over it.
Overlay = Callable[[Config], "Config | tuple[Config, Policy]"]

# The sections a reload does not rebuild, and how to read each from a Config.
RESTART_SECTIONS: dict[str, Callable[[Config], object]] = {
    "server": lambda c: c.server,
    "pricing": lambda c: c.pricing,
    "usage": lambda c: c.usage,
    "cache": lambda c: c.cache,
}
# The governance sections: live through `apply_policy` (without it, only [budget] is, and
# the others wait for a restart like the sections above).
GOVERNANCE_SECTIONS: dict[str, Callable[[Config], object]] = {
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
        apply_policy: PolicyApplier | None = None,
        overlay: Overlay | None = None,
    ) -> None:
        self.path = path
        self.router = router
        self.providers = providers  # the app's dict, updated in place
        self.session = session
        self.resolve = resolve
        self.publish = publish
        self.retired: list[Provider] = []  # closed at shutdown: in-flight calls may still use them
        self.apply_budget = apply_budget
        self.apply_policy = apply_policy
        self.overlay = overlay
        self.local = running  # the last good local file (before the overlay)
        # What is in force of each section a reload does not rebuild (or applies separately).
        sections = {**RESTART_SECTIONS, **GOVERNANCE_SECTIONS}
        self.in_force = {name: read(running) for name, read in sections.items()} if running else {}
        self.policy = Policy.from_config(running) if running else None
        self._lock = asyncio.Lock()
        self._stamp = file_stamp(self.path)
        self.reloads = 0

    async def reload(self, reason: str) -> bool:
        """Read, validate and apply the config file; False (and the old config kept) when it is bad."""
        async with self._lock:
            self._stamp = file_stamp(self.path)
            try:
                local = await asyncio.to_thread(config_mod.load, self.path)
                effective, _ = self.effective(local)
                keys = await asyncio.to_thread(self.resolve, effective)
                # The central policy may have changed while the keys were read: lay it on again.
                effective, policy = self.effective(local)
                keys = self._keys(effective, keys)
                applied, pending = self._sections(effective, policy)
            except ConfigError as e:
                log.error("config reload (%s) refused, keeping the running config: %s", reason, e.message)
                self.publish("config_reload_failed", {"reason": reason, "error": e.message})
                return False
            self.local = local
            self._apply(effective, keys)
            self.reloads += 1
            log.info("config reloaded (%s): %d routes%s", reason, len(effective.routes), "".join(f"; [{n}] applied" for n in applied))
            self.publish("routes_changed", {"routes": self.router.describe(), "reason": reason})
            if pending:
                names = " ".join(f"[{n}]" for n in pending)
                log.warning(
                    "config reload (%s): %s changed but cannot be applied to the running sidecar; "
                    "they take effect after a restart (claude-sidecar stop && claude-sidecar start)", reason, names,
                )  # fmt: skip
                self.publish("config_restart_needed", {"reason": reason, "sections": pending})
            return True

    def effective(self, local: Config) -> tuple[Config, Policy]:
        """`local` under the overlay (the org's policy), or as it is; ConfigError when the
        overlay cannot make a valid config of it."""
        if self.overlay is None:
            return local, Policy.from_config(local)
        out = self.overlay(local)
        return out if isinstance(out, tuple) else (out, Policy.from_config(out))

    def apply_now(self, reason: str) -> None:
        """Lay the overlay on the last good local file again and put the result in force now
        (providers, routes, governance): a new central policy. ConfigError (nothing changed)
        when it cannot be applied. Keys are read only for providers that changed."""
        if self.local is None:
            raise ConfigError("the running config is not known; restart the sidecar")
        effective, policy = self.effective(self.local)
        keys = self._keys(effective, {})
        applied, pending = self._sections(effective, policy)
        self._apply(effective, keys)
        log.info("%s applied: %d routes%s", reason, len(effective.routes), "".join(f"; [{n}]" for n in applied))
        self.publish("routes_changed", {"routes": self.router.describe(), "reason": reason})
        if pending:
            log.warning("%s: %s changed but take effect after a restart", reason, " ".join(f"[{n}]" for n in pending))
            self.publish("config_restart_needed", {"reason": reason, "sections": pending})

    def _keys(self, cfg: Config, known: dict[str, list[ResolvedKey]]) -> dict[str, list[ResolvedKey]]:
        """The keys of `cfg`'s providers: `known` ones, those of unchanged running providers,
        and the rest resolved now."""
        out: dict[str, list[ResolvedKey]] = {}
        missing = []
        for p in cfg.providers:
            old = self.providers.get(p.name)
            if p.name in known:
                out[p.name] = known[p.name]
            elif old is not None and old.cfg == p:
                out[p.name] = list(old.keys)
            else:
                missing.append(p)
        if missing:
            out.update(self.resolve(dataclasses.replace(cfg, providers=tuple(missing))))
        return out

    def _sections(self, cfg: Config, policy: Policy) -> tuple[list[str], list[str]]:
        """Apply what can be applied live; the sections applied and those that need a restart.
        ConfigError (nothing applied) when `apply_policy` refuses the policy."""
        applied: list[str] = []
        pending = [n for n, read in RESTART_SECTIONS.items() if n in self.in_force and read(cfg) != self.in_force[n]]
        changed = [n for n, read in GOVERNANCE_SECTIONS.items() if n in self.in_force and read(cfg) != self.in_force[n]]
        if self.apply_policy is not None:
            if changed or policy != self.policy:
                self.apply_policy(policy)
                self.policy = policy
                applied = changed
        else:
            for name in changed:
                if name == "budget" and self.apply_budget is not None and self.apply_budget(cfg.governance.budget):
                    applied.append(name)
                else:
                    pending.append(name)
        for name in applied:
            self.in_force[name] = GOVERNANCE_SECTIONS[name](cfg)
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

    async def watch(self) -> None:
        """Poll the file's mtime and size every WATCH_INTERVAL; reload once a change has held
        still for SETTLE_SECONDS. An editor or a sync tool writing the file in place leaves it
        cut short for a moment, and a cut file is often valid TOML that lacks the sections
        after the cut (a [budget] lifted, routes gone): it is never read half-way."""
        while True:
            await asyncio.sleep(WATCH_INTERVAL)
            stamp = file_stamp(self.path)
            if stamp == self._stamp or stamp is None:
                continue
            while True:
                await asyncio.sleep(SETTLE_SECONDS)
                again = file_stamp(self.path)
                if again == stamp:
                    break
                stamp = again
            if stamp is not None:
                await self.reload("file changed")

    def close(self) -> None:
        """Close the providers replaced by reloads."""
        for p in self.retired:
            p.close()
        self.retired.clear()
