"""The TOML config: load, validate, defaults and environment overrides.

Validation is strict: an unknown key is an error (a typo must not silently turn a feature
off), and every error names the file, the key, its line when it can be found, and why.
"""

from __future__ import annotations

import os
import re
import tomllib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sidecar.errors import ConfigError
from sidecar.providers import registry

DEFAULT_PORT = 8787
PROVIDER_TYPES = tuple(registry.TYPES)
DEFAULT_BASE_URLS = {"anthropic": "https://api.anthropic.com"}
_PROVIDER_KEYS = {"name", "type", "base_url", "keys", "connect_timeout", "read_timeout"}
# Sections of the product's config that later versions read; named so the error is clear.
PLANNED_SECTIONS = ("routes", "cache", "budget", "limits", "guardrails", "tools", "policy", "sync")
_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")


@dataclass(frozen=True)
class ServerConfig:
    """Where and how the daemon listens."""

    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    unix_socket: str | None = None
    require_token: bool = False
    shutdown_grace_seconds: float = 30.0


@dataclass(frozen=True)
class ProviderConfig:
    """One upstream provider and the credentials the sidecar may inject for it."""

    name: str
    type: str
    base_url: str
    keys: tuple[str, ...] = ()
    connect_timeout: float = 10.0
    read_timeout: float = 600.0
    options: dict[str, Any] = field(default_factory=dict)  # type-specific keys (registry.TYPES)


@dataclass(frozen=True)
class PriceOverride:
    """USD per million tokens for one model, replacing the price library's figures."""

    input: float
    output: float
    cache_read: float | None = None
    cache_write: float | None = None


@dataclass(frozen=True)
class UsageConfig:
    """How usage is reported."""

    timezone: str | None = None


@dataclass(frozen=True)
class Config:
    """The effective configuration of one sidecar."""

    server: ServerConfig = field(default_factory=ServerConfig)
    providers: tuple[ProviderConfig, ...] = (
        ProviderConfig(name="anthropic", type="anthropic", base_url=DEFAULT_BASE_URLS["anthropic"]),
    )
    pricing: dict[str, PriceOverride] = field(default_factory=dict)
    usage: UsageConfig = field(default_factory=UsageConfig)
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
        data["pricing"] = {
            m: {k: v for k, v in p.items() if v is not None} for m, p in data["pricing"].items()
        }
        return data


class _Reader:
    """Walks the parsed TOML, turning each problem into a ConfigError that names the key."""

    def __init__(self, path: Path | None, text: str) -> None:
        self.path = path
        self.text = text

    def fail(self, key: str, reason: str) -> ConfigError:
        where = str(self.path) if self.path else "<config>"
        line = _line_of(self.text, key)
        loc = f"{where}:{line}" if line else where
        return ConfigError(f"{loc}: {key}: {reason}")

    def table(self, data: Any, key: str, allowed: set[str]) -> dict[str, Any]:
        if not isinstance(data, dict):
            raise self.fail(key, f"must be a table, not {_kind(data)}")
        for k in data:
            if k not in allowed:
                raise self.fail(
                    f"{key}.{k}" if key else k,
                    f"unknown key (expected one of: {', '.join(sorted(allowed))})",
                )
        return data

    def get(self, data: dict[str, Any], key: str, name: str, kind: type | tuple[type, ...], default: Any) -> Any:
        if name not in data:
            return default
        value = data[name]
        kinds = kind if isinstance(kind, tuple) else (kind,)
        # bool is an int in Python; a port of `true` is still wrong.
        if isinstance(value, bool) and bool not in kinds:
            raise self.fail(f"{key}.{name}", f"must be {_names(kinds)}, not a boolean")
        if not isinstance(value, kinds):
            raise self.fail(f"{key}.{name}", f"must be {_names(kinds)}, not {_kind(value)}")
        return value


def _kind(v: Any) -> str:
    return {dict: "a table", list: "an array", str: "a string", bool: "a boolean", int: "an integer", float: "a number"}.get(type(v), type(v).__name__)


def _names(kinds: tuple[type, ...]) -> str:
    return " or ".join(_kind(k()) for k in kinds)


_KEY_PART = re.compile(r'"[^"]*"|\[\d+\]|[^."\[\]\s]+')
_HEADER = re.compile(r"^\s*\[\[?([^\[\]]*)\]\]?\s*(?:#.*)?$")


def _header(line: str) -> list[str] | None:
    """The table path a header line opens (`[pricing."a.b"]` -> ['pricing', 'a.b']), or None."""
    m = _HEADER.match(line)
    return [p.strip('"') for p in _KEY_PART.findall(m.group(1))] if m else None


def _line_of(text: str, key: str) -> int | None:
    """Best-effort line of a dotted key like `providers[1].type` or `pricing."m"` in the TOML text."""
    parts = [p.strip('"') for p in _KEY_PART.findall(key)]
    lines = text.splitlines()
    headers = [_header(line) for line in lines]
    table: list[str] = []
    start, found = 0, None
    for n, part in enumerate(parts):
        if re.fullmatch(r"\[\d+\]", part):
            hits = [i for i in range(start, len(lines)) if headers[i] == table and lines[i].lstrip().startswith("[[")]
            if int(part[1:-1]) >= len(hits):
                return found
            start = found = hits[int(part[1:-1])] + 1
            continue
        # A key of the current table: search only up to the next table header.
        end = next((i for i in range(start, len(lines)) if headers[i] is not None), len(lines))
        for i in range(start, end):
            if re.match(rf'^\s*"?{re.escape(part)}"?\s*=', lines[i]):
                return i + 1
        table.append(part)
        hit = next((i for i in range(start, len(lines)) if headers[i] == table), None)
        followed_by_index = n + 1 < len(parts) and parts[n + 1].startswith("[")
        if hit is not None and not followed_by_index:
            start = found = hit + 1
    return found


def parse(text: str, path: Path | None = None, env: dict[str, str] | None = None) -> Config:
    """Validate config `text` and return the effective Config, environment applied."""
    env = dict(os.environ) if env is None else env
    r = _Reader(path, text)
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        at = re.search(r"at line (\d+)", str(e))
        where = f"{path or '<config>'}:{at.group(1)}" if at else f"{path or '<config>'}"
        raise ConfigError(f"{where}: not valid TOML: {e}") from None
    for section in PLANNED_SECTIONS:
        if section in raw:
            raise r.fail(section, f"the [{section}] section is not supported by this version of claude-sidecar yet")
    r.table(raw, "", {"server", "providers", "pricing", "usage"})

    server = _server(r, raw.get("server", {}))
    if env.get("CLAUDE_SIDECAR_PORT"):
        try:
            port = int(env["CLAUDE_SIDECAR_PORT"])
        except ValueError:
            raise ConfigError(f"CLAUDE_SIDECAR_PORT: must be a port number, not {env['CLAUDE_SIDECAR_PORT']!r}") from None
        if not 0 <= port <= 65535:
            raise ConfigError(f"CLAUDE_SIDECAR_PORT: {port} is not a port (0-65535)")
        server = ServerConfig(**{**asdict(server), "port": port})

    providers = _providers(r, raw.get("providers"))
    pricing = _pricing(r, raw.get("pricing", {}))
    u = r.table(raw.get("usage", {}), "usage", {"timezone"})
    tz = r.get(u, "usage", "timezone", str, None)
    if tz is not None:
        try:
            ZoneInfo(tz)
        except (ZoneInfoNotFoundError, ValueError):
            raise r.fail("usage.timezone", f"{tz!r} is not an IANA time zone (e.g. 'Europe/Berlin')") from None
    return Config(server=server, providers=providers, pricing=pricing, usage=UsageConfig(timezone=tz), source=path)


def _server(r: _Reader, data: Any) -> ServerConfig:
    d = r.table(data, "server", {"host", "port", "unix_socket", "require_token", "shutdown_grace_seconds"})
    host = r.get(d, "server", "host", str, "127.0.0.1")
    port = r.get(d, "server", "port", int, DEFAULT_PORT)
    if not 0 <= port <= 65535:
        raise r.fail("server.port", f"{port} is not a port (0-65535)")
    sock = r.get(d, "server", "unix_socket", (str, bool), None)
    if sock is False:
        sock = None
    elif sock is True:
        sock = ""  # the default path in the state dir
    grace = float(r.get(d, "server", "shutdown_grace_seconds", (int, float), 30.0))
    if grace < 0:
        raise r.fail("server.shutdown_grace_seconds", "must not be negative")
    return ServerConfig(
        host=host,
        port=port,
        unix_socket=sock,
        require_token=r.get(d, "server", "require_token", bool, False),
        shutdown_grace_seconds=grace,
    )


def _providers(r: _Reader, data: Any) -> tuple[ProviderConfig, ...]:
    if data is None:
        return Config().providers
    if not isinstance(data, list):
        raise r.fail("providers", "must be an array of tables ([[providers]])")
    out: list[ProviderConfig] = []
    for i, item in enumerate(data):
        key = f"providers[{i}]"
        if not isinstance(item, dict):
            raise r.fail(key, f"must be a table, not {_kind(item)}")
        ptype = r.get(item, key, "type", str, None)
        if ptype is None:
            raise r.fail(key, "missing required key 'type'")
        if ptype not in PROVIDER_TYPES:
            raise r.fail(f"{key}.type", f"{ptype!r} is not supported (supported: {', '.join(PROVIDER_TYPES)})")
        spec = registry.TYPES[ptype].options
        d = r.table(item, key, _PROVIDER_KEYS | set(spec))
        options = {o: r.get(d, key, o, kinds, None) for o, kinds in spec.items() if o in d}
        name = r.get(d, key, "name", str, None)
        if name is None:
            raise r.fail(key, "missing required key 'name'")
        if not _NAME_RE.match(name):
            raise r.fail(f"{key}.name", f"{name!r} must be lower-case letters, digits, '-' or '_'")
        if any(p.name == name for p in out):
            raise r.fail(f"{key}.name", f"provider {name!r} is defined twice")
        base_url = r.get(d, key, "base_url", str, None) or registry.default_base_url(ptype, options)
        if base_url is None:
            need = "'base_url'" + (" or 'region'" if ptype in ("bedrock", "vertex") else "")
            raise r.fail(key, f"a provider of type {ptype!r} needs {need}")
        base_url = base_url.rstrip("/")
        if not re.match(r"^https?://[^/\s]+", base_url):
            raise r.fail(f"{key}.base_url", f"{base_url!r} must be an http(s) URL")
        keys = r.get(d, key, "keys", list, [])
        for j, k in enumerate(keys):
            if not isinstance(k, str) or not re.match(r"^(keyring|env):\S+$", k):
                raise r.fail(f"{key}.keys", f"entry {j} ({k!r}) must be 'keyring:NAME' or 'env:VAR'")
        timeouts = {}
        for t in ("connect_timeout", "read_timeout"):
            v = r.get(d, key, t, (int, float), None)
            if v is not None:
                if v <= 0:
                    raise r.fail(f"{key}.{t}", "must be a positive number of seconds")
                timeouts[t] = float(v)
        out.append(ProviderConfig(name=name, type=ptype, base_url=base_url, keys=tuple(keys), options=options, **timeouts))
    if not out:
        raise r.fail("providers", "at least one provider is needed")
    return tuple(out)


def _pricing(r: _Reader, data: Any) -> dict[str, PriceOverride]:
    d = r.table(data, "pricing", set(data) if isinstance(data, dict) else set())
    out: dict[str, PriceOverride] = {}
    for model, spec in d.items():
        key = f"pricing.{model}" if re.fullmatch(r"[A-Za-z0-9_-]+", model) else f'pricing."{model}"'
        s = r.table(spec, key, {"input", "output", "cache_read", "cache_write"})
        vals: dict[str, float | None] = {}
        for f in ("input", "output", "cache_read", "cache_write"):
            v = r.get(s, key, f, (int, float), None)
            if v is not None and v < 0:
                raise r.fail(f"{key}.{f}", "a price must not be negative")
            vals[f] = None if v is None else float(v)
        if vals["input"] is None or vals["output"] is None:
            raise r.fail(key, "needs both 'input' and 'output' (USD per million tokens)")
        out[model] = PriceOverride(
            input=vals["input"], output=vals["output"], cache_read=vals["cache_read"], cache_write=vals["cache_write"]
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


DEFAULT_CONFIG = '''\
# claude-sidecar configuration. Every key is optional; the values shown are the defaults.
# Check it with `claude-sidecar config check`; see the effective config with `config show`.

[server]
# host = "127.0.0.1"          # loopback only; requests with a foreign Host are refused
# port = 8787                 # CLAUDE_SIDECAR_PORT overrides; the next free port is used if taken
# unix_socket = false         # true: listen on <state dir>/sidecar.sock (mode 0600) too, or a path
# require_token = false       # require the local token on the proxy even when forwarding client keys
# shutdown_grace_seconds = 30 # how long in-flight streams may finish on stop

# The Anthropic API. With no `keys` the sidecar forwards the client's own credentials
# (x-api-key or a Claude subscription's Bearer token) untouched.
[[providers]]
name = "anthropic"
type = "anthropic"
# base_url = "https://api.anthropic.com"
# keys = ["keyring:anthropic"]   # or "env:VAR"; set with `claude-sidecar keys set anthropic`
# connect_timeout = 10
# read_timeout = 600

# Prices come from the genai-prices library; override a model here (USD per million tokens).
# [pricing."claude-opus-4-8"]
# input = 5.0
# output = 25.0
# cache_read = 0.5
# cache_write = 6.25

[usage]
# timezone = "Europe/Berlin"  # where days and months are cut in reports; default: the local zone
'''
