"""Factories for test data."""

from __future__ import annotations

import random
import time
from datetime import UTC, datetime
from typing import Any

from sidecar.ledger.record import UsageRecord, new_ulid


def utc_ts(iso: str) -> float:
    """Epoch seconds of a naive ISO time read as UTC (`2026-03-01T23:30`)."""
    return datetime.fromisoformat(iso).replace(tzinfo=UTC).timestamp()


def usage_record(ts: float | str | None = None, model: str = "claude-opus-4-8", **fields: Any) -> UsageRecord:
    """A usage row for `model` at `ts` (epoch seconds, a UTC ISO time, or now); `fields` override."""
    when = time.time() if ts is None else utc_ts(ts) if isinstance(ts, str) else ts
    base: dict[str, Any] = {
        "id": new_ulid(when),
        "ts": when,
        "endpoint": "/v1/messages",
        "requested_model": model,
        "provider": "anthropic",
        "upstream_model": model,
        "stream": True,
    }
    return UsageRecord(**{**base, **fields})


def usage_dicts(n: int, seed: int = 1, ts: float | None = None) -> list[dict[str, Any]]:
    """`n` seeded usage rows in the form a device uploads to the central server, one a second
    back from `ts` (or now)."""
    rnd = random.Random(seed)
    now = ts or time.time()
    return [
        {"id": new_ulid(now - i), "ts": now - i, "model": rnd.choice(["claude-sonnet-4-5", "claude-haiku-4-5"]),
         "route": rnd.choice(["default", "background-cheap", None]), "provider": "anthropic",
         "input_tokens": rnd.randrange(1, 5000), "output_tokens": rnd.randrange(1, 2000),
         "cache_read_tokens": rnd.randrange(0, 100), "cache_write_tokens": 0, "cost_usd": round(rnd.random() / 10, 6)}
        for i in range(n)
    ]  # fmt: skip
