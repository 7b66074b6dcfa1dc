"""One usage record: what a single proxied request cost and how it went."""

from __future__ import annotations

import os
import threading
import time
from dataclasses import asdict, dataclass, fields
from typing import Any

_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_PAIRS = [a + b for a in _CROCKFORD for b in _CROCKFORD]  # every 10-bit value as two digits
_SHIFTS = tuple(range(120, -1, -10))
_LOW_SHIFTS = _SHIFTS[-8:]  # the 16 digits of the 80 random bits
# Random bits are drawn from the OS ahead, for many ids at once: one getrandom() per
# request was a visible share of the request path. Same source, same quality.
_POOL_BYTES = 10 * 400
_pool = b""
_at = 0
_lock = threading.Lock()
_last: tuple[int, str] = (-1, "")  # (ms, its 10 digits), one object: a thread never reads a mix


def ulid_text(value: int) -> str:
    """The 26 Crockford base32 digits of a (130-bit) value, most significant first."""
    return "".join([_PAIRS[(value >> s) & 1023] for s in _SHIFTS])


def _random80() -> int:
    global _pool, _at
    with _lock:
        if _at + 10 > len(_pool):
            _pool, _at = os.urandom(_POOL_BYTES), 0
        _at += 10
        return int.from_bytes(_pool[_at - 10 : _at], "big")


def _forget_pool() -> None:
    global _pool, _at
    _pool, _at = b"", 0


os.register_at_fork(after_in_child=_forget_pool)  # a child never reuses its parent's bits


def new_ulid(now: float | None = None) -> str:
    """A ULID: 48-bit millisecond time + 80 random bits, Crockford base32, sortable by time.
    The time's 10 digits are the first 10 of the whole value's 26 (its top 2 bits are 0) and
    are kept for the millisecond; the random bits are the other 16."""
    global _last
    ms = int((time.time() if now is None else now) * 1000)
    last = _last
    if last[0] != ms:
        _last = last = (ms, ulid_text(ms << 80)[:10])
    r = _random80()
    return last[1] + "".join([_PAIRS[(r >> s) & 1023] for s in _LOW_SHIFTS])


@dataclass(slots=True)
class UsageRecord:
    """One row of the usage ledger (one request through the sidecar).

    Token fields follow Anthropic's usage: `input_tokens` excludes cache reads and writes.
    Times are UTC epoch seconds; durations are milliseconds.
    """

    id: str
    ts: float
    endpoint: str
    requested_model: str | None
    provider: str
    upstream_model: str | None
    stream: bool
    session_id: str | None = None
    agent_id: str | None = None
    route: str | None = None
    status: int = 0
    outcome: str = "ok"  # ok | upstream_error | rejected | aborted | client_closed
    error_type: str | None = None
    stop_reason: str | None = None
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    cost_usd: float = 0.0
    latency_ms: float = 0.0
    ttft_ms: float | None = None
    request_bytes: int = 0
    response_bytes: int = 0
    upstream_request_id: str | None = None
    target: str | None = None  # the target that served: provider/model#key-index
    attempts: int = 0  # upstream attempts made (retries and fallbacks included)
    fallback: str | None = None  # the fallback target taken, when the primary failed
    cache_outcome: str | None = None  # hit-exact | hit-semantic | miss | bypass | shadow-hit
    saved_usd: float = 0.0  # what a cache hit saved (the priced cost of the original answer)

    def to_dict(self) -> dict[str, Any]:
        """Plain data for sqlite, JSON events and reports."""
        return asdict(self)


# The usage table's columns are the record's fields, in order: the writer's batches and the
# journal's lines (replayed by its recovery) both write rows in this order.
USAGE_COLUMNS = tuple(f.name for f in fields(UsageRecord))
INSERT_USAGE = (
    f"INSERT OR IGNORE INTO usage ({', '.join(USAGE_COLUMNS)}) "
    f"VALUES ({', '.join('?' for _ in USAGE_COLUMNS)})"
)
