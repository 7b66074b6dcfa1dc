"""The TOML config: load, validate, defaults and environment overrides.

Validation is strict: an unknown key is an error (a typo must not silently turn a feature
off), and every error names the file, the key, its line when it can be found, and why.
"""

from __future__ import annotations

import fnmatch
import os
import re
import tomllib
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sidecar.errors import ConfigError
from sidecar.mcp.settings import McpConfig, read_mcp
from sidecar.net import host_is_loopback
from sidecar.observability.settings import ObservabilityConfig, read_observability
from sidecar.providers import registry
from sidecar.routing.config import RouteConfig, RoutingConfig, read_routes, read_routing
from sidecar.sync.settings import SyncConfig, read_sync

DEFAULT_PORT = 8787
PROVIDER_TYPES = tuple(registry.TYPES)
DEFAULT_BASE_URLS = {"anthropic": "https://api.anthropic.com"}
_PROVIDER_KEYS = {"name", "type", "base_url", "keys", "connect_timeout", "read_timeout"}
# Sections of the product's config that later versions read; named so the error is clear.
_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")


@dataclass(frozen=True)
class ServerConfig:
    """Where and how the daemon listens."""

    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    unix_socket: str | None = None
    require_token: bool = False
    shutdown_grace_seconds: float = 30.0
    # Limits on what a client may hold (see docs/configuration.md, "Listener limits").
    header_timeout_seconds: float = 30.0  # a request head must arrive within this of its first byte
    body_timeout_seconds: float = 30.0  # the longest pause inside a request body
    request_timeout_seconds: float = 300.0  # a whole request body must arrive within this
    idle_timeout_seconds: float = 60.0  # an idle keep-alive connection is closed after this
    max_connections: int = 512  # more are refused (503), after the idlest ones were closed
    max_body_mb: float = 64.0  # a larger body is refused with 413 (up front from Content-Length)

    @property
    def max_body_bytes(self) -> int:
        """`max_body_mb` in bytes."""
        return int(self.max_body_mb * 1024 * 1024)

    @property
    def loopback(self) -> bool:
        """Whether the listener is bound to a loopback address (the safe default)."""
        return host_is_loopback(self.host)


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


CACHE_MODES = ("off", "exact", "semantic", "shadow")
# Below this the measured false-hit rate on coding prompts passes a few percent (docs/cache.md).
MIN_SEMANTIC_THRESHOLD = 0.85


@dataclass(frozen=True)
class CacheConfig:
    """The response cache: exact repeats always, paraphrases within one conversation optionally."""

    mode: str = "exact"  # off | exact | semantic | shadow (semantic decisions logged, never served)
    ttl_seconds: float = 86400.0  # how long an exact entry is served
    semantic_ttl_seconds: float = 3600.0  # how long an entry may answer a paraphrase
    reask_window_seconds: float = 120.0  # the same question again this soon goes upstream
    max_mb: float = 256.0  # size cap of the stored answers; least recently used go first
    threshold: float = 0.95  # cosine similarity a paraphrase needs (all-MiniLM-L6-v2)
    min_words: int = 4  # shorter final prompts never match semantically
    embed_timeout_ms: float = 100.0  # a slower embedding skips the semantic lookup
    read_only_tools: tuple[str, ...] = ("Read", "Grep", "Glob", "LS")  # calls a paraphrase may replay
    normalise: tuple[str, ...] = ("billing-header", "current-date")  # volatile system parts ignored by keys


@dataclass(frozen=True)
class UsageConfig:
    """How usage is reported, and what happens while it cannot be recorded."""

    timezone: str | None = None
    # While the ledger cannot be written (full disk, read-only store): "refuse" new requests
    # with a 503 until it recovers, or "serve" them and keep their records in memory.
    on_storage_failure: str = "refuse"


# ---------------------------------------------------------------- governance sections
# [budget], [limits], [guardrails], [tools] and [policy]: the local form of the policy a
# central server will later sign and push (sidecar.policy.model.Policy reads the same
# shapes from its JSON document through `read_governance`).

GUARDRAIL_MODES = ("off", "warn", "redact", "block")


@dataclass(frozen=True)
class BudgetConfig:
    """Spending limits of this developer in USD per calendar day, week (from Monday) and month,
    cut in the [usage] time zone; None means no limit for that period."""

    daily_usd: float | None = None
    weekly_usd: float | None = None
    monthly_usd: float | None = None
    thresholds: tuple[float, ...] = (0.8, 0.95)  # fractions that raise a budget_threshold event
    default_output_tokens: int = 4096  # output estimate for a model with no recent history


@dataclass(frozen=True)
class LimitsConfig:
    """Rate limits as token buckets that refill continuously; None means no limit."""

    requests_per_minute: int | None = None
    input_tokens_per_minute: int | None = None
    output_tokens_per_minute: int | None = None
    max_concurrent: int | None = None
    queue_seconds: float = 30.0  # how long a request waits for a free slot before a 429


@dataclass(frozen=True)
class CustomGuardrail:
    """A guardrail of the org's own: a regular expression and what to do on a match."""

    name: str
    pattern: str
    mode: str


@dataclass(frozen=True)
class GuardrailsConfig:
    """What to do when an outgoing prompt holds a secret, personal data or a custom match."""

    secrets: str = "off"  # mode of every secret detector: off | warn | redact | block
    pii: str = "off"  # mode of the personal-data detectors (email, phone, card_number)
    detectors: dict[str, str] = field(default_factory=dict)  # per-detector mode overrides
    custom: tuple[CustomGuardrail, ...] = ()


@dataclass(frozen=True)
class ToolsConfig:
    """Which tools the model may be offered and may call, by name or glob (`mcp__github__*`)."""

    allow: tuple[str, ...] = ()  # empty: every tool that is not denied
    deny: tuple[str, ...] = ()


@dataclass(frozen=True)
class PolicyConfig:
    """Which providers and models requests may use, and what the audit log keeps."""

    providers: tuple[str, ...] = ()  # empty: any configured provider
    models: tuple[str, ...] = ()  # model globs requests may name; empty: any
    deny_models: tuple[str, ...] = ()
    log_content: bool = False  # keep prompt and response bodies in the audit log
    audit: bool = True  # the hash-chained audit log of every request and decision


@dataclass(frozen=True)
class Governance:
    """The five governance sections, as read from the config or a policy document."""

    budget: BudgetConfig = field(default_factory=BudgetConfig)
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    guardrails: GuardrailsConfig = field(default_factory=GuardrailsConfig)
    tools: ToolsConfig = field(default_factory=ToolsConfig)
    policy: PolicyConfig = field(default_factory=PolicyConfig)


GOVERNANCE_SECTIONS = ("budget", "limits", "guardrails", "tools", "policy")


def read_governance(data: dict[str, Any], source: str = "<policy>", text: str = "") -> Governance:
    """Validate the governance sections of `data` (a parsed config or policy document)."""
    r = _Reader(Path(source), text)
    return _governance(r, data)


def _governance(r: _Reader, raw: dict[str, Any]) -> Governance:
    return Governance(
        budget=_budget(r, raw.get("budget", {})),
        limits=_limits(r, raw.get("limits", {})),
        guardrails=_guardrails(r, raw.get("guardrails", {})),
        tools=_tools(r, raw.get("tools", {})),
        policy=_policy(r, raw.get("policy", {})),
    )


def _positive(r: _Reader, d: dict[str, Any], key: str, name: str, kind: type | tuple[type, ...]) -> Any:
    v = r.get(d, key, name, kind, None)
    if v is not None and v <= 0:
        raise r.fail(f"{key}.{name}", "must be a positive number (leave it out for no limit)")
    return v


def _globs(r: _Reader, d: dict[str, Any], key: str, name: str) -> tuple[str, ...]:
    items = r.get(d, key, name, list, [])
    for i, item in enumerate(items):
        if not isinstance(item, str) or not item.strip():
            raise r.fail(f"{key}.{name}", f"entry {i} ({item!r}) must be a non-empty string")
    return tuple(items)


def _budget(r: _Reader, data: Any) -> BudgetConfig:
    d = r.table(data, "budget", {"daily_usd", "weekly_usd", "monthly_usd", "thresholds", "default_output_tokens"})
    limits = {p: _positive(r, d, "budget", p, (int, float)) for p in ("daily_usd", "weekly_usd", "monthly_usd")}
    thresholds = r.get(d, "budget", "thresholds", list, [0.8, 0.95])
    for t in thresholds:
        if isinstance(t, bool) or not isinstance(t, int | float) or not 0 < t <= 1:
            raise r.fail("budget.thresholds", f"{t!r} is not a fraction between 0 and 1 (e.g. 0.8)")
    out_tokens = _positive(r, d, "budget", "default_output_tokens", int) or 4096
    return BudgetConfig(
        **{p: None if v is None else float(v) for p, v in limits.items()},
        thresholds=tuple(sorted({float(t) for t in thresholds})),
        default_output_tokens=out_tokens,
    )


def _limits(r: _Reader, data: Any) -> LimitsConfig:
    names = ("requests_per_minute", "input_tokens_per_minute", "output_tokens_per_minute", "max_concurrent")
    d = r.table(data, "limits", {*names, "queue_seconds"})
    queue = r.get(d, "limits", "queue_seconds", (int, float), 30.0)
    if queue < 0:
        raise r.fail("limits.queue_seconds", "must not be negative")
    return LimitsConfig(**{n: _positive(r, d, "limits", n, int) for n in names}, queue_seconds=float(queue))


def _mode(r: _Reader, d: dict[str, Any], key: str, name: str, default: str) -> str:
    mode = r.get(d, key, name, str, default)
    if mode not in GUARDRAIL_MODES:
        raise r.fail(f"{key}.{name}", f"{mode!r} is not a mode (expected one of: {', '.join(GUARDRAIL_MODES)})")
    return str(mode)


def _guardrails(r: _Reader, data: Any) -> GuardrailsConfig:
    from sidecar.policy.detectors import DETECTORS  # regexes compile on first use only

    d = r.table(data, "guardrails", {"secrets", "pii", "detectors", "custom"})
    overrides = r.table(d.get("detectors", {}), "guardrails.detectors", set(DETECTORS))
    detectors = {n: _mode(r, overrides, "guardrails.detectors", n, "off") for n in overrides}
    custom: list[CustomGuardrail] = []
    items = r.get(d, "guardrails", "custom", list, [])
    for i, item in enumerate(items):
        key = f"guardrails.custom[{i}]"
        c = r.table(item, key, {"name", "pattern", "mode"})
        name, pattern = r.get(c, key, "name", str, None), r.get(c, key, "pattern", str, None)
        if not name or not pattern:
            raise r.fail(key, "needs a 'name' and a 'pattern' (a regular expression)")
        if not _NAME_RE.match(name) or name in DETECTORS or any(x.name == name for x in custom):
            raise r.fail(f"{key}.name", f"{name!r} must be a new lower-case name (letters, digits, '-', '_')")
        try:
            compiled = re.compile(pattern)
        except re.error as e:
            raise r.fail(f"{key}.pattern", f"not a valid regular expression: {e}") from None
        if compiled.fullmatch(""):
            raise r.fail(f"{key}.pattern", "matches the empty string, so it would match everywhere")
        custom.append(CustomGuardrail(name, pattern, _mode(r, c, key, "mode", "redact")))
    return GuardrailsConfig(
        secrets=_mode(r, d, "guardrails", "secrets", "off"),
        pii=_mode(r, d, "guardrails", "pii", "off"),
        detectors=detectors,
        custom=tuple(custom),
    )


def _tools(r: _Reader, data: Any) -> ToolsConfig:
    d = r.table(data, "tools", {"allow", "deny"})
    return ToolsConfig(allow=_globs(r, d, "tools", "allow"), deny=_globs(r, d, "tools", "deny"))


def _policy(r: _Reader, data: Any) -> PolicyConfig:
    d = r.table(data, "policy", {"providers", "models", "deny_models", "log_content", "audit"})
    return PolicyConfig(
        providers=_globs(r, d, "policy", "providers"),
        models=_globs(r, d, "policy", "models"),
        deny_models=_globs(r, d, "policy", "deny_models"),
        log_content=r.get(d, "policy", "log_content", bool, False),
        audit=r.get(d, "policy", "audit", bool, True),
    )


def _check_policy_providers(r: _Reader, policy: PolicyConfig, providers: tuple[ProviderConfig, ...]) -> None:
    for glob in policy.providers:
        if not any(fnmatch.fnmatchcase(p.name, glob) for p in providers):
            raise r.fail("policy.providers", f"{glob!r} names no configured provider")


def _governance_data(sections: dict[str, Any]) -> dict[str, Any]:
    """The governance part of `asdict(config)` as TOML tables (None values left out)."""
    return {name: {k: v for k, v in table.items() if v is not None} for name, table in sections.items()}


# ---------------------------------------------------------------- end of governance sections


@dataclass(frozen=True)
class ClaudeCodeConfig:
    """[claude_code]: what the sidecar serves Claude Code as its gateway. `settings` is the
    managed-settings.json for /managed/settings (permissions, env, model choices, ...); None
    means no managed policy (a 404), which differs from an empty table (an empty policy).
    `otlp_forward` is the org's OTLP/HTTP collector (its base URL) that Claude Code's own
    telemetry is also sent to, as received."""

    settings: dict[str, Any] | None = None
    otlp_forward: str | None = None


def _claude_code(r: _Reader, data: Any) -> ClaudeCodeConfig:
    d = r.table(data, "claude_code", {"settings", "otlp_forward"})
    settings = r.get(d, "claude_code", "settings", dict, None)
    forward = r.get(d, "claude_code", "otlp_forward", str, None)
    if forward is not None and not re.match(r"^https?://[^/\s]+", forward):
        raise r.fail("claude_code.otlp_forward", f"{forward!r} is not an http(s) URL of an OTLP collector")
    return ClaudeCodeConfig(settings=settings, otlp_forward=forward.rstrip("/") if forward else None)


@dataclass(frozen=True)
class Config:
    """The effective configuration of one sidecar."""

    server: ServerConfig = field(default_factory=ServerConfig)
    providers: tuple[ProviderConfig, ...] = (
        ProviderConfig(name="anthropic", type="anthropic", base_url=DEFAULT_BASE_URLS["anthropic"]),
    )
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
        data.update(_governance_data(data.pop("governance")))
        data["claude_code"] = {k: v for k, v in data["claude_code"].items() if v is not None}
        if not data["claude_code"]:
            del data["claude_code"]
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
    r.table(raw, "", {"server", "providers", "pricing", "usage", "cache", "routes", "routing", "claude_code", "observability", "mcp", "sync", *GOVERNANCE_SECTIONS})

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
    u = r.table(raw.get("usage", {}), "usage", {"timezone", "on_storage_failure"})
    tz = r.get(u, "usage", "timezone", str, None)
    on_storage_failure = str(r.get(u, "usage", "on_storage_failure", str, "refuse"))
    if on_storage_failure not in ("refuse", "serve"):
        raise r.fail("usage.on_storage_failure", f"{on_storage_failure!r} is not one of refuse, serve")
    if tz is not None:
        try:
            ZoneInfo(tz)
        except (ZoneInfoNotFoundError, ValueError):
            raise r.fail("usage.timezone", f"{tz!r} is not an IANA time zone (e.g. 'Europe/Berlin')") from None
    governance = _governance(r, raw)
    _check_policy_providers(r, governance.policy, providers)
    return Config(
        server=server, providers=providers, pricing=pricing, usage=UsageConfig(timezone=tz, on_storage_failure=on_storage_failure), governance=governance,
        cache=_cache(r, raw.get("cache", {})), source=path,
        routes=read_routes(r, raw.get("routes"), providers), routing=read_routing(r, raw.get("routing")),
        claude_code=_claude_code(r, raw.get("claude_code", {})),
        observability=read_observability(r, raw.get("observability", {})),
        mcp=read_mcp(r, raw.get("mcp", {})),
        sync=read_sync(r, raw.get("sync", {})),
    )


def _cache(r: _Reader, data: Any) -> CacheConfig:
    from sidecar.cache.normalise import RULES  # the named normalisations of volatile system parts

    names = {f.name for f in fields(CacheConfig)}
    d = r.table(data, "cache", names)
    c = CacheConfig()
    mode = r.get(d, "cache", "mode", str, c.mode)
    if mode not in CACHE_MODES:
        raise r.fail("cache.mode", f"{mode!r} is not a mode (expected one of: {', '.join(CACHE_MODES)})")
    seconds = {}
    for name in ("ttl_seconds", "semantic_ttl_seconds", "reask_window_seconds", "max_mb", "embed_timeout_ms"):
        v = r.get(d, "cache", name, (int, float), getattr(c, name))
        if v < 0 or (v == 0 and name != "reask_window_seconds"):
            raise r.fail(f"cache.{name}", "must be a positive number" + (" or 0" if name == "reask_window_seconds" else ""))
        seconds[name] = float(v)
    threshold = float(r.get(d, "cache", "threshold", (int, float), c.threshold))
    if not MIN_SEMANTIC_THRESHOLD <= threshold <= 1:
        raise r.fail("cache.threshold", f"{threshold} is not between {MIN_SEMANTIC_THRESHOLD} and 1 (a lower threshold serves wrong answers)")
    min_words = r.get(d, "cache", "min_words", int, c.min_words)
    if min_words < 1:
        raise r.fail("cache.min_words", "must be at least 1")
    tools = _globs(r, d, "cache", "read_only_tools") if "read_only_tools" in d else c.read_only_tools
    rules = _globs(r, d, "cache", "normalise") if "normalise" in d else c.normalise
    for rule in rules:
        if rule not in RULES:
            raise r.fail("cache.normalise", f"{rule!r} is not a normalisation (expected some of: {', '.join(RULES)})")
    return CacheConfig(mode=mode, threshold=threshold, min_words=min_words, read_only_tools=tools, normalise=rules, **seconds)


def _server(r: _Reader, data: Any) -> ServerConfig:
    d = r.table(data, "server", {"host", "port", "unix_socket", "require_token", "shutdown_grace_seconds", *_LIMITS})
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
    limits: dict[str, Any] = {}
    for key, default in _LIMITS.items():
        value = r.get(d, "server", key, (int, float), default)
        if isinstance(value, bool) or value <= 0:
            raise r.fail(f"server.{key}", "must be a positive number")
        limits[key] = int(value) if isinstance(default, int) else float(value)
    return ServerConfig(
        host=host,
        port=port,
        unix_socket=sock,
        require_token=r.get(d, "server", "require_token", bool, False),
        shutdown_grace_seconds=grace,
        **limits,
    )


_LIMITS: dict[str, float | int] = {
    f.name: getattr(ServerConfig(), f.name)
    for f in fields(ServerConfig)
    if f.name.endswith(("_timeout_seconds", "max_connections", "max_body_mb"))
}


def warnings(cfg: Config) -> list[str]:
    """What in `cfg` is allowed but risky (`config check` and the daemon's log say it loudly)."""
    out = []
    if not cfg.server.loopback:
        out.append(
            f"server.host = {cfg.server.host!r} listens beyond this machine: anyone who can reach it may try it. "
            "The local token is required on every request (the Host check is relaxed); bind 127.0.0.1 unless you mean it"
        )
    return out


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
        for o, value in options.items():
            words = registry.CHOICES.get((ptype, o))
            if words and value not in words:
                raise r.fail(f"{key}.{o}", f"{value!r} is not one of: {', '.join(words)}")
        if ptype in ("openai", "openai-compatible"):
            from sidecar.protocol.openai import read_options  # presets and quirks, checked at start

            try:
                read_options(str(item.get("name")), ptype, options)
            except ConfigError as e:
                raise r.fail(key, e.message) from None
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
# shutdown_grace_seconds = 30 # how long in-flight streams may finish on stop (then they are reset)
# header_timeout_seconds = 30 # a request head must arrive within this of its first byte (else 408)
# body_timeout_seconds = 30   # the longest pause inside a request body (else 408)
# request_timeout_seconds = 300 # a whole request body must arrive within this (else 408)
# idle_timeout_seconds = 60   # an idle keep-alive connection is closed after this
# max_connections = 512       # at most this many client connections (lowered to fit the open-file limit)
# max_body_mb = 64            # a larger request body is refused with 413

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
# on_storage_failure = "refuse"  # usage cannot be recorded (disk full): refuse new requests (503) | serve

# The response cache. A repeated request is answered from the cache in milliseconds at no
# cost; `claude-sidecar cache stats` shows hits and savings, `cache clear` empties it.
# [cache]
# mode = "exact"                  # off | exact | semantic | shadow (semantic hits logged, not served)
# ttl_seconds = 86400             # how long an exact answer is served
# reask_window_seconds = 120      # the same request again this soon goes upstream (a new answer)
# max_mb = 256                    # size cap; the least recently used answers are evicted
# semantic_ttl_seconds = 3600     # semantic tier: how long an answer may serve a paraphrase
# threshold = 0.95                # cosine similarity a paraphrase needs (all-MiniLM-L6-v2, >= 0.85)
# min_words = 4                   # shorter final prompts ("yes", "continue") never match semantically
# embed_timeout_ms = 100          # a busy CPU skips the semantic lookup instead of slowing the request
# read_only_tools = ["Read", "Grep", "Glob", "LS"]   # tool calls a paraphrase may be answered with
# normalise = ["billing-header", "current-date"]     # volatile system parts the keys ignore

# Budgets in USD per calendar day, week (from Monday) and month, cut in the [usage] zone.
# Each request reserves an estimate first and is refused (429, until the reset) when it
# does not fit; the reservation is settled with the usage the provider reports.
# [budget]
# daily_usd = 25
# weekly_usd = 100
# monthly_usd = 400
# thresholds = [0.8, 0.95]        # fractions of a budget that raise a budget_threshold event
# default_output_tokens = 4096    # output estimate for a model with no recent answers

# Rate limits as token buckets (a full minute's worth, refilled continuously).
# [limits]
# requests_per_minute = 120
# input_tokens_per_minute = 400000
# output_tokens_per_minute = 80000
# max_concurrent = 8
# queue_seconds = 30              # how long a request waits for a free slot before a 429

# Guardrails on outgoing prompts; a mode is off | warn | redact | block.
# [guardrails]
# secrets = "redact"              # cloud and provider keys, tokens, private keys, passwords in URLs
# pii = "warn"                    # email addresses, phone numbers, card numbers (Luhn-checked)
# [guardrails.detectors]          # one detector's own mode, e.g.
# email = "off"
# [[guardrails.custom]]
# name = "ticket-ids"
# pattern = "ACME-[0-9]{6}"
# mode = "redact"

# Tools the model is offered and may call, by name or glob (MCP tools: mcp__server__tool).
# [tools]
# allow = []                      # empty: every tool that is not denied
# deny = ["mcp__*__delete_*"]

# MCP servers served to Claude Code as one endpoint, /mcp (docs/mcp.md).
# Their tools follow the [tools] rules (as mcp__<server>__<tool>); every call is checked, audited, counted.
# Register it: `claude-sidecar mcp register` prints the `claude mcp add` line.
# [mcp]
# code_mode = false               # true: three meta-tools and a sandboxed script instead of every tool
# [[mcp.servers]]
# name = "fs"
# command = "npx"                 # a stdio server; or url = "https://..." for streamable HTTP
# args = ["-y", "@modelcontextprotocol/server-filesystem", "/home/me/src"]
# env = { TOKEN = "keyring:fs-token" }   # keyring:NAME reads a stored credential

# [policy]
# providers = []                  # providers requests may go to; empty: any configured one
# models = []                     # model globs requests may name, e.g. ["claude-*"]; empty: any
# deny_models = []
# log_content = false             # keep prompt and response bodies in the audit log
# audit = true                    # the hash-chained audit log (`claude-sidecar audit verify`)

# Metrics, traces and logs (docs/operations.md).
# [observability]
# metrics = true                  # GET /metrics for Prometheus (needs the local token)
# otlp_endpoint = "http://127.0.0.1:4318/v1/traces"   # OpenTelemetry spans over OTLP/HTTP; unset: off
# log_format = "text"             # text | json
# log_level = "info"              # debug | info | warning | error
# log_max_mb = 10                 # the log file rotates at this size, keeping log_backups old files
# log_backups = 5
'''
