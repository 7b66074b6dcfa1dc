"""The TOML config: load, validate, defaults and environment overrides.

Each section is read next to the code that owns it, with the shared strict reader of
`sidecar/configread.py`; this module assembles them into the root `Config`:

| Section | Read in |
|---|---|
| `[server]` | `sidecar/proxy/config.py` |
| `[[providers]]` | `sidecar/providers/config.py` |
| `[pricing]`, `[usage]` | `sidecar/ledger/config.py` |
| `[budget]`, `[limits]`, `[guardrails]`, `[tools]`, `[policy]` | `sidecar/policy/config.py` |
| `[cache]` | `sidecar/cache/config.py` |
| `[[routes]]`, `[routing]` | `sidecar/routing/config.py` |
| `[claude_code]` | `sidecar/gateway/config.py` |
| `[observability]` | `sidecar/observability/settings.py` |
| `[mcp]` | `sidecar/mcp/settings.py` |
| `[sync]` | `sidecar/sync/settings.py` |

Validation is strict: an unknown key is an error (a typo must not silently turn a feature
off), and every error names the file, the key, its line when it can be found, and why. The
commented default config `config init` writes is `sidecar/default_config.toml`.
"""

from __future__ import annotations

import os
import re
import tomllib
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from sidecar.cache.config import CacheConfig, read_cache
from sidecar.configread import Reader
from sidecar.errors import ConfigError
from sidecar.gateway.config import ClaudeCodeConfig, read_claude_code
from sidecar.ledger.config import PriceOverride, UsageConfig, read_pricing, read_usage
from sidecar.mcp.settings import McpConfig, read_mcp
from sidecar.observability.settings import ObservabilityConfig, read_observability
from sidecar.policy.config import (
    GOVERNANCE_SECTIONS,
    Governance,
    check_policy_providers,
    governance_data,
    governance_from,
)
from sidecar.providers.config import DEFAULT_PROVIDERS, ProviderConfig, read_providers
from sidecar.proxy.config import ServerConfig, read_server
from sidecar.routing.config import RouteConfig, RoutingConfig, read_routes, read_routing
from sidecar.sync.settings import SyncConfig, read_sync

# The commented config `config init` writes: every key optional, the values shown the defaults.
DEFAULT_CONFIG = resources.files("sidecar").joinpath("default_config.toml").read_text(encoding="utf-8")


@dataclass(frozen=True)
class Config:
    """The effective configuration of one sidecar."""

    server: ServerConfig = field(default_factory=ServerConfig)
    providers: tuple[ProviderConfig, ...] = DEFAULT_PROVIDERS
    pricing: dict[str, PriceOverride] = field(default_factory=dict)
    usage: UsageConfig = field(default_factory=UsageConfig)
    governance: Governance = field(default_factory=Governance)  # [budget] [limits] [guardrails] [tools] [policy]
    cache: CacheConfig = field(default_factory=CacheConfig)
    routes: tuple[RouteConfig, ...] = ()
    routing: RoutingConfig = field(default_factory=RoutingConfig)
    claude_code: ClaudeCodeConfig = field(default_factory=ClaudeCodeConfig)
    observability: ObservabilityConfig = field(default_factory=ObservabilityConfig)
    mcp: McpConfig = field(default_factory=McpConfig)
    sync: SyncConfig = field(default_factory=SyncConfig)
    source: Path | None = None

    def provider(self, name: str) -> ProviderConfig:
        """The provider called `name`."""
        for p in self.providers:
            if p.name == name:
                return p
        raise KeyError(name)

    def to_dict(self) -> dict[str, Any]:
        """The effective config as plain data (for `config show`)."""
        data = asdict(self)
        data.pop("source")
        data["providers"] = [
            {**{k: v for k, v in p.items() if v is not None and k != "options"}, **p["options"]}
            for p in data["providers"]
        ]
        data["server"] = {k: v for k, v in data["server"].items() if v is not None}
        data["usage"] = {k: v for k, v in data["usage"].items() if v is not None}
        data["observability"] = {k: v for k, v in data["observability"].items() if v is not None}
        data["pricing"] = {
            m: {k: v for k, v in p.items() if v is not None} for m, p in data["pricing"].items()
        }
        data.update(governance_data(data.pop("governance")))
        data["claude_code"] = {k: v for k, v in data["claude_code"].items() if v is not None}
        if not data["claude_code"]:
            del data["claude_code"]
        return data


def parse(text: str, path: Path | None = None, env: dict[str, str] | None = None) -> Config:
    """Validate config `text` and return the effective Config, environment applied."""
    env = dict(os.environ) if env is None else env
    r = Reader(path, text)
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        at = re.search(r"at line (\d+)", str(e))
        where = f"{path or '<config>'}:{at.group(1)}" if at else f"{path or '<config>'}"
        raise ConfigError(f"{where}: not valid TOML: {e}") from None
    r.table(raw, "", {"server", "providers", "pricing", "usage", "cache", "routes", "routing", "claude_code", "observability", "mcp", "sync", *GOVERNANCE_SECTIONS})

    server = read_server(r, raw.get("server", {}))
    if env.get("CLAUDE_SIDECAR_PORT"):
        try:
            port = int(env["CLAUDE_SIDECAR_PORT"])
        except ValueError:
            raise ConfigError(f"CLAUDE_SIDECAR_PORT: must be a port number, not {env['CLAUDE_SIDECAR_PORT']!r}") from None
        if not 0 <= port <= 65535:
            raise ConfigError(f"CLAUDE_SIDECAR_PORT: {port} is not a port (0-65535)")
        server = ServerConfig(**{**asdict(server), "port": port})

    providers = read_providers(r, raw.get("providers"))
    pricing = read_pricing(r, raw.get("pricing", {}))
    usage = read_usage(r, raw.get("usage", {}))
    governance = governance_from(r, raw)
    check_policy_providers(r, governance.policy, providers)
    return Config(
        server=server, providers=providers, pricing=pricing, usage=usage, governance=governance,
        cache=read_cache(r, raw.get("cache", {})), source=path,
        routes=read_routes(r, raw.get("routes"), providers), routing=read_routing(r, raw.get("routing")),
        claude_code=read_claude_code(r, raw.get("claude_code", {})),
        observability=read_observability(r, raw.get("observability", {})),
        mcp=read_mcp(r, raw.get("mcp", {})),
        sync=read_sync(r, raw.get("sync", {})),
    )


def warnings(cfg: Config) -> list[str]:
    """What in `cfg` is allowed but risky (`config check` and the daemon's log say it loudly)."""
    out = []
    if not cfg.server.loopback:
        out.append(
            f"server.host = {cfg.server.host!r} listens beyond this machine: anyone who can reach it may try it. "
            "The local token is required on every request (the Host check is relaxed); bind 127.0.0.1 unless you mean it"
        )
    return out


def load(path: Path, env: dict[str, str] | None = None) -> Config:
    """Read and validate the config at `path`; a missing file means all defaults."""
    if not path.exists():
        return parse("", None, env)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: cannot read: {e}") from None
    return parse(text, path, env)
