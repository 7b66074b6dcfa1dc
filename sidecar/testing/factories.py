"""Factories for test data."""

from __future__ import annotations

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
