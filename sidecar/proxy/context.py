"""The per-request context that stages read and write (never globals)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from sidecar.ledger.record import UsageRecord, new_ulid
from sidecar.protocol.anthropic import MessageSummary, RequestHead


@dataclass
class RequestContext:
    """Everything the stages know about one proxied request."""

    endpoint: str
    body: bytes
    head: RequestHead
    session_id: str | None
    agent_id: str | None
    id: str = field(default_factory=new_ulid)
    ts: float = field(default_factory=time.time)
    t0: float = field(default_factory=time.perf_counter)
    provider: str = ""
    upstream_model: str | None = None
    status: int = 0
    outcome: str = "ok"
    first_byte_at: float | None = None
    response_bytes: int = 0
    upstream_request_id: str | None = None
    summary: MessageSummary = field(default_factory=MessageSummary)

    @property
    def stream(self) -> bool:
        """Whether the client asked for SSE."""
        return bool(self.head.stream)

    def to_record(self) -> UsageRecord:
        """The ledger row for this request (cost is filled in by the ledger)."""
        now = time.perf_counter()
        u = self.summary.usage
        # Time to first token: the first content delta of a stream, else the first byte.
        first = self.summary.first_delta_at or self.first_byte_at
        return UsageRecord(
            id=self.id,
            ts=self.ts,
            endpoint=self.endpoint,
            requested_model=self.head.model,
            provider=self.provider,
            upstream_model=self.summary.model or self.upstream_model,
            stream=self.stream,
            session_id=self.session_id,
            agent_id=self.agent_id,
            status=self.status,
            outcome=self.outcome,
            error_type=self.summary.error_type,
            stop_reason=self.summary.stop_reason,
            input_tokens=u.input_tokens,
            output_tokens=u.output_tokens,
            cache_read_tokens=u.cache_read_tokens,
            cache_write_tokens=u.cache_write_tokens,
            latency_ms=round((now - self.t0) * 1000, 3),
            ttft_ms=None if first is None else round((first - self.t0) * 1000, 3),
            request_bytes=len(self.body),
            response_bytes=self.response_bytes,
            upstream_request_id=self.upstream_request_id,
        )
