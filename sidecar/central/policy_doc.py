"""Scoped policy documents: validation, and the org -> team -> developer merge.

A document is the policy the sidecar enforces (`sidecar.policy.model.Policy`: budget,
limits, guardrails, tools, policy) plus `routes` and `providers` (without secrets), and at
the org scope only, `ceilings`: the keys a narrower scope may tighten but never loosen.

Merge rules, applied org first, then the developer's team, then the developer:

- a key a narrower scope leaves out is inherited; a key it sets replaces the broader value,
  except:
- deny lists (`policy.deny_models`, `tools.deny`) are unions: a narrower scope only adds;
- `guardrails.custom` is a union by name (a narrower rule of the same name replaces);
- for a key in the org's `ceilings`:
  - numeric limits (`budget.*_usd`, `limits.*_per_minute`, `limits.max_concurrent`): the
    effective value is the smallest along the chain;
  - guardrail modes (`guardrails.secrets`, `guardrails.pii`, `guardrails.detectors.NAME`,
    ordered off < warn < redact < block): the strictest along the chain;
  - allow lists (`policy.models`, `policy.providers`, `tools.allow`): a narrower list may
    only keep entries of the broader one (an empty list means "anything", so it loosens);
  - `policy.log_content` may only be turned off, `policy.audit` only on;
  a document that would loosen a ceiling is refused when pushed (`check`), and the merge
  clamps as well, so lowering an org ceiling later also binds the narrower scopes.
- `routes` and `providers` replace wholesale.

`sync` (org scope only) is how the org's sidecars sync: ``{"grace_hours": 72,
"after_grace": "open" | "closed", "lease_usd": 5.0, "lease_ttl_seconds": 3600}`` (these are
the defaults). A sidecar that cannot get a fresh policy for `grace_hours` keeps serving
under its last good one ("open", with a loud warning) or refuses requests until it
reaches the server again ("closed"); leases are asked for `lease_usd` at a time.

`pools` (org and team scopes: ``{"daily_usd": 500, "monthly_usd": 8000}``, and at the org
``"timezone": "Europe/Berlin"`` where days and months are cut, UTC by default) are the shared
budgets that budget leases split between devices; they stay on the server and are not part
of the effective policy (`budget.*` there is each sidecar's own local limit).
"""

from __future__ import annotations

import copy
import itertools
import re
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import tomli_w

from sidecar.config import parse
from sidecar.errors import ConfigError
from sidecar.policy.config import GOVERNANCE_SECTIONS
from sidecar.policy.model import Policy

LIMIT_KEYS = (
    "budget.daily_usd", "budget.weekly_usd", "budget.monthly_usd",
    "limits.requests_per_minute", "limits.input_tokens_per_minute", "limits.output_tokens_per_minute",
    "limits.max_concurrent",
)  # fmt: skip
MODE_KEYS = ("guardrails.secrets", "guardrails.pii")
ALLOW_KEYS = ("policy.models", "policy.providers", "tools.allow")
DENY_KEYS = ("policy.deny_models", "tools.deny")
OFF_TIGHTER = ("policy.log_content",)
ON_TIGHTER = ("policy.audit",)
MODES = ("off", "warn", "redact", "block")
DOC_KEYS = {*GOVERNANCE_SECTIONS, "routes", "providers", "ceilings", "pools", "sync"}
SYNC_DEFAULTS: dict[str, Any] = {"grace_hours": 72.0, "after_grace": "open", "lease_usd": 5.0, "lease_ttl_seconds": 3600.0}
_SYNC_RANGES = {"grace_hours": (0.01, 24 * 365, "hours"), "lease_usd": (0.0001, 1e6, "US dollars"),
                "lease_ttl_seconds": (30, 7 * 86400, "seconds")}  # fmt: skip
_SECRET_WORDS = {"secret", "password", "passwd", "token", "apikey", "credential", "credentials", "private",
                 "authorization", "cookie", "bearer"}  # fmt: skip
_SECRET_PAIRS = {("api", "key"), ("access", "key"), ("private", "key"), ("session", "key")}
_NOT_SECRET = {"keys", "credentials_file"}  # keyring:/env: references, and a path
_SECRET_VALUE = re.compile(r"^(sk-|sk_|Bearer\s|Basic\s|AKIA|ghp_|xox[bp]-)")


def parse_scope(scope: str) -> tuple[str, str | None]:
    """``org`` -> ("org", None); ``team:ID`` / ``developer:ID`` -> (kind, id)."""
    if scope == "org":
        return "org", None
    kind, _, ident = scope.partition(":")
    if kind not in ("team", "developer") or not ident:
        raise ConfigError(f"scope {scope!r}: expected org, team:ID or developer:ID")
    return kind, ident


def ceiling_keys() -> tuple[str, ...]:
    """Every key the org may mark as a ceiling."""
    return (*LIMIT_KEYS, *MODE_KEYS, "guardrails.detectors.*", *ALLOW_KEYS, *OFF_TIGHTER, *ON_TIGHTER)


def validate(doc: Any, scope: str) -> dict[str, Any]:
    """Check one scope's document on its own; return it (raises ConfigError naming the key)."""
    where = f"policy for {scope}"
    if not isinstance(doc, dict):
        raise ConfigError(f"{where}: a policy document must be a JSON object")
    unknown = set(doc) - DOC_KEYS
    if unknown:
        raise ConfigError(f"{where}: unknown keys {sorted(unknown)} (expected {', '.join(sorted(DOC_KEYS))})")
    Policy.from_document({k: v for k, v in doc.items() if k in GOVERNANCE_SECTIONS}, where)
    ceilings = doc.get("ceilings", [])
    if ceilings and scope != "org":
        raise ConfigError(f"{where}: only the org scope may set ceilings")
    if not isinstance(ceilings, list) or not all(isinstance(c, str) for c in ceilings):
        raise ConfigError(f"{where}: ceilings must be a list of keys such as 'budget.daily_usd'")
    for c in ceilings:
        if c not in ceiling_keys() and not c.startswith("guardrails.detectors."):
            raise ConfigError(f"{where}: {c!r} cannot be a ceiling (one of: {', '.join(ceiling_keys())})")
    _pools(doc.get("pools"), scope, where)
    if "sync" in doc:
        if scope != "org":
            raise ConfigError(f"{where}: only the org scope may set sync (how every sidecar of the org syncs)")
        sync_settings(doc["sync"], where)
    for p in doc.get("providers", []) if isinstance(doc.get("providers"), list) else []:
        _no_secrets(p, f"{where}: providers")
    _routes_and_providers(doc, where)
    return doc


def _pools(pools: Any, scope: str, where: str) -> None:
    if pools is None:
        return
    if scope.startswith("developer:"):
        raise ConfigError(f"{where}: pools are shared budgets of the org or a team, not of a developer")
    if not isinstance(pools, dict) or set(pools) - {"daily_usd", "monthly_usd", "timezone"}:
        raise ConfigError(f"{where}: pools takes daily_usd, monthly_usd and (org only) timezone")
    if "timezone" in pools:
        tz = pools["timezone"]
        if scope != "org":
            raise ConfigError(f"{where}: pools.timezone is the org's (team pools follow it)")
        try:
            ZoneInfo(tz) if isinstance(tz, str) and tz else None
        except (ZoneInfoNotFoundError, ValueError):
            tz = None
        if not tz:
            raise ConfigError(f"{where}: pools.timezone must be an IANA time zone (e.g. 'Europe/Berlin')")
    for k, v in pools.items():
        if k == "timezone":
            continue
        if isinstance(v, bool) or not isinstance(v, int | float) or v <= 0:
            raise ConfigError(f"{where}: pools.{k} must be a positive number of US dollars")


def sync_settings(value: Any, where: str = "policy") -> dict[str, Any]:
    """The org's `sync` settings with defaults filled in (raises ConfigError naming the key)."""
    if value is None:
        return dict(SYNC_DEFAULTS)
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: sync must be an object such as {{\"grace_hours\": 72, \"after_grace\": \"open\"}}")
    unknown = set(value) - set(SYNC_DEFAULTS)
    if unknown:
        raise ConfigError(f"{where}: sync has unknown keys {sorted(unknown)} (expected {', '.join(SYNC_DEFAULTS)})")
    out = {**SYNC_DEFAULTS, **value}
    for key, (low, high, unit) in _SYNC_RANGES.items():
        v = out[key]
        if isinstance(v, bool) or not isinstance(v, int | float) or not low <= v <= high:
            raise ConfigError(f"{where}: sync.{key} must be a number of {unit} between {low:g} and {high:g}")
        out[key] = float(v)
    if out["after_grace"] not in ("open", "closed"):
        raise ConfigError(f"{where}: sync.after_grace must be \"open\" (keep serving under the last policy) or \"closed\" (refuse)")
    return out


def _looks_secret(key: str) -> bool:
    words = [w for w in re.split(r"[^a-z0-9]+", key.lower()) if w]
    return any(w in _SECRET_WORDS for w in words) or any(p in _SECRET_PAIRS for p in itertools.pairwise(words))


def _no_secrets(value: Any, where: str) -> None:
    if isinstance(value, dict):
        for k, v in value.items():
            if k not in _NOT_SECRET and _looks_secret(str(k)):
                raise ConfigError(f"{where}: {k!r} looks like a secret; policies carry no secrets (use keys = ['keyring:NAME'])")
            _no_secrets(v, where)
    elif isinstance(value, list):
        for v in value:
            _no_secrets(v, where)
    elif isinstance(value, str) and _SECRET_VALUE.match(value):
        raise ConfigError(f"{where}: a value looks like a credential ({value[:6]}...); policies carry no secrets")


def _routes_and_providers(doc: dict[str, Any], where: str) -> None:
    """Validate routes and providers with the config file's own rules."""
    part: dict[str, Any] = {k: doc[k] for k in ("providers", "routes") if k in doc}
    if not part:
        return
    try:
        text = tomli_w.dumps(part)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{where}: routes/providers are not valid: {e}") from None
    try:
        parse(text, env={})
    except ConfigError as e:
        raise ConfigError(f"{where}: {e.message.removeprefix('<config>: ')}") from None


def _get(doc: dict[str, Any], key: str) -> tuple[bool, Any]:
    section, _, name = key.partition(".")
    table = doc.get(section)
    if not isinstance(table, dict):
        return False, None
    if name.startswith("detectors."):
        det = table.get("detectors")
        name = name.removeprefix("detectors.")
        return (True, det[name]) if isinstance(det, dict) and name in det else (False, None)
    return (True, table[name]) if name in table else (False, None)


def _set(doc: dict[str, Any], key: str, value: Any) -> None:
    section, _, name = key.partition(".")
    table = doc.setdefault(section, {})
    if name.startswith("detectors."):
        table.setdefault("detectors", {})[name.removeprefix("detectors.")] = value
    else:
        table[name] = value


def _keys_of(doc: dict[str, Any]) -> list[str]:
    out = []
    for section in GOVERNANCE_SECTIONS:
        table = doc.get(section)
        if not isinstance(table, dict):
            continue
        for name, value in table.items():
            if name == "detectors" and isinstance(value, dict):
                out += [f"{section}.detectors.{d}" for d in value]
            else:
                out.append(f"{section}.{name}")
    return out


def _tighten(key: str, broad: Any, narrow: Any) -> tuple[Any, bool]:
    """The effective value of a ceiling key, and whether `narrow` tried to loosen it."""
    if key in LIMIT_KEYS:
        return min(broad, narrow), narrow > broad
    if key in MODE_KEYS or key.startswith("guardrails.detectors."):
        strict = max(broad, narrow, key=MODES.index)
        return strict, strict != narrow
    if key in ALLOW_KEYS:
        if not broad:
            return narrow, False
        kept = [x for x in narrow if x in broad]
        return (kept or broad), len(kept) != len(narrow) or not narrow
    if key in OFF_TIGHTER:
        return broad and narrow, narrow and not broad
    if key in ON_TIGHTER:
        return broad or narrow, broad and not narrow
    return narrow, False


tighten = _tighten  # public: a sidecar lays its org's policy over its local config by the same rules


def merge(docs: list[dict[str, Any]]) -> tuple[dict[str, Any], list[str]]:
    """The effective document of a chain [org, team, developer] (missing scopes as {}), and
    every attempt of a narrower scope to loosen an org ceiling (clamped in the result)."""
    org = docs[0] if docs else {}
    ceilings = set(org.get("ceilings", []))
    out: dict[str, Any] = {}
    problems: list[str] = []
    for depth, doc in enumerate(docs):
        for key in _keys_of(doc):
            _, value = _get(doc, key)
            had, current = _get(out, key)
            if key == "guardrails.custom":
                by_name = {c["name"]: c for c in (current or [])} | {c["name"]: c for c in value}
                _set(out, key, list(by_name.values()))
            elif key in DENY_KEYS:
                _set(out, key, list(dict.fromkeys([*(current or []), *value])))
            elif had and depth > 0 and key in ceilings:
                eff, loosened = _tighten(key, current, value)
                if loosened:
                    problems.append(f"{key}: {value!r} would loosen the org's ceiling ({current!r})")
                _set(out, key, copy.deepcopy(eff))
            else:
                _set(out, key, copy.deepcopy(value))
        for key in ("routes", "providers", "sync"):
            if key in doc:
                out[key] = copy.deepcopy(doc[key])
    return out, problems


def check(chain: list[dict[str, Any]], scope: str, ceilings: bool = True) -> dict[str, Any]:
    """The effective document of `chain` (whose last element was just pushed for `scope`);
    ConfigError when it loosens a ceiling (unless `ceilings` is False: a broader push that
    lowers a ceiling clamps the narrower scopes) or the combination is not valid."""
    effective, problems = merge(chain)
    if problems and ceilings:
        raise ConfigError(f"policy for {scope}: " + "; ".join(problems))
    Policy.from_document({k: v for k, v in effective.items() if k in GOVERNANCE_SECTIONS}, f"effective policy for {scope}")
    _routes_and_providers(effective, f"effective policy for {scope}")
    return effective
