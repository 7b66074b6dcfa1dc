"""What the cache may do for one request: the effective tier, and whether to look up and store.

The config's `[cache] mode` is the ceiling; a request can only narrow it:

- ``x-sidecar-cache: off | exact | semantic`` (semantic means "up to what the config allows");
- ``Cache-Control: no-store``: look up, but never store this answer;
- ``Cache-Control: no-cache``: do not look up (ask upstream), but store the new answer.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from sidecar.errors import InvalidRequest

OFF, EXACT, SHADOW, SEMANTIC = 0, 1, 2, 3
LEVELS = {"off": OFF, "exact": EXACT, "shadow": SHADOW, "semantic": SEMANTIC}
REQUEST_MODES = {"off": OFF, "exact": EXACT, "semantic": SEMANTIC}
HEADER = "x-sidecar-cache"


@dataclass(frozen=True)
class Plan:
    """The cache's part in one request."""

    level: int  # OFF, EXACT, SHADOW or SEMANTIC
    lookup: bool
    store: bool
    reason: str = ""  # why the cache is bypassed, when it is

    @property
    def bypass(self) -> bool:
        """Neither looked up nor stored."""
        return self.level == OFF or not (self.lookup or self.store)


def plan(config_mode: str, headers: Mapping[str, str]) -> Plan:
    """The plan for a request with `headers` under `[cache] mode = config_mode`.

    Raises InvalidRequest for an `x-sidecar-cache` value that is not a mode.
    """
    level = LEVELS[config_mode]
    asked = headers.get(HEADER)
    if asked is not None:
        value = asked.strip().lower()
        if value not in REQUEST_MODES:
            raise InvalidRequest(f"{HEADER}: {asked!r} is not one of {', '.join(REQUEST_MODES)}")
        level = min(level, REQUEST_MODES[value])
    if level == OFF:
        return Plan(OFF, False, False, "the cache is off" if asked is None else f"{HEADER}: off")
    directives = _directives(headers)
    lookup, store = "no-cache" not in directives, "no-store" not in directives
    reason = "" if lookup or store else "Cache-Control: no-cache, no-store"
    return Plan(level, lookup, store, reason)


def _directives(headers: Mapping[str, str]) -> set[str]:
    getall = getattr(headers, "getall", None)
    values = getall("cache-control", []) if getall is not None else [headers.get("cache-control", "")]
    return {d.strip().lower().split("=", 1)[0] for v in values for d in v.split(",") if d.strip()}
