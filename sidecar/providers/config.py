"""The `[[providers]]` config section: one upstream each, checked against the provider registry.

```toml
[[providers]]
name = "anthropic"
type = "anthropic"                 # a type of sidecar.providers.registry.TYPES
base_url = "https://api.anthropic.com"
keys = ["keyring:anthropic"]       # or "env:VAR"
connect_timeout = 10
read_timeout = 600
```
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from sidecar.configread import NAME_RE, Reader, kind_name
from sidecar.errors import ConfigError
from sidecar.providers import registry

PROVIDER_TYPES = tuple(registry.TYPES)
DEFAULT_BASE_URLS = {"anthropic": "https://api.anthropic.com"}
_PROVIDER_KEYS = {"name", "type", "base_url", "keys", "connect_timeout", "read_timeout"}


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


# With no [[providers]]: the Anthropic API, forwarding the client's own credentials.
DEFAULT_PROVIDERS = (ProviderConfig(name="anthropic", type="anthropic", base_url=DEFAULT_BASE_URLS["anthropic"]),)


def read_providers(r: Reader, data: Any) -> tuple[ProviderConfig, ...]:
    """Validate the `[[providers]]` array (None: the default providers)."""
    if data is None:
        return DEFAULT_PROVIDERS
    if not isinstance(data, list):
        raise r.fail("providers", "must be an array of tables ([[providers]])")
    out: list[ProviderConfig] = []
    for i, item in enumerate(data):
        key = f"providers[{i}]"
        if not isinstance(item, dict):
            raise r.fail(key, f"must be a table, not {kind_name(item)}")
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
        if not NAME_RE.match(name):
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
