"""One audit entry and the hash that chains it to the one before.

    hash = SHA-256( prev_hash + "\\n" + canonical({"seq", "ts", "kind", "request_id", "data"}) )

`canonical` is JSON with sorted keys, no spaces and UTF-8 text (`json.dumps(obj,
sort_keys=True, separators=(",", ":"), ensure_ascii=False)`), so anyone can recompute a
hash from an exported line. The first entry's `prev_hash` is 64 zeros. `seq` counts from 1
without gaps: a removed entry leaves a hole, a moved one breaks two links.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import msgspec

GENESIS = "0" * 64
# json.dumps builds a new encoder for every call with non-default options; the request path
# chains an entry per request, so the encoders are made once (same output, a third the time).
_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode
_TEXT = json.JSONEncoder(ensure_ascii=False).encode
# msgspec writes the same bytes as _CANONICAL, five times faster, for str keys, str, int,
# bool, None, lists, and floats that both write without an exponent (0, and 1e-4 <= |x| <
# 1e16); other floats differ (1e-05 vs 0.00001, 1e+16 vs 1e16, NaN vs null), so a value
# holding one goes the slow way. tests/sidecar/audit/test_chain.py holds them to it.
_FAST = msgspec.json.Encoder(order="sorted").encode
_FAST_DEPTH = 4


def canonical(obj: Any) -> str:
    """The one JSON spelling of `obj` that hashes are computed over (`json.dumps(obj,
    sort_keys=True, separators=(",", ":"), ensure_ascii=False)`)."""
    if _fast_ok(obj):
        try:
            return _FAST(obj).decode()
        except (msgspec.EncodeError, UnicodeError, OverflowError, TypeError, ValueError):
            pass  # e.g. a lone surrogate: json.dumps has its own answer
    return _CANONICAL(obj)


def _fast_ok(v: Any, depth: int = 0) -> bool:
    """Whether msgspec spells `v` as json.dumps does (see _FAST). Scalars inside a container
    are checked in its loop (a request entry is a flat dict of about 30 of them)."""
    t = type(v)
    if t is str or t is int or t is bool or v is None:
        return True
    if t is float:
        return bool(v == 0 or 1e-4 <= abs(v) < 1e16)  # False for NaN and infinities too
    if depth >= _FAST_DEPTH:
        return False
    if t is dict:
        items: Any = v.items()
    elif t is list:
        items = enumerate(v)
    else:
        return False
    for k, x in items:
        if t is dict and type(k) is not str:
            return False
        tx = type(x)
        if tx is str or tx is int or tx is bool or x is None:
            continue
        if tx is float:
            if not (x == 0 or 1e-4 <= abs(x) < 1e16):
                return False
        elif not _fast_ok(x, depth + 1):
            return False
    return True


def _hash(seq: int, ts: float, kind: str, request_id: str | None, data: str, prev_hash: str) -> str:
    """`Entry.digest` for data already in canonical form: its keys are written in sorted
    order around it, so the data is serialised once, not twice, on the request path."""
    body = f'{{"data":{data},"kind":{_text(kind)},"request_id":{_text(request_id)},"seq":{seq},"ts":{_number(ts)}}}'
    return hashlib.sha256(f"{prev_hash}\n{body}".encode()).hexdigest()


_PLAIN = re.compile(r"[A-Za-z0-9_.:-]*").fullmatch  # text JSON writes between quotes as it is


def _text(value: str | None) -> str:
    """`json.dumps(value, ensure_ascii=False)`, without the encoder for the usual kind or id."""
    if value is not None and _PLAIN(value):
        return f'"{value}"'
    return _TEXT(value)


def _number(value: float) -> str:
    """`json.dumps(value)`: a finite float is its repr, as json writes it."""
    if type(value) is float and math.isfinite(value):
        return float.__repr__(value)
    return json.dumps(value)


@dataclass(frozen=True)
class Entry:
    """One link of the chain. `data` is kept as its canonical JSON text."""

    seq: int
    ts: float
    kind: str
    request_id: str | None
    data: str
    prev_hash: str
    hash: str

    @staticmethod
    def digest(seq: int, ts: float, kind: str, request_id: str | None, data: str, prev_hash: str) -> str:
        """The hash of an entry with these fields, by the book (what `verify` recomputes)."""
        body = canonical({"seq": seq, "ts": ts, "kind": kind, "request_id": request_id, "data": json.loads(data)})
        return hashlib.sha256(f"{prev_hash}\n{body}".encode()).hexdigest()

    @classmethod
    def make(cls, seq: int, ts: float, kind: str, request_id: str | None, data: dict[str, Any], prev_hash: str) -> Entry:
        """A new entry that follows the one whose hash is `prev_hash`."""
        text = canonical(data)
        return cls(seq, ts, kind, request_id, text, prev_hash, _hash(seq, ts, kind, request_id, text, prev_hash))

    def to_json(self) -> dict[str, Any]:
        """The exported form: data as an object, plus a readable UTC time."""
        return {
            "seq": self.seq,
            "ts": self.ts,
            "time": _time(self.ts),
            "kind": self.kind,
            "request_id": self.request_id,
            "data": json.loads(self.data),
            "prev_hash": self.prev_hash,
            "hash": self.hash,
        }

    @classmethod
    def from_json(cls, obj: Any) -> Entry:
        """An entry from its exported form (raises ValueError when a field is missing or odd)."""
        if not isinstance(obj, dict):
            raise ValueError("an entry must be a JSON object")
        try:
            seq, ts, kind = obj["seq"], obj["ts"], obj["kind"]
            request_id, data, prev_hash, digest = obj["request_id"], obj["data"], obj["prev_hash"], obj["hash"]
        except KeyError as e:
            raise ValueError(f"missing field {e.args[0]!r}") from None
        if not (isinstance(seq, int) and isinstance(ts, int | float) and isinstance(kind, str) and isinstance(data, dict)):
            raise ValueError("seq, ts, kind or data has the wrong type")
        if not (isinstance(prev_hash, str) and isinstance(digest, str) and (request_id is None or isinstance(request_id, str))):
            raise ValueError("prev_hash, hash or request_id has the wrong type")
        if "time" in obj and obj["time"] != _time(float(ts)):  # not hashed: it must say what ts says
            raise ValueError(f"its time {obj['time']!r} is not the time of its ts ({ts!r})")
        return cls(seq, float(ts), kind, request_id, canonical(data), prev_hash, digest)


def _time(ts: float) -> str | None:
    """The readable UTC time of `ts` in the exported form (None when it has none)."""
    try:
        return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds")
    except (OverflowError, OSError, TypeError, ValueError):  # e.g. a ts edited to 1e300 or to text
        return None
