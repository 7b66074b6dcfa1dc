"""The `[[routes]]` and `[routing]` config sections: dataclasses and their strict reader.

```toml
[routing]
allow_explicit = ["openai/*"]      # clients may name "provider/model" (or "provider,model") directly
long_context_tokens = 60000        # the `long_context` scenario starts here (estimated input tokens)
[routing.retry]
rounds = 1                         # after every target failed, go through them again this often
base_delay = 0.25                  # seconds; doubles per round, with jitter
max_delay = 4.0
max_retry_after = 10.0             # a longer retry-after from an upstream is not waited for
[routing.breaker]
failures = 5                       # consecutive failures that open a target's breaker
failure_rate = 0.5                 # ... or this share of the last `window` outcomes
window = 20
min_requests = 10
cooldown = 30.0                    # seconds before a half-open probe

[[routes]]
name = "background-cheap"
match = { scenario = "background" }      # model glob, header = {name = glob}, min_input_tokens
targets = [{ provider = "openai", model = "gpt-5-mini", weight = 3 },
           { provider = "anthropic", keys = ["env:TEAM_KEY"] }]
fallbacks = [{ provider = "anthropic" }]
strategy = "weighted"                    # weighted (random) | round_robin (smooth weighted)
affinity = true                          # keep a Claude Code session on one target and key
timeouts = { first_byte = 20 }           # until the answer's headers and, for streams, its first content
```
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sidecar.configread import Reader

if TYPE_CHECKING:
    from sidecar.providers.config import ProviderConfig

SCENARIOS = ("background", "subagent", "long_context", "thinking", "web_search", "image")
STRATEGIES = ("weighted", "round_robin")


@dataclass(frozen=True)
class MatchConfig:
    """What a route matches; every given condition must hold."""

    model: str | None = None  # a glob on the requested model
    scenario: tuple[str, ...] = ()  # any of these scenarios
    header: dict[str, str] = field(default_factory=dict)  # header name -> glob on its value
    min_input_tokens: int | None = None


@dataclass(frozen=True)
class TargetConfig:
    """Where a route may send a request."""

    provider: str
    model: str | None = None  # None: the model the client asked for
    weight: int = 1
    keys: tuple[str, ...] = ()  # only these of the provider's key sources ("env:X", "keyring:Y")
    exclude_keys: tuple[str, ...] = ()  # never these (e.g. a key that cannot use this model)


@dataclass(frozen=True)
class TimeoutsConfig:
    """Timeouts of a route's targets, in seconds. Connect and idle (between two reads)
    timeouts are the provider's `connect_timeout` and `read_timeout`."""

    first_byte: float | None = None  # until the answer's headers (and, for streams, its first content)


@dataclass(frozen=True)
class RouteConfig:
    """One `[[routes]]` entry."""

    name: str
    match: MatchConfig = field(default_factory=MatchConfig)
    targets: tuple[TargetConfig, ...] = ()
    fallbacks: tuple[TargetConfig, ...] = ()
    strategy: str = "weighted"
    affinity: bool = True
    enabled: bool = True
    timeouts: TimeoutsConfig = field(default_factory=TimeoutsConfig)


@dataclass(frozen=True)
class RetryConfig:
    """Retries after every target of a route failed before the first byte."""

    rounds: int = 1
    base_delay: float = 0.25
    max_delay: float = 4.0
    max_retry_after: float = 10.0


@dataclass(frozen=True)
class BreakerConfig:
    """When a target's circuit opens, and when it is probed again."""

    failures: int = 5
    failure_rate: float = 0.5
    window: int = 20
    min_requests: int = 10
    cooldown: float = 30.0


@dataclass(frozen=True)
class RoutingConfig:
    """The `[routing]` section."""

    allow_explicit: tuple[str, ...] = ()
    long_context_tokens: int = 60000
    first_byte_timeout: float = 60.0  # default for streams when a route sets none
    retry: RetryConfig = field(default_factory=RetryConfig)
    breaker: BreakerConfig = field(default_factory=BreakerConfig)


_GLOB_OK = re.compile(r"^[\x20-\x7e]+$")


def _number(r: Reader, d: dict[str, Any], key: str, name: str, default: float, *, minimum: float = 0.0, integer: bool = False) -> Any:
    kinds: tuple[type, ...] = (int,) if integer else (int, float)
    v = r.get(d, key, name, kinds, default)
    if v < minimum:
        raise r.fail(f"{key}.{name}", f"must be at least {minimum:g}")
    return v if integer else float(v)


def read_routing(r: Reader, data: Any) -> RoutingConfig:
    """Read `[routing]`."""
    if data is None:
        return RoutingConfig()
    d = r.table(data, "routing", {"allow_explicit", "long_context_tokens", "first_byte_timeout", "retry", "breaker"})
    allow = r.get(d, "routing", "allow_explicit", list, [])
    for i, a in enumerate(allow):
        if not isinstance(a, str) or "/" not in a:
            raise r.fail("routing.allow_explicit", f"entry {i} ({a!r}) must be 'provider/model-glob', e.g. 'openai/*'")
    rt = r.table(d.get("retry", {}), "routing.retry", {"rounds", "base_delay", "max_delay", "max_retry_after"})
    retry = RetryConfig(
        rounds=_number(r, rt, "routing.retry", "rounds", 1, integer=True),
        base_delay=_number(r, rt, "routing.retry", "base_delay", 0.25),
        max_delay=_number(r, rt, "routing.retry", "max_delay", 4.0),
        max_retry_after=_number(r, rt, "routing.retry", "max_retry_after", 10.0),
    )
    bk = r.table(d.get("breaker", {}), "routing.breaker", {"failures", "failure_rate", "window", "min_requests", "cooldown"})
    rate = _number(r, bk, "routing.breaker", "failure_rate", 0.5)
    if rate > 1:
        raise r.fail("routing.breaker.failure_rate", "is a share of requests: between 0 and 1")
    breaker = BreakerConfig(
        failures=_number(r, bk, "routing.breaker", "failures", 5, minimum=1, integer=True),
        failure_rate=rate,
        window=_number(r, bk, "routing.breaker", "window", 20, minimum=1, integer=True),
        min_requests=_number(r, bk, "routing.breaker", "min_requests", 10, minimum=1, integer=True),
        cooldown=_number(r, bk, "routing.breaker", "cooldown", 30.0),
    )
    return RoutingConfig(
        allow_explicit=tuple(allow),
        long_context_tokens=_number(r, d, "routing", "long_context_tokens", 60000, minimum=1, integer=True),
        first_byte_timeout=_number(r, d, "routing", "first_byte_timeout", 60.0, minimum=0.001),
        retry=retry,
        breaker=breaker,
    )


def _target(r: Reader, item: Any, key: str, providers: dict[str, ProviderConfig]) -> TargetConfig:
    d = r.table(item, key, {"provider", "model", "weight", "keys", "exclude_keys"})
    prov = r.get(d, key, "provider", str, None)
    if prov is None:
        raise r.fail(key, "missing required key 'provider'")
    if prov not in providers:
        raise r.fail(f"{key}.provider", f"no provider named {prov!r} (defined: {', '.join(providers)})")
    model = r.get(d, key, "model", str, None)
    ptype = providers[prov].type
    if model is None and ptype not in ("anthropic", "bedrock", "vertex"):
        raise r.fail(key, f"a target on provider {prov!r} (type {ptype}) needs 'model': it cannot serve Claude model names")
    weight = r.get(d, key, "weight", int, 1)
    if weight < 0:
        raise r.fail(f"{key}.weight", "must not be negative")
    sources = set(providers[prov].keys) | {f"keyring:{prov}"}
    picked: dict[str, tuple[str, ...]] = {}
    for name in ("keys", "exclude_keys"):
        lst = r.get(d, key, name, list, [])
        for j, k in enumerate(lst):
            if not isinstance(k, str) or (providers[prov].keys and k not in sources):
                raise r.fail(f"{key}.{name}", f"entry {j} ({k!r}) is not one of provider {prov!r}'s keys ({', '.join(sorted(sources))})")
        picked[name] = tuple(lst)
    return TargetConfig(provider=prov, model=model, weight=weight, keys=picked["keys"], exclude_keys=picked["exclude_keys"])


def _match(r: Reader, data: Any, key: str) -> MatchConfig:
    d = r.table(data, key, {"model", "scenario", "header", "min_input_tokens"})
    model = r.get(d, key, "model", str, None)
    if model is not None and not _GLOB_OK.match(model):
        raise r.fail(f"{key}.model", f"{model!r} is not a model glob")
    sc = r.get(d, key, "scenario", (str, list), [])
    scenarios = [sc] if isinstance(sc, str) else sc
    for s in scenarios:
        if s not in SCENARIOS:
            raise r.fail(f"{key}.scenario", f"{s!r} is not a scenario (one of: {', '.join(SCENARIOS)})")
    hdr = r.get(d, key, "header", dict, {})
    for hname, glob in hdr.items():
        if not isinstance(glob, str):
            raise r.fail(f"{key}.header", f"the value for {hname!r} must be a string (a glob)")
    mit = r.get(d, key, "min_input_tokens", int, None)
    if mit is not None and mit < 0:
        raise r.fail(f"{key}.min_input_tokens", "must not be negative")
    return MatchConfig(model=model, scenario=tuple(scenarios), header={k.lower(): v for k, v in hdr.items()}, min_input_tokens=mit)


def read_routes(r: Reader, data: Any, providers: tuple[ProviderConfig, ...]) -> tuple[RouteConfig, ...]:
    """Read `[[routes]]` against the configured providers."""
    if data is None:
        return ()
    if not isinstance(data, list):
        raise r.fail("routes", "must be an array of tables ([[routes]])")
    by_name = {p.name: p for p in providers}
    out: list[RouteConfig] = []
    allowed = {"name", "match", "targets", "fallbacks", "strategy", "affinity", "enabled", "timeouts"}
    for i, item in enumerate(data):
        key = f"routes[{i}]"
        d = r.table(item, key, allowed)
        name = r.get(d, key, "name", str, None)
        if name is None:
            raise r.fail(key, "missing required key 'name'")
        if not re.match(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$", name):
            raise r.fail(f"{key}.name", f"{name!r} must be letters, digits, '.', '-' or '_'")
        if any(o.name == name for o in out):
            raise r.fail(f"{key}.name", f"route {name!r} is defined twice")
        match = _match(r, d.get("match", {}), f"{key}.match")
        targets = r.get(d, key, "targets", list, None)
        if not targets:
            raise r.fail(key, "needs at least one entry in 'targets'")
        tgs = tuple(_target(r, t, f"{key}.targets[{j}]", by_name) for j, t in enumerate(targets))
        if not any(t.weight > 0 for t in tgs):
            raise r.fail(f"{key}.targets", "at least one target needs a weight above 0")
        fbs = tuple(_target(r, t, f"{key}.fallbacks[{j}]", by_name) for j, t in enumerate(r.get(d, key, "fallbacks", list, [])))
        strategy = r.get(d, key, "strategy", str, "weighted")
        if strategy not in STRATEGIES:
            raise r.fail(f"{key}.strategy", f"{strategy!r} is not one of: {', '.join(STRATEGIES)}")
        to = r.table(d.get("timeouts", {}), f"{key}.timeouts", {"first_byte"})
        timeouts = TimeoutsConfig(first_byte=_opt_positive(r, to, f"{key}.timeouts", "first_byte"))
        out.append(
            RouteConfig(
                name=name,
                match=match,
                targets=tgs,
                fallbacks=fbs,
                strategy=strategy,
                affinity=r.get(d, key, "affinity", bool, True),
                enabled=r.get(d, key, "enabled", bool, True),
                timeouts=timeouts,
            )
        )
    return tuple(out)


def _opt_positive(r: Reader, d: dict[str, Any], key: str, name: str) -> float | None:
    v = r.get(d, key, name, (int, float), None)
    if v is not None and v <= 0:
        raise r.fail(f"{key}.{name}", "must be a positive number of seconds")
    return None if v is None else float(v)
