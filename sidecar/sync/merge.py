"""The central policy over the local config: what an enrolled sidecar enforces.

`overlay(local, central)` gives the effective Config and Policy. Precedence, key by key
(a key is ``section.name`` of the governance sections, e.g. ``budget.daily_usd``):

- a key the org's policy does not set stays as the local config has it;
- a key the org sets wins, and the local config may only make it stricter:
  - limits (``budget.*_usd``, ``limits.*_per_minute``, ``limits.max_concurrent``): the smaller;
  - guardrail modes (``guardrails.secrets``, ``guardrails.pii`` and each detector, ordered
    off < warn < redact < block): the stricter, detector by detector, so a local
    per-detector override cannot lower what the org set for its family;
  - allow lists (``policy.models``, ``policy.providers``, ``tools.allow``): the local entries
    that are also in the org's list, else the org's list;
  - deny lists (``policy.deny_models``, ``tools.deny``): the union;
  - ``guardrails.custom``: the union by name (the org's rule wins a name, at the stricter mode);
  - ``policy.log_content`` may only be turned off, ``policy.audit`` only on;
  - anything else the org sets (``budget.thresholds``, ``limits.queue_seconds``, ...) is the org's;
  a local value equal to the built-in default counts as not set (the config cannot tell
  "left out" from "written as the default"), so it never overrides the org;
- ``routes`` and ``providers``: the org's replace the local ones when it sets them (provider
  keys are still resolved on this machine, by the `keys` references they name); local
  routes kept under org providers must name only those providers, else they are dropped.

The tightening rules are `sidecar.central.policy_doc`'s (the same a team or developer scope
is held to on the server when the org marks a key as a ceiling); on the device every key the
central policy sets binds the local file.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import tomli_w

from sidecar import config as config_mod
from sidecar.central import policy_doc
from sidecar.config import Config
from sidecar.errors import ConfigError
from sidecar.policy.config import (
    GOVERNANCE_SECTIONS,
    CustomGuardrail,
    Governance,
    GuardrailsConfig,
)
from sidecar.policy.detectors import DETECTORS
from sidecar.policy.model import Policy
from sidecar.providers.config import ProviderConfig

if TYPE_CHECKING:
    from sidecar.sync.policy import CentralPolicy

log = logging.getLogger(__name__)

MODES = policy_doc.MODES


def overlay(local: Config, central: CentralPolicy | None) -> tuple[Config, Policy]:
    """The effective Config and Policy of `local` under `central` (see the module docstring);
    ConfigError when the central routes/providers do not make a valid config."""
    if central is None:
        return local, Policy.from_config(local)
    doc = central.document
    source = f"central v{central.version}"
    org = Policy.from_document({k: doc[k] for k in GOVERNANCE_SECTIONS if k in doc}, source).rules
    rules = govern(local.governance, doc, org)
    providers, routes = _routing(local, doc, source)
    cfg = dataclasses.replace(local, governance=rules, providers=providers, routes=routes)
    return cfg, Policy(rules, central.version, source)


def govern(local: Governance, doc: dict[str, Any], org: Governance) -> Governance:
    """`local` under the org's governance `org` (parsed from `doc`, which says what it sets)."""
    sections: dict[str, Any] = {}
    for section in GOVERNANCE_SECTIONS:
        mine, theirs = getattr(local, section), getattr(org, section)
        raw = doc.get(section)
        table: dict[str, Any] = raw if isinstance(raw, dict) else {}
        default = type(mine)()
        values: dict[str, Any] = {}
        for f in dataclasses.fields(mine):
            name, value = f.name, getattr(mine, f.name)
            if name not in table or (section == "guardrails" and name in ("detectors", "custom")):
                values[name] = value
            elif value == getattr(default, name):
                values[name] = getattr(theirs, name)
            else:
                values[name] = _tighter(f"{section}.{name}", getattr(theirs, name), value)
        sections[section] = dataclasses.replace(mine, **values)
    sections["guardrails"] = _guardrails(local.guardrails, doc.get("guardrails"), org.guardrails, sections["guardrails"])
    return Governance(**sections)


def _tighter(key: str, org: Any, mine: Any) -> Any:
    """The stricter of the org's and the local value of an org-set key."""
    if key in policy_doc.DENY_KEYS:
        return tuple(dict.fromkeys([*org, *mine]))
    if key in (*policy_doc.LIMIT_KEYS, *policy_doc.MODE_KEYS, *policy_doc.ALLOW_KEYS, *policy_doc.OFF_TIGHTER, *policy_doc.ON_TIGHTER):
        value, _ = policy_doc.tighten(key, list(org) if isinstance(org, tuple) else org, list(mine) if isinstance(mine, tuple) else mine)
        return tuple(value) if isinstance(value, list) else value
    return org  # not a tightenable key: the org decides


def _mode_of(g: GuardrailsConfig, name: str) -> str:
    """The mode detector `name` runs in under `g` (its override, else its family's)."""
    return g.detectors.get(name) or (g.secrets if DETECTORS[name].kind == "secret" else g.pii)


def _guardrails(local: GuardrailsConfig, table: Any, org: GuardrailsConfig, merged: GuardrailsConfig) -> GuardrailsConfig:
    """Per detector: the stricter of the local mode and the mode the org set (directly or
    through its family); custom rules: the union by name."""
    table = table if isinstance(table, dict) else {}
    org_detectors = table.get("detectors") if isinstance(table.get("detectors"), dict) else {}
    strict = MODES.index
    detectors: dict[str, str] = {}
    for name, d in DETECTORS.items():
        family = "secrets" if d.kind == "secret" else "pii"
        governed = name in org_detectors or family in table
        mode = _mode_of(local, name)
        if governed:
            mode = max(_mode_of(org, name), mode, key=strict)
        if mode != getattr(merged, family) or name in local.detectors:
            detectors[name] = mode
    custom: dict[str, CustomGuardrail] = {c.name: c for c in local.custom}
    for c in org.custom:
        mine = custom.get(c.name)
        custom[c.name] = c if mine is None else dataclasses.replace(c, mode=max(c.mode, mine.mode, key=strict))
    return dataclasses.replace(merged, detectors=detectors, custom=tuple(custom.values()))


def _routing(local: Config, doc: dict[str, Any], source: str) -> tuple[tuple[ProviderConfig, ...], tuple[Any, ...]]:
    """The effective providers and routes."""
    if "providers" not in doc and "routes" not in doc:
        return local.providers, local.routes
    part: dict[str, Any] = {"providers": doc["providers"] if "providers" in doc else local.to_dict()["providers"]}
    if "routes" in doc:
        part["routes"] = doc["routes"]
    try:
        parsed = config_mod.parse(tomli_w.dumps(part), env={})
    except (ConfigError, TypeError, ValueError) as e:
        raise ConfigError(f"{source}: its routes/providers do not make a valid config: {e}") from None
    if "routes" in doc:
        return parsed.providers, parsed.routes
    names = {p.name for p in parsed.providers}
    kept = tuple(r for r in local.routes if all(t.provider in names for t in (*r.targets, *r.fallbacks)))
    if len(kept) != len(local.routes):
        dropped = sorted({r.name for r in local.routes} - {r.name for r in kept})
        log.warning("%s replaces the providers; local routes naming others are dropped: %s", source, ", ".join(dropped))
    return parsed.providers, kept


class CentralOverlay:
    """The central policy in force, laid over every local config: the Reloader's `overlay`
    hook, so a reload of the local file keeps the org's rules on top."""

    def __init__(self) -> None:
        self.central: CentralPolicy | None = None

    def __call__(self, local: Config) -> tuple[Config, Policy]:
        return overlay(local, self.central)

    def install(self, central: CentralPolicy | None, apply_now: Callable[[], None]) -> None:
        """Make `central` (None: no central policy) the one in force and apply it with
        `apply_now` (e.g. `Reloader.apply_now`); if that raises, the previous one stays."""
        previous, self.central = self.central, central
        try:
            apply_now()
        except BaseException:
            self.central = previous
            raise
