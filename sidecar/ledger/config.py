"""The `[pricing]` and `[usage]` config sections: price overrides and how usage is recorded.

```toml
[pricing."claude-opus-4-8"]        # USD per million tokens, replacing genai-prices' figures
input = 5.0
output = 25.0
cache_read = 0.5
cache_write = 6.25

[usage]
timezone = "Europe/Berlin"         # where days and months are cut in reports
on_storage_failure = "refuse"      # refuse | serve
```
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sidecar.configread import Reader


@dataclass(frozen=True)
class PriceOverride:
    """USD per million tokens for one model, replacing the price library's figures."""

    input: float
    output: float
    cache_read: float | None = None
    cache_write: float | None = None


@dataclass(frozen=True)
class UsageConfig:
    """How usage is reported, and what happens while it cannot be recorded."""

    timezone: str | None = None
    # While the ledger cannot be written (full disk, read-only store): "refuse" new requests
    # with a 503 until it recovers, or "serve" them and keep their records in memory.
    on_storage_failure: str = "refuse"


def read_pricing(r: Reader, data: Any) -> dict[str, PriceOverride]:
    """Validate the `[pricing]` table: model -> its override."""
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


def read_usage(r: Reader, data: Any) -> UsageConfig:
    """Validate the `[usage]` table."""
    u = r.table(data, "usage", {"timezone", "on_storage_failure"})
    tz = r.get(u, "usage", "timezone", str, None)
    on_storage_failure = str(r.get(u, "usage", "on_storage_failure", str, "refuse"))
    if on_storage_failure not in ("refuse", "serve"):
        raise r.fail("usage.on_storage_failure", f"{on_storage_failure!r} is not one of refuse, serve")
    if tz is not None:
        try:
            ZoneInfo(tz)
        except (ZoneInfoNotFoundError, ValueError):
            raise r.fail("usage.timezone", f"{tz!r} is not an IANA time zone (e.g. 'Europe/Berlin')") from None
    return UsageConfig(timezone=tz, on_storage_failure=on_storage_failure)
