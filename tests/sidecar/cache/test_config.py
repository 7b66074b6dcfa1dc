"""The [cache] section: defaults, every key, and a clear error for each bad value."""

from __future__ import annotations

import pytest

from sidecar.cache.config import CacheConfig
from sidecar.config import DEFAULT_CONFIG, parse
from sidecar.errors import ConfigError


def test_defaults_keep_the_exact_tier_on() -> None:
    c = parse("", None, {}).cache
    assert c == CacheConfig()
    assert c.mode == "exact" and c.threshold == 0.95 and c.reask_window_seconds == 120
    assert c.normalise == ("billing-header", "current-date")


def test_every_key_is_read() -> None:
    text = """
[cache]
mode = "shadow"
ttl_seconds = 600
semantic_ttl_seconds = 60
reask_window_seconds = 0
max_mb = 10
threshold = 0.97
min_words = 6
embed_timeout_ms = 25
read_only_tools = ["Read", "Grep"]
normalise = ["billing-header"]
"""
    c = parse(text, None, {}).cache
    assert c == CacheConfig(
        mode="shadow", ttl_seconds=600, semantic_ttl_seconds=60, reask_window_seconds=0, max_mb=10, threshold=0.97,
        min_words=6, embed_timeout_ms=25, read_only_tools=("Read", "Grep"), normalise=("billing-header",),
    )  # fmt: skip
    assert parse(text, None, {}).to_dict()["cache"]["read_only_tools"] == ("Read", "Grep")


def test_the_commented_default_config_documents_every_key_with_its_default() -> None:
    block = DEFAULT_CONFIG[DEFAULT_CONFIG.index("# [cache]") :].split("\n\n")[0]
    lines = ["[cache]"] + [
        line[2:].split("  #")[0] for line in block.splitlines() if line.startswith("# ") and " = " in line
    ]
    assert {line.split(" = ")[0].strip() for line in lines[1:]} == set(CacheConfig.__dataclass_fields__)
    assert parse("\n".join(lines), None, {}).cache == CacheConfig()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('mode = "always"', "cache.mode: 'always' is not a mode"),
        ("threshold = 0.5", "cache.threshold: 0.5 is not between 0.85 and 1"),
        ("threshold = 1.5", "cache.threshold"),
        ("ttl_seconds = 0", "cache.ttl_seconds: must be a positive number"),
        ("reask_window_seconds = -1", "cache.reask_window_seconds: must be a positive number or 0"),
        ("max_mb = -5", "cache.max_mb"),
        ("min_words = 0", "cache.min_words: must be at least 1"),
        ('normalise = ["git-status"]', "cache.normalise: 'git-status' is not a normalisation"),
        ('read_only_tools = "Read"', "cache.read_only_tools: must be an array"),
        ("semantic = true", "cache.semantic: unknown key"),
        ('mode = 3', "cache.mode: must be a string"),
    ],
)
def test_bad_values_are_refused_with_the_key_and_line(text: str, message: str) -> None:
    with pytest.raises(ConfigError) as e:
        parse(f"[server]\nport = 8787\n\n[cache]\n{text}\n", None, {})
    assert message in e.value.message
    assert "<config>:5" in e.value.message
