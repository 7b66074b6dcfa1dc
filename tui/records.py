"""The shapes the dashboard keeps: one request's row, and running totals of spend and tokens.

Payloads come off the wire, so every field is read defensively: a missing or mistyped
field becomes a neutral value (0, None) instead of an exception in the UI.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

IN_FLIGHT = "in_flight"
LOST = "lost"  # the connection dropped before the request's outcome arrived


def as_int(data: dict[str, Any], key: str) -> int:
    """`data[key]` as an int (0 when missing or not a number)."""
    value = data.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return 0
    return int(value)


def as_float(data: dict[str, Any], key: str) -> float | None:
    """`data[key]` as a float, or None when missing or not a number."""
    value = data.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def as_str(data: dict[str, Any], key: str) -> str | None:
    """`data[key]` as a non-empty string, or None."""
    value = data.get(key)
    return str(value) if value not in (None, "") else None


@dataclass
class Tally:
    """Requests, tokens and dollars summed over some group (a day, a model, a session)."""

    requests: int = 0
    count_tokens: int = 0  # count_tokens calls: free, and no model request, so counted apart
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    cost_usd: float = 0.0

    @classmethod
    def from_report(cls, row: dict[str, Any]) -> Tally:
        """A tally from a `/usage` report row or a status total."""
        return cls(
            requests=as_int(row, "requests"),
            count_tokens=as_int(row, "count_tokens"),
            input_tokens=as_int(row, "input_tokens"),
            output_tokens=as_int(row, "output_tokens"),
            cache_read_tokens=as_int(row, "cache_read_tokens"),
            cache_write_tokens=as_int(row, "cache_write_tokens"),
            cost_usd=as_float(row, "cost_usd") or 0.0,
        )

    @property
    def total_tokens(self) -> int:
        """Input, output, cache read and cache write tokens together."""
        return self.input_tokens + self.output_tokens + self.cache_read_tokens + self.cache_write_tokens

    def add(self, row: RequestRow) -> None:
        """Count one finished request (a count_tokens call apart)."""
        if row.is_count_tokens:
            self.count_tokens += 1
        else:
            self.requests += 1
        self.input_tokens += row.input_tokens
        self.output_tokens += row.output_tokens
        self.cache_read_tokens += row.cache_read_tokens
        self.cache_write_tokens += row.cache_write_tokens
        self.cost_usd += row.cost_usd


@dataclass
class RequestRow:
    """One request as the live table shows it; `data` keeps the whole event for the detail view."""

    id: str
    ts: float
    session_id: str | None = None
    requested_model: str | None = None
    upstream: str | None = None  # provider/model that served
    route: str | None = None
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    cost_usd: float = 0.0
    latency_ms: float | None = None
    ttft_ms: float | None = None
    cache_outcome: str | None = None
    status: int | None = None
    outcome: str = IN_FLIGHT
    stream: bool | None = None
    data: dict[str, Any] = field(default_factory=dict)
    # perf_counter() when the event that last changed this row was read off the wire.
    received_at: float = 0.0

    @property
    def in_flight(self) -> bool:
        """True until the request's priced record arrives."""
        return self.outcome == IN_FLIGHT

    @property
    def is_count_tokens(self) -> bool:
        """A count_tokens call (free; shown and counted apart from model requests)."""
        return (as_str(self.data, "endpoint") or "").endswith("/count_tokens")

    @property
    def model_key(self) -> str:
        """The model the ledger bills it under: the upstream model, else the requested one."""
        upstream_model = as_str(self.data, "upstream_model")
        return upstream_model or self.requested_model or "(unknown)"

    @classmethod
    def started(cls, data: dict[str, Any], received_at: float) -> RequestRow:
        """A row for a `request_started` event."""
        stream = data.get("stream")
        return cls(
            id=str(data["id"]),
            ts=as_float(data, "ts") or 0.0,
            session_id=as_str(data, "session_id"),
            requested_model=as_str(data, "model"),
            stream=stream if isinstance(stream, bool) else None,
            data=dict(data),
            received_at=received_at,
        )

    @classmethod
    def finished(cls, data: dict[str, Any], received_at: float) -> RequestRow:
        """A row for a `request` event (the priced usage record)."""
        provider, model = as_str(data, "provider"), as_str(data, "upstream_model")
        upstream = f"{provider}/{model}" if provider and model else provider or model
        stream = data.get("stream")
        return cls(
            id=str(data["id"]),
            ts=as_float(data, "ts") or 0.0,
            session_id=as_str(data, "session_id"),
            requested_model=as_str(data, "requested_model"),
            upstream=upstream,
            route=as_str(data, "route"),
            input_tokens=as_int(data, "input_tokens"),
            output_tokens=as_int(data, "output_tokens"),
            cache_read_tokens=as_int(data, "cache_read_tokens"),
            cache_write_tokens=as_int(data, "cache_write_tokens"),
            cost_usd=as_float(data, "cost_usd") or 0.0,
            latency_ms=as_float(data, "latency_ms"),
            ttft_ms=as_float(data, "ttft_ms"),
            cache_outcome=as_str(data, "cache_outcome"),
            status=as_int(data, "status") or None,
            outcome=as_str(data, "outcome") or "ok",
            stream=stream if isinstance(stream, bool) else None,
            data=dict(data),
            received_at=received_at,
        )
