"""The governance config sections: `[budget]`, `[limits]`, `[guardrails]`, `[tools]`, `[policy]`.

They are the local form of the policy a central server signs and pushes:
`sidecar.policy.model.Policy` reads the same shapes from its JSON document through
`read_governance`, so both forms go through one validation.
"""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sidecar.configread import NAME_RE, Reader, globs

if TYPE_CHECKING:
    from sidecar.providers.config import ProviderConfig

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
    return governance_from(Reader(Path(source), text), data)


def governance_from(r: Reader, raw: dict[str, Any]) -> Governance:
    """Validate the governance sections of `raw` with reader `r`."""
    return Governance(
        budget=_budget(r, raw.get("budget", {})),
        limits=_limits(r, raw.get("limits", {})),
        guardrails=_guardrails(r, raw.get("guardrails", {})),
        tools=_tools(r, raw.get("tools", {})),
        policy=_policy(r, raw.get("policy", {})),
    )


def _positive(r: Reader, d: dict[str, Any], key: str, name: str, kind: type | tuple[type, ...]) -> Any:
    v = r.get(d, key, name, kind, None)
    if v is not None and v <= 0:
        raise r.fail(f"{key}.{name}", "must be a positive number (leave it out for no limit)")
    return v


def _budget(r: Reader, data: Any) -> BudgetConfig:
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


def _limits(r: Reader, data: Any) -> LimitsConfig:
    names = ("requests_per_minute", "input_tokens_per_minute", "output_tokens_per_minute", "max_concurrent")
    d = r.table(data, "limits", {*names, "queue_seconds"})
    queue = r.get(d, "limits", "queue_seconds", (int, float), 30.0)
    if queue < 0:
        raise r.fail("limits.queue_seconds", "must not be negative")
    return LimitsConfig(**{n: _positive(r, d, "limits", n, int) for n in names}, queue_seconds=float(queue))


def _mode(r: Reader, d: dict[str, Any], key: str, name: str, default: str) -> str:
    mode = r.get(d, key, name, str, default)
    if mode not in GUARDRAIL_MODES:
        raise r.fail(f"{key}.{name}", f"{mode!r} is not a mode (expected one of: {', '.join(GUARDRAIL_MODES)})")
    return str(mode)


def _guardrails(r: Reader, data: Any) -> GuardrailsConfig:
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
        if not NAME_RE.match(name) or name in DETECTORS or any(x.name == name for x in custom):
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


def _tools(r: Reader, data: Any) -> ToolsConfig:
    d = r.table(data, "tools", {"allow", "deny"})
    return ToolsConfig(allow=globs(r, d, "tools", "allow"), deny=globs(r, d, "tools", "deny"))


def _policy(r: Reader, data: Any) -> PolicyConfig:
    d = r.table(data, "policy", {"providers", "models", "deny_models", "log_content", "audit"})
    return PolicyConfig(
        providers=globs(r, d, "policy", "providers"),
        models=globs(r, d, "policy", "models"),
        deny_models=globs(r, d, "policy", "deny_models"),
        log_content=r.get(d, "policy", "log_content", bool, False),
        audit=r.get(d, "policy", "audit", bool, True),
    )


def check_policy_providers(r: Reader, policy: PolicyConfig, providers: tuple[ProviderConfig, ...]) -> None:
    """Every `[policy] providers` glob must name a configured provider."""
    for glob in policy.providers:
        if not any(fnmatch.fnmatchcase(p.name, glob) for p in providers):
            raise r.fail("policy.providers", f"{glob!r} names no configured provider")


def governance_data(sections: dict[str, Any]) -> dict[str, Any]:
    """The governance part of `asdict(config)` as TOML tables (None values left out)."""
    return {name: {k: v for k, v in table.items() if v is not None} for name, table in sections.items()}
