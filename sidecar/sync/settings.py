"""The `[sync]` config section: how this sidecar talks to its org's central server.

    [sync]
    enabled = true                 # false: stay enrolled but do not sync (policy and usage)
    poll_wait_seconds = 25         # how long one policy long-poll is held by the server
    upload_interval_seconds = 2    # the outbox is uploaded at most this often
    upload_batch = 500             # records per upload (the server takes at most 1000)
    retry_max_seconds = 60         # back-off ceiling after failed calls (with jitter)

What the org decides (the grace period before a stale policy fails open or closed, lease
sizes) comes with the signed policy, not from this file.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sidecar.configread import Reader


@dataclass(frozen=True)
class SyncConfig:
    """Local knobs of the sync loop."""

    enabled: bool = True
    poll_wait_seconds: float = 25.0
    upload_interval_seconds: float = 2.0
    upload_batch: int = 500
    retry_max_seconds: float = 60.0


def read_sync(r: Reader, data: Any) -> SyncConfig:
    """Validate `[sync]` with the config reader `r` (errors name the key and line)."""
    d = r.table(data, "sync", set(SyncConfig.__dataclass_fields__))
    c = SyncConfig()
    enabled = bool(r.get(d, "sync", "enabled", bool, c.enabled))
    values: dict[str, float] = {}
    for name, low, high in (("poll_wait_seconds", 1, 300), ("upload_interval_seconds", 0.05, 3600), ("retry_max_seconds", 1, 3600)):
        v = r.get(d, "sync", name, (int, float), getattr(c, name))
        if not low <= v <= high:
            raise r.fail(f"sync.{name}", f"must be between {low} and {high} seconds")
        values[name] = float(v)
    batch = r.get(d, "sync", "upload_batch", int, c.upload_batch)
    if not 1 <= batch <= 1000:
        raise r.fail("sync.upload_batch", "must be between 1 and 1000 (the server takes at most 1000 records a call)")
    return SyncConfig(enabled=enabled, upload_batch=batch, **values)
