"""The `[cache]` config section: the response cache's mode, lifetimes and semantic tier.

```toml
[cache]
mode = "exact"                  # off | exact | semantic | shadow (semantic decisions logged, never served)
ttl_seconds = 86400
threshold = 0.95                # cosine similarity a paraphrase needs, >= MIN_SEMANTIC_THRESHOLD
normalise = ["billing-header", "current-date"]   # rules of sidecar.cache.normalise.RULES
```
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

from sidecar.configread import Reader, globs

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


def read_cache(r: Reader, data: Any) -> CacheConfig:
    """Validate the `[cache]` table."""
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
    tools = globs(r, d, "cache", "read_only_tools") if "read_only_tools" in d else c.read_only_tools
    rules = globs(r, d, "cache", "normalise") if "normalise" in d else c.normalise
    for rule in rules:
        if rule not in RULES:
            raise r.fail("cache.normalise", f"{rule!r} is not a normalisation (expected some of: {', '.join(RULES)})")
    return CacheConfig(mode=mode, threshold=threshold, min_words=min_words, read_only_tools=tools, normalise=rules, **seconds)
